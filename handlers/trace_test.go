package handlers_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/handlers"
)

// A valid traceparent in the metadata goes out in the traceparent header
// of the attempt; an invalid one does not.
func TestDeliverSendsTheTraceparent(t *testing.T) {
	got := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("traceparent")
	}))
	defer srv.Close()
	d, err := handlers.NewDeliver(handlers.DeliverConfig{URL: srv.URL, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	for _, tt := range []struct{ meta, want string }{
		{valid, valid},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", ""},
		{"", ""},
	} {
		msg := message.NewMessage("x", []byte(`{}`))
		if tt.meta != "" {
			msg.Metadata.Set(handlers.TraceparentKey, tt.meta)
		}
		if err := d.Handle(msg); err != nil {
			t.Fatal(err)
		}
		if h := <-got; h != tt.want {
			t.Errorf("metadata %q: header %q, want %q", tt.meta, h, tt.want)
		}
	}
}

func TestValidTraceparent(t *testing.T) {
	for _, tt := range []struct {
		tp   string
		want bool
	}{
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", true},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", true},
		{"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false}, // only version 00
		{"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", false}, // upper case
		{"00-00000000000000000000000000000000-00f067aa0ba902b7-01", false}, // zero trace id
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", false}, // zero parent id
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g", false},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", false},
		{"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false},
		{"", false},
	} {
		if got := handlers.ValidTraceparent(tt.tp); got != tt.want {
			t.Errorf("ValidTraceparent(%q) = %v", tt.tp, got)
		}
		if id := handlers.TraceID(tt.tp); (id != "") != tt.want || tt.want && id != tt.tp[3:35] {
			t.Errorf("TraceID(%q) = %q", tt.tp, id)
		}
	}
}

func FuzzTraceparent(f *testing.F) {
	f.Add("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	f.Add("00-00000000000000000000000000000000-00f067aa0ba902b7-01")
	f.Add("")
	f.Fuzz(func(t *testing.T, tp string) {
		if !handlers.ValidTraceparent(tp) {
			if handlers.TraceID(tp) != "" {
				t.Fatalf("TraceID of invalid %q is not empty", tp)
			}
			return
		}
		if len(tp) != 55 || !strings.HasPrefix(tp, "00-") || strings.Count(tp, "-") != 3 {
			t.Fatalf("valid %q is not 00-<32>-<16>-<2>", tp)
		}
		id := handlers.TraceID(tp)
		if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" || id == strings.Repeat("0", 32) {
			t.Fatalf("trace id %q of %q", id, tp)
		}
	})
}

// POST /ingest keeps a valid traceparent header in the event's metadata;
// POST /ingest/batch those of HeaderBatchTraceparents, by index.
func TestIngestKeepsTheTraceparent(t *testing.T) {
	const other = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
	f := startAPI(t, &handlers.API{})
	one := `{"event":"memory_added","user_id":"u","data":{},"id":"evt_tp_1"}`
	if code, _ := f.post(t, handlers.PathIngest, http.Header{"Traceparent": {valid}}, one); code != 200 {
		t.Fatalf("ingest: %d", code)
	}
	bad := `{"event":"memory_added","user_id":"u","data":{},"id":"evt_tp_2"}`
	if code, _ := f.post(t, handlers.PathIngest, http.Header{"Traceparent": {"00-bad"}}, bad); code != 200 {
		t.Fatalf("ingest: %d", code)
	}
	batch := `[{"event":"memory_added","user_id":"u","data":{},"id":"evt_tp_3"},` +
		`{"event":"memory_added","user_id":"u","data":{},"id":"evt_tp_4"},` +
		`{"event":"memory_added","user_id":"u","data":{},"id":"evt_tp_5"}]`
	if code, _ := f.post(t, event.IngestBatchPath, http.Header{event.HeaderBatchTraceparents: {valid + ",," + other}}, batch); code != 200 {
		t.Fatalf("batch: %d", code)
	}
	wrongCount := `[{"event":"memory_added","user_id":"u","data":{},"id":"evt_tp_6"}]`
	if code, _ := f.post(t, event.IngestBatchPath, http.Header{event.HeaderBatchTraceparents: {valid + "," + other}}, wrongCount); code != 200 {
		t.Fatalf("batch: %d", code)
	}
	want := map[string]string{"evt_tp_1": valid, "evt_tp_2": "", "evt_tp_3": valid, "evt_tp_4": "", "evt_tp_5": other, "evt_tp_6": ""}
	deadline := time.Now().Add(5 * time.Second)
	for {
		f.mu.Lock()
		n := len(f.ingested)
		got := map[string]string{}
		for _, m := range f.ingested {
			got[m.UUID] = m.Metadata.Get(handlers.TraceparentKey)
		}
		f.mu.Unlock()
		if n == len(want) {
			for id, tp := range want {
				if got[id] != tp {
					t.Errorf("%s: traceparent %q, want %q", id, got[id], tp)
				}
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events ingested of %d", n, len(want))
		}
		time.Sleep(5 * time.Millisecond) // ingest hands events over on worker goroutines
	}
}

const valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
