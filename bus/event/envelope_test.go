package event_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/memhook/memhook/bus/event"
)

// seedTime is the seed's example timestamp, 2024-01-15T10:30:00.123456.
var seedTime = time.Date(2024, 1, 15, 10, 30, 0, 123456000, time.UTC)

const seedID = "0b9f2c8e-4a1d-4f57-9a43-7f0c2d5e6a10"

// seedEvent is the seed's outgoing payload example as an Event.
func seedEvent() event.Event {
	return event.Event{
		Type:   event.MemoryAdded,
		UserID: "user123",
		Data: map[string]any{
			"memory_id": "mem_456",
			"content":   "User prefers morning meetings",
			"category":  "preference",
		},
		RequestID: "req_789",
	}
}

func seedMeta() event.Meta {
	return event.Meta{ID: seedID, Time: seedTime, BotVersion: "1.0.0"}
}

// keysOf returns the top-level keys of a JSON object in the order written.
func keysOf(t *testing.T, b []byte) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("%s is not a JSON object: %v", b, err)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("reading a key of %s: %v", b, err)
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatalf("reading the value of %q in %s: %v", tok, b, err)
		}
	}
	return keys
}

func TestEncodeWritesTheSeedsEnvelope(t *testing.T) {
	got, err := event.Encode(seedEvent(), seedMeta())
	if err != nil {
		t.Fatal(err)
	}
	want := `{"event":"memory_added","user_id":"user123",` +
		`"data":{"category":"preference","content":"User prefers morning meetings","memory_id":"mem_456"},` +
		`"timestamp":"2024-01-15T10:30:00.123456Z","source":"markdown-brain-bot","bot_version":"1.0.0",` +
		`"request_id":"req_789","id":"` + seedID + `"}`
	if string(got) != want {
		t.Errorf("Encode =\n%s\nwant\n%s", got, want)
	}
}

func TestEncodeFieldOrder(t *testing.T) {
	want := []string{"event", "user_id", "data", "timestamp", "source", "bot_version", "request_id", "id"}
	tests := []struct {
		name string
		e    event.Event
		m    event.Meta
	}{
		{name: "seed example", e: seedEvent(), m: seedMeta()},
		{name: "everything empty but the required", e: event.Event{Type: event.GraphBuilt, UserID: "u"}},
		{name: "data with its own event and id keys", e: event.Event{Type: event.MemoryUpdated, UserID: "u",
			Data: map[string]any{"id": "inner", "event": "inner", "user_id": "inner"}}, m: seedMeta()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := event.Encode(tt.e, tt.m)
			if err != nil {
				t.Fatal(err)
			}
			if got := keysOf(t, b); !slices.Equal(got, want) {
				t.Errorf("keys %v, want %v in %s", got, want, b)
			}
		})
	}
}

