// Package redact makes URLs fit for logs, errors and status output. It is
// shared by the packages that hold URLs from configuration (handlers for
// webhook and router URLs, transports for Redis URLs), which may not
// import each other.
package redact

import (
	"net/url"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Placeholder replaces every hidden part.
const Placeholder = "REDACTED"

// Lengths (in characters, after unescaping) from which a path segment is
// taken for a token: see Segment.
const (
	// TokenMinLen: shorter segments are always kept.
	TokenMinLen = 8
	// TokenMixedCaseLen: from this length a segment with upper- and
	// lowercase letters is hidden.
	TokenMixedCaseLen = 16
	// TokenAnyLen: from this length every segment is hidden.
	TokenAnyLen = 24
)

// URL returns raw with every part that may hold a credential replaced by
// Placeholder:
//
//   - the user information, user name and password alike
//     (https://REDACTED@host/…);
//   - each query value, and each query name written without "=" (a bare
//     name may itself be the secret: "?s3cr3t"); names with "=" are kept;
//   - the fragment, whole;
//   - each path segment that looks like a token (see Segment);
//   - everything after the scheme of an opaque URL (no "//", such as
//     "redis:password@host"), which becomes "redis:REDACTED".
//
// The scheme, host, port and the other path segments are kept. A string
// that does not parse, or whose port is not a number up to 65535 (a
// password cut by an unescaped "#" or "/"), is replaced whole; "" stays
// "". URL never panics.
func URL(raw string) string {
	if raw == "" {
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil {
		return Placeholder
	}
	if u.Opaque != "" {
		return u.Scheme + ":" + Placeholder
	}
	if p := u.Port(); p != "" {
		// url.Parse takes any digits for a port: in "redis://u:12345678#x@h"
		// (a "#" left unescaped) the password is the "port".
		if n, err := strconv.Atoi(p); err != nil || n > 65535 {
			return Placeholder
		}
	}
	if u.User != nil {
		u.User = url.User(Placeholder)
	}
	if u.RawQuery != "" {
		parts := strings.Split(u.RawQuery, "&")
		for i, p := range parts {
			if k, _, ok := strings.Cut(p, "="); ok {
				parts[i] = k + "=" + Placeholder
			} else if p != "" {
				parts[i] = Placeholder
			}
		}
		u.RawQuery = strings.Join(parts, "&")
	}
	if u.Fragment != "" || u.RawFragment != "" {
		u.Fragment, u.RawFragment = Placeholder, ""
	}
	path(u)
	return u.String()
}

// path replaces the segments of u's path that look like tokens.
func path(u *url.URL) {
	segs := strings.Split(u.EscapedPath(), "/")
	changed := false
	for i, s := range segs {
		dec, err := url.PathUnescape(s)
		if err != nil {
			dec = s
		}
		if Segment(dec) {
			segs[i], changed = Placeholder, true
		}
	}
	if !changed {
		return
	}
	esc := strings.Join(segs, "/")
	p, err := url.PathUnescape(esc)
	if err != nil { // cannot happen: every segment kept unescaped above
		u.Path, u.RawPath = "/"+Placeholder, ""
		return
	}
	u.Path, u.RawPath = p, esc
}

// Segment reports whether one path segment (unescaped) looks like a token
// and is hidden by URL. It is a heuristic on the segment's characters:
//
//   - shorter than TokenMinLen (8): kept, whatever it holds;
//   - TokenAnyLen (24) or longer: hidden, whatever it holds;
//   - otherwise hidden when it has both letters and digits ("abc12xyz"),
//     or, from TokenMixedCaseLen (16), both upper- and lowercase letters.
//
// So words ("services", "memory-notifications"), numbers ("1234567",
// "2026-01-01") and short codes ("T0001") are kept: a secret written
// there shows in logs. Credentials belong in the token variables (an
// Authorization header), not in a path.
func Segment(s string) bool {
	n := utf8.RuneCountInString(s)
	switch {
	case n < TokenMinLen:
		return false
	case n >= TokenAnyLen:
		return true
	}
	var letters, digits, upper, lower bool
	for _, r := range s {
		switch {
		case unicode.IsDigit(r):
			digits = true
		case unicode.IsLetter(r):
			letters = true
			upper = upper || unicode.IsUpper(r)
			lower = lower || unicode.IsLower(r)
		}
	}
	return letters && digits || n >= TokenMixedCaseLen && upper && lower
}
