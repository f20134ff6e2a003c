package verify

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Errors returned (wrapped) by Verify, one per failed check, and so named
// in Middleware's 401 answers; errors.Is tells them apart. Their text says
// which check failed and why, never a secret or an expected signature.
var (
	// ErrMissingHeader: webhook-id, webhook-timestamp or webhook-signature
	// is absent or empty (the message names which).
	ErrMissingHeader = errors.New("verify: missing header")
	// ErrInvalidHeader: webhook-timestamp is not a whole, non-negative
	// number of Unix seconds.
	ErrInvalidHeader = errors.New("verify: invalid header")
	// ErrTimestampTooOld: webhook-timestamp is more than Tolerance before
	// Now (a replay, or a badly delayed retry).
	ErrTimestampTooOld = errors.New("verify: timestamp too old")
	// ErrTimestampTooNew: webhook-timestamp is more than Tolerance after
	// Now (a skewed sender clock).
	ErrTimestampTooNew = errors.New("verify: timestamp too new")
	// ErrNoMatchingSignature: no v1 signature matches any secret: a body,
	// id or timestamp changed on the way, a wrong secret, or only unknown
	// signature versions.
	ErrNoMatchingSignature = errors.New("verify: no matching signature")
)

// DefaultTolerance is how far webhook-timestamp may be from now, in either
// direction, when Verifier.Tolerance is zero or negative.
const DefaultTolerance = 5 * time.Minute

// DefaultMaxBodyBytes caps the body Middleware reads when
// Verifier.MaxBodyBytes is zero or negative: 1 MiB.
const DefaultMaxBodyBytes = 1 << 20

// strictBase64 refuses non-canonical encodings (stray padding bits), so a
// signature has exactly one accepted spelling, as in the reference
// libraries, which compare the base64 text.
var strictBase64 = base64.StdEncoding.Strict()

// Verifier checks Standard Webhooks signatures against one or more
// secrets; any one matching is enough (rotation). Make it with New or
// NewFromSecrets: the zero Verifier has no secret and refuses everything.
//
// The secrets are the only required input, so they are the constructors'
// arguments; the rest is exported fields rather than a Config or options,
// since each field's zero value means its default and there is nothing to
// validate. Set them before first use; the Verifier is then safe for
// concurrent use.
type Verifier struct {
	// Tolerance is how far webhook-timestamp may be from Now, both into
	// the past and into the future. Zero or negative means
	// DefaultTolerance (5 minutes).
	Tolerance time.Duration
	// Now is the clock. Nil means time.Now; tests inject their own.
	Now func() time.Time
	// MaxBodyBytes caps the body Middleware reads; a larger body gets 413.
	// Zero or negative means DefaultMaxBodyBytes (1 MiB). Verify does not
	// use it.
	MaxBodyBytes int64

	secrets []Secret
}

// New returns a Verifier accepting a signature made with any of the
// secrets. Each argument is one secret, read by ParseSecret
// ("whsec_<base64>", or raw key bytes); a string holding several, like
// memhook's MEM0_WEBHOOK_SECRET during a rotation, goes through
// ParseSecrets and NewFromSecrets instead. No secret, or a bad one, is an
// error wrapping ErrInvalidSecret.
func New(secrets ...string) (*Verifier, error) {
	if len(secrets) == 0 {
		return nil, fmt.Errorf("%w: none given", ErrInvalidSecret)
	}
	parsed := make([]Secret, 0, len(secrets))
	for i, s := range secrets {
		sec, err := parseSecret(s)
		if err != nil {
			return nil, fmt.Errorf("%w #%d: %s", ErrInvalidSecret, i+1, err)
		}
		parsed = append(parsed, sec)
	}
	return &Verifier{secrets: parsed}, nil
}

// NewFromSecrets returns a Verifier over already parsed secrets (from
// ParseSecrets), accepting a signature made with any of them. No secret,
// or a zero Secret, is an error wrapping ErrInvalidSecret.
func NewFromSecrets(secrets []Secret) (*Verifier, error) {
	if len(secrets) == 0 {
		return nil, fmt.Errorf("%w: none given", ErrInvalidSecret)
	}
	for i, s := range secrets {
		if s.k == nil {
			return nil, fmt.Errorf("%w #%d: the zero Secret (use ParseSecret)", ErrInvalidSecret, i+1)
		}
	}
	return &Verifier{secrets: append([]Secret(nil), secrets...)}, nil
}