func TestEncodeRequestIDIsNullWhenEmpty(t *testing.T) {
	tests := []struct {
		name      string
		requestID string
		want      string
	}{
		{name: "empty", requestID: "", want: `null`},
		{name: "set", requestID: "req_789", want: `"req_789"`},
		{name: "the string null", requestID: "null", want: `"null"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := seedEvent()
			e.RequestID = tt.requestID
			b, err := event.Encode(e, seedMeta())
			if err != nil {
				t.Fatal(err)
			}
			var fields map[string]json.RawMessage
			if err := json.Unmarshal(b, &fields); err != nil {
				t.Fatal(err)
			}
			raw, ok := fields["request_id"]
			if !ok {
				t.Fatalf("no request_id in %s", b)
			}
			if string(raw) != tt.want {
				t.Errorf("request_id = %s, want %s", raw, tt.want)
			}
		})
	}
}

func TestEncodeTimestamp(t *testing.T) {
	shape := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$`)
	tests := []struct {
		name string
		at   time.Time
		want string
	}{
		{name: "seed example", at: seedTime, want: "2024-01-15T10:30:00.123456Z"},
		{name: "whole second keeps six zeros", at: time.Date(2024, 1, 15, 10, 30, 0, 0, time.UTC), want: "2024-01-15T10:30:00.000000Z"},
		{name: "nanoseconds are cut, not rounded", at: time.Date(2024, 1, 15, 10, 30, 0, 999999999, time.UTC), want: "2024-01-15T10:30:00.999999Z"},
		{name: "one microsecond", at: time.Date(2024, 1, 15, 10, 30, 0, 1000, time.UTC), want: "2024-01-15T10:30:00.000001Z"},
		{name: "other zone is written in UTC", at: time.Date(2024, 1, 15, 5, 30, 0, 500000000, time.FixedZone("EST", -5*3600)), want: "2024-01-15T10:30:00.500000Z"},
		{name: "local zone east of UTC crosses midnight", at: time.Date(2024, 1, 1, 1, 0, 0, 0, time.FixedZone("CET", 3600)), want: "2024-01-01T00:00:00.000000Z"},
		{name: "zero time", at: time.Time{}, want: "0001-01-01T00:00:00.000000Z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := seedMeta()
			m.Time = tt.at
			b, err := event.Encode(seedEvent(), m)
			if err != nil {
				t.Fatal(err)
			}
			var env struct{ Timestamp string }
			if err := json.Unmarshal(b, &env); err != nil {
				t.Fatal(err)
			}
			if env.Timestamp != tt.want {
				t.Errorf("timestamp = %q, want %q", env.Timestamp, tt.want)
			}
			if !shape.MatchString(env.Timestamp) {
				t.Errorf("timestamp %q is not RFC 3339 UTC with six fraction digits", env.Timestamp)
			}
			parsed, err := time.Parse(time.RFC3339Nano, env.Timestamp)
			if err != nil {
				t.Fatalf("timestamp %q does not parse as RFC 3339: %v", env.Timestamp, err)
			}
			if want := tt.at.Truncate(time.Microsecond); !parsed.Equal(want) {
				t.Errorf("timestamp reads back as %v, want %v", parsed, want)
			}
		})
	}
}

func TestEncodeMeta(t *testing.T) {
	tests := []struct {
		name           string
		meta           event.Meta
		wantSource     string
		wantBotVersion string
		wantID         string
	}{
		{name: "empty source is the seed's", meta: event.Meta{ID: "a"}, wantSource: "markdown-brain-bot", wantID: "a"},
		{name: "configured source", meta: event.Meta{ID: "b", Source: "my-bot", BotVersion: "2.1.0"}, wantSource: "my-bot", wantBotVersion: "2.1.0", wantID: "b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := event.Encode(seedEvent(), tt.meta)
			if err != nil {
				t.Fatal(err)
			}
			var env struct {
				Source     string `json:"source"`
				BotVersion string `json:"bot_version"`
				ID         string `json:"id"`
			}
			if err := json.Unmarshal(b, &env); err != nil {
				t.Fatal(err)
			}
			if env.Source != tt.wantSource || env.BotVersion != tt.wantBotVersion || env.ID != tt.wantID {
				t.Errorf("source, bot_version, id = %q, %q, %q; want %q, %q, %q",
					env.Source, env.BotVersion, env.ID, tt.wantSource, tt.wantBotVersion, tt.wantID)
			}
		})
	}
}

// viaEncodingJSON is what encoding/json makes of s on a round trip: the
// reference Encode's strings must match.
func viaEncodingJSON(t testing.TB, s string) string {
	t.Helper()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var back string
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	return back
}

// encodedStrings is the envelope's string fields as a JSON decoder reads
// them back.
type encodedStrings struct {
	Event      string         `json:"event"`
	UserID     string         `json:"user_id"`
	Data       map[string]any `json:"data"`
	Source     string         `json:"source"`
	BotVersion string         `json:"bot_version"`
	RequestID  *string        `json:"request_id"`
	ID         string         `json:"id"`
}

