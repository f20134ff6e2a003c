package main_test

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
)

// TestBenchOrdering: the ordering runs, on memory and on Redis with two
// routers, deliver every event once in both phases and report the
// ordered phase's events/s with its ratio to the unordered one's (two
// rounds: each phase once first), in the JSON and in the table.
func TestBenchOrdering(t *testing.T) {
	needRedisServer(t)
	const n = 300
	code, stdout, stderr := run(t, env{}, benchTimeout, "bench", "--json", "-n", strconv.Itoa(n), "--runs", "2", "--transports", "ordering,ordering-redis")
	var rows []struct {
		Name         string  `json:"name"`
		Received     int     `json:"received"`
		Duplicates   int     `json:"duplicates"`
		Missing      int     `json:"missing"`
		EventsPerSec float64 `json:"events_per_sec"`
		Error        string  `json:"error"`
		Ordering     *struct {
			Transport       string  `json:"transport"`
			Routers         int     `json:"routers"`
			Users           int     `json:"users"`
			UnorderedPerSec float64 `json:"unordered_events_per_sec"`
			Ratio           float64 `json:"ratio"`
			RatioMin        float64 `json:"ratio_min"`
			RatioMax        float64 `json:"ratio_max"`
		} `json:"ordering"`
	}
	if err := json.Unmarshal([]byte(stdout), &rows); err != nil {
		t.Fatalf("exit %d; stdout is not the JSON rows: %v\nstdout:\n%s\nstderr:\n%s", code, err, stdout, stderr)
	}
	if code != 0 {
		t.Errorf("exit %d, want 0\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if len(rows) != 2 {
		t.Fatalf("%d rows, want the two ordering runs: %+v", len(rows), rows)
	}
	for i, transport := range []string{"memory", "redis"} {
		r := rows[i]
		if !strings.HasPrefix(r.Name, "ordering per user ("+transport) || r.Ordering == nil || r.Ordering.Transport != transport {
			t.Fatalf("row %d: %+v, want the %s ordering run", i, r, transport)
		}
		d := r.Ordering
		if r.Received != n || r.Missing != 0 || r.Duplicates != 0 || r.Error != "" || r.EventsPerSec <= 0 {
			t.Errorf("%s: %+v, want %d received once each", r.Name, r, n)
		}
		if d.Users != 10000 || d.UnorderedPerSec <= 0 || d.Ratio <= 0 || d.RatioMin > d.Ratio || d.RatioMax < d.Ratio {
			t.Errorf("%s: ordering detail %+v, want 10 000 users, the unordered rate and the ratio within its range", r.Name, *d)
		}
		if want := map[string]int{"memory": 0, "redis": 2}[transport]; d.Routers != want {
			t.Errorf("%s: %d routers, want %d", r.Name, d.Routers, want)
		}
	}

	code, stdout, stderr = run(t, env{}, benchTimeout, "bench", "-n", "100", "--transports", "ordering")
	if code != 0 || !strings.Contains(stdout, "ordering per user (memory): ordering per user at ") || !strings.Contains(stdout, "of the events/s with ordering off") {
		t.Errorf("exit %d; table without the ordering line:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
}
