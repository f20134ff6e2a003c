package handlers_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/handlers"
	"github.com/memhook/memhook/internal/ingesttest"
)

func TestIngestBatch(t *testing.T) {
	r := ingesttest.Start(t, 1000, &handlers.API{})
	f := &apiFixture{srv: r.Server}
	batch := "[" + ingesttest.Envelope("e1") + "," + ingesttest.Envelope("e2") + "," + ingesttest.Envelope("e3") + "]"

	code, out := f.post(t, handlers.PathIngestBatch, nil, batch)
	if code != 200 || out["accepted"] != 3.0 || out["duplicates"] != 0.0 {
		t.Fatalf("first batch: %d %v, want 200 accepted 3", code, out)
	}
	if got := strings.Join(r.IDs(), ","); got != "e1,e2,e3" {
		t.Fatalf("ingested %s, want e1,e2,e3 in order", got)
	}
	m := r.Ingested(1)
	if m.Metadata.Get(event.MetaType) != "memory_added" || m.Metadata.Get(event.MetaUserID) != "user123" || string(m.Payload) != ingesttest.Envelope("e2") {
		t.Errorf("message e2: metadata %v payload %s", m.Metadata, m.Payload)
	}

	// The same batch again (its answer was lost, say): counted, not queued.
	code, out = f.post(t, handlers.PathIngestBatch, nil, batch)
	if code != 200 || out["accepted"] != 3.0 || out["duplicates"] != 3.0 {
		t.Fatalf("batch sent again: %d %v, want 200 accepted 3 duplicates 3", code, out)
	}
	if n := len(r.IDs()); n != 3 {
		t.Fatalf("%d events queued after the batch came twice, want 3", n)
	}

	tests := []struct {
		name, body string
		code       int
		want       string
	}{
		{"not an array", ingesttest.Envelope("x"), 400, "not a JSON array of events"},
		{"empty", "[]", 400, "empty batch"},
		{"malformed event", "[" + ingesttest.Envelope("x1") + `,{"event":]`, 400, "not a JSON array"},
		{"invalid event named by index", "[" + ingesttest.Envelope("x2") + `,{"id":"x3","event":"memory_added"}]`, 422, "event 1: "},
		{"too many", "[" + strings.Repeat(ingesttest.Envelope("y")+",", handlers.MaxBatchEvents) + ingesttest.Envelope("y") + "]", 413, "at most 1000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out := f.post(t, handlers.PathIngestBatch, nil, tt.body)
			if code != tt.code || !strings.Contains(fmt.Sprint(out["error"]), tt.want) {
				t.Fatalf("%d %v, want %d with %q", code, out, tt.code, tt.want)
			}
		})
	}
	if n := len(r.IDs()); n != 3 {
		t.Errorf("%d events queued, want 3: a refused batch queues nothing", n)
	}
}

// When the queue fills up mid-batch the answer says how many of the first
// events were taken; sending the rest later takes them.
func TestIngestBatchQueueFull(t *testing.T) {
	r := ingesttest.Start(t, 2, &handlers.API{})
	f := &apiFixture{srv: r.Server}
	batch := "[" + ingesttest.Envelope("f1") + "," + ingesttest.Envelope("f2") + "," + ingesttest.Envelope("f3") + "]"
	req, _ := http.NewRequest(http.MethodPost, r.Server.URL+handlers.PathIngestBatch, strings.NewReader(batch))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("status %d Retry-After %q, want 503 and 1", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	r.SetCapacity(10)
	code, out := f.post(t, handlers.PathIngestBatch, nil, batch)
	if code != 200 || out["accepted"] != 3.0 || out["duplicates"] != 2.0 {
		t.Fatalf("after room was made: %d %v, want accepted 3 duplicates 2", code, out)
	}
	if got := strings.Join(r.IDs(), ","); got != "f1,f2,f3" {
		t.Errorf("ingested %s, want f1,f2,f3", got)
	}
}

func TestIngestBatchRequiresTheIngestToken(t *testing.T) {
	r := ingesttest.Start(t, 10, &handlers.API{IngestToken: "ingest-token"})
	f := &apiFixture{srv: r.Server}
	batch := "[" + ingesttest.Envelope("t1") + "]"
	if code, out := f.post(t, handlers.PathIngestBatch, nil, batch); code != 401 {
		t.Fatalf("without the token: %d %v, want 401", code, out)
	}
	if code, out := f.post(t, handlers.PathIngestBatch, http.Header{"Authorization": {"Bearer ingest-token"}}, batch); code != 200 {
		t.Fatalf("with the token: %d %v, want 200", code, out)
	}
}
