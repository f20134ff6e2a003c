package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// DefaultSource is the envelope's "source" unless configured otherwise: the
// seed document says it is always "markdown-brain-bot".
const DefaultSource = "markdown-brain-bot"

// TimeLayout is the envelope's "timestamp": RFC 3339 in UTC with
// microseconds, e.g. 2024-01-15T10:30:00.123456Z.
const TimeLayout = "2006-01-02T15:04:05.000000Z07:00"

// Metadata keys memhook sets on every Watermill message it publishes, so
// that middleware can route on them without decoding the JSON payload. The
// message UUID is the event id.
const (
	MetaType   = "event_type"
	MetaUserID = "user_id"
)

// ErrMalformed is returned by Decode when the bytes are not a JSON object.
var ErrMalformed = errors.New("event: malformed JSON")

// Meta is what the bus adds to an Event to make an envelope.
type Meta struct {
	// ID is the event id: the same on every delivery attempt and replay.
	ID string
	// Time is when the event happened; it is written in UTC.
	Time time.Time
	// Source is the envelope's "source"; empty means DefaultSource.
	Source string
	// BotVersion is the envelope's "bot_version" (BOT_VERSION).
	BotVersion string
}

// Envelope is the JSON object a webhook carries: the seed's fields plus id.
// Decode fills it from outside input; Encode writes the same shape.
type Envelope struct {
	Event      Type            `json:"event"`
	UserID     string          `json:"user_id"`
	Data       json.RawMessage `json:"data"`
	Timestamp  string          `json:"timestamp"`
	Source     string          `json:"source,omitempty"`
	BotVersion string          `json:"bot_version,omitempty"`
	RequestID  *string         `json:"request_id,omitempty"`
	ID         string          `json:"id,omitempty"`
}

// Encode validates e and writes its envelope:
//
//	{"event":…,"user_id":…,"data":…,"timestamp":…,"source":…,"bot_version":…,"request_id":…,"id":…}
//
// request_id is null when e.RequestID is empty, as the seed's Python sender
// wrote None; id is "" when m.ID is empty. An invalid event, an m.ID that
// ValidID refuses, or Data that encoding/json cannot encode, is an error
// wrapping ErrInvalid that names the field.
func Encode(e Event, m Meta) ([]byte, error) {
	err := e.Validate()
	if m.ID != "" {
		err = errors.Join(err, ValidID(m.ID))
	}
	if err != nil {
		return nil, err
	}
	data, err := json.Marshal(e.Data)
	if err != nil {
		return nil, &FieldError{Field: "data", Problem: "not JSON-encodable: " + err.Error()}
	}
	source := m.Source
	if source == "" {
		source = DefaultSource
	}
	b := make([]byte, 0, len(data)+len(e.UserID)+len(m.ID)+len(m.BotVersion)+len(e.RequestID)+160)
	b = append(b, `{"event":`...)
	b = appendString(b, string(e.Type))
	b = append(b, `,"user_id":`...)
	b = appendString(b, e.UserID)
	b = append(b, `,"data":`...)
	b = append(b, data...)
	b = append(b, `,"timestamp":"`...)
	b = m.Time.UTC().AppendFormat(b, TimeLayout)
	b = append(b, `","source":`...)
	b = appendString(b, source)
	b = append(b, `,"bot_version":`...)
	b = appendString(b, m.BotVersion)
	b = append(b, `,"request_id":`...)
	if e.RequestID == "" {
		b = append(b, "null"...)
	} else {
		b = appendString(b, e.RequestID)
	}
	b = append(b, `,"id":`...)
	b = appendString(b, m.ID)
	b = append(b, '}')
	return b, nil
}

// timeLayouts are accepted in an incoming envelope's timestamp: RFC 3339
// with or without fraction, and the seed's own zone-less ISO 8601 (read as
// UTC).
var timeLayouts = []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999"}

