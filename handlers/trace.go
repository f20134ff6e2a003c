package handlers

import "github.com/memhook/memhook/bus/event"

// TraceparentKey is the message metadata key that carries a W3C trace
// context (https://www.w3.org/TR/trace-context/) with an event, and the
// header every attempt sends it in. Only a valid one (ValidTraceparent)
// is sent.
const TraceparentKey = event.HeaderTraceparent

// ValidTraceparent reports whether tp is a version 00 traceparent:
// "00-" 32 lowercase hex digits (the trace id, not all zeros) "-" 16
// (the parent id, not all zeros) "-" 2 (the flags).
func ValidTraceparent(tp string) bool {
	if len(tp) != 55 || tp[0] != '0' || tp[1] != '0' || tp[2] != '-' || tp[35] != '-' || tp[52] != '-' {
		return false
	}
	return hexNonZero(tp[3:35]) && hexNonZero(tp[36:52]) && isHex(tp[53:55])
}

// TraceID returns the trace id of tp (32 hex digits), "" when tp is not
// valid.
func TraceID(tp string) string {
	if !ValidTraceparent(tp) {
		return ""
	}
	return tp[3:35]
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// hexNonZero reports whether s is lowercase hex and not all zeros.
func hexNonZero(s string) bool {
	zero := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
		zero = zero && c == '0'
	}
	return !zero
}
