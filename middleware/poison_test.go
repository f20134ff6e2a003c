package middleware_test

import (
	"context"
	"errors"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/memhook/memhook/middleware"
)

// recordingPublisher keeps what is published to it, or fails with err.
type recordingPublisher struct {
	mu     sync.Mutex
	err    error
	topics []string
	msgs   []*message.Message
}

var _ message.Publisher = (*recordingPublisher)(nil)

func (p *recordingPublisher) Publish(topic string, msgs ...*message.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return p.err
	}
	for _, m := range msgs {
		p.topics = append(p.topics, topic)
		p.msgs = append(p.msgs, m)
	}
	return nil
}

func (p *recordingPublisher) Close() error { return nil }

func TestPoisonQueuePublishesACopyAndAcks(t *testing.T) {
	tests := []struct {
		name         string
		topic        string
		err          error
		wantTopic    string
		wantStatus   string
		wantAttempts string
	}{
		{name: "gave up on 503 after 4 attempts",
			err:       &middleware.GiveUpError{Attempts: 4, Err: &middleware.StatusError{Code: 503}},
			wantTopic: middleware.PoisonTopic, wantStatus: "503", wantAttempts: "4"},
		{name: "permanent 400 after one attempt",
			err:       &middleware.GiveUpError{Attempts: 1, Err: &middleware.StatusError{Code: 400}},
			wantTopic: middleware.PoisonTopic, wantStatus: "400", wantAttempts: "1"},
		{name: "receiver never answered",
			err:       &middleware.GiveUpError{Attempts: 2, Err: context.DeadlineExceeded},
			wantTopic: middleware.PoisonTopic, wantStatus: "0", wantAttempts: "2"},
		{name: "plain error without Retry", err: errors.New("no handler"),
			wantTopic: middleware.PoisonTopic, wantStatus: "0", wantAttempts: "1"},
		{name: "canceled while the message context is live", err: context.Canceled,
			wantTopic: middleware.PoisonTopic, wantStatus: "0", wantAttempts: "1"},
		{name: "own topic", topic: "my.poison", err: &middleware.StatusError{Code: 410},
			wantTopic: "my.poison", wantStatus: "410", wantAttempts: "1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pub := &recordingPublisher{}
			var onPoisoned []*message.Message
			var onErr error
			p := middleware.PoisonQueue{Publisher: pub, Topic: tt.topic, OnPoisoned: func(m *message.Message, err error) {
				onPoisoned = append(onPoisoned, m)
				onErr = err
			}}
			msg := newMessage()
			before := maps.Clone(msg.Metadata)
			out, err := p.Middleware(func(*message.Message) ([]*message.Message, error) { return nil, tt.err })(msg)
			if err != nil || out != nil {
				t.Fatalf("PoisonQueue = %v, %v; want nil, nil (ack)", out, err)
			}
			if len(pub.msgs) != 1 {
				t.Fatalf("%d messages published, want 1", len(pub.msgs))
			}
			got := pub.msgs[0]
			if pub.topics[0] != tt.wantTopic {
				t.Errorf("published to %q, want %q", pub.topics[0], tt.wantTopic)
			}
			if got == msg {
				t.Error("published the original message, want a copy")
			}
			if got.UUID != msg.UUID || string(got.Payload) != string(msg.Payload) {
				t.Errorf("copy has UUID %q payload %q, want %q %q", got.UUID, got.Payload, msg.UUID, msg.Payload)
			}
			want := map[string]string{
				middleware.PoisonReasonKey:   tt.err.Error(),
				middleware.PoisonTopicKey:    "",
				middleware.PoisonStatusKey:   tt.wantStatus,
				middleware.PoisonAttemptsKey: tt.wantAttempts,
			}
			for k, v := range before {
				want[k] = v
			}
			if len(got.Metadata) != len(want) {
				t.Errorf("copy metadata = %v, want %v", got.Metadata, want)
			}
			for k, v := range want {
				if got.Metadata.Get(k) != v {
					t.Errorf("copy metadata %s = %q, want %q", k, got.Metadata.Get(k), v)
				}
			}
			if !maps.Equal(msg.Metadata, before) {
				t.Errorf("the original's metadata changed: %v", msg.Metadata)
			}
			if len(onPoisoned) != 1 || onPoisoned[0] != got || onErr != tt.err {
				t.Errorf("OnPoisoned got %v, %v; want the published copy and the error", onPoisoned, onErr)
			}
		})
	}
}

func TestPoisonQueuePassesSuccessThrough(t *testing.T) {
	pub := &recordingPublisher{}
	produced := []*message.Message{message.NewMessage("out", nil)}
	out, err := middleware.PoisonQueue{Publisher: pub}.Middleware(func(*message.Message) ([]*message.Message, error) {
		return produced, nil
	})(newMessage())
	if err != nil || len(out) != 1 || out[0] != produced[0] {
		t.Errorf("PoisonQueue = %v, %v; want the handler's messages", out, err)
	}
	if len(pub.msgs) != 0 {
		t.Errorf("%d messages poisoned after a success", len(pub.msgs))
	}
}