func TestEncodeEscapesStringsAsEncodingJSON(t *testing.T) {
	tests := []struct {
		name string
		s    string
	}{
		{name: "plain", s: "user123"},
		{name: "quotes", s: `say "hi"`},
		{name: "backslashes", s: `C:\path\to\file \\ \"`},
		{name: "short escapes", s: "tab\tnewline\ncarriage\rbackspace\bformfeed\f"},
		{name: "every control char", s: "x\x00\x01\x02\x03\x04\x05\x06\x07\x0b\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1fy"},
		{name: "DEL", s: "a\x7fb"},
		{name: "invalid UTF-8 byte", s: "a\xffb"},
		{name: "truncated sequence", s: "caf\xc3"},
		{name: "encoded surrogate", s: "\xed\xa0\x80"},
		{name: "overlong slash", s: "\xc0\xaf"},
		{name: "line and paragraph separators", s: "a\u2028b\u2029c"},
		{name: "non-ASCII", s: "héllo wörld 日本語 🎉 \u00a0"},
		{name: "HTML characters", s: "<script>alert('&')</script>"},
		{name: "replacement char itself", s: "\ufffd"},
		{name: "JSON lookalike", s: `","event":"memory_deleted`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := event.Event{Type: event.MemoryAdded, UserID: tt.s, Data: map[string]any{"s": tt.s}, RequestID: tt.s}
			id := tt.s // an id must pass ValidID (TestEncodeRefusesBadIDs)
			if event.ValidID(id) != nil {
				id = seedID
			}
			b, err := event.Encode(e, event.Meta{ID: id, Source: tt.s, BotVersion: tt.s, Time: seedTime})
			if err != nil {
				t.Fatal(err)
			}
			if !json.Valid(b) {
				t.Fatalf("Encode wrote invalid JSON: %q", b)
			}
			if !utf8.Valid(b) {
				t.Errorf("Encode wrote invalid UTF-8: %q", b)
			}
			for _, raw := range []string{"\u2028", "\u2029"} {
				if bytes.Contains(b, []byte(raw)) {
					t.Errorf("Encode left %U unescaped, encoding/json escapes it: %q", []rune(raw)[0], b)
				}
			}
			for _, c := range b {
				if c < 0x20 {
					t.Fatalf("Encode left control byte %#x unescaped: %q", c, b)
				}
			}
			var got encodedStrings
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			want := viaEncodingJSON(t, tt.s)
			if utf8.ValidString(tt.s) && want != tt.s {
				t.Fatalf("test is wrong: encoding/json changed valid %q to %q", tt.s, want)
			}
			if got.RequestID == nil {
				t.Fatalf("request_id is null in %q", b)
			}
			if got.ID != id {
				t.Errorf("id reads back as %q, want %q", got.ID, id)
			}
			for field, value := range map[string]string{
				"user_id": got.UserID, "request_id": *got.RequestID,
				"source": got.Source, "bot_version": got.BotVersion, "data.s": got.Data["s"].(string),
			} {
				if value != want {
					t.Errorf("%s reads back as %q, want %q (as encoding/json)", field, value, want)
				}
			}
			if got.Event != "memory_added" {
				t.Errorf("event = %q", got.Event)
			}
		})
	}
}

