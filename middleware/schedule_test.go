package middleware_test

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/memhook/memhook/middleware"
)

// store is a DelayStore that keeps what it is given, or refuses with err.
type store struct {
	mu   sync.Mutex
	err  error
	msgs []*message.Message
	dues []time.Time
}

func (s *store) Delay(msg *message.Message, due time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	s.msgs, s.dues = append(s.msgs, msg), append(s.dues, due)
	return nil
}

func TestScheduleOneAttemptPerHandling(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	delays := []time.Duration{time.Second, 5 * time.Minute}
	unavailable := &middleware.StatusError{Code: 503}
	tests := []struct {
		name      string
		attempt   string // the message's AttemptKey; "" for a first handling
		err       error
		wantStore bool
		wantDue   time.Duration // before jitter
		wantGive  int           // attempts in the GiveUpError; 0 for none
	}{
		{"success", "", nil, false, 0, 0},
		{"first failure waits the first delay", "", unavailable, true, time.Second, 0},
		{"second failure waits the second", "2", unavailable, true, 5 * time.Minute, 0},
		{"last attempt gives up", "3", unavailable, false, 0, 3},
		{"permanent gives up at once", "", &middleware.StatusError{Code: 400}, false, 0, 1},
		{"Retry-After replaces the delay", "", &middleware.StatusError{Code: 429, RetryAfter: 30 * time.Second}, true, 30 * time.Second, 0},
		{"Retry-After is capped", "", &middleware.StatusError{Code: 503, RetryAfter: time.Hour}, true, time.Minute, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := &store{}
			var attempts []int
			h := middleware.Schedule{
				Delays: delays, Store: st, MaxRetryAfter: time.Minute, Now: func() time.Time { return now },
			}.Middleware(func(msg *message.Message) ([]*message.Message, error) {
				attempts = append(attempts, middleware.AttemptFromContext(msg.Context()))
				return nil, tt.err
			})
			msg := newMessage()
			if tt.attempt != "" {
				msg.Metadata.Set(middleware.AttemptKey, tt.attempt)
			}
			_, err := h(msg)
			if len(attempts) != 1 {
				t.Fatalf("%d attempts in one handling, want 1", len(attempts))
			}
			if want := middleware.AttemptOf(msg); attempts[0] != want {
				t.Errorf("attempt in the context %d, want %d", attempts[0], want)
			}
			var give *middleware.GiveUpError
			switch {
			case tt.wantGive > 0:
				if !errors.As(err, &give) || give.Attempts != tt.wantGive {
					t.Errorf("error %v, want a GiveUpError after %d attempts", err, tt.wantGive)
				}
			case err != nil:
				t.Errorf("error %v, want nil (acknowledged)", err)
			}
			if got := len(st.msgs) == 1; got != tt.wantStore {
				t.Fatalf("stored %d messages, want stored=%v", len(st.msgs), tt.wantStore)
			}
			if !tt.wantStore {
				return
			}
			next := st.msgs[0]
			if next.UUID != msg.UUID || string(next.Payload) != string(msg.Payload) {
				t.Errorf("stored %s %q, want the same UUID and payload", next.UUID, next.Payload)
			}
			if got, want := middleware.AttemptOf(next), middleware.AttemptOf(msg)+1; got != want {
				t.Errorf("stored with attempt %d, want %d", got, want)
			}
			wait := st.dues[0].Sub(now)
			if wait < tt.wantDue || wait > tt.wantDue+tt.wantDue/10 {
				t.Errorf("due in %s, want %s plus at most a tenth", wait, tt.wantDue)
			}
		})
	}
}

// A retry the store refuses is nacked, not poisoned: PoisonQueue lets the
// NotScheduledError through, and the transport hands the message out
// again.
func TestScheduleStoreFailureNacks(t *testing.T) {
	pubsub := gochannel.NewGoChannel(gochannel.Config{Persistent: true}, nil)
	defer pubsub.Close()
	st := &store{err: errors.New("redis is down")}
	h := middleware.PoisonQueue{Publisher: pubsub}.Middleware(
		middleware.Schedule{Delays: []time.Duration{time.Second}, Store: st}.Middleware(
			func(*message.Message) ([]*message.Message, error) { return nil, &middleware.StatusError{Code: 503} }))
	_, err := h(newMessage())
	var ns *middleware.NotScheduledError
	if !errors.As(err, &ns) || ns.Attempt != 1 {
		t.Fatalf("error %v, want a NotScheduledError for attempt 1", err)
	}
}

func TestSeedDelays(t *testing.T) {
	got := middleware.SeedDelays(3, time.Second)
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second}
	if len(got) != len(want) {
		t.Fatalf("%v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%v, want %v", got, want)
		}
	}
	if d := middleware.SeedDelays(0, time.Second); len(d) != 0 {
		t.Errorf("no retries: %v", d)
	}
}
