package bus

import (
	"encoding/json"
	"errors"
	"time"

	"github.com/memhook/memhook/attemptlog"
	"github.com/memhook/memhook/handlers"
)

// What an operator reads and does (issue #13): the attempt log, the
// dead-letter queue of every transport, one event's story. The admin API
// and the dashboard of `memhook serve` (package admin) show them; an
// embedder calls the Bus methods that return them.

// Attempt is one delivery attempt, as the attempt log keeps it. It never
// holds a request header. See attemptlog.Attempt.
type Attempt = attemptlog.Attempt

// MaxAttemptResponse is how much of a response body the attempt log keeps.
const MaxAttemptResponse = handlers.MaxAttemptResponse

// The error classes of a failed attempt (Attempt.ErrorClass).
const (
	AttemptErrorStatus  = handlers.ErrorClassStatus // the receiver answered, not 2xx (see Status)
	AttemptErrorTimeout = handlers.ErrorClassTimeout
	AttemptErrorRefused = handlers.ErrorClassRefused
	AttemptErrorReset   = handlers.ErrorClassReset
	AttemptErrorDNS     = handlers.ErrorClassDNS
	AttemptErrorTLS     = handlers.ErrorClassTLS
	AttemptErrorOther   = handlers.ErrorClassOther
)

// AttemptFilter selects attempts, newest first: Status is "failed",
// "succeeded" or "" for both; Limit 0 means 100, at most 1 000; Cursor
// continues where AttemptPage.Next left it. See attemptlog.Filter.
type AttemptFilter = attemptlog.Filter

// AttemptPage is one page of attempts, newest first; Next, when not
// empty, is the cursor of the next (older) page. See attemptlog.Page.
type AttemptPage = attemptlog.Page

// DeadLetter is one event that ended poisoned for one endpoint, as its
// dead-letter queue keeps it.
type DeadLetter struct {
	// ID identifies the entry in the queue (a Redis stream id, or the
	// memory ring's sequence); Replay takes it.
	ID         string    `json:"id"`
	EventID    string    `json:"event_id"`
	EventType  string    `json:"event_type"`
	UserID     string    `json:"user_id"`
	Endpoint   string    `json:"endpoint"`
	Reason     string    `json:"reason"`
	Status     int       `json:"status"`
	Attempts   int       `json:"attempts"`
	PoisonedAt time.Time `json:"poisoned_at"`
	// OrderBroken, on an endpoint with ordering user, says that the
	// user's later events went on without this one.
	OrderBroken string          `json:"order_broken,omitempty"`
	Payload     json.RawMessage `json:"payload"`
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
