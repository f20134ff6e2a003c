package event_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/memhook/memhook/bus/event"
)

// badIDs are event ids that cannot travel as a webhook-id header as they
// are, with a word the error must contain.
var badIDs = []struct {
	name, id, want string
}{
	{"empty", "", "empty"},
	{"CR LF", "evt\r\nX-Injected: 1", "control character"},
	{"LF", "evt\n1", "control character"},
	{"CR", "evt\r1", "control character"},
	{"NUL", "evt\x001", "control character"},
	{"tab", "evt\t1", "control character"},
	{"escape", "evt\x1b[31m", "control character"},
	{"DEL", "evt\x7f", "control character"},
	{"C1 control", "evt\u0085", "control character"},
	{"blank", "   ", "blank"},
	{"leading space", " evt", "white space"},
	{"trailing space", "evt ", "white space"},
	{"trailing no-break space", "evt\u00a0", "white space"},
	{"invalid UTF-8", "evt\xff", "UTF-8"},
	{"257 bytes", strings.Repeat("a", event.MaxIDBytes+1), "257 bytes"},
	{"multi-byte over the limit", strings.Repeat("é", event.MaxIDBytes/2) + "a", "257 bytes"},
}

func TestValidID(t *testing.T) {
	for _, tt := range badIDs {
		t.Run(tt.name, func(t *testing.T) {
			err := event.ValidID(tt.id)
			if err == nil {
				t.Fatalf("ValidID(%q) = nil, want an error", tt.id)
			}
			if !errors.Is(err, event.ErrInvalid) || !slices.Equal(fieldsOf(err), []string{"id"}) {
				t.Errorf("ValidID(%q) = %v, want a *FieldError for id wrapping ErrInvalid", tt.id, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ValidID(%q) = %q, want it to say %q", tt.id, err, tt.want)
			}
			if len(tt.id) > 3 && strings.Contains(err.Error(), tt.id) {
				t.Errorf("ValidID(%q) = %q echoes the id", tt.id, err)
			}
		})
	}
	for _, id := range []string{
		"0b9f2c8e-4a1d-4f57-9a43-7f0c2d5e6a10", "evt_1", "a", "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W",
		"with inner space", "日本-🎉", strings.Repeat("a", event.MaxIDBytes),
	} {
		if err := event.ValidID(id); err != nil {
			t.Errorf("ValidID(%q) = %v, want nil", id, err)
		}
	}
}

// Decode refuses an envelope whose id could not be sent (an absent or
// empty id is no id), naming the field.
func TestDecodeRefusesBadIDs(t *testing.T) {
	for _, tt := range badIDs {
		if tt.id == "" {
			continue
		}
		t.Run(tt.name, func(t *testing.T) {
			in := `{"event":"memory_added","user_id":"u","data":{},"id":` + jsonString(t, tt.id) + `}`
			env, err := event.Decode([]byte(in))
			if tt.name == "invalid UTF-8" {
				// encoding/json reads invalid UTF-8 as U+FFFD: the id is
				// valid by then.
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Decode(%q) = %+v, want an error", in, env)
			}
			if errors.Is(err, event.ErrMalformed) || !slices.Equal(fieldsOf(err), []string{"id"}) {
				t.Errorf("Decode(%q) = %v, want one error for field id", in, err)
			}
		})
	}
	for _, in := range []string{
		`{"event":"memory_added","user_id":"u","data":{}}`,
		`{"event":"memory_added","user_id":"u","data":{},"id":""}`,
		`{"event":"memory_added","user_id":"u","data":{},"id":null}`,
	} {
		if _, err := event.Decode([]byte(in)); err != nil {
			t.Errorf("Decode(%s) = %v, want no error: the id is optional", in, err)
		}
	}
}

// Encode refuses the same ids, so that what Emit sends and what a router
// ingests follow one rule; an empty ID is written as "" (no id).
func TestEncodeRefusesBadIDs(t *testing.T) {
	for _, tt := range badIDs {
		if tt.id == "" {
			continue
		}
		t.Run(tt.name, func(t *testing.T) {
			m := seedMeta()
			m.ID = tt.id
			b, err := event.Encode(seedEvent(), m)
			if err == nil || b != nil {
				t.Fatalf("Encode with id %q = %s, %v; want an error", tt.id, b, err)
			}
			if !slices.Equal(fieldsOf(err), []string{"id"}) {
				t.Errorf("Encode error %v, want one for field id", err)
			}
		})
	}
	m := seedMeta()
	m.ID = ""
	if _, err := event.Encode(seedEvent(), m); err != nil {
		t.Errorf("Encode without an id: %v", err)
	}
}

// jsonString writes s as a JSON string, invalid UTF-8 byte kept raw.
func jsonString(t *testing.T, s string) string {
	t.Helper()
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20:
			b.WriteString(`\u00`)
			b.WriteByte("0123456789abcdef"[c>>4])
			b.WriteByte("0123456789abcdef"[c&0xf])
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}