func TestEncodeErrorsNameTheField(t *testing.T) {
	ch := make(chan int)
	tests := []struct {
		name string
		e    event.Event
		want []string
	}{
		{name: "unknown type", e: event.Event{Type: "memory_exploded", UserID: "u"}, want: []string{"event"}},
		{name: "empty type", e: event.Event{UserID: "u"}, want: []string{"event"}},
		{name: "empty user_id", e: event.Event{Type: event.MemoryAdded}, want: []string{"user_id"}},
		{name: "blank user_id", e: event.Event{Type: event.MemoryAdded, UserID: "  "}, want: []string{"user_id"}},
		{name: "type and user_id at once", e: event.Event{Type: "nope"}, want: []string{"event", "user_id"}},
		{name: "data is a func", e: event.Event{Type: event.MemoryAdded, UserID: "u", Data: func() {}}, want: []string{"data"}},
		{name: "data is a chan", e: event.Event{Type: event.MemoryAdded, UserID: "u", Data: ch}, want: []string{"data"}},
		{name: "data is NaN", e: event.Event{Type: event.MemoryAdded, UserID: "u", Data: math.NaN()}, want: []string{"data"}},
		{name: "NaN deep in data", e: event.Event{Type: event.MemoryAdded, UserID: "u", Data: map[string]any{"scores": []float64{1, math.Inf(1)}}}, want: []string{"data"}},
		{name: "func deep in data", e: event.Event{Type: event.MemoryAdded, UserID: "u", Data: map[string]any{"cb": func() {}}}, want: []string{"data"}},
		{name: "raw data that is not JSON", e: event.Event{Type: event.MemoryAdded, UserID: "u", Data: json.RawMessage(`{"a":`)}, want: []string{"data"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := event.Encode(tt.e, seedMeta())
			if err == nil {
				t.Fatalf("Encode succeeded: %s", b)
			}
			if b != nil {
				t.Errorf("Encode returned bytes with its error: %q", b)
			}
			if got := fieldsOf(err); !slices.Equal(got, tt.want) {
				t.Errorf("Encode error %q: fields %v, want %v", err, got, tt.want)
			}
			if !errors.Is(err, event.ErrInvalid) {
				t.Errorf("Encode error %v does not wrap ErrInvalid", err)
			}
			for _, f := range tt.want {
				if !strings.Contains(err.Error(), f) {
					t.Errorf("Encode error %q does not name %s", err, f)
				}
			}
		})
	}
}

func TestDecodeMalformed(t *testing.T) {
	tests := []struct {
		name string
		in   string
	}{
		{name: "empty", in: ""},
		{name: "spaces", in: "  \n"},
		{name: "not JSON", in: "event=memory_added"},
		{name: "unterminated object", in: `{"event":"memory_added"`},
		{name: "missing value", in: `{"event":}`},
		{name: "trailing comma", in: `{"event":"memory_added",}`},
		{name: "single quotes", in: `{'event':'memory_added'}`},
		{name: "array", in: `[{"event":"memory_added","user_id":"u","data":{}}]`},
		{name: "string", in: `"memory_added"`},
		{name: "number", in: `42`},
		{name: "null", in: `null`},
		{name: "second object", in: `{"event":"memory_added","user_id":"u","data":{}} {}`},
		{name: "trailing brace", in: `{"event":"memory_added","user_id":"u","data":{}}}`},
		{name: "trailing bracket", in: `{"event":"memory_added","user_id":"u","data":{}}]`},
		{name: "trailing garbage", in: `{"event":"memory_added","user_id":"u","data":{}}x`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, err := event.Decode([]byte(tt.in))
			if !errors.Is(err, event.ErrMalformed) {
				t.Fatalf("Decode(%q) = %+v, %v; want ErrMalformed", tt.in, env, err)
			}
			if errors.Is(err, event.ErrInvalid) {
				t.Errorf("Decode(%q) error %v wraps ErrInvalid too", tt.in, err)
			}
		})
	}
}

