package admin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/memhook/memhook/admin"
	"github.com/memhook/memhook/bus"
)

// Whatever the body of a replay or recover and whatever the query of a
// listing, the API answers a documented status with a JSON object, an
// error naming what is wrong: never a 500, never a panic.
func FuzzInput(f *testing.F) {
	f.Add(`{"ids":["1"]}`, "status=failed&limit=5")
	f.Add(`{"endpoint":"default","since":"2024-01-15T14:00:00Z"}`, "since=2024-01-15T14:00:00Z")
	f.Add(`{"since":"yesterday"}`, "limit=-1&cursor=zz")
	f.Add(`{"ids":[],"endpoint":"x"}`, "endpoint=&event=%00")
	f.Add(`[1,2]`, "limit=1001&limit=2")
	f.Add(`{"ids":[""]} {}`, "cursor=1-0")
	b, err := bus.New(bus.Config{WebhookURL: "http://127.0.0.1:1/hook", RetryCount: bus.Disabled}, bus.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = b.Close(ctx)
	})
	h, err := admin.NewHandler(admin.Config{Bus: b, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body, query string) {
		q, err := url.ParseQuery(query)
		if err != nil {
			return // not a query a client sends
		}
		query = q.Encode()
		for _, c := range []struct{ method, path, body string }{
			{http.MethodPost, admin.PathDLQReplay, body},
			{http.MethodPost, admin.PathEndpoints + "/default/recover", body},
			{http.MethodGet, admin.PathAttempts + "?" + query, ""},
			{http.MethodGet, admin.PathDLQ + "?" + query, ""},
			{http.MethodDelete, admin.PathDLQ + "?" + query, ""},
		} {
			req := httptest.NewRequest(c.method, c.path, bytes.NewReader([]byte(c.body)))
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			switch rec.Code {
			case http.StatusOK, http.StatusBadRequest, http.StatusNotFound, http.StatusRequestEntityTooLarge:
			default:
				t.Fatalf("%s %s %q: %d %s", c.method, c.path, c.body, rec.Code, rec.Body)
			}
			var ans map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &ans); err != nil {
				t.Fatalf("%s %s %q: answer not a JSON object: %s", c.method, c.path, c.body, rec.Body)
			}
			if rec.Code != http.StatusOK {
				if msg, _ := ans["error"].(string); msg == "" {
					t.Fatalf("%s %s: %d without an error: %s", c.method, c.path, rec.Code, rec.Body)
				}
			}
		}
	})
}
