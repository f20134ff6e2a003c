package bus

import (
	"context"
	"strings"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/memhook/memhook/attemptlog"
	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/handlers"
	"github.com/memhook/memhook/internal/redact"
	"github.com/memhook/memhook/transports"
)

// ParamError is a bad parameter of an operator's query (Attempts,
// EventAttempts): Param names it as the admin API's query parameter does
// (endpoint, event, status, since, limit, cursor). Match it with
// errors.As.
type ParamError = attemptlog.ParamError

// openAttempts makes the attempt log of Config.AttemptLogMax: on Redis
// the stream every router shares, elsewhere a ring in this process; none
// when Disabled.
func (b *Bus) openAttempts() error {
	n := b.cfg.AttemptLogMax
	if n == Disabled {
		return nil
	}
	if _, ok := b.transport.(*transports.RedisTransport); ok {
		l, err := attemptlog.NewRedis(attemptlog.RedisConfig{Redis: b.cfg.RedisConfig(), MaxLen: int64(n), Logger: b.log})
		if err != nil {
			return err
		}
		b.attempts = l
		return nil
	}
	b.attempts = attemptlog.NewRing(n)
	return nil
}

// closeAttempts writes out and closes the attempt log (the router has
// stopped: no attempt comes after).
func (b *Bus) closeAttempts() error {
	if b.attempts == nil {
		return nil
	}
	return b.attempts.Close()
}

// onAttempt records one attempt of the endpoint in the attempt log.
// A receiver's answer may echo what it was sent: scrub takes the
// endpoint's token and secrets out of it before it is kept.
func (r *route) onAttempt(msg *message.Message, res handlers.AttemptResult, scrub *strings.Replacer) {
	a := Attempt{
		Endpoint:   r.displayName(),
		EventID:    msg.UUID,
		EventType:  msg.Metadata.Get(event.MetaType),
		UserID:     msg.Metadata.Get(event.MetaUserID),
		Number:     res.Attempt,
		Start:      res.Start,
		Duration:   res.Duration,
		Succeeded:  res.Err == nil,
		Status:     res.Status,
		ErrorClass: res.Class,
		TraceID:    handlers.TraceID(msg.Metadata.Get(handlers.TraceparentKey)),
	}
	if len(res.Response) > 0 { // the Replacer allocates even for ""
		a.Response = scrub.Replace(string(res.Response))
	}
	if res.Err != nil {
		a.Error = scrub.Replace(res.Err.Error())
	}
	r.b.attempts.Record(a)
}

// credentialScrubber replaces token and each secret (also without its
// whsec_ prefix) with REDACTED.
func credentialScrubber(token, secret string) *strings.Replacer {
	return redact.Credentials([]string{token}, []string{secret})
}

// Attempts returns the delivery attempts f selects, newest first, one
// page at a time: on Redis those of every router sharing it, elsewhere
// this process's. A bad filter (Status not "", "failed" or "succeeded";
// Limit outside 0…1 000; a cursor this log did not make) is a
// *ParamError naming the parameter. With the attempt log Disabled the
// page is empty. On Redis it returns Redis's error, and fails after Close
// (its client is closed); the memory ring stays readable after Close.
func (b *Bus) Attempts(ctx context.Context, f AttemptFilter) (AttemptPage, error) {
	if err := f.Validate(); err != nil {
		return AttemptPage{}, err
	}
	if b.attempts == nil {
		return AttemptPage{Attempts: []Attempt{}}, nil
	}
	return b.attempts.Query(ctx, f)
}

// EventAttempts returns every attempt the attempt log holds of event id,
// on every endpoint, newest first; none (and no error) when it holds
// none. It reads the whole log (on Redis, up to MEMHOOK_ATTEMPT_LOG_MAX
// entries in pages): ctx bounds it. An empty id is a *ParamError.
func (b *Bus) EventAttempts(ctx context.Context, id string) ([]Attempt, error) {
	if id == "" {
		return nil, &ParamError{Param: "event", Value: id, Problem: "must not be empty"}
	}
	out := []Attempt{}
	if b.attempts == nil {
		return out, nil
	}
	f := AttemptFilter{EventID: id, Limit: attemptlog.MaxLimit}
	for {
		p, err := b.attempts.Query(ctx, f)
		if err != nil {
			return nil, err
		}
		out = append(out, p.Attempts...)
		if p.Next == "" {
			return out, nil
		}
		f.Cursor = p.Next
	}
}

type traceparentKey struct{}

// WithTraceparent returns ctx carrying the W3C trace context tp (the
// value of a traceparent header, version 00: "00-<32 hex trace id>-<16
// hex parent id>-<2 hex flags>"). An event given to Emit or Send with it
// carries it to the receiver: every attempt sends it in the traceparent
// header, and the attempt log keeps its trace id. An invalid tp is
// dropped: ctx is returned as it is.
func WithTraceparent(ctx context.Context, tp string) context.Context {
	if !handlers.ValidTraceparent(tp) {
		return ctx
	}
	return context.WithValue(ctx, traceparentKey{}, tp)
}

// trace puts ctx's traceparent (WithTraceparent), if any, in msg's
// metadata, where the delivery handler finds it on every copy.
func trace(ctx context.Context, msg *message.Message) {
	if tp, ok := ctx.Value(traceparentKey{}).(string); ok {
		msg.Metadata[handlers.TraceparentKey] = tp
	}
}
