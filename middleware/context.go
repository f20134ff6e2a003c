package middleware

import (
	"context"
	"net/http"
)

type ctxKey int

const (
	attemptKey ctxKey = iota
	headersKey
)

// WithAttempt returns ctx carrying the attempt number (1 for the first).
// Retry sets it on every attempt.
func WithAttempt(ctx context.Context, n int) context.Context {
	return context.WithValue(ctx, attemptKey, n)
}

// AttemptFromContext returns the attempt number Retry set, or 1 when the
// message is not under Retry.
func AttemptFromContext(ctx context.Context) int {
	if n, ok := ctx.Value(attemptKey).(int); ok {
		return n
	}
	return 1
}

// WithHeaders returns ctx carrying HTTP headers for the delivery of one
// attempt. The signer sets them; the deliver handler copies them onto the
// request. Headers live in the context, not in message metadata, so that
// tokens and signatures are never written to a transport or poison queue.
func WithHeaders(ctx context.Context, h http.Header) context.Context {
	return context.WithValue(ctx, headersKey, h)
}

// HeadersFromContext returns the headers set by WithHeaders, or nil.
func HeadersFromContext(ctx context.Context) http.Header {
	h, _ := ctx.Value(headersKey).(http.Header)
	return h
}