func TestDecodeReportsEveryBadField(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{name: "empty object", in: `{}`, want: []string{"data", "event", "user_id"}},
		{name: "missing event", in: `{"user_id":"u","data":{}}`, want: []string{"event"}},
		{name: "missing user_id", in: `{"event":"memory_added","data":{}}`, want: []string{"user_id"}},
		{name: "blank user_id", in: `{"event":"memory_added","user_id":"  ","data":{}}`, want: []string{"user_id"}},
		{name: "missing data", in: `{"event":"memory_added","user_id":"u"}`, want: []string{"data"}},
		{name: "unknown type", in: `{"event":"memory_exploded","user_id":"u","data":{}}`, want: []string{"event"}},
		{name: "bad timestamp", in: `{"event":"memory_added","user_id":"u","data":{},"timestamp":"yesterday"}`, want: []string{"timestamp"}},
		{name: "date without time", in: `{"event":"memory_added","user_id":"u","data":{},"timestamp":"2024-01-15"}`, want: []string{"timestamp"}},
		{name: "unknown type, bad timestamp and no user", in: `{"event":"x","data":{},"timestamp":"soon"}`, want: []string{"event", "timestamp", "user_id"}},
		{name: "event is a number", in: `{"event":1,"user_id":"u","data":{}}`, want: []string{"event"}},
		{name: "user_id is a number", in: `{"event":"memory_added","user_id":123,"data":{}}`, want: []string{"user_id"}},
		{name: "user_id is an object", in: `{"event":"memory_added","user_id":{"id":"u"},"data":{}}`, want: []string{"user_id"}},
		{name: "timestamp is a number", in: `{"event":"memory_added","user_id":"u","data":{},"timestamp":1705314600}`, want: []string{"timestamp"}},
		{name: "request_id is a number", in: `{"event":"memory_added","user_id":"u","data":{},"request_id":789}`, want: []string{"request_id"}},
		{name: "two wrong types", in: `{"event":true,"user_id":["u"],"data":{}}`, want: []string{"event", "user_id"}},
		{name: "wrong type and missing field", in: `{"event":"memory_added","user_id":5}`, want: []string{"data", "user_id"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, err := event.Decode([]byte(tt.in))
			if err == nil {
				t.Fatalf("Decode(%s) = %+v, want an error", tt.in, env)
			}
			if errors.Is(err, event.ErrMalformed) {
				t.Fatalf("Decode(%s) = %v: well-formed JSON reported as malformed", tt.in, err)
			}
			if !errors.Is(err, event.ErrInvalid) {
				t.Errorf("Decode(%s) error %v does not wrap ErrInvalid", tt.in, err)
			}
			if got := fieldsOf(err); !slices.Equal(got, tt.want) {
				t.Errorf("Decode(%s) = %q: fields %v, want %v", tt.in, err, got, tt.want)
			}
		})
	}
}

