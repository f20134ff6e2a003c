package handlers_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/memhook/memhook/handlers"
)

// gauges gathers m and returns the value of every gauge without labels, by
// name.
func gauges(t *testing.T, m *handlers.Metrics) map[string]float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, s := range mf.GetMetric() {
			if g := s.GetGauge(); g != nil && len(s.GetLabel()) == 0 {
				out[mf.GetName()] = g.GetValue()
			}
		}
	}
	return out
}

func TestMetricsRetriesWaiting(t *testing.T) {
	due := time.Date(2030, 1, 2, 3, 4, 5, 250e6, time.UTC)
	tests := []struct {
		name       string
		snapshot   handlers.Snapshot
		waiting    float64
		oldestUnix float64
	}{
		{name: "none waiting", snapshot: handlers.Snapshot{}, waiting: 0, oldestUnix: 0},
		{name: "three waiting", snapshot: handlers.Snapshot{RetriesWaiting: 3, OldestRetryDue: due},
			waiting: 3, oldestUnix: float64(due.Unix()) + 0.25},
		{name: "a due time in another zone", snapshot: handlers.Snapshot{RetriesWaiting: 1, OldestRetryDue: due.In(time.FixedZone("x", 5*3600))},
			waiting: 1, oldestUnix: float64(due.Unix()) + 0.25},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := gauges(t, handlers.NewMetrics(func() handlers.Snapshot { return tt.snapshot }))
			for name, want := range map[string]float64{
				"memhook_retries_waiting":                    tt.waiting,
				"memhook_oldest_retry_due_timestamp_seconds": tt.oldestUnix,
			} {
				got, ok := g[name]
				if !ok {
					t.Errorf("no gauge %s; gauges: %v", name, g)
				} else if got != want {
					t.Errorf("%s = %v, want %v", name, got, want)
				}
			}
		})
	}
}
