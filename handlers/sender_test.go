package handlers_test

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/memhook/memhook/handlers"
	"github.com/memhook/memhook/internal/deadport"
	"github.com/memhook/memhook/internal/ingesttest"
	"github.com/memhook/memhook/internal/redistest"
	"github.com/memhook/memhook/transports"
	"github.com/memhook/memhook/verify"
)

// redisSeen returns a duplicate guard store on the Redis at url whose keys
// no other test uses, as a router process opens it.
func redisSeen(t *testing.T, url, stream string) *transports.RedisSeen {
	t.Helper()
	s, err := transports.NewRedisSeen(transports.RedisConfig{
		URL: url, EventsTopic: stream, PoisonTopic: stream + ".poison", DialTimeout: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func (f *apiFixture) counts() (incoming, ingested int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.incoming), len(f.ingested)
}

// Two routers sharing one Redis process a signed request once, whichever
// gets it and however often; so does a router started afterwards (a
// restart).
func TestDuplicateGuardSharedOnRedis(t *testing.T) {
	url := redistest.URL(t)
	stream := redistest.Name("events")
	redistest.DeleteKeys(t, url, stream+transports.SeenKeySuffix+"*")
	secs, _ := verify.ParseSecrets(incomingSecret)
	router := func() *apiFixture {
		return startAPI(t, &handlers.API{IncomingSecrets: secs, Seen: redisSeen(t, url, stream)})
	}
	a, b := router(), router()

	h := signed(t, incomingSecret, "evt_shared", time.Now(), incomingBody)
	ingest := ingesttest.Envelope("evt_shared_ingest")
	ih := http.Header{verify.HeaderID: {"evt_shared_ingest"}}
	for i, f := range []*apiFixture{a, b, a, b} {
		code, out := f.post(t, handlers.PathIncoming, h, incomingBody)
		if code != 200 || (i > 0 && out["duplicate"] != true) {
			t.Fatalf("incoming request %d: %d %v, want 200 (duplicate after the first)", i+1, code, out)
		}
		code, out = f.post(t, handlers.PathIngest, ih, ingest)
		if code != 200 || (i > 0 && out["duplicate"] != true) {
			t.Fatalf("ingest request %d: %d %v, want 200 (duplicate after the first)", i+1, code, out)
		}
	}
	code, out := b.post(t, handlers.PathIngestBatch, nil, "["+ingest+","+ingesttest.Envelope("evt_shared_new")+"]")
	if code != 200 || out["duplicates"] != 1.0 {
		t.Fatalf("batch on the other router: %d %v, want 200 with 1 duplicate", code, out)
	}

	c := router() // a router (re)started later
	if code, out := c.post(t, handlers.PathIncoming, h, incomingBody); code != 200 || out["duplicate"] != true {
		t.Fatalf("incoming after a restart: %d %v, want 200 duplicate", code, out)
	}
	if code, out := c.post(t, handlers.PathIngest, ih, ingest); code != 200 || out["duplicate"] != true {
		t.Fatalf("ingest after a restart: %d %v, want 200 duplicate", code, out)
	}

	inA, ingA := a.counts()
	inB, ingB := b.counts()
	inC, ingC := c.counts()
	if inA+inB+inC != 1 {
		t.Errorf("incoming processed %d+%d+%d times, want once", inA, inB, inC)
	}
	if ingA+ingB+ingC != 2 { // evt_shared_ingest once, evt_shared_new once
		t.Errorf("ingested %d+%d+%d events, want 2", ingA, ingB, ingC)
	}
}

// A guard whose Redis does not answer refuses events (503 with
// Retry-After, nothing processed) rather than risking a duplicate.
func TestDuplicateGuardFailsClosed(t *testing.T) {
	down := "redis://" + deadport.Held(t).Addr() + "/0"
	secs, _ := verify.ParseSecrets(incomingSecret)
	f := startAPI(t, &handlers.API{IncomingSecrets: secs, Seen: redisSeen(t, down, "events")})
	for _, r := range []struct {
		path string
		h    http.Header
		body string
	}{
		{handlers.PathIncoming, signed(t, incomingSecret, "evt_down", time.Now(), incomingBody), incomingBody},
		{handlers.PathIngest, http.Header{verify.HeaderID: {"evt_down_ingest"}}, ingesttest.Envelope("evt_down_ingest")},
		{handlers.PathIngestBatch, nil, "[" + ingesttest.Envelope("evt_down_batch") + "]"},
	} {
		req, _ := http.NewRequest(http.MethodPost, f.srv.URL+r.path, strings.NewReader(r.body))
		req.Header = r.h.Clone()
		if req.Header == nil {
			req.Header = http.Header{}
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := f.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Errorf("%s with the guard's Redis down: %d Retry-After %q, want 503 with Retry-After", r.path, resp.StatusCode, resp.Header.Get("Retry-After"))
		}
	}
	if in, ing := f.counts(); in != 0 || ing != 0 {
		t.Errorf("%d incoming and %d ingested with the guard down, want none", in, ing)
	}
}

// A guard whose Redis accepts connections but never answers still lets
// the endpoints answer 503 within the guard's own bound (5s), whatever the
// client's timeouts.
func TestDuplicateGuardAnswersWithinItsBound(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() { // a Redis that reads and never answers
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(io.Discard, c); _ = c.Close() }()
		}
	}()
	seen, err := transports.NewRedisSeen(transports.RedisConfig{
		URL: "redis://" + l.Addr().String() + "/0", ReadTimeout: time.Minute, WriteTimeout: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = seen.Close() })
	f := startAPI(t, &handlers.API{Seen: seen})
	start := time.Now()
	code, out := f.post(t, handlers.PathIngest, http.Header{verify.HeaderID: {"evt_silent"}}, ingesttest.Envelope("evt_silent"))
	if took := time.Since(start); code != http.StatusServiceUnavailable || took > 8*time.Second {
		t.Errorf("%d %v after %s, want 503 within about 5s", code, out, took.Round(time.Millisecond))
	}
}