// ParseTime reads an envelope timestamp in any of the accepted layouts.
func ParseTime(s string) (time.Time, error) {
	for _, l := range timeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, &FieldError{Field: "timestamp", Problem: fmt.Sprintf("%q is not an ISO 8601 / RFC 3339 time", s)}
}

// Decode reads an envelope from outside input (incoming webhooks, ingest).
// Malformed JSON wraps ErrMalformed; a well-formed envelope with wrong or
// missing fields returns every problem at once, each a *FieldError wrapping
// ErrInvalid. "event", "user_id" and "data" are required; "timestamp" and
// "id" are optional but must be well-formed when present (an empty id is
// none; a non-empty one must pass ValidID).
func Decode(b []byte) (Envelope, error) {
	if t := bytes.TrimLeft(b, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return Envelope{}, fmt.Errorf("%w: not a JSON object", ErrMalformed)
	}
	var env Envelope
	var errs []error
	wrongType := map[string]bool{}
	// json.Unmarshal rejects trailing data, and on a wrong type goes on
	// with the other fields but reports only the first: notStrings finds
	// them all.
	if err := json.Unmarshal(b, &env); err != nil {
		var typeErr *json.UnmarshalTypeError
		if !errors.As(err, &typeErr) {
			return Envelope{}, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		wrongType[typeErr.Field] = true
		for _, f := range notStrings(b) {
			wrongType[f] = true
		}
		for _, f := range [...]string{"event", "user_id", "timestamp", "source", "bot_version", "request_id", "id"} {
			if wrongType[f] {
				errs = append(errs, &FieldError{Field: f, Problem: "must be a JSON string"})
			}
		}
	}
	if env.Event == "" {
		if !wrongType["event"] {
			errs = append(errs, &FieldError{Field: "event", Problem: "is required"})
		}
	} else if !env.Event.Valid() {
		errs = append(errs, &FieldError{Field: "event", Problem: fmt.Sprintf("unknown event type %q", truncate(string(env.Event)))})
	}
	if strings.TrimSpace(env.UserID) == "" && !wrongType["user_id"] {
		errs = append(errs, &FieldError{Field: "user_id", Problem: "is required"})
	}
	if len(env.Data) == 0 {
		errs = append(errs, &FieldError{Field: "data", Problem: "is required"})
	}
	if env.Timestamp != "" {
		if _, err := ParseTime(env.Timestamp); err != nil {
			errs = append(errs, &FieldError{Field: "timestamp", Problem: fmt.Sprintf("%q is not an ISO 8601 / RFC 3339 time", truncate(env.Timestamp))})
		}
	}
	if env.ID != "" {
		if err := ValidID(env.ID); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return Envelope{}, err
	}
	return env, nil
}

// notStrings names the envelope's string fields whose value in b (a valid
// JSON object) is neither a string nor null.
func notStrings(b []byte) []string {
	var raw struct {
		Event      json.RawMessage `json:"event"`
		UserID     json.RawMessage `json:"user_id"`
		Timestamp  json.RawMessage `json:"timestamp"`
		Source     json.RawMessage `json:"source"`
		BotVersion json.RawMessage `json:"bot_version"`
		RequestID  json.RawMessage `json:"request_id"`
		ID         json.RawMessage `json:"id"`
	}
	_ = json.Unmarshal(b, &raw)
	var out []string
	for _, f := range [...]struct {
		name  string
		value json.RawMessage
	}{
		{"event", raw.Event}, {"user_id", raw.UserID}, {"timestamp", raw.Timestamp}, {"source", raw.Source},
		{"bot_version", raw.BotVersion}, {"request_id", raw.RequestID}, {"id", raw.ID},
	} {
		if len(f.value) > 0 && f.value[0] != '"' && string(f.value) != "null" {
			out = append(out, f.name)
		}
	}
	return out
}

// truncate keeps error messages about outside input short.
func truncate(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}

// appendString appends s as a JSON string, escaped as encoding/json does
// (without HTML escaping); invalid UTF-8 becomes U+FFFD.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