func TestDecodeAcceptsTheSeedsExamples(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		want     event.Envelope
		wantData string
		wantTime time.Time
	}{
		{
			name: "incoming webhook",
			in: `{
  "event": "memory_added",
  "user_id": "user123",
  "data": {
    "memory_id": "external_mem_456",
    "content": "External system data"
  },
  "timestamp": "2024-01-15T10:30:00Z"
}`,
			want:     event.Envelope{Event: event.MemoryAdded, UserID: "user123", Timestamp: "2024-01-15T10:30:00Z"},
			wantData: `{"memory_id":"external_mem_456","content":"External system data"}`,
			wantTime: time.Date(2024, 1, 15, 10, 30, 0, 0, time.UTC),
		},
		{
			name: "outgoing payload with the zone-less timestamp",
			in: `{
  "event": "memory_added",
  "user_id": "user123",
  "data": {
    "memory_id": "mem_456",
    "content": "User prefers morning meetings",
    "category": "preference"
  },
  "timestamp": "2024-01-15T10:30:00.123456",
  "source": "markdown-brain-bot",
  "bot_version": "1.0.0",
  "request_id": "req_789"
}`,
			want: event.Envelope{Event: event.MemoryAdded, UserID: "user123", Timestamp: "2024-01-15T10:30:00.123456",
				Source: "markdown-brain-bot", BotVersion: "1.0.0", RequestID: ptr("req_789")},
			wantData: `{"memory_id":"mem_456","content":"User prefers morning meetings","category":"preference"}`,
			wantTime: seedTime,
		},
		{
			name:     "curl test from the seed",
			in:       `{"event": "memory_added","user_id": "test_user","data": {"test": true,"content": "Test memory"},"timestamp": "2024-01-15T10:30:00Z"}`,
			want:     event.Envelope{Event: event.MemoryAdded, UserID: "test_user", Timestamp: "2024-01-15T10:30:00Z"},
			wantData: `{"test":true,"content":"Test memory"}`,
			wantTime: time.Date(2024, 1, 15, 10, 30, 0, 0, time.UTC),
		},
		{
			name:     "no timestamp, null request_id",
			in:       `{"event":"graph_built","user_id":"u","data":{"nodes":3},"request_id":null,"id":"e1"}`,
			want:     event.Envelope{Event: event.GraphBuilt, UserID: "u", ID: "e1"},
			wantData: `{"nodes":3}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, err := event.Decode([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			var data bytes.Buffer
			if err := json.Compact(&data, env.Data); err != nil {
				t.Fatal(err)
			}
			if data.String() != tt.wantData {
				t.Errorf("data = %s, want %s", data.String(), tt.wantData)
			}
			env.Data = nil
			if !equalEnvelopes(env, tt.want) {
				t.Errorf("Decode = %+v, want %+v", env, tt.want)
			}
			if env.Timestamp == "" {
				return
			}
			at, err := event.ParseTime(env.Timestamp)
			if err != nil {
				t.Fatal(err)
			}
			if !at.Equal(tt.wantTime) || at.Location() != time.UTC {
				t.Errorf("ParseTime(%q) = %v, want %v in UTC", env.Timestamp, at, tt.wantTime)
			}
		})
	}
}

func TestEncodeThenDecode(t *testing.T) {
	b, err := event.Encode(seedEvent(), seedMeta())
	if err != nil {
		t.Fatal(err)
	}
	env, err := event.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	want := event.Envelope{Event: event.MemoryAdded, UserID: "user123", Timestamp: "2024-01-15T10:30:00.123456Z",
		Source: "markdown-brain-bot", BotVersion: "1.0.0", RequestID: ptr("req_789"), ID: seedID}
	if got := string(env.Data); got != `{"category":"preference","content":"User prefers morning meetings","memory_id":"mem_456"}` {
		t.Errorf("data = %s", got)
	}
	env.Data = nil
	if !equalEnvelopes(env, want) {
		t.Errorf("Decode(Encode(seed)) = %+v, want %+v", env, want)
	}
}

func TestParseTime(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    time.Time
		wantErr bool
	}{
		{name: "what Encode writes", in: "2024-01-15T10:30:00.123456Z", want: seedTime},
		{name: "seed's zone-less micros are UTC", in: "2024-01-15T10:30:00.123456", want: seedTime},
		{name: "zone-less whole seconds", in: "2024-01-15T10:30:00", want: time.Date(2024, 1, 15, 10, 30, 0, 0, time.UTC)},
		{name: "offset is converted", in: "2024-01-15T12:30:00+02:00", want: time.Date(2024, 1, 15, 10, 30, 0, 0, time.UTC)},
		{name: "nanoseconds", in: "2024-01-15T10:30:00.123456789Z", want: time.Date(2024, 1, 15, 10, 30, 0, 123456789, time.UTC)},
		{name: "garbage", in: "yesterday", wantErr: true},
		{name: "date only", in: "2024-01-15", wantErr: true},
		{name: "space separator", in: "2024-01-15 10:30:00", wantErr: true},
		{name: "month 13", in: "2024-13-15T10:30:00Z", wantErr: true},
		{name: "empty", in: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := event.ParseTime(tt.in)
			if tt.wantErr {
				var fe *event.FieldError
				if !errors.As(err, &fe) || fe.Field != "timestamp" {
					t.Fatalf("ParseTime(%q) = %v, %v; want a *FieldError for timestamp", tt.in, got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !got.Equal(tt.want) || got.Location() != time.UTC {
				t.Errorf("ParseTime(%q) = %v, want %v in UTC", tt.in, got, tt.want)
			}
		})
	}
}

func ptr(s string) *string { return &s }

func equalEnvelopes(a, b event.Envelope) bool {
	if (a.RequestID == nil) != (b.RequestID == nil) || (a.RequestID != nil && *a.RequestID != *b.RequestID) {
		return false
	}
	a.RequestID, b.RequestID = nil, nil
	return a.Event == b.Event && a.UserID == b.UserID && bytes.Equal(a.Data, b.Data) &&
		a.Timestamp == b.Timestamp && a.Source == b.Source && a.BotVersion == b.BotVersion && a.ID == b.ID
}
