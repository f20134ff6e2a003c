package verify_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/memhook/memhook/verify"
)

// seen is what the handler behind Middleware got.
type seen struct {
	called bool
	id     string
	body   string
}

// serve runs v.Middleware on a real loopback server; the handler behind
// it records what it saw and answers 204.
func serve(t *testing.T, v *verify.Verifier) (url string, got *seen) {
	t.Helper()
	got = &seen{}
	srv := httptest.NewServer(v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("next cannot read the body: %v", err)
		}
		*got = seen{called: true, id: r.Header.Get(verify.HeaderID), body: string(b)}
		w.WriteHeader(http.StatusNoContent)
	})))
	t.Cleanup(srv.Close)
	return srv.URL, got
}

// post sends body with h and returns the status and the "error" field of
// a JSON answer.
func post(t *testing.T, url string, h http.Header, body []byte) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range h {
		req.Header[k] = vs
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode == http.StatusNoContent {
		return resp.StatusCode, ""
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	var e struct{ Error string }
	if err := json.Unmarshal(raw, &e); err != nil || e.Error == "" {
		t.Errorf("answer %d is not {\"error\": …}: %q", resp.StatusCode, raw)
	}
	return resp.StatusCode, e.Error
}

func TestMiddleware(t *testing.T) {
	now := time.Now()
	body := []byte(`{"event":"memory_added","user_id":"u1","data":{}}`)
	sig := verify.Sign(mustSecrets(t, kaSecret), "evt_1", now, body)
	good := headers("evt_1", now.Unix(), sig)
	tests := []struct {
		name      string
		h         http.Header
		body      []byte
		wantCode  int
		wantError string
	}{
		{"valid", good, body, http.StatusNoContent, ""},
		{"tampered body", good, append(append([]byte(nil), body...), ' '), http.StatusUnauthorized, "no matching signature"},
		{"missing signature", headers("evt_1", now.Unix(), ""), body, http.StatusUnauthorized, "missing header: webhook-signature"},
		{"stale", headers("evt_1", now.Add(-time.Hour).Unix(), verify.Sign(mustSecrets(t, kaSecret), "evt_1", now.Add(-time.Hour), body)), body, http.StatusUnauthorized, "timestamp too old"},
		{"bad timestamp", headers("evt_1", -5, sig), body, http.StatusUnauthorized, "invalid header"},
	}
	url, got := serve(t, verifierAt(t, now, kaSecret))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			*got = seen{}
			code, msg := post(t, url, tt.h, tt.body)
			if code != tt.wantCode || !strings.Contains(msg, tt.wantError) {
				t.Fatalf("answer %d %q, want %d %q", code, msg, tt.wantCode, tt.wantError)
			}
			if strings.Contains(msg, "MfKQ9r8") || strings.Contains(msg, sig[3:13]) {
				t.Errorf("answer reveals a secret or a signature: %s", msg)
			}
			if tt.wantCode != http.StatusNoContent {
				if got.called {
					t.Error("next was called for a refused request")
				}
				return
			}
			if !got.called || got.body != string(body) || got.id != "evt_1" {
				t.Fatalf("next saw %+v, want the body restored and id evt_1", *got)
			}
		})
	}
}

func TestMiddlewareBodyCap(t *testing.T) {
	now := time.Now()
	signed := func(body []byte) http.Header {
		return headers("evt_1", now.Unix(), verify.Sign(mustSecrets(t, kaSecret), "evt_1", now, body))
	}
	tests := []struct {
		name     string
		max      int64
		size     int
		wantCode int
	}{
		{"custom cap, at it", 100, 100, http.StatusNoContent},
		{"custom cap, one over", 100, 101, http.StatusRequestEntityTooLarge},
		{"default 1 MiB, at it", 0, 1 << 20, http.StatusNoContent},
		{"default 1 MiB, one over", 0, 1<<20 + 1, http.StatusRequestEntityTooLarge},
		{"empty body signed", 100, 0, http.StatusNoContent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := verifierAt(t, now, kaSecret)
			v.MaxBodyBytes = tt.max
			url, got := serve(t, v)
			body := bytes.Repeat([]byte("x"), tt.size)
			code, msg := post(t, url, signed(body), body)
			if code != tt.wantCode {
				t.Fatalf("answer %d %q, want %d", code, msg, tt.wantCode)
			}
			if code == http.StatusRequestEntityTooLarge {
				limit := tt.max
				if limit == 0 {
					limit = verify.DefaultMaxBodyBytes
				}
				if got.called || !strings.Contains(msg, strconv.FormatInt(limit, 10)) {
					t.Fatalf("over the cap: next called %v, error %q", got.called, msg)
				}
				return
			}
			if len(got.body) != tt.size {
				t.Fatalf("next read %d bytes, want %d", len(got.body), tt.size)
			}
		})
	}
}

// A request built by hand with a nil Body (as some tests and proxies do)
// is verified as an empty body, not a panic.
func TestMiddlewareNilBody(t *testing.T) {
	now := time.Now()
	h := headers("evt_1", now.Unix(), verify.Sign(mustSecrets(t, kaSecret), "evt_1", now, nil))
	called := false
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { called = true })
	req := &http.Request{Method: http.MethodPost, Header: h}
	rec := httptest.NewRecorder()
	verifierAt(t, now, kaSecret).Middleware(next).ServeHTTP(rec, req)
	if !called || rec.Code != http.StatusOK {
		t.Fatalf("nil body: next called %v, code %d", called, rec.Code)
	}
}
