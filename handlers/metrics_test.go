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

// Each endpoint's counters, retries waiting, backlog and state are
// series labelled by endpoint.
func TestMetricsPerEndpoint(t *testing.T) {
	m := handlers.NewMetrics(func() handlers.Snapshot {
		return handlers.Snapshot{Endpoints: []handlers.EndpointCounts{
			{Name: "default", State: "active", Delivered: 7},
			{Name: "crm", State: "paused", Delivered: 2, Poisoned: 5, Shed: 4, Retrying: 3, Backlog: 9},
		}}
	})
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, s := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range s.GetLabel() {
				key += "," + l.GetName() + "=" + l.GetValue()
			}
			switch {
			case s.GetCounter() != nil:
				got[key] = s.GetCounter().GetValue()
			case s.GetGauge() != nil:
				got[key] = s.GetGauge().GetValue()
			}
		}
	}
	for key, want := range map[string]float64{
		"memhook_endpoint_events_total,endpoint=default,outcome=delivered": 7,
		"memhook_endpoint_events_total,endpoint=crm,outcome=delivered":     2,
		"memhook_endpoint_events_total,endpoint=crm,outcome=poisoned":      5,
		"memhook_endpoint_events_total,endpoint=crm,outcome=shed":          4,
		"memhook_endpoint_retries_waiting,endpoint=crm":                    3,
		"memhook_endpoint_backlog,endpoint=crm":                            9,
		"memhook_endpoint_state,endpoint=crm,state=paused":                 1,
		"memhook_endpoint_state,endpoint=crm,state=active":                 0,
		"memhook_endpoint_state,endpoint=default,state=active":             1,
	} {
		if v, ok := got[key]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", key, v, ok, want)
		}
	}
}
