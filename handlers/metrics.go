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
	// Endpoints are each endpoint's counters.
	Endpoints []EndpointCounts
}

// EndpointCounts are one endpoint's counters and state.
type EndpointCounts struct {
	Name                                   string
	State                                  string // active, paused or disabled
	Delivered, Retried, Filtered, Poisoned uint64
	Undelivered, Shed                      uint64
	Retrying, Backlog                      int
}

// endpointStates are the values of the state label of
// memhook_endpoint_state.
var endpointStates = []string{"active", "paused", "disabled"}

// Metrics exposes memhook's counters to Prometheus: memhook_events_total
// by event type and outcome (accepted, delivered, retried, filtered,
// poisoned, dropped, undelivered), memhook_queue_depth,
// memhook_deliveries_in_flight, memhook_retries_waiting,
// memhook_oldest_retry_due_timestamp_seconds (the earliest due time of a
// waiting retry as a Unix time, 0 when none waits), and the
// memhook_delivery_seconds histogram that ObserveDelivery feeds; per
// endpoint memhook_endpoint_events_total by endpoint and outcome
// (delivered, retried, filtered, poisoned, undelivered, shed),
// memhook_endpoint_retries_waiting, memhook_endpoint_backlog and
// memhook_endpoint_state (1 for the endpoint's state, 0 for the others).
// Register it on a prometheus.Registry.
type Metrics struct {
	snapshot    func() Snapshot
	events      *prometheus.Desc
	queued      *prometheus.Desc
	inFlight    *prometheus.Desc
	retries     *prometheus.Desc
	oldestRetry *prometheus.Desc
	epEvents    *prometheus.Desc
	epRetrying  *prometheus.Desc
	epBacklog   *prometheus.Desc
	epState     *prometheus.Desc
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
		epEvents: prometheus.NewDesc("memhook_endpoint_events_total",
			"Events of each endpoint by outcome (retried counts retry attempts; shed: moved to its dead-letter queue from a backlog past its bound).",
			[]string{"endpoint", "outcome"}, nil),
		epRetrying: prometheus.NewDesc("memhook_endpoint_retries_waiting",
			"Events of each endpoint whose next attempt waits in the delay store.", []string{"endpoint"}, nil),
		epBacklog: prometheus.NewDesc("memhook_endpoint_backlog",
			"Events of each endpoint not yet handled (as far as this process knows).", []string{"endpoint"}, nil),
		epState: prometheus.NewDesc("memhook_endpoint_state",
			"1 for each endpoint's state (active, paused, disabled), 0 for the others.", []string{"endpoint", "state"}, nil),
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
	ch <- m.epEvents
	ch <- m.epRetrying
	ch <- m.epBacklog
	ch <- m.epState
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
	for _, e := range s.Endpoints {
		for _, kv := range []struct {
			outcome string
			v       uint64
		}{
			{"delivered", e.Delivered}, {"retried", e.Retried}, {"filtered", e.Filtered},
			{"poisoned", e.Poisoned}, {"undelivered", e.Undelivered}, {"shed", e.Shed},
		} {
			ch <- prometheus.MustNewConstMetric(m.epEvents, prometheus.CounterValue, float64(kv.v), e.Name, kv.outcome)
		}
		ch <- prometheus.MustNewConstMetric(m.epRetrying, prometheus.GaugeValue, float64(e.Retrying), e.Name)
		ch <- prometheus.MustNewConstMetric(m.epBacklog, prometheus.GaugeValue, float64(e.Backlog), e.Name)
		for _, st := range endpointStates {
			v := 0.0
			if st == e.State {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(m.epState, prometheus.GaugeValue, v, e.Name, st)
		}
	}
	m.latency.Collect(ch)
}
