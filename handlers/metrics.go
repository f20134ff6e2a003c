package handlers

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/memhook/memhook/bus/event"
)

// Counts are one event type's counters, as the metrics collector reads
// them.
type Counts struct {
	Accepted, Delivered, Retried, Filtered, Poisoned, Dropped, Undelivered uint64
}

// Snapshot is what the metrics collector reads at each scrape.
type Snapshot struct {
	ByType   map[event.Type]Counts
	Queued   int
	InFlight int
	// RetriesWaiting counts the events whose next attempt waits in the
	// delay store; OldestRetryDue is the earliest due time among them,
	// zero when none waits.
	RetriesWaiting int
	OldestRetryDue time.Time
}

// Metrics exposes memhook's counters to Prometheus: memhook_events_total
// by event type and outcome (accepted, delivered, retried, filtered,
// poisoned, dropped, undelivered), memhook_queue_depth,
// memhook_deliveries_in_flight, memhook_retries_waiting,
// memhook_oldest_retry_due_timestamp_seconds (the earliest due time of a
// waiting retry as a Unix time, 0 when none waits), and the
// memhook_delivery_seconds histogram that ObserveDelivery feeds. Register
// it on a prometheus.Registry.
type Metrics struct {
	snapshot    func() Snapshot
	events      *prometheus.Desc
	queued      *prometheus.Desc
	inFlight    *prometheus.Desc
	retries     *prometheus.Desc
	oldestRetry *prometheus.Desc
	latency     *prometheus.HistogramVec
}

var _ prometheus.Collector = (*Metrics)(nil)

// NewMetrics returns a collector that calls snapshot at every scrape.
func NewMetrics(snapshot func() Snapshot) *Metrics {
	return &Metrics{
		snapshot: snapshot,
		events: prometheus.NewDesc("memhook_events_total",
			"Events by type and outcome (retried counts retry attempts).", []string{"event", "outcome"}, nil),
		queued: prometheus.NewDesc("memhook_queue_depth",
			"Events waiting in the in-memory delivery queue.", nil, nil),
		inFlight: prometheus.NewDesc("memhook_deliveries_in_flight",
			"Deliveries running now.", nil, nil),
		retries: prometheus.NewDesc("memhook_retries_waiting",
			"Events whose next attempt waits in the delay store (on Redis: every router's).", nil, nil),
		oldestRetry: prometheus.NewDesc("memhook_oldest_retry_due_timestamp_seconds",
			"Unix time the earliest waiting retry is due; 0 when none waits.", nil, nil),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "memhook_delivery_seconds",
			Help:    "Duration of successful delivery attempts, by event type.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"event"}),
	}
}

// ObserveDelivery records one successful attempt; pass it to
// bus.WithDeliveryObserver.
func (m *Metrics) ObserveDelivery(t event.Type, _ int, took time.Duration) {
	m.latency.WithLabelValues(string(t)).Observe(took.Seconds())
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.events
	ch <- m.queued
	ch <- m.inFlight
	ch <- m.retries
	ch <- m.oldestRetry
	m.latency.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	s := m.snapshot()
	for t, c := range s.ByType {
		for _, kv := range []struct {
			outcome string
			v       uint64
		}{
			{"accepted", c.Accepted}, {"delivered", c.Delivered}, {"retried", c.Retried},
			{"filtered", c.Filtered}, {"poisoned", c.Poisoned}, {"dropped", c.Dropped},
			{"undelivered", c.Undelivered},
		} {
			ch <- prometheus.MustNewConstMetric(m.events, prometheus.CounterValue, float64(kv.v), string(t), kv.outcome)
		}
	}
	ch <- prometheus.MustNewConstMetric(m.queued, prometheus.GaugeValue, float64(s.Queued))
	ch <- prometheus.MustNewConstMetric(m.inFlight, prometheus.GaugeValue, float64(s.InFlight))
	ch <- prometheus.MustNewConstMetric(m.retries, prometheus.GaugeValue, float64(s.RetriesWaiting))
	var due float64
	if !s.OldestRetryDue.IsZero() {
		due = float64(s.OldestRetryDue.UnixMilli()) / 1e3
	}
	ch <- prometheus.MustNewConstMetric(m.oldestRetry, prometheus.GaugeValue, due)
	m.latency.Collect(ch)
}
