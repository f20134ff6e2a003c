package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/verify"
)

const secret = "whsec_cmVjZWl2ZXItZXhhbXBsZS1zZWNyZXQ="

// memhook delivers to the receiver, which verifies and handles each event
// once; a tampered body, a stale timestamp and a wrong secret are refused;
// a duplicate is dropped.
func TestReceiverAgainstMemhook(t *testing.T) {
	r, err := NewReceiver(secret)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var handled []Event
	go r.Work(func(e Event) { mu.Lock(); handled = append(handled, e); mu.Unlock() })
	defer close(r.work)

	// Keep a copy of what memhook sent, to replay and tamper with it.
	var lastMu sync.Mutex
	var lastHeader http.Header
	var lastBody []byte
	h := r.Handler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		lastMu.Lock()
		lastHeader, lastBody = req.Header.Clone(), body
		lastMu.Unlock()
		req.Body = io.NopCloser(strings.NewReader(string(body)))
		h.ServeHTTP(w, req)
	}))
	defer srv.Close()

	b, err := bus.New(bus.Config{WebhookURL: srv.URL, Secret: secret}, bus.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	out, err := b.Send(context.Background(), event.NewMemoryAdded("user123", event.Memory{ID: "mem_1", Content: "hello"}))
	if err != nil || !out.Delivered || out.Status != http.StatusAccepted {
		t.Fatalf("memhook's delivery: %+v %v", out, err)
	}
	_ = b.Close(context.Background())

	lastMu.Lock()
	hdr, body := lastHeader, lastBody
	lastMu.Unlock()
	send := func(h http.Header, body string) int {
		req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(body))
		req.Header = h
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	resign := func(secretUsed string, at time.Time, body string) http.Header {
		secs, _ := verify.ParseSecrets(secretUsed)
		h := hdr.Clone()
		h.Set(verify.HeaderTimestamp, strconv.FormatInt(at.Unix(), 10))
		h.Set(verify.HeaderSignature, verify.Sign(secs, h.Get(verify.HeaderID), at, []byte(body)))
		return h
	}
	tests := []struct {
		name string
		h    http.Header
		body string
		want int
	}{
		{"duplicate (memhook's own request again)", hdr, string(body), http.StatusOK},
		{"tampered body", hdr, strings.Replace(string(body), "hello", "HELLO", 1), http.StatusUnauthorized},
		{"stale timestamp", resign(secret, time.Now().Add(-time.Hour), string(body)), string(body), http.StatusUnauthorized},
		{"wrong secret", resign("whsec_b3RoZXI=", time.Now(), string(body)), string(body), http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := send(tt.h, tt.body); got != tt.want {
				t.Errorf("answer %d, want %d", got, tt.want)
			}
		})
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(handled)
		mu.Unlock()
		if n >= 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // a wrongly handled duplicate would show now
	mu.Lock()
	defer mu.Unlock()
	if len(handled) != 1 || handled[0].Event != "memory_added" || handled[0].UserID != "user123" || handled[0].ID != out.ID {
		t.Fatalf("handled %+v, want memhook's one event once", handled)
	}
}
