package bus_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/memhook/memhook/bus"
)

// fuzzMark is in every value the fuzz lookup returns.
const fuzzMark = "Q7x"

// fuzzValues are what variables hold under FuzzParseEndpoints: valid and
// invalid secrets, tokens, URLs, durations and events, each with fuzzMark.
var fuzzValues = []string{
	"whsec_" + fuzzMark + "FromLookup=", // bad base64
	fuzzMark + "-raw-secret",
	fuzzMark + " two, secrets",
	"https://" + fuzzMark + ".example/hook",
	"gopher://user:" + fuzzMark + "@host/",
	fuzzMark + "\x01control",
	"tok\n" + fuzzMark,
	"5s," + fuzzMark,
	"memory_added," + fuzzMark,
	"  " + fuzzMark + "  ",
}

// FuzzParseEndpoints feeds any file to ParseEndpoints: it never panics;
// each error is an *EndpointsFileError naming the file, and one of an
// endpoint names the endpoint and the key; no error shows a value a
// variable gave (each holds fuzzMark, unless the file itself does); and
// endpoints it accepts pass Config.Validate.
func FuzzParseEndpoints(f *testing.F) {
	example, err := os.ReadFile(filepath.Join("testdata", "endpoints.yaml"))
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		string(example), endpointsFile, "", "endpoints: []\n", "endpoints:\n", "---\n",
		"endpoints:\n  - name: a\n    url: ${URL}\n    token: ${TOKEN}\n    secret: [${S1}, \"${S2}\"]\n",
		"endpoints:\n  - {name: a, url: \"${U}\", events: \"${E}\", timeout: \"${T}\", retry_schedule: \"${R}\", rate_limit: \"${L}\"}\n",
		"endpoints:\n  - name: a\n    url: https://a.example/${UNSET}/$${x}/${EMPTY}/${\n    headers: {X-A: \"${H}\"}\n",
		"endpoints:\n  - &a {name: a, url: https://a.example}\n  - *a\n",
		"endpoints:\n  - name: a\n    url: https://a.example\n    <<: {timeout: 1s}\n",
		"endpoints:\n  - name: default\n    url: https://a.example\n  - name: default\n    url: x\n",
		"endpoints: [[], {}, ~, 1]\nother: {}\n",
		"endpoints:\n  - name: a\n    url: !!binary aGk=\n    headers: {\"\": x, ? [a] : b}\n",
		"{[.]: 1}", "a: &a [*a]\n", "endpoints: &e [*e]\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		lookup := func(name string) (string, bool) {
			switch {
			case strings.HasPrefix(name, "UNSET"):
				return "", false
			case strings.HasPrefix(name, "EMPTY"):
				return "", true
			}
			return fuzzValues[len(name)%len(fuzzValues)], true
		}
		eps, err := bus.ParseEndpoints("fuzz.yaml", data, lookup)
		if err == nil {
			if err := (bus.Config{Endpoints: eps}).Validate(); err != nil {
				t.Fatalf("accepted endpoints that Config.Validate refuses: %v\n%q", err, data)
			}
			return
		}
		if eps != nil {
			t.Fatalf("endpoints returned with an error")
		}
		if !bytes.Contains(data, []byte(fuzzMark)) && strings.Contains(err.Error(), fuzzMark) {
			t.Fatalf("an error shows a variable's value:\n%v\nfile %q", err, data)
		}
		all := []error{err}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			all = j.Unwrap()
		}
		for _, e := range all {
			var fe *bus.EndpointsFileError
			if !errors.As(e, &fe) || fe.File != "fuzz.yaml" || fe.Line < 0 {
				t.Fatalf("%v (%T) is not an *EndpointsFileError of fuzz.yaml", e, e)
			}
			var ee *bus.EndpointError
			if errors.As(e, &ee) && (ee.Endpoint == "" || ee.Key == "" || ee.Problem == "") {
				t.Fatalf("%v leaves the endpoint, key or problem empty: %+v", e, ee)
			}
		}
	})
}
