package middleware_test

import (
	"context"
	"errors"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/memhook/memhook/internal/redistest"
	"github.com/memhook/memhook/middleware"
	"github.com/memhook/memhook/transports"
)

// flakyPublisher fails its first failFirst publishes (all of them with
// failFirst < 0) with errFlaky, then keeps what is published.
type flakyPublisher struct {
	mu        sync.Mutex
	failFirst int
	tries     int
	msgs      []*message.Message
}

var errFlaky = errors.New("OOM command not allowed when used memory > 'maxmemory'")

func (p *flakyPublisher) Publish(_ string, msgs ...*message.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tries++
	if p.failFirst < 0 || p.tries <= p.failFirst {
		return errFlaky
	}
	p.msgs = append(p.msgs, msgs...)
	return nil
}

func (p *flakyPublisher) Close() error { return nil }

func (p *flakyPublisher) recover() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.failFirst = 0
}

func (p *flakyPublisher) published() []*message.Message {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*message.Message(nil), p.msgs...)
}

// publishFailure is one OnPublishFailed call.
type publishFailure struct {
	failures int
	retryIn  time.Duration
	err      error
}

// poisonRecorder records PoisonQueue's hooks.
type poisonRecorder struct {
	mu       sync.Mutex
	failed   []publishFailure
	poisoned []*message.Message
	errs     []error
}

func (r *poisonRecorder) queue(pub message.Publisher, retryFor time.Duration) middleware.PoisonQueue {
	return middleware.PoisonQueue{
		Publisher: pub,
		RetryFor:  retryFor,
		OnPoisoned: func(m *message.Message, err error) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.poisoned = append(r.poisoned, m)
			r.errs = append(r.errs, err)
		},
		OnPublishFailed: func(_ *message.Message, failures int, retryIn time.Duration, err error) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.failed = append(r.failed, publishFailure{failures, retryIn, err})
		},
	}
}

func (r *poisonRecorder) failures() []publishFailure {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]publishFailure(nil), r.failed...)
}

// A failed publish to the poison topic is tried again within the handling,
// with doubling waits, each failure reported; the handler is not run again.
func TestPoisonQueueRetriesAFailedPublish(t *testing.T) {
	pub := &flakyPublisher{failFirst: 2}
	rec := &poisonRecorder{}
	calls := 0
	h := rec.queue(pub, time.Minute).Middleware(func(*message.Message) ([]*message.Message, error) {
		calls++
		return nil, &middleware.GiveUpError{Attempts: 1, Err: &middleware.StatusError{Code: 400}}
	})
	start := time.Now()
	if _, err := h(newMessage()); err != nil {
		t.Fatalf("PoisonQueue = %v; want nil (ack) once the third publish succeeded", err)
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Errorf("took %s: did not wait 100ms + 200ms between the tries", took)
	}
	if calls != 1 {
		t.Errorf("handler ran %d times, want 1", calls)
	}
	if n := len(pub.published()); n != 1 {
		t.Errorf("%d messages poisoned, want 1", n)
	}
	want := []publishFailure{{1, 100 * time.Millisecond, errFlaky}, {2, 200 * time.Millisecond, errFlaky}}
	if got := rec.failures(); len(got) != len(want) {
		t.Errorf("OnPublishFailed calls = %v, want %v", got, want)
	} else {
		for i := range want {
			if got[i].failures != want[i].failures || got[i].retryIn != want[i].retryIn || !errors.Is(got[i].err, errFlaky) {
				t.Errorf("OnPublishFailed call %d = %+v, want %+v", i, got[i], want[i])
			}
		}
	}
}

