package middleware_test

import (
	"maps"
	"net/http"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/memhook/memhook/middleware"
)

// at is 2024-01-15T10:30:00Z, the seed's example time.
var at = time.Date(2024, 1, 15, 10, 30, 0, 0, time.UTC)

// headersSeen runs s around a handler and returns the headers it saw.
func headersSeen(t *testing.T, s middleware.Signer, msg *message.Message) http.Header {
	t.Helper()
	var seen http.Header
	_, err := s.Middleware(func(msg *message.Message) ([]*message.Message, error) {
		seen = middleware.HeadersFromContext(msg.Context())
		return nil, nil
	})(msg)
	if err != nil {
		t.Fatal(err)
	}
	return seen
}

func TestSignerHeaders(t *testing.T) {
	clock := func() time.Time { return at }
	tests := []struct {
		name   string
		signer middleware.Signer
		want   map[string]string
	}{
		{name: "no token, no secret", signer: middleware.Signer{Now: clock}, want: map[string]string{
			"Content-Type": "application/json", "User-Agent": "memhook", "Webhook-Timestamp": "1705314600"}},
		{name: "token", signer: middleware.Signer{Token: "my-secret-token", Now: clock}, want: map[string]string{
			"Content-Type": "application/json", "User-Agent": "memhook", "Webhook-Timestamp": "1705314600",
			"Authorization": "Bearer my-secret-token"}},
		{name: "legacy secret", signer: middleware.Signer{LegacySecret: "your-signing-secret", Now: clock}, want: map[string]string{
			"Content-Type": "application/json", "User-Agent": "memhook", "Webhook-Timestamp": "1705314600",
			"X-Webhook-Secret": "your-signing-secret"}},
		{name: "both and a user agent", signer: middleware.Signer{Token: "t", LegacySecret: "s", UserAgent: "memhook/1.2.3", Now: clock}, want: map[string]string{
			"Content-Type": "application/json", "User-Agent": "memhook/1.2.3", "Webhook-Timestamp": "1705314600",
			"Authorization": "Bearer t", "X-Webhook-Secret": "s"}},
		{name: "clock in another zone", signer: middleware.Signer{Now: func() time.Time { return at.In(time.FixedZone("X", 7*3600)) }}, want: map[string]string{
			"Content-Type": "application/json", "User-Agent": "memhook", "Webhook-Timestamp": "1705314600"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := newMessage()
			before := maps.Clone(msg.Metadata)
			got := headersSeen(t, tt.signer, msg)
			want := http.Header{}
			for k, v := range tt.want {
				want.Set(k, v)
			}
			want.Set(middleware.HeaderWebhookID, msg.UUID)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("headers =\n%v\nwant\n%v", got, want)
			}
			if _, err := uuid.Parse(got.Get("webhook-id")); err != nil {
				t.Errorf("webhook-id %q is not a UUID: %v", got.Get("webhook-id"), err)
			}
			if !maps.Equal(msg.Metadata, before) {
				t.Errorf("Signer changed the metadata: %v, was %v", msg.Metadata, before)
			}
			if h := middleware.HeadersFromContext(msg.Context()); h != nil {
				t.Errorf("headers left in the message context after the handler: %v", h)
			}
		})
	}
}

func TestSignerDefaultClockIsNow(t *testing.T) {
	before := time.Now().Unix()
	got := headersSeen(t, middleware.Signer{}, newMessage()).Get("webhook-timestamp")
	after := time.Now().Unix()
	ts, err := strconv.ParseInt(got, 10, 64)
	if err != nil || ts < before || ts > after {
		t.Errorf("webhook-timestamp = %q, want between %d and %d", got, before, after)
	}
}

// Inside Retry every attempt is signed again: a fresh timestamp, the same
// webhook-id.
func TestSignerSignsEveryAttempt(t *testing.T) {
	now := at
	signer := middleware.Signer{Now: func() time.Time { now = now.Add(time.Second); return now }}
	var ids, stamps []string
	h := middleware.Retry{InitialInterval: time.Millisecond}.Middleware(signer.Middleware(func(msg *message.Message) ([]*message.Message, error) {
		hd := middleware.HeadersFromContext(msg.Context())
		ids = append(ids, hd.Get(middleware.HeaderWebhookID))
		stamps = append(stamps, hd.Get(middleware.HeaderWebhookTimestamp))
		return nil, &middleware.StatusError{Code: 503}
	}))
	msg := newMessage()
	_, _ = h(msg)
	wantStamps := []string{"1705314601", "1705314602", "1705314603", "1705314604"}
	if !reflect.DeepEqual(stamps, wantStamps) {
		t.Errorf("timestamps = %v, want %v", stamps, wantStamps)
	}
	if !reflect.DeepEqual(ids, []string{msg.UUID, msg.UUID, msg.UUID, msg.UUID}) {
		t.Errorf("webhook-ids = %v, want %s each time", ids, msg.UUID)
	}
}
