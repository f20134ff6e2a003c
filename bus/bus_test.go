package bus_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/internal/receiver"
	"github.com/memhook/memhook/middleware"
)

const (
	testToken  = "tok-THIS-IS-SECRET"
	testSecret = "sec-THIS-IS-SECRET"
)

// syncBuffer collects log output from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type fixture struct {
	bus    *bus.Bus
	rcv    *receiver.Receiver
	logs   *syncBuffer
	poison chan *message.Message
}

// start runs a receiver answering with respond and a bus delivering to it.
// cfg.WebhookURL is set to the receiver unless already set.
func start(t *testing.T, cfg bus.Config, respond receiver.Respond, opts ...bus.Option) *fixture {
	t.Helper()
	rcv, err := receiver.Start(respond, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rcv.Close() })
	if cfg.WebhookURL == "" {
		cfg.WebhookURL = rcv.URL + "/hook"
	}
	f := &fixture{rcv: rcv, logs: &syncBuffer{}, poison: make(chan *message.Message, 100)}
	logger := slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts = append([]bus.Option{
		bus.WithLogger(logger),
		bus.WithPoisonHandler(func(m *message.Message) error { f.poison <- m; return nil }),
	}, opts...)
	b, err := bus.New(cfg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	f.bus = b
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.Close(ctx)
		if logs := f.logs.String(); strings.Contains(logs, testToken) || strings.Contains(logs, testSecret) {
			t.Errorf("a secret appears in the logs:\n%s", logs)
		}
	})
	return f
}

func (f *fixture) waitPoison(t *testing.T) *message.Message {
	t.Helper()
	select {
	case m := <-f.poison:
		return m
	case <-time.After(10 * time.Second):
		t.Fatalf("nothing reached the poison queue; logs:\n%s", f.logs.String())
		return nil
	}
}

// eventually polls cond until it holds or 10s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func fastRetry(cfg bus.Config) bus.Config {
	cfg.RetryDelay = 20 * time.Millisecond
	return cfg
}

func oneOfEach() []event.Event {
	mems := []event.Memory{{ID: "m1", Content: "a"}, {ID: "m2", Content: "b"}, {ID: "m3", Content: "c"}, {ID: "m4", Content: "d"}}
	return []event.Event{
		event.NewMemoryAdded("u1", event.Memory{ID: "mem_123", Content: "User works at Austin facility", Metadata: map[string]any{"type": "preference", "category": "location"}}),
		event.NewMemorySearched("u1", "facilities in Austin", 5, mems),
		{Type: event.MemoryDeleted, UserID: "u1", Data: map[string]any{"memory_ids": []string{"m1"}}},
		{Type: event.MemoryUpdated, UserID: "u1", Data: map[string]any{"memory_id": "m1", "content": "new"}},
		event.NewPreferenceStored("u1", "morning meetings", "schedule"),
		event.NewCorrectionStored("u1", "lives in Dallas", "lives in Austin"),
		event.NewRelationshipAdded("u1", "North Austin Facility", "HAS_PARTNER", "GreenEnergy Capital", event.Relationship{ID: "rel_456", Confidence: 1}),
		{Type: event.RelationshipDeleted, UserID: "u1", Data: map[string]any{"id": "rel_456"}},
		{Type: event.GraphBuilt, UserID: "u1", Data: map[string]any{"nodes": 10, "edges": 12}},
		{Type: event.MemoryOptimized, UserID: "u1", Data: map[string]any{"merged": 3}},
		event.NewBatchOperationCompleted("u1", event.BatchResult{Operation: "batch_add_memories", Total: 25, Succeeded: 24, Failed: 1}),
		event.NewMemoryError("u1", "batch_add_memories", errors.New("Connection timeout to vector store"), 25),
	}
}

