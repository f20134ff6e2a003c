package verify

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"strings"
	"sync"
	"unicode"
)

// ErrInvalidSecret is wrapped by the errors of ParseSecret, ParseSecrets,
// New and NewFromSecrets when a secret is empty, missing or badly encoded.
// Their text says what is wrong, never the secret.
var ErrInvalidSecret = errors.New("verify: invalid secret")

// secretPrefix marks a base64-encoded secret, as Standard Webhooks
// libraries and Svix write them.
const secretPrefix = "whsec_"

// redacted is what a Secret prints, marshals and logs instead of its key.
const redacted = "verify.Secret(REDACTED)"

// Secret is one HMAC-SHA256 signing key, made by ParseSecret or
// ParseSecrets. It never prints, marshals or logs its key: fmt (every
// verb), encoding/json, encoding.TextMarshaler and log/slog all see
// "REDACTED"; where fmt cannot call its methods (a Secret in an unexported
// field) it shows only a pointer.
// Copies share the key; a Secret is safe for concurrent use.
//
// The zero Secret has an empty key: Sign signs with it (and nothing
// verifies that), NewFromSecrets refuses it.
type Secret struct {
	k *key
	_ [0]func() // not comparable: == would compare pointers, not keys
}

// key is a pool of HMAC states for one key, so that signing on every
// delivery attempt does not rebuild one. The key bytes live only in the
// pool's New closure, where fmt's reflection (a Secret inside an
// unexported field, a bad verb) never reaches.
type key struct {
	pool sync.Pool // of *macState
}

// macState is one reusable HMAC and its scratch buffer.
type macState struct {
	h   hash.Hash
	buf []byte
}

// maxPooledBuf caps the scratch buffer kept in the pool: an unusually long
// webhook id is signed, but its buffer is not kept.
const maxPooledBuf = 1 << 10

func newSecret(b []byte) Secret {
	k := &key{}
	k.pool.New = func() any { return &macState{h: hmac.New(sha256.New, b)} }
	return Secret{k: k}
}

// ParseSecret reads one secret. Surrounding white space is dropped. Then:
//
//   - "whsec_<base64>" is base64-decoded (standard alphabet, with padding)
//     as the Standard Webhooks spec says, so a secret shared with any
//     Standard Webhooks library works unchanged;
//   - any other non-empty string is used as the raw key bytes, as they are
//     (so existing plain-text secrets keep working). Note that the
//     reference libraries base64-decode a secret without the prefix: with
//     them, such a key needs their raw-key constructor.
//
// An empty string, bad base64 or an empty decoded key is an error wrapping
// ErrInvalidSecret; it never echoes the secret.
func ParseSecret(s string) (Secret, error) {
	sec, err := parseSecret(s)
	if err != nil {
		return Secret{}, fmt.Errorf("%w: %s", ErrInvalidSecret, err)
	}
	return sec, nil
}

func parseSecret(s string) (Secret, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Secret{}, errors.New("empty")
	}
	rest, ok := strings.CutPrefix(s, secretPrefix)
	if !ok {
		return newSecret([]byte(s)), nil
	}
	b, err := base64.StdEncoding.DecodeString(rest)
	if err != nil {
		var at base64.CorruptInputError
		if errors.As(err, &at) {
			return Secret{}, fmt.Errorf("%s… is not standard base64 after the prefix (bad character or length at byte %d)", secretPrefix, int64(at)+int64(len(secretPrefix)))
		}
		return Secret{}, fmt.Errorf("%s… is not standard base64 after the prefix", secretPrefix)
	}
	if len(b) == 0 {
		return Secret{}, fmt.Errorf("%s… holds no key", secretPrefix)
	}
	return newSecret(b), nil
}

// ParseSecrets reads one or more secrets separated by white space and/or
// commas, each as ParseSecret does; empty entries are skipped. Several
// secrets are for rotation: Sign signs with every one, a Verifier accepts
// any one. A raw secret therefore cannot contain a space or a comma (a
// whsec_ one never does). No secret at all, or one bad entry, is an error
// wrapping ErrInvalidSecret that gives the entry's position, never its
// text.
func ParseSecrets(s string) ([]Secret, error) {
	fields := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || unicode.IsSpace(r) })
	if len(fields) == 0 {
		return nil, fmt.Errorf("%w: none given", ErrInvalidSecret)
	}
	out := make([]Secret, 0, len(fields))
	for i, f := range fields {
		sec, err := parseSecret(f)
		if err != nil {
			return nil, fmt.Errorf("%w #%d: %s", ErrInvalidSecret, i+1, err)
		}
		out = append(out, sec)
	}
	return out, nil
}

// String implements fmt.Stringer without the key.
func (Secret) String() string { return redacted }

// GoString implements fmt.GoStringer without the key.
func (Secret) GoString() string { return redacted }

// Format implements fmt.Formatter: every verb (%v, %+v, %#v, %s, %q, %x,
// %d …) prints "verify.Secret(REDACTED)".
func (Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// MarshalText implements encoding.TextMarshaler without the key.
func (Secret) MarshalText() ([]byte, error) { return []byte("REDACTED"), nil }

// MarshalJSON implements json.Marshaler without the key: "REDACTED".
func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"REDACTED"`), nil }

// LogValue implements slog.LogValuer without the key.
func (Secret) LogValue() slog.Value { return slog.StringValue("REDACTED") }

// sum writes HMAC-SHA256(key, id "." stamp "." body) to dst. It reuses a
// pooled HMAC state, so it allocates nothing in the steady state.
func (s Secret) sum(dst *[sha256.Size]byte, id string, stamp, body []byte) {
	if s.k == nil { // the zero Secret: an empty key
		h := hmac.New(sha256.New, nil)
		writeSigned(h, nil, id, stamp, body)
		copy(dst[:], h.Sum(nil))
		return
	}
	st := s.k.pool.Get().(*macState)
	st.h.Reset()
	st.buf = writeSigned(st.h, st.buf, id, stamp, body)
	st.buf = st.h.Sum(st.buf[:0])
	copy(dst[:], st.buf)
	if cap(st.buf) > maxPooledBuf {
		st.buf = nil
	}
	s.k.pool.Put(st)
}

// writeSigned writes the signed content to h, using buf as scratch for the
// part before the body, and returns buf.
func writeSigned(h hash.Hash, buf []byte, id string, stamp, body []byte) []byte {
	buf = append(buf[:0], id...)
	buf = append(buf, '.')
	buf = append(buf, stamp...)
	buf = append(buf, '.')
	h.Write(buf)
	h.Write(body)
	return buf
}
