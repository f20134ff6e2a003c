package event

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxIDBytes is the longest event id, in bytes, that ValidID accepts.
const MaxIDBytes = 256

// ValidID reports whether id can be an event id: the envelope's "id", the
// Watermill message UUID and, unchanged, the webhook-id header every
// delivery carries and its signature covers. It must be non-empty, at most
// MaxIDBytes, valid UTF-8, free of control characters (CR, LF, NUL, tab,
// DEL, C1 …: an HTTP client refuses to send them in a header), not blank,
// and without white space at either end (a receiver trims it from the
// header, and its signature check then fails). Decode and Encode apply it
// to a non-empty id; the router's event endpoints to the ids they take
// from headers. The error is a *FieldError for "id" wrapping ErrInvalid;
// it never quotes the id.
func ValidID(id string) error {
	bad := func(format string, args ...any) error {
		return &FieldError{Field: "id", Problem: fmt.Sprintf(format, args...)}
	}
	switch {
	case id == "":
		return bad("is empty")
	case len(id) > MaxIDBytes:
		return bad("is %d bytes long; at most %d", len(id), MaxIDBytes)
	case !utf8.ValidString(id):
		return bad("is not valid UTF-8")
	}
	for i, r := range id {
		if unicode.IsControl(r) {
			return bad("contains control character %U at byte %d", r, i)
		}
	}
	if strings.TrimSpace(id) == "" {
		return bad("is blank")
	}
	first, _ := utf8.DecodeRuneInString(id)
	last, _ := utf8.DecodeLastRuneInString(id)
	if unicode.IsSpace(first) || unicode.IsSpace(last) {
		return bad("starts or ends with white space")
	}
	return nil
}