func TestPoisonQueueNacksOnShutdown(t *testing.T) {
	tests := []struct {
		name string
		err  error
	}{
		{name: "context.Canceled", err: context.Canceled},
		{name: "wrapped context.Canceled", err: &middleware.GiveUpError{Attempts: 2, Err: context.Canceled}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pub := &recordingPublisher{}
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			msg := newMessage()
			msg.SetContext(ctx)
			_, err := middleware.PoisonQueue{Publisher: pub}.Middleware(func(*message.Message) ([]*message.Message, error) {
				return nil, tt.err
			})(msg)
			if err != tt.err {
				t.Errorf("err = %v, want the handler's %v (nack)", err, tt.err)
			}
			if len(pub.msgs) != 0 {
				t.Errorf("%d messages poisoned on shutdown", len(pub.msgs))
			}
		})
	}
}

func TestPoisonQueueNacksWhenThePoisonPublishFails(t *testing.T) {
	publishErr := errors.New("poison topic unavailable")
	handlerErr := &middleware.StatusError{Code: 400}
	called := false
	p := middleware.PoisonQueue{
		Publisher:  &recordingPublisher{err: publishErr},
		RetryFor:   middleware.NoPoisonRetry,
		OnPoisoned: func(*message.Message, error) { called = true },
	}
	_, err := p.Middleware(func(*message.Message) ([]*message.Message, error) { return nil, handlerErr })(newMessage())
	if err == nil {
		t.Fatal("PoisonQueue acked a message it could not poison")
	}
	if !errors.Is(err, handlerErr) || !errors.Is(err, publishErr) {
		t.Errorf("err = %v, want both the handler's and the publish error", err)
	}
	if !strings.Contains(err.Error(), middleware.PoisonTopic) {
		t.Errorf("err = %q does not name the poison topic", err)
	}
	if called {
		t.Error("OnPoisoned called although nothing was poisoned")
	}
}

func TestPoisonQueueRecoversAPanic(t *testing.T) {
	pub := &recordingPublisher{}
	var below message.HandlerFunc = func(*message.Message) ([]*message.Message, error) {
		panic("bad message boom")
	}
	// Retry between the two: the panic goes through it without a retry.
	h := middleware.PoisonQueue{Publisher: pub}.Middleware(middleware.Retry{InitialInterval: time.Millisecond}.Middleware(below))
	var out []*message.Message
	var err error
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Fatalf("panic escaped PoisonQueue: %v", r)
			}
		}()
		out, err = h(newMessage())
	}()
	if err != nil || out != nil {
		t.Fatalf("PoisonQueue = %v, %v; want nil, nil", out, err)
	}
	if len(pub.msgs) != 1 {
		t.Fatalf("%d messages poisoned, want 1", len(pub.msgs))
	}
	reason := pub.msgs[0].Metadata.Get(middleware.PoisonReasonKey)
	if !strings.Contains(reason, "panic") || !strings.Contains(reason, "bad message boom") || !strings.Contains(reason, "goroutine") {
		t.Errorf("reason = %q, want the panic value and its stack", reason)
	}
	if got := pub.msgs[0].Metadata.Get(middleware.PoisonAttemptsKey); got != "1" {
		t.Errorf("attempts = %q, want 1", got)
	}
}

func TestPoisonQueueWithoutPublisherPanicsAtWiring(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Middleware without a Publisher did not panic")
		}
	}()
	middleware.PoisonQueue{}.Middleware(func(*message.Message) ([]*message.Message, error) { return nil, nil })
}

// TestPoisonQueueUnderARouter runs a real Watermill router, so that the
// poisoned copy names the topic the message came from.
func TestPoisonQueueUnderARouter(t *testing.T) {
	logger := watermill.NopLogger{}
	pubsub := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 16}, logger)
	defer pubsub.Close()
	poisoned, err := pubsub.Subscribe(context.Background(), middleware.PoisonTopic)
	if err != nil {
		t.Fatal(err)
	}
	router, err := message.NewRouter(message.RouterConfig{}, logger)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	calls := 0
	router.AddConsumerHandler("deliver", "memory.events", pubsub, func(*message.Message) error {
		mu.Lock()
		defer mu.Unlock()
		calls++
		return &middleware.StatusError{Code: 422}
	}).AddMiddleware(
		middleware.PoisonQueue{Publisher: pubsub}.Middleware,
		middleware.Retry{InitialInterval: time.Millisecond}.Middleware,
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = router.Run(ctx) }()
	defer router.Close()
	select {
	case <-router.Running():
	case <-time.After(5 * time.Second):
		t.Fatal("router did not start")
	}
	msg := newMessage()
	if err := pubsub.Publish("memory.events", msg); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-poisoned:
		got.Ack()
		if got.UUID != msg.UUID {
			t.Errorf("poisoned %s, want %s", got.UUID, msg.UUID)
		}
		for k, want := range map[string]string{
			middleware.PoisonTopicKey:    "memory.events",
			middleware.PoisonStatusKey:   "422",
			middleware.PoisonAttemptsKey: "1",
		} {
			if v := got.Metadata.Get(k); v != want {
				t.Errorf("%s = %q, want %q", k, v, want)
			}
		}
	case <-time.After(5 * time.Second):
		t.Fatal("nothing reached the poison topic")
	}
	// Acked, so not delivered again.
	time.Sleep(100 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if calls != 1 {
		t.Errorf("handler ran %d times, want 1", calls)
	}
}
