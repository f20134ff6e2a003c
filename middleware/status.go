package middleware

import (
	"context"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// StatusError is the error of a delivery that reached the receiver and got
// an answer other than 2xx. The deliver handler returns it; Retry and
// PoisonQueue read it with errors.As.
type StatusError struct {
	// Code is the HTTP status code the receiver answered.
	Code int
	// RetryAfter is the receiver's Retry-After, or 0 when it sent none.
	RetryAfter time.Duration
}

// Error implements error. It never holds the URL, headers or body.
func (e *StatusError) Error() string {
	s := "webhook receiver answered " + strconv.Itoa(e.Code)
	if t := http.StatusText(e.Code); t != "" {
		s += " " + t
	}
	return s
}

// Temporary reports whether a later attempt may succeed: 408, 425, 429 and
// every 5xx. Other codes (3xx: redirects are not followed; 4xx) are
// permanent.
func (e *StatusError) Temporary() bool {
	switch e.Code {
	case http.StatusRequestTimeout, http.StatusTooEarly, http.StatusTooManyRequests:
		return true
	}
	return e.Code >= 500
}

// ParseRetryAfter reads a Retry-After header (delay-seconds or HTTP-date,
// RFC 9110 §10.2.3) relative to now; 0 when absent or unreadable.
func ParseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil {
		if secs < 0 {
			return 0
		}
		if secs > int(math.MaxInt64/time.Second) {
			return math.MaxInt64 // saturate rather than overflow
		}
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}

// Retryable reports whether a delivery that failed with err may succeed on
// another attempt: a temporary *StatusError, a timeout, or a connection
// error. A cancelled context, a permanent status and anything else (a
// request that cannot be built) are not retryable.
func Retryable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	var se *StatusError
	if errors.As(err, &se) {
		return se.Temporary()
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return true // timeouts; the receiver closed the connection mid-answer
	}
	// *url.Error satisfies net.Error whatever it wraps ("unsupported
	// protocol scheme" too): look at what it wraps.
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	var oe *net.OpError
	return errors.As(err, &oe)
}
