package event_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/memhook/memhook/bus/event"
)

// FuzzDecode feeds outside input to Decode: it never panics, every error is
// ErrMalformed or ErrInvalid, and an envelope it accepts encodes again and
// decodes to the same values.
func FuzzDecode(f *testing.F) {
	for _, seed := range []string{
		`{"event":"memory_added","user_id":"user123","data":{"memory_id":"external_mem_456","content":"External system data"},"timestamp":"2024-01-15T10:30:00Z"}`,
		`{"event":"memory_added","user_id":"user123","data":{"memory_id":"mem_456"},"timestamp":"2024-01-15T10:30:00.123456","source":"markdown-brain-bot","bot_version":"1.0.0","request_id":"req_789"}`,
		`{"event":"graph_built","user_id":"u","data":null,"request_id":null,"id":"e1"}`,
		`{"event":"memory_error","user_id":"\u2028\ud800","data":{"e":"\u0000<>&"}}`,
		`{"EVENT":"memory_added","User_ID":"u","data":[1,2.5e300,"x"]}`,
		`{"event":1,"user_id":["u"],"data":{}}`,
		`{"event":"memory_added","user_id":"u","data":{}}}`,
		`{}`, `null`, `[]`, `"x"`, ``, `{"event":`,
		"{\"event\":\"memory_added\",\"user_id\":\"\xff\",\"data\":\"\xfe\"}",
		// ids that cannot be a webhook-id header
		`{"event":"memory_added","user_id":"u","data":{},"id":"evt\r\nX-Injected: 1"}`,
		`{"event":"memory_added","user_id":"u","data":{},"id":"evt\u0000"}`,
		`{"event":"memory_added","user_id":"u","data":{},"id":"\t"}`,
		`{"event":"memory_added","user_id":"u","data":{},"id":"   "}`,
		`{"event":"memory_added","user_id":"u","data":{},"id":" evt"}`,
		`{"event":"memory_added","user_id":"u","data":{},"id":"evt\u0085"}`,
		`{"event":"memory_added","user_id":"u","data":{},"id":"` + strings.Repeat("a", event.MaxIDBytes+1) + `"}`,
		`{"event":"memory_added","user_id":"u","data":{},"id":"` + strings.Repeat("a", event.MaxIDBytes) + `"}`,
		"{\"event\":\"memory_added\",\"user_id\":\"u\",\"data\":{},\"id\":\"\xff\"}",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		env, err := event.Decode(in)
		if err != nil {
			if !errors.Is(err, event.ErrMalformed) && !errors.Is(err, event.ErrInvalid) {
				t.Fatalf("Decode(%q) error %v is neither ErrMalformed nor ErrInvalid", in, err)
			}
			return
		}
		if !json.Valid(in) {
			t.Fatalf("Decode accepted invalid JSON %q", in)
		}
		if env.ID != "" && event.ValidID(env.ID) != nil {
			t.Fatalf("Decode accepted id %q, which ValidID refuses: %v", env.ID, event.ValidID(env.ID))
		}
		var at time.Time
		if env.Timestamp != "" {
			if at, err = event.ParseTime(env.Timestamp); err != nil {
				t.Fatalf("Decode accepted timestamp %q that ParseTime rejects: %v", env.Timestamp, err)
			}
		}
		requestID := ""
		if env.RequestID != nil {
			requestID = *env.RequestID
		}
		e := event.Event{Type: env.Event, UserID: env.UserID, Data: env.Data, RequestID: requestID}
		out, err := event.Encode(e, event.Meta{ID: env.ID, Time: at, Source: env.Source, BotVersion: env.BotVersion})
		if err != nil {
			t.Fatalf("Decode(%q) = %+v, which does not encode: %v", in, env, err)
		}
		back, err := event.Decode(out)
		if err != nil {
			t.Fatalf("Encode wrote %q, which does not decode: %v", out, err)
		}
		wantSource := env.Source
		if wantSource == "" {
			wantSource = event.DefaultSource
		}
		gotRequestID := ""
		if back.RequestID != nil {
			gotRequestID = *back.RequestID
		}
		if back.Event != env.Event || back.UserID != env.UserID || back.ID != env.ID ||
			back.Source != wantSource || back.BotVersion != env.BotVersion || gotRequestID != requestID {
			t.Fatalf("round trip changed the envelope:\n%+v\n%+v", env, back)
		}
		if !sameValue(t, env.Data, back.Data) {
			t.Fatalf("round trip changed data: %s became %s", env.Data, back.Data)
		}
	})
}

// FuzzEncodeStrings encodes arbitrary strings in every string field of the
// envelope (a in the event's fields, b in the bus's): the output is always
// valid JSON and UTF-8, and reads back as encoding/json would have written
// the strings (invalid UTF-8 as U+FFFD). An id b that ValidID refuses is
// an error naming id; the other fields are then checked with a valid id.
func FuzzEncodeStrings(f *testing.F) {
	f.Add("user123", "markdown-brain-bot")
	f.Add("\x00\x1f\"\\", "\u2028\u2029")
	f.Add("\xff\xfe", "caf\xc3")
	f.Add("日本 🎉 <&>", "\xed\xa0\x80")
	f.Add("\t\n\r\b\f\x7f", `\u0000`)
	f.Add(" ", "")
	f.Add("user123", "evt\r\n")
	f.Add("user123", "evt_1")
	f.Fuzz(func(t *testing.T, a, b string) {
		e := event.Event{Type: event.MemoryAdded, UserID: a, Data: map[string]string{"content": a + b}, RequestID: b + a}
		id := b
		if b != "" && event.ValidID(b) != nil {
			_, err := event.Encode(event.Event{Type: event.MemoryAdded, UserID: "u"}, event.Meta{ID: b, Time: seedTime})
			if got := fieldsOf(err); !slices.Equal(got, []string{"id"}) {
				t.Fatalf("Encode with id %q: error %v, want one for id", b, err)
			}
			id = "evt_fuzz"
		}
		out, err := event.Encode(e, event.Meta{ID: id, Source: b, BotVersion: a, Time: seedTime})
		if strings.TrimSpace(a) == "" {
			if got := fieldsOf(err); len(got) != 1 || got[0] != "user_id" {
				t.Fatalf("Encode with user_id %q: error %v, want one for user_id", a, err)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if !json.Valid(out) || !utf8.Valid(out) {
			t.Fatalf("Encode wrote invalid JSON or UTF-8: %q", out)
		}
		var got encodedStrings
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatal(err)
		}
		source := b
		if source == "" {
			source = event.DefaultSource
		}
		if got.RequestID == nil {
			t.Fatalf("request_id %q was written as null", b+a)
		}
		for _, c := range []struct{ field, in, got string }{
			{"user_id", a, got.UserID},
			{"request_id", b + a, *got.RequestID},
			{"id", id, got.ID},
			{"source", source, got.Source},
			{"bot_version", a, got.BotVersion},
			{"data.content", a + b, got.Data["content"].(string)},
		} {
			want := viaEncodingJSON(t, c.in)
			if c.got != want {
				t.Errorf("%s %q reads back as %q, encoding/json gives %q", c.field, c.in, c.got, want)
			}
			if utf8.ValidString(c.in) && c.got != c.in {
				t.Errorf("valid UTF-8 %s %q reads back as %q", c.field, c.in, c.got)
			}
		}
	})
}

func sameValue(t *testing.T, a, b json.RawMessage) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Fatalf("%q: %v", a, err)
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatalf("%q: %v", b, err)
	}
	return reflect.DeepEqual(va, vb)
}