func TestAllTwelveEventsArriveWithEnvelopeAndHeaders(t *testing.T) {
	f := start(t, bus.Config{Token: testToken, Secret: testSecret, BotVersion: "2.3.4"}, nil)
	events := oneOfEach()
	before := time.Now().UTC()
	for i, e := range events {
		e.RequestID = "req_" + strconv.Itoa(i)
		if err := f.bus.Emit(context.Background(), e); err != nil {
			t.Fatalf("emit %s: %v", e.Type, err)
		}
	}
	if err := f.rcv.WaitFor(len(events), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	byType := map[string]receiver.Request{}
	for _, r := range f.rcv.Requests() {
		var env map[string]any
		if err := json.Unmarshal(r.Body, &env); err != nil {
			t.Fatalf("body is not JSON: %v: %s", err, r.Body)
		}
		byType[env["event"].(string)] = r
	}
	for i, e := range events {
		t.Run(string(e.Type), func(t *testing.T) {
			r, ok := byType[string(e.Type)]
			if !ok {
				t.Fatalf("%s never arrived", e.Type)
			}
			var env map[string]any
			_ = json.Unmarshal(r.Body, &env)
			keys := make([]string, 0, len(env))
			for k := range env {
				keys = append(keys, k)
			}
			wantKeys := "bot_version data event id request_id source timestamp user_id"
			if got := sortedJoin(keys); got != wantKeys {
				t.Errorf("envelope keys = %q, want %q", got, wantKeys)
			}
			if env["user_id"] != "u1" || env["source"] != "markdown-brain-bot" || env["bot_version"] != "2.3.4" || env["request_id"] != "req_"+strconv.Itoa(i) {
				t.Errorf("envelope = %s", r.Body)
			}
			ts, err := time.Parse(event.TimeLayout, env["timestamp"].(string))
			if err != nil || !strings.HasSuffix(env["timestamp"].(string), "Z") || len(env["timestamp"].(string)) != len("2024-01-15T10:30:00.123456Z") {
				t.Errorf("timestamp %q is not RFC 3339 UTC with microseconds", env["timestamp"])
			}
			if ts.Before(before.Truncate(time.Microsecond)) || ts.After(time.Now()) {
				t.Errorf("timestamp %s is not the time of Emit", ts)
			}
			wantData, _ := json.Marshal(e.Data)
			gotData, _ := json.Marshal(env["data"])
			if !jsonEqual(wantData, gotData) {
				t.Errorf("data = %s, want %s", gotData, wantData)
			}
			h := r.Header
			for name, want := range map[string]string{
				"Authorization":    "Bearer " + testToken,
				"X-Webhook-Secret": testSecret,
				"Content-Type":     "application/json",
				"User-Agent":       "memhook/" + bus.Version,
				"Webhook-Id":       env["id"].(string),
			} {
				if got := h.Get(name); got != want {
					t.Errorf("header %s = %q, want %q", name, got, want)
				}
			}
			if r.Method != http.MethodPost || r.Path != "/hook" {
				t.Errorf("request %s %s", r.Method, r.Path)
			}
		})
	}
	// memory_searched carries only the first three memories and counts all.
	var searched struct {
		Data struct {
			ResultsCount int             `json:"results_count"`
			Memories     []event.Memory  `json:"memories"`
			Query        string          `json:"query"`
			Limit        int             `json:"limit"`
			Extra        json.RawMessage `json:"extra"`
		} `json:"data"`
	}
	_ = json.Unmarshal(byType["memory_searched"].Body, &searched)
	if searched.Data.ResultsCount != 4 || len(searched.Data.Memories) != 3 || searched.Data.Query != "facilities in Austin" || searched.Data.Limit != 5 {
		t.Errorf("memory_searched data = %+v", searched.Data)
	}
	eventually(t, "12 deliveries counted", func() bool { return f.bus.Stats().Delivered == 12 })
	if s := f.bus.Stats(); s.Accepted != 12 || s.Poisoned != 0 || s.Retried != 0 {
		t.Errorf("stats = %+v", s)
	}
}

func sortedJoin(keys []string) string {
	for i := range keys {
		for j := i + 1; j < len(keys); j++ {
			if keys[j] < keys[i] {
				keys[i], keys[j] = keys[j], keys[i]
			}
		}
	}
	return strings.Join(keys, " ")
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	_ = json.Unmarshal(a, &x)
	_ = json.Unmarshal(b, &y)
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return bytes.Equal(xa, ya)
}

// A 5xx is retried with the delays RetryDelay × 2ⁿ (plus at most 10%
// jitter), with the same webhook-id on every attempt.
func TestRetryIntervalsAfter5xx(t *testing.T) {
	f := start(t, bus.Config{RetryDelay: 100 * time.Millisecond, RetryCount: 3}, func(w http.ResponseWriter, r *http.Request, n int) int {
		if n <= 3 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	if err := f.bus.Emit(context.Background(), event.NewPreferenceStored("u", "tea", "drinks")); err != nil {
		t.Fatal(err)
	}
	if err := f.rcv.WaitFor(4, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	reqs := f.rcv.Requests()
	for i, want := range []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond} {
		got := reqs[i+1].At.Sub(reqs[i].At)
		t.Logf("wait before attempt %d: %s (nominal %s)", i+2, got, want)
		if got < want || got > want+want/10+80*time.Millisecond {
			t.Errorf("wait before attempt %d = %s, want %s plus at most 10%% jitter", i+2, got, want)
		}
		if reqs[i+1].Header.Get("Webhook-Id") != reqs[0].Header.Get("Webhook-Id") {
			t.Errorf("attempt %d has another webhook-id", i+2)
		}
	}
	// The counter moves before the log line is written: wait for the line.
	eventually(t, "delivery counted and logged", func() bool {
		return f.bus.Stats().Delivered == 1 && strings.Contains(f.logs.String(), "memhook: webhook delivered")
	})
	if s := f.bus.Stats(); s.Retried != 3 || s.Poisoned != 0 {
		t.Errorf("stats = %+v", s)
	}
	logs := f.logs.String()
	if strings.Count(logs, "level=WARN msg=\"memhook: webhook failed, retrying\"") != 3 || !strings.Contains(logs, "level=INFO msg=\"memhook: webhook delivered\"") {
		t.Errorf("want 3 WARN retries and one INFO delivery, logs:\n%s", logs)
	}
	if !strings.Contains(logs, "attempt=4") || !strings.Contains(logs, "status=500") {
		t.Errorf("logs lack attempt/status fields:\n%s", logs)
	}
}

func TestOutcomesByAnswer(t *testing.T) {
	tests := []struct {
		name         string
		cfg          bus.Config
		respond      receiver.Respond
		wantRequests int
		wantStatus   string // poison metadata; "" means delivered
		wantAttempts string
	}{
		{
			name:         "400 is permanent",
			respond:      func(http.ResponseWriter, *http.Request, int) int { return http.StatusBadRequest },
			wantRequests: 1, wantStatus: "400", wantAttempts: "1",
		},
		{
			name:         "404 is permanent",
			respond:      func(http.ResponseWriter, *http.Request, int) int { return http.StatusNotFound },
			wantRequests: 1, wantStatus: "404", wantAttempts: "1",
		},
		{
			name:         "500 every time ends poisoned after all retries",
			cfg:          bus.Config{RetryCount: 2},
			respond:      func(http.ResponseWriter, *http.Request, int) int { return http.StatusServiceUnavailable },
			wantRequests: 3, wantStatus: "503", wantAttempts: "3",
		},
		{
			name: "408 and 425 are retried",
			respond: func(_ http.ResponseWriter, _ *http.Request, n int) int {
				switch n {
				case 1:
					return http.StatusRequestTimeout
				case 2:
					return http.StatusTooEarly
				}
				return http.StatusNoContent
			},
			wantRequests: 3,
		},
		{
			name: "redirect is not followed",
			respond: func(w http.ResponseWriter, _ *http.Request, _ int) int {
				w.Header().Set("Location", "/elsewhere")
				return http.StatusFound
			},
			wantRequests: 1, wantStatus: "302", wantAttempts: "1",
		},
		{
			name: "answer slower than the timeout is retried, then poisoned",
			cfg:  bus.Config{Timeout: 100 * time.Millisecond, RetryCount: 1},
			respond: func(_ http.ResponseWriter, r *http.Request, _ int) int {
				select {
				case <-time.After(2 * time.Second):
				case <-r.Context().Done():
				}
				return http.StatusOK
			},
			wantRequests: 2, wantStatus: "0", wantAttempts: "2",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := start(t, fastRetry(tt.cfg), tt.respond)
			if err := f.bus.Emit(context.Background(), event.NewMemoryAdded("u", event.Memory{ID: "m", Content: "x"})); err != nil {
				t.Fatal(err)
			}
			if tt.wantStatus == "" {
				eventually(t, "delivery", func() bool { return f.bus.Stats().Delivered == 1 })
			} else {
				p := f.waitPoison(t)
				if got := p.Metadata.Get(middleware.PoisonStatusKey); got != tt.wantStatus {
					t.Errorf("poison status = %q, want %q", got, tt.wantStatus)
				}
				if got := p.Metadata.Get(middleware.PoisonAttemptsKey); got != tt.wantAttempts {
					t.Errorf("poison attempts = %q, want %q", got, tt.wantAttempts)
				}
				if p.Metadata.Get(middleware.PoisonReasonKey) == "" || p.Metadata.Get(middleware.PoisonTopicKey) != bus.Topic {
					t.Errorf("poison metadata = %v", p.Metadata)
				}
				if p.Metadata.Get(event.MetaType) != string(event.MemoryAdded) {
					t.Errorf("poisoned message lost its event type: %v", p.Metadata)
				}
				eventually(t, "poison counted and logged at ERROR", func() bool {
					return f.bus.Stats().Poisoned == 1 && strings.Contains(f.logs.String(), "level=ERROR msg=\"memhook: webhook failed for good")
				})
			}
			time.Sleep(50 * time.Millisecond) // a wrong extra attempt would arrive now
			if got := f.rcv.Count(); got != tt.wantRequests {
				t.Errorf("receiver got %d requests, want %d", got, tt.wantRequests)
			}
		})
	}
}

// 429 waits for Retry-After (1s) although RetryDelay is 20ms.
func TestTooManyRequestsHonoursRetryAfter(t *testing.T) {
	f := start(t, fastRetry(bus.Config{}), func(w http.ResponseWriter, _ *http.Request, n int) int {
		if n == 1 {
			w.Header().Set("Retry-After", "1")
			return http.StatusTooManyRequests
		}
		return http.StatusOK
	})
	if err := f.bus.Emit(context.Background(), event.NewPreferenceStored("u", "p", "c")); err != nil {
		t.Fatal(err)
	}
	if err := f.rcv.WaitFor(2, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	reqs := f.rcv.Requests()
	if wait := reqs[1].At.Sub(reqs[0].At); wait < time.Second || wait > 1500*time.Millisecond {
		t.Errorf("retry after 429 came after %s, want Retry-After's 1s", wait)
	}
}

// Retry-After is capped by MaxRetryAfter.
func TestRetryAfterIsCapped(t *testing.T) {
	f := start(t, fastRetry(bus.Config{MaxRetryAfter: 100 * time.Millisecond}), func(w http.ResponseWriter, _ *http.Request, n int) int {
		if n == 1 {
			w.Header().Set("Retry-After", "3600")
			return http.StatusTooManyRequests
		}
		return http.StatusOK
	})
	if err := f.bus.Emit(context.Background(), event.NewPreferenceStored("u", "p", "c")); err != nil {
		t.Fatal(err)
	}
	if err := f.rcv.WaitFor(2, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	reqs := f.rcv.Requests()
	if wait := reqs[1].At.Sub(reqs[0].At); wait < 100*time.Millisecond || wait > time.Second {
		t.Errorf("retry came after %s, want the 100ms cap", wait)
	}
}

func TestFilter(t *testing.T) {
	tests := []struct {
		events string
		want   []event.Type
	}{
		{"all", event.Types()},
		{"", event.Types()},
		{"none", nil},
		{"memory_added, memory_deleted", []event.Type{event.MemoryAdded, event.MemoryDeleted}},
		{"relationship_added,relationship_deleted,graph_built", []event.Type{event.RelationshipAdded, event.RelationshipDeleted, event.GraphBuilt}},
	}
	for _, tt := range tests {
		t.Run(tt.events, func(t *testing.T) {
			f := start(t, bus.Config{Events: tt.events}, nil)
			for _, e := range oneOfEach() {
				if err := f.bus.Emit(context.Background(), e); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := f.bus.Close(ctx); err != nil {
				t.Fatal(err)
			}
			var got []event.Type
			for _, r := range f.rcv.Requests() {
				var env event.Envelope
				_ = json.Unmarshal(r.Body, &env)
				got = append(got, env.Event)
			}
			if fmt.Sprint(sortTypes(got)) != fmt.Sprint(sortTypes(tt.want)) {
				t.Errorf("delivered %v, want %v", got, tt.want)
			}
			s := f.bus.Stats()
			if s.Accepted != 12 || s.Delivered != uint64(len(tt.want)) || s.Filtered != uint64(12-len(tt.want)) {
				t.Errorf("stats = %+v", s)
			}
		})
	}
}

func sortTypes(ts []event.Type) []event.Type {
	out := append([]event.Type(nil), ts...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func TestWebhooksOffWithoutURL(t *testing.T) {
	b, err := bus.New(bus.Config{}, bus.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range oneOfEach() {
		if err := b.Emit(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s := b.Stats(); s.Accepted != 12 || s.Filtered != 12 || s.Delivered != 0 {
		t.Errorf("stats = %+v", s)
	}
	if err := b.Emit(context.Background(), oneOfEach()[0]); !errors.Is(err, bus.ErrClosed) {
		t.Errorf("Emit after Close: %v", err)
	}
}

// Close waits for 10 000 queued events to reach a slow receiver: none lost.
func TestCloseDrainsTenThousandEvents(t *testing.T) {
	const n = 10_000
	f := start(t, bus.Config{QueueCapacity: n, Concurrency: 32}, func(http.ResponseWriter, *http.Request, int) int {
		time.Sleep(2 * time.Millisecond)
		return http.StatusOK
	})
	for i := range n {
		if err := f.bus.Emit(context.Background(), event.NewMemoryAdded("u", event.Memory{ID: strconv.Itoa(i), Content: "x"})); err != nil {
			t.Fatalf("emit %d: %v", i, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := f.bus.Close(ctx); err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, r := range f.rcv.Requests() {
		ids[r.Header.Get("Webhook-Id")] = true
	}
	if len(ids) != n {
		t.Errorf("receiver got %d distinct events, want %d", len(ids), n)
	}
	if s := f.bus.Stats(); s.Delivered != n || s.Queued != 0 || s.InFlight != 0 {
		t.Errorf("stats after Close = %+v", s)
	}
}

// When Close's context ends first, every event left is reported, payload
// included: none vanishes.
func TestCloseReportsUndelivered(t *testing.T) {
	release := make(chan struct{})
	f := start(t, bus.Config{Concurrency: 2}, func(_ http.ResponseWriter, r *http.Request, _ int) int {
		select {
		case <-release:
		case <-r.Context().Done():
		}
		return http.StatusOK
	})
	defer close(release)
	for i := range 20 {
		if err := f.bus.Emit(context.Background(), event.NewMemoryAdded("u", event.Memory{ID: strconv.Itoa(i)})); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := f.bus.Close(ctx)
	var ue *bus.UndeliveredError
	if !errors.As(err, &ue) {
		t.Fatalf("Close = %v, want *UndeliveredError", err)
	}
	if len(ue.Events) != 20 || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("undelivered = %d (%v), want 20", len(ue.Events), err)
	}
	for _, u := range ue.Events {
		if u.Type != event.MemoryAdded || !bytes.Contains(u.Payload, []byte(u.ID)) {
			t.Errorf("undelivered event %+v lacks its type or payload", u)
		}
	}
	if s := f.bus.Stats(); s.Undelivered != 20 || s.Poisoned != 0 {
		t.Errorf("stats = %+v", s)
	}
	if again := f.bus.Close(context.Background()); again == nil || again.Error() != err.Error() {
		t.Errorf("second Close = %v, want the first result", again)
	}
}

// Emit against a dead receiver returns at once; a full queue refuses at
// once with ErrQueueFull and counts the drop.
func TestEmitNeverBlocksOnDeadReceiver(t *testing.T) {
	f := start(t, bus.Config{WebhookURL: deadURL(t), QueueCapacity: 100, Concurrency: 4, RetryDelay: time.Hour}, nil)
	var slowest time.Duration
	full := 0
	for i := range 1000 {
		t0 := time.Now()
		err := f.bus.Emit(context.Background(), event.NewMemoryAdded("u", event.Memory{ID: strconv.Itoa(i)}))
		if d := time.Since(t0); d > slowest {
			slowest = d
		}
		switch {
		case errors.Is(err, bus.ErrQueueFull):
			full++
		case err != nil:
			t.Fatal(err)
		}
	}
	t.Logf("slowest Emit: %s", slowest)
	// Blocking on the receiver would take the retry delay (an hour) or the
	// attempt timeout (30s); a second leaves room for a loaded CI machine.
	if slowest > time.Second {
		t.Errorf("an Emit took %s against a dead receiver", slowest)
	}
	if full < 1000-104 || full > 900 {
		t.Errorf("%d emits refused, want about 1000 - capacity - in flight", full)
	}
	if s := f.bus.Stats(); s.Dropped != uint64(full) || s.Accepted != uint64(1000-full) {
		t.Errorf("stats = %+v", s)
	}
	if !strings.Contains(f.logs.String(), "event not accepted, returned to the caller") || !strings.Contains(f.logs.String(), "memory queue is full") {
		t.Error("the drop was not logged")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	var ue *bus.UndeliveredError
	if err := f.bus.Close(ctx); !errors.As(err, &ue) || len(ue.Events) != 1000-full {
		t.Errorf("Close = %v, want every accepted event reported undelivered", err)
	}
}

func TestEmitRejectsInvalidEvents(t *testing.T) {
	b, err := bus.New(bus.Config{}, bus.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	tests := []struct {
		name  string
		e     event.Event
		field string
	}{
		{"unknown type", event.Event{Type: "memory_exploded", UserID: "u"}, "event"},
		{"empty user", event.Event{Type: event.MemoryAdded, UserID: " "}, "user_id"},
		{"data not JSON", event.Event{Type: event.MemoryAdded, UserID: "u", Data: map[string]any{"f": func() {}}}, "data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := b.Emit(context.Background(), tt.e)
			var fe *event.FieldError
			if !errors.As(err, &fe) || fe.Field != tt.field || !errors.Is(err, event.ErrInvalid) {
				t.Fatalf("Emit = %v, want a FieldError on %s", err, tt.field)
			}
		})
	}
	if s := b.Stats(); s.Invalid != 3 || s.Accepted != 0 {
		t.Errorf("stats = %+v", s)
	}
}

// Neither token, nor secret, nor URL credentials reach a log line or an
// error, whatever the failure.
func TestSecretsNeverLogged(t *testing.T) {
	rcv, err := receiver.Start(func(http.ResponseWriter, *http.Request, int) int { return http.StatusBadGateway }, false)
	if err != nil {
		t.Fatal(err)
	}
	defer rcv.Close()
	url := strings.Replace(rcv.URL, "http://", "http://user:"+testSecret+"@", 1) + "/hook?token=" + testToken
	f := start(t, bus.Config{WebhookURL: url, Token: testToken, Secret: testSecret, RetryCount: 1, RetryDelay: time.Millisecond}, nil)
	if err := f.bus.Emit(context.Background(), event.NewMemoryAdded("u", event.Memory{ID: "m"})); err != nil {
		t.Fatal(err)
	}
	p := f.waitPoison(t)
	if reason := p.Metadata.Get(middleware.PoisonReasonKey); strings.Contains(reason, testToken) || strings.Contains(reason, testSecret) {
		t.Errorf("poison reason holds a secret: %s", reason)
	}
	for k, v := range p.Metadata {
		if strings.Contains(v, testToken) || strings.Contains(v, testSecret) {
			t.Errorf("poison metadata %s holds a secret", k)
		}
	}
	if got := f.bus.WebhookURL(); strings.Contains(got, testSecret) || strings.Contains(got, testToken) {
		t.Errorf("WebhookURL() = %s", got)
	}
	// the cleanup of start checks the logs
}

func TestDeliveriesRunConcurrently(t *testing.T) {
	var mu sync.Mutex
	inFlight, peak := 0, 0
	f := start(t, bus.Config{Concurrency: 8}, func(http.ResponseWriter, *http.Request, int) int {
		mu.Lock()
		inFlight++
		peak = max(peak, inFlight)
		mu.Unlock()
		time.Sleep(50 * time.Millisecond)
		mu.Lock()
		inFlight--
		mu.Unlock()
		return http.StatusOK
	})
	for range 32 {
		if err := f.bus.Emit(context.Background(), event.NewPreferenceStored("u", "p", "c")); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.rcv.WaitFor(32, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if peak != 8 {
		t.Errorf("peak deliveries in flight = %d, want Concurrency = 8", peak)
	}
}

func TestBatchSendsOneWebhook(t *testing.T) {
	f := start(t, bus.Config{}, nil)
	bt := f.bus.Batch("u", "batch_add_memories", "req_1")
	for i := range 25 {
		if i == 7 {
			bt.Add(errors.New("vector store timeout"))
			continue
		}
		bt.Add(nil)
	}
	if err := bt.Done(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.bus.Close(ctx); err != nil {
		t.Fatal(err)
	}
	reqs := f.rcv.Requests()
	if len(reqs) != 1 {
		t.Fatalf("%d webhooks for one batch", len(reqs))
	}
	var env struct {
		Event     string            `json:"event"`
		RequestID string            `json:"request_id"`
		Data      event.BatchResult `json:"data"`
	}
	_ = json.Unmarshal(reqs[0].Body, &env)
	want := event.BatchResult{Operation: "batch_add_memories", Total: 25, Succeeded: 24, Failed: 1}
	if env.Event != "batch_operation_completed" || env.Data != want || env.RequestID != "req_1" {
		t.Errorf("batch webhook = %s", reqs[0].Body)
	}
}

// Integrators' middleware runs after the filter and before retry: once per
// event, and only for events that pass the filter.
func TestWithMiddlewarePlacement(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	mw := func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			mu.Lock()
			seen = append(seen, msg.Metadata.Get(event.MetaType))
			mu.Unlock()
			return h(msg)
		}
	}
	f := start(t, fastRetry(bus.Config{Events: "memory_added"}), func(_ http.ResponseWriter, _ *http.Request, n int) int {
		if n == 1 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	}, bus.WithMiddleware(mw))
	_ = f.bus.Emit(context.Background(), event.NewPreferenceStored("u", "p", "c"))
	_ = f.bus.Emit(context.Background(), event.NewMemoryAdded("u", event.Memory{ID: "m"}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.bus.Close(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(seen) != "[memory_added]" || f.rcv.Count() != 2 {
		t.Errorf("middleware saw %v (receiver %d requests), want [memory_added] once across 2 attempts", seen, f.rcv.Count())
	}
}