// Verify checks a webhook's headers against its raw body (the exact bytes
// received, before any JSON decoding), in this order: the three headers
// are present; webhook-timestamp is whole Unix seconds within Tolerance of
// Now, either way; at least one v1 entry of webhook-signature matches at
// least one secret (compared with hmac.Equal). Entries of other versions
// ("v1a,…", "v2,…") and malformed entries are skipped.
//
// It returns nil, or an error wrapping the sentinel of the first check
// that failed: ErrMissingHeader, ErrInvalidHeader, ErrTimestampTooOld,
// ErrTimestampTooNew or ErrNoMatchingSignature. A receiver answers any of
// them with a 4xx and does not process the webhook.
func (v *Verifier) Verify(h http.Header, body []byte) error {
	id, stamp, sigs := h.Get(HeaderID), h.Get(HeaderTimestamp), h.Get(HeaderSignature)
	switch {
	case id == "":
		return fmt.Errorf("%w: %s", ErrMissingHeader, HeaderID)
	case stamp == "":
		return fmt.Errorf("%w: %s", ErrMissingHeader, HeaderTimestamp)
	case sigs == "":
		return fmt.Errorf("%w: %s", ErrMissingHeader, HeaderSignature)
	}
	secs, ok := parseStamp(stamp)
	if !ok {
		return fmt.Errorf("%w: %s is not a whole number of Unix seconds", ErrInvalidHeader, HeaderTimestamp)
	}
	tol := v.Tolerance
	if tol <= 0 {
		tol = DefaultTolerance
	}
	now := v.now()
	if secs > now.Unix()+int64(tol/time.Second)+1 { // also keeps time.Unix from overflowing
		return fmt.Errorf("%w: far ahead, tolerance %s", ErrTimestampTooNew, tol)
	}
	ts := time.Unix(secs, 0)
	if age := now.Sub(ts); age > tol {
		return fmt.Errorf("%w: %s old, tolerance %s", ErrTimestampTooOld, age.Truncate(time.Second), tol)
	}
	if ahead := ts.Sub(now); ahead > tol {
		return fmt.Errorf("%w: %s ahead, tolerance %s", ErrTimestampTooNew, ahead.Truncate(time.Second), tol)
	}

	var (
		stampBuf [20]byte
		wantBuf  [4][sha256.Size]byte
	)
	stampB := append(stampBuf[:0], stamp...)
	want := wantBuf[:0]
	if len(v.secrets) > len(wantBuf) {
		want = make([][sha256.Size]byte, 0, len(v.secrets))
	}
	for _, s := range v.secrets {
		want = append(want, [sha256.Size]byte{})
		s.sum(&want[len(want)-1], id, stampB, body)
	}
	n := 0
	for entry := range strings.FieldsSeq(sigs) {
		sig, ok := parseEntry(entry)
		if !ok {
			continue
		}
		n++
		for i := range want {
			if hmac.Equal(sig[:], want[i][:]) {
				return nil
			}
		}
	}
	if n == 0 {
		return fmt.Errorf("%w: no well-formed v1 signature in %s", ErrNoMatchingSignature, HeaderSignature)
	}
	return fmt.Errorf("%w: %d v1 signature(s) checked against %d secret(s)", ErrNoMatchingSignature, n, len(want))
}

func (v *Verifier) now() time.Time {
	if v.Now != nil {
		return v.Now()
	}
	return time.Now()
}

// parseStamp reads whole, non-negative Unix seconds: ASCII digits only (no
// sign, no space), fitting an int64.
func parseStamp(s string) (int64, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

// ParseSignatures returns the decoded v1 signatures of a webhook-signature
// header value: white-space-separated "version,base64" entries, in order.
// Entries of other versions, and entries that are not well-formed (not
// canonical standard base64 of exactly 32 bytes), are skipped. Verify uses
// the same rules; receivers need it only to inspect a header.
func ParseSignatures(header string) [][]byte {
	var out [][]byte
	for entry := range strings.FieldsSeq(header) {
		if sig, ok := parseEntry(entry); ok {
			out = append(out, append([]byte(nil), sig[:]...))
		}
	}
	return out
}

// parseEntry decodes one "v1,<base64>" entry.
func parseEntry(entry string) (sig [sha256.Size]byte, ok bool) {
	version, b64, found := strings.Cut(entry, ",")
	if !found || version != "v1" || len(b64) != sigLen-len("v1,") {
		return sig, false
	}
	var in [sigLen - len("v1,")]byte
	var out [sha256.Size + 1]byte // DecodedLen(44) is 33
	copy(in[:], b64)
	n, err := strictBase64.Decode(out[:], in[:])
	if err != nil || n != sha256.Size {
		return sig, false
	}
	copy(sig[:], out[:n])
	return sig, true
}
