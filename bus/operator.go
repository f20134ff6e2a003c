package bus

import (
	"encoding/json"
	"errors"
	"time"
)

// What an operator reads and does (issue #13): the attempt log, the
// dead-letter queue of every transport, one event's story. The admin API
// and the dashboard of `memhook serve` (package admin) show them; an
// embedder calls the Bus methods that return them.

// Attempt is one delivery attempt, as the attempt log keeps it. It never
// holds a request header.
type Attempt struct {
	Endpoint  string        `json:"endpoint"`
	EventID   string        `json:"event_id"`
	EventType string        `json:"event_type"`
	UserID    string        `json:"user_id"`
	Number    int           `json:"attempt"` // 1 for the first
	Start     time.Time     `json:"start"`
	Duration  time.Duration `json:"duration_ns"`
	Succeeded bool          `json:"succeeded"`
	// Status is the receiver's answer, 0 when it gave none.
	Status int `json:"status,omitempty"`
	// ErrorClass says why an attempt failed: one of the AttemptError…
	// constants; empty when it succeeded.
	ErrorClass string `json:"error_class,omitempty"`
	// Error is the failure, URL redacted; empty when it succeeded.
	Error string `json:"error,omitempty"`
	// Response is the first MaxAttemptResponse bytes of the response body.
	Response string `json:"response,omitempty"`
	// TraceID is the W3C trace id the event carried, if any.
	TraceID string `json:"trace_id,omitempty"`
}

// MaxAttemptResponse is how much of a response body the attempt log keeps.
const MaxAttemptResponse = 1 << 10

// The error classes of a failed attempt.
const (
	AttemptErrorStatus  = "status" // the receiver answered, not 2xx (see Status)
	AttemptErrorTimeout = "timeout"
	AttemptErrorRefused = "connection_refused"
	AttemptErrorReset   = "connection_reset"
	AttemptErrorDNS     = "dns"
	AttemptErrorTLS     = "tls"
	AttemptErrorOther   = "other"
)

// AttemptFilter selects attempts, newest first.
type AttemptFilter struct {
	Endpoint string // "" for every endpoint
	EventID  string // "" for every event
	// Status is "failed", "succeeded" or "" for both.
	Status string
	Since  time.Time // zero for no bound
	// Limit is at most how many to return; 0 means 100, at most 1 000.
	Limit int
	// Cursor continues a listing where AttemptPage.Next left it; "" for
	// the newest.
	Cursor string
}

// AttemptPage is one page of attempts, newest first; Next, when not
// empty, is the cursor of the next (older) page.
type AttemptPage struct {
	Attempts []Attempt `json:"attempts"`
	Next     string    `json:"next,omitempty"`
}

// DeadLetter is one event that ended poisoned for one endpoint, as its
// dead-letter queue keeps it.
type DeadLetter struct {
	// ID identifies the entry in the queue (a Redis stream id, or the
	// memory ring's sequence); Replay takes it.
	ID         string          `json:"id"`
	EventID    string          `json:"event_id"`
	EventType  string          `json:"event_type"`
	UserID     string          `json:"user_id"`
	Endpoint   string          `json:"endpoint"`
	Reason     string          `json:"reason"`
	Status     int             `json:"status"`
	Attempts   int             `json:"attempts"`
	PoisonedAt time.Time       `json:"poisoned_at"`
	Payload    json.RawMessage `json:"payload"`
}

// DeadLetterFilter selects dead letters, oldest first.
type DeadLetterFilter struct {
	Endpoint string    // "" for every endpoint
	Since    time.Time // poisoned at or after; zero for no bound
	// Limit is at most how many to return; 0 means 100.
	Limit int
}

// EventRecord is what is known of one event: its envelope while a store
// still holds it (nil otherwise) and its attempts on every endpoint,
// newest first.
type EventRecord struct {
	ID       string          `json:"id"`
	Envelope json.RawMessage `json:"envelope"`
	Attempts []Attempt       `json:"attempts"`
}

// ErrUnknownEvent is returned for an event id nothing is known of.
var ErrUnknownEvent = errors.New("bus: no such event")
