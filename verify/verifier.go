package verify

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Errors returned by Verify, one per failed check; errors.Is tells them
// apart. Their text names the check, never a secret or an expected
// signature.
var (
	// ErrMissingHeader: webhook-id, webhook-timestamp or webhook-signature
	// is absent.
	ErrMissingHeader = errors.New("verify: missing header")
	// ErrInvalidHeader: webhook-timestamp is not a whole number of seconds.
	ErrInvalidHeader = errors.New("verify: invalid header")
	// ErrTimestampTooOld: webhook-timestamp is older than the tolerance.
	ErrTimestampTooOld = errors.New("verify: timestamp too old")
	// ErrTimestampTooNew: webhook-timestamp is further in the future than
	// the tolerance.
	ErrTimestampTooNew = errors.New("verify: timestamp too new")
	// ErrNoMatchingSignature: no v1 signature matches any secret (a
	// tampered body, a wrong secret, or only unknown signature versions).
	ErrNoMatchingSignature = errors.New("verify: no matching signature")
)

// DefaultTolerance is how far webhook-timestamp may be from now, in either
// direction.
const DefaultTolerance = 5 * time.Minute

// DefaultMaxBodyBytes caps the body Middleware reads.
const DefaultMaxBodyBytes = 1 << 20

// Verifier checks Standard Webhooks signatures against one or more
// secrets. Set its exported fields before first use; it is then safe for
// concurrent use.
type Verifier struct {
	// Tolerance is how far webhook-timestamp may be from Now, both ways;
	// New sets DefaultTolerance.
	Tolerance time.Duration
	// Now is the clock; New sets time.Now. Tests inject their own.
	Now func() time.Time
	// MaxBodyBytes caps the body Middleware reads (413 beyond); New sets
	// DefaultMaxBodyBytes.
	MaxBodyBytes int64

	secrets []Secret
}

// New returns a Verifier accepting a signature made with any of the
// secrets (each read by ParseSecret: "whsec_<base64>" or raw bytes).
func New(secrets ...string) (*Verifier, error) {
	if len(secrets) == 0 {
		return nil, errors.New("verify: no secret given")
	}
	v := &Verifier{Tolerance: DefaultTolerance, Now: time.Now, MaxBodyBytes: DefaultMaxBodyBytes}
	for i, s := range secrets {
		sec, err := ParseSecret(s)
		if err != nil {
			return nil, fmt.Errorf("secret #%d: %w", i+1, err)
		}
		v.secrets = append(v.secrets, sec)
	}
	return v, nil
}

// NewFromSecrets returns a Verifier over already parsed secrets.
func NewFromSecrets(secrets []Secret) (*Verifier, error) {
	if len(secrets) == 0 {
		return nil, errors.New("verify: no secret given")
	}
	return &Verifier{Tolerance: DefaultTolerance, Now: time.Now, MaxBodyBytes: DefaultMaxBodyBytes,
		secrets: append([]Secret(nil), secrets...)}, nil
}

// Verify checks the headers of a webhook against its raw body bytes (the
// exact bytes received, before any JSON decoding): all three headers
// present, the timestamp within Tolerance of Now, and at least one v1
// signature matching at least one secret, compared in constant time.
// Signatures of other versions are skipped. It returns nil or an error
// wrapping one of the Err… values.
func (v *Verifier) Verify(h http.Header, body []byte) error {
	id, stamp, sigs := h.Get(HeaderID), h.Get(HeaderTimestamp), h.Get(HeaderSignature)
	for _, hv := range [...]struct{ name, val string }{{HeaderID, id}, {HeaderTimestamp, stamp}, {HeaderSignature, sigs}} {
		if hv.val == "" {
			return fmt.Errorf("%w: %s", ErrMissingHeader, hv.name)
		}
	}
	secs, err := strconv.ParseInt(stamp, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %s is not a Unix time in seconds", ErrInvalidHeader, HeaderTimestamp)
	}
	now := v.now()
	ts := time.Unix(secs, 0)
	tol := v.Tolerance
	if tol <= 0 {
		tol = DefaultTolerance
	}
	if now.Sub(ts) > tol {
		return fmt.Errorf("%w: more than %s ago", ErrTimestampTooOld, tol)
	}
	if ts.Sub(now) > tol {
		return fmt.Errorf("%w: more than %s ahead", ErrTimestampTooNew, tol)
	}
	want := make([][]byte, len(v.secrets))
	for i, s := range v.secrets {
		want[i] = s.mac(hmac.New(sha256.New, s.key), id, stamp, body)
	}
	for _, sig := range ParseSignatures(sigs) {
		for _, w := range want {
			if hmac.Equal(sig, w) {
				return nil
			}
		}
	}
	return ErrNoMatchingSignature
}

func (v *Verifier) now() time.Time {
	if v.Now != nil {
		return v.Now()
	}
	return time.Now()
}

// ParseSignatures returns the decoded v1 signatures of a webhook-signature
// header value: space-separated "version,base64" entries. Entries of other
// versions, and entries that are not well-formed, are skipped.
func ParseSignatures(header string) [][]byte {
	var out [][]byte
	for _, entry := range strings.Fields(header) {
		version, b64, ok := strings.Cut(entry, ",")
		if !ok || version != "v1" {
			continue
		}
		sig, err := base64.StdEncoding.DecodeString(b64)
		if err != nil || len(sig) != sha256.Size {
			continue
		}
		out = append(out, sig)
	}
	return out
}

// Middleware verifies each request before next sees it: it reads the body
// (at most MaxBodyBytes, else 413), verifies it, answers 401 with
// {"error": "<the failed check>"} on failure, and on success passes the
// request on with the body restored for next to read.
func (v *Verifier) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		limit := v.MaxBodyBytes
		if limit <= 0 {
			limit = DefaultMaxBodyBytes
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body is larger than %d bytes", limit))
				return
			}
			writeError(w, http.StatusBadRequest, "cannot read body")
			return
		}
		if err := v.Verify(r.Header, body); err != nil {
			writeError(w, http.StatusUnauthorized, err.Error())
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		next.ServeHTTP(w, r)
	})
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
