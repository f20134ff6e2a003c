package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestSearchResultsAreRedactedBeforeTheyLeave(t *testing.T) {
	var out bytes.Buffer
	if err := run(&out); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	want := `receiver got data={"limit":5,"memories":[{"content":"[redacted]","id":"mem_1"},{"content":"[redacted]","id":"mem_2"}],"query":"where does the user live","results_count":2}` + "\n"
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	if strings.Contains(got, "Elm Street") || strings.Contains(got, "peanuts") {
		t.Fatal("memory content left the process")
	}
}