// A publish that keeps failing is given up after RetryFor: the message is
// nacked, and its next handling (the copy a transport hands out again)
// goes straight to the poison publish, without running the handler: a
// receiver that refused an event for good does not get it again. Once the
// publish works, the copy carries the first failure and not the mark.
func TestPoisonQueueMarksAMessageItCouldNotPoison(t *testing.T) {
	pub := &flakyPublisher{failFirst: -1}
	rec := &poisonRecorder{}
	calls := 0
	failure := &middleware.GiveUpError{Attempts: 2, Err: &middleware.StatusError{Code: 422}}
	h := rec.queue(pub, 250*time.Millisecond).Middleware(func(*message.Message) ([]*message.Message, error) {
		calls++
		return nil, failure
	})
	orig := newMessage()
	before := maps.Clone(orig.Metadata)
	start := time.Now()
	_, err := h(orig)
	took := time.Since(start)
	if err == nil {
		t.Fatal("PoisonQueue acked a message it could not poison")
	}
	if !errors.Is(err, errFlaky) || !errors.Is(err, failure) || !strings.Contains(err.Error(), middleware.PoisonTopic) {
		t.Errorf("err = %v, want the failure and the publish error, naming the poison topic", err)
	}
	if took < 250*time.Millisecond || took > 2*time.Second {
		t.Errorf("gave up after %s, want RetryFor (250ms)", took)
	}
	fails := rec.failures()
	if len(fails) < 2 || fails[len(fails)-1].retryIn != 0 {
		t.Errorf("OnPublishFailed calls = %+v, want several, the last with retryIn 0 (giving up)", fails)
	}

	// Handed out again, as the Redis and memory transports do with a
	// nacked message: a copy.
	again := orig.Copy()
	if _, err := h(again); err == nil {
		t.Fatal("second handling acked although the publish still fails")
	}
	if calls != 1 {
		t.Fatalf("handler ran %d times, want 1: a marked message must not be sent again", calls)
	}
	more := rec.failures()
	if len(more) <= len(fails) || more[len(fails)].failures != fails[len(fails)-1].failures+1 {
		t.Errorf("second handling's failures = %+v after %+v: want the count to go on", more[len(fails):], fails)
	}

	pub.recover()
	if _, err := h(again.Copy()); err != nil {
		t.Fatalf("third handling, publish working: %v", err)
	}
	if calls != 1 {
		t.Errorf("handler ran %d times, want 1", calls)
	}
	got := pub.published()
	if len(got) != 1 {
		t.Fatalf("%d messages poisoned, want 1", len(got))
	}
	want := maps.Clone(before)
	want[middleware.PoisonReasonKey] = failure.Error()
	want[middleware.PoisonTopicKey] = ""
	want[middleware.PoisonStatusKey] = "422"
	want[middleware.PoisonAttemptsKey] = "2"
	if !maps.Equal(map[string]string(got[0].Metadata), want) {
		t.Errorf("poisoned copy's metadata = %v, want %v (the first failure, no private mark)", got[0].Metadata, want)
	}
	if got[0].UUID != orig.UUID || string(got[0].Payload) != string(orig.Payload) {
		t.Errorf("poisoned copy %s %q, want %s %q", got[0].UUID, got[0].Payload, orig.UUID, orig.Payload)
	}
	rec.mu.Lock()
	poisoned, errs := rec.poisoned, rec.errs
	rec.mu.Unlock()
	if len(poisoned) != 1 || poisoned[0] != got[0] {
		t.Fatalf("OnPoisoned calls = %d, want 1 with the published copy", len(poisoned))
	}
	var se *middleware.StatusError
	if e := errs[0]; e.Error() != failure.Error() || !errors.As(e, &se) || se.Code != 422 {
		t.Errorf("OnPoisoned error = %v, want the first failure's text wrapping status 422", e)
	}

	// A message that merely has the same id is not marked: its handler runs.
	fresh := message.NewMessage(orig.UUID, orig.Payload)
	_, _ = h(fresh)
	if calls != 2 {
		t.Errorf("handler ran %d times, want 2: the mark lives in the message, not by id", calls)
	}
}

// Retrying the publish stops as soon as the message's context ends
// (shutdown), long before RetryFor; NoPoisonRetry tries once.
func TestPoisonQueuePublishRetryBounds(t *testing.T) {
	tests := []struct {
		name      string
		retryFor  time.Duration
		cancel    bool // cancel the message's context at the first failure
		wantTries int
	}{
		{name: "context ends", retryFor: time.Minute, cancel: true, wantTries: 1},
		{name: "NoPoisonRetry", retryFor: middleware.NoPoisonRetry, wantTries: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pub := &flakyPublisher{failFirst: -1}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			p := middleware.PoisonQueue{
				Publisher: pub,
				RetryFor:  tt.retryFor,
				OnPublishFailed: func(*message.Message, int, time.Duration, error) {
					if tt.cancel {
						cancel()
					}
				},
			}
			msg := newMessage()
			msg.SetContext(ctx)
			start := time.Now()
			_, err := p.Middleware(func(*message.Message) ([]*message.Message, error) {
				return nil, &middleware.StatusError{Code: 400}
			})(msg)
			if err == nil {
				t.Fatal("acked a message it could not poison")
			}
			if took := time.Since(start); took > time.Second {
				t.Errorf("took %s", took)
			}
			if pub.tries != tt.wantTries {
				t.Errorf("%d publishes tried, want %d", pub.tries, tt.wantTries)
			}
		})
	}
}

// On a real full Redis (maxmemory, noeviction) the poison XADD is refused:
// the message is nacked, not sent again on its next handling, and poisoned
// once memory is freed.
func TestPoisonQueueOnAFullRedis(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	cfg := transports.RedisConfig{URL: srv.URL()}
	pub, err := transports.NewRedisPublisher(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	if err := srv.Fill(ctx); err != nil {
		t.Fatal(err)
	}
	rec := &poisonRecorder{}
	calls := 0
	h := rec.queue(pub, 300*time.Millisecond).Middleware(func(*message.Message) ([]*message.Message, error) {
		calls++
		return nil, &middleware.GiveUpError{Attempts: 1, Err: &middleware.StatusError{Code: 400}}
	})
	msg := newMessage()
	if _, err := h(msg); err == nil || !strings.Contains(err.Error(), "OOM") {
		t.Fatalf("PoisonQueue on a full Redis = %v, want an error naming OOM (nack)", err)
	}
	if err := srv.Free(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := h(msg.Copy()); err != nil {
		t.Fatalf("PoisonQueue once memory is freed: %v", err)
	}
	if calls != 1 {
		t.Errorf("handler ran %d times, want 1", calls)
	}
	dlq, err := transports.NewDLQ(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer dlq.Close()
	n, err := dlq.Len(ctx)
	if err != nil || n != 1 {
		t.Errorf("poison stream holds %d entries (%v), want 1", n, err)
	}
}
