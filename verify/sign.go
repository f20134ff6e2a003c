package verify

import (
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"
	"time"
)

// sigLen is the length of one "v1,<base64>" entry.
const sigLen = len("v1,") + 44 // 44 = base64.StdEncoding.EncodedLen(sha256.Size)

// Sign returns the webhook-signature header value for one delivery
// attempt: "v1,<base64 HMAC-SHA256(key, id.timestamp.body)>" for each
// secret, in the given order, space-separated ("" for no secret). The
// timestamp signed is ts in whole Unix seconds, which the caller must send
// as webhook-timestamp; body must be the exact bytes sent.
//
// memhook's signer middleware calls it on every attempt: it reuses each
// Secret's HMAC state and, once warm, allocates only the returned string.
// It is safe for concurrent use.
func Sign(secrets []Secret, id string, ts time.Time, body []byte) string {
	if len(secrets) == 0 {
		return ""
	}
	var stampBuf [20]byte
	stamp := strconv.AppendInt(stampBuf[:0], ts.Unix(), 10)
	var (
		b   strings.Builder
		sum [sha256.Size]byte
		enc [sigLen]byte
	)
	copy(enc[:], "v1,")
	b.Grow(len(secrets)*(sigLen+1) - 1)
	for i, s := range secrets {
		if i > 0 {
			b.WriteByte(' ')
		}
		s.sum(&sum, id, stamp, body)
		base64.StdEncoding.Encode(enc[len("v1,"):], sum[:])
		b.Write(enc[:])
	}
	return b.String()
}
