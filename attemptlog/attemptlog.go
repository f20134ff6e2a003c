// Package attemptlog keeps a bounded log of delivery attempts for
// operators: which endpoint, which event, when, how long, the receiver's
// status or why it failed, and the start of its answer. Two
// implementations of Log: Ring in memory, Redis on a stream every router
// process shares.
//
// Recording never slows a delivery: Record never blocks on I/O (Ring
// copies the attempt into its ring under a short lock; Redis hands it to
// one writer goroutine that batches, and drops what its buffer cannot
// hold). The bus records every attempt of every endpoint
// (handlers.DeliverConfig.OnAttempt) and answers queries with it
// (bus.Bus.Attempts).
package attemptlog

import (
	"context"
	"fmt"
	"time"
)

// Attempt is one delivery attempt, as the log keeps it. It never holds a
// request header.
type Attempt struct {
	// Endpoint is the endpoint's name ("default" for the one of the
	// seed's variables).
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
	// ErrorClass says why an attempt failed: one of the
	// handlers.ErrorClass… values (bus.AttemptError…); empty when it
	// succeeded.
	ErrorClass string `json:"error_class,omitempty"`
	// Error is the failure, URL redacted; empty when it succeeded.
	Error string `json:"error,omitempty"`
	// Response is the start of the response body (at most
	// handlers.MaxAttemptResponse bytes).
	Response string `json:"response,omitempty"`
	// TraceID is the W3C trace id the event carried, if any.
	TraceID string `json:"trace_id,omitempty"`
}

// The values of Filter.Status.
const (
	StatusFailed    = "failed"
	StatusSucceeded = "succeeded"
)

// Limits of Filter.Limit.
const (
	// DefaultLimit is how many attempts a page holds when Filter.Limit
	// is 0.
	DefaultLimit = 100
	// MaxLimit is the largest Filter.Limit.
	MaxLimit = 1000
)

// Filter selects attempts, newest first.
type Filter struct {
	Endpoint string // "" for every endpoint
	EventID  string // "" for every event
	// Status is StatusFailed, StatusSucceeded or "" for both.
	Status string
	Since  time.Time // attempts started at or after; zero for no bound
	// Limit is at most how many to return; 0 means DefaultLimit, at most
	// MaxLimit.
	Limit int
	// Cursor continues a listing where Page.Next left it; "" for the
	// newest. It is opaque, and only the log that made it reads it.
	Cursor string
}

// ParamError is a bad Filter (or event id): Param names it as the admin
// API's query parameter does (endpoint, event, status, since, limit,
// cursor). Returned by Filter.Validate and Log.Query; match it with
// errors.As.
type ParamError struct {
	Param   string
	Value   string
	Problem string
}

// Error implements error.
func (e *ParamError) Error() string {
	return fmt.Sprintf("attempts: %s %q: %s", e.Param, e.Value, e.Problem)
}

// Validate reports the first bad field of f as a *ParamError; the cursor
// is checked by the log that reads it.
func (f Filter) Validate() error {
	switch f.Status {
	case "", StatusFailed, StatusSucceeded:
	default:
		return &ParamError{Param: "status", Value: f.Status, Problem: "must be failed or succeeded"}
	}
	if f.Limit < 0 || f.Limit > MaxLimit {
		return &ParamError{Param: "limit", Value: fmt.Sprint(f.Limit), Problem: fmt.Sprintf("must be from 0 to %d", MaxLimit)}
	}
	return nil
}

// limit is f's page size.
func (f Filter) limit() int {
	if f.Limit == 0 {
		return DefaultLimit
	}
	return f.Limit
}

// match reports whether f selects a.
func (f Filter) match(a *Attempt) bool {
	switch {
	case f.Endpoint != "" && a.Endpoint != f.Endpoint,
		f.EventID != "" && a.EventID != f.EventID,
		f.Status == StatusFailed && a.Succeeded,
		f.Status == StatusSucceeded && !a.Succeeded,
		!f.Since.IsZero() && a.Start.Before(f.Since):
		return false
	}
	return true
}

// Page is one page of attempts, newest first; Next, when not empty, is
// the cursor of the next (older) page. A page may hold fewer than the
// Limit while Next is set (a Redis query reads a bounded number of
// entries per call), and Next may lead to an empty page.
type Page struct {
	Attempts []Attempt `json:"attempts"` // never nil
	Next     string    `json:"next,omitempty"`
}

// Log keeps the latest attempts, bounded, and lists them.
type Log interface {
	// Record keeps a. It never blocks on I/O and never fails: an attempt
	// it cannot keep is counted and dropped. Safe for concurrent use.
	Record(a Attempt)
	// Query returns the attempts f selects, newest first, one page at a
	// time. A bad f gives a *ParamError.
	Query(ctx context.Context, f Filter) (Page, error)
	// Close writes out what Record was given, then releases the log.
	// Record after Close drops. Idempotent.
	Close() error
}
