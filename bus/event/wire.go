package event

// The wire protocol between an application on transport "http" and the
// `memhook serve` router it hands its events to: both sides refer to these.
const (
	// IngestPath takes one envelope per request.
	IngestPath = "/ingest"
	// IngestBatchPath takes a JSON array of envelopes.
	IngestBatchPath = "/ingest/batch"
	// MaxBatchEvents caps the events of one IngestBatchPath request.
	MaxBatchEvents = 1000
	// HeaderTraceparent is the W3C trace context of the event of an
	// IngestPath request (and the message metadata key that carries it,
	// and the header of every webhook attempt).
	HeaderTraceparent = "traceparent"
	// HeaderBatchTraceparents carries the trace contexts of the events of
	// an IngestBatchPath request: one per event, in order, separated by
	// commas, empty for an event without one. Sent only when some event
	// has one; a router ignores it unless it names every event.
	HeaderBatchTraceparents = "Memhook-Traceparents"
)

// BatchAnswer is the body of every answer of POST IngestBatchPath that got
// as far as queueing: the first Accepted events of the batch, in order,
// are in the delivery queue (Duplicates of them had been accepted before,
// within the replay window, and were not queued again); the others were
// not taken and may be sent again.
type BatchAnswer struct {
	Accepted   int    `json:"accepted"`
	Duplicates int    `json:"duplicates"`
	Error      string `json:"error,omitempty"`
}
