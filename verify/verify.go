// Package verify signs and verifies webhooks the Standard Webhooks way
// (https://www.standardwebhooks.com): headers webhook-id, webhook-timestamp
// (Unix seconds) and webhook-signature, "v1,<base64 HMAC-SHA256 of
// id.timestamp.body>", several space-separated while secrets rotate.
//
// memhook's signer uses Sign; Go receivers use a Verifier, or any Standard
// Webhooks library: the scheme is the same. It imports only the standard
// library.
package verify

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"time"
)

// Standard Webhooks header names.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// secretPrefix marks a base64-encoded secret, as Standard Webhooks
// libraries and Svix write them.
const secretPrefix = "whsec_"

// Secret is one signing key. It never prints, marshals or logs its key.
type Secret struct {
	key []byte
}

// ParseSecret reads a secret: "whsec_<base64>" is base64-decoded as the
// Standard Webhooks spec says (so a secret shared with any Standard
// Webhooks library works unchanged); any other non-empty string is used as
// the raw key bytes (so the seed's MEM0_WEBHOOK_SECRET works as it is).
// Errors never echo the secret.
func ParseSecret(s string) (Secret, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Secret{}, errors.New("verify: empty secret")
	}
	if rest, ok := strings.CutPrefix(s, secretPrefix); ok {
		key, err := base64.StdEncoding.DecodeString(rest)
		if err != nil {
			return Secret{}, fmt.Errorf("verify: secret starts with %q but the rest is not standard base64", secretPrefix)
		}
		if len(key) == 0 {
			return Secret{}, fmt.Errorf("verify: secret %q… holds no key", secretPrefix)
		}
		return Secret{key: key}, nil
	}
	return Secret{key: []byte(s)}, nil
}

// ParseSecrets reads one or more secrets separated by spaces and/or commas
// (secret rotation: every one signs, any one verifies). At least one is
// required.
func ParseSecrets(s string) ([]Secret, error) {
	fields := strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == ',' || r == '\t' || r == '\n' })
	if len(fields) == 0 {
		return nil, errors.New("verify: no secret given")
	}
	out := make([]Secret, 0, len(fields))
	for i, f := range fields {
		sec, err := ParseSecret(f)
		if err != nil {
			return nil, fmt.Errorf("secret #%d: %w", i+1, err)
		}
		out = append(out, sec)
	}
	return out, nil
}

// String implements fmt.Stringer without the key.
func (Secret) String() string { return "verify.Secret(REDACTED)" }

// GoString implements fmt.GoStringer without the key.
func (Secret) GoString() string { return "verify.Secret(REDACTED)" }

// MarshalText implements encoding.TextMarshaler without the key (JSON uses
// it too).
func (Secret) MarshalText() ([]byte, error) { return []byte("REDACTED"), nil }

// mac computes HMAC-SHA256(key, id.timestamp.body) into dst.
func (s Secret) mac(h hash.Hash, id, ts string, body []byte) []byte {
	h.Reset()
	h.Write([]byte(id))
	h.Write([]byte{'.'})
	h.Write([]byte(ts))
	h.Write([]byte{'.'})
	h.Write(body)
	return h.Sum(nil)
}

// Sign returns the webhook-signature header value for one delivery
// attempt: "v1,<base64>" for each secret, in order, space-separated. ts is
// sent in webhook-timestamp as Unix seconds; Sign uses the same value.
func Sign(secrets []Secret, id string, ts time.Time, body []byte) string {
	stamp := strconv.FormatInt(ts.Unix(), 10)
	var b strings.Builder
	b.Grow(len(secrets) * 48)
	for i, s := range secrets {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString("v1,")
		sum := s.mac(hmac.New(sha256.New, s.key), id, stamp, body)
		b.WriteString(base64.StdEncoding.EncodeToString(sum))
	}
	return b.String()
}
