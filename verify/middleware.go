package verify

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Middleware verifies each request before next sees it. It reads the body
// through http.MaxBytesReader (at most MaxBodyBytes: 413 beyond), calls
// Verify, and on failure answers 401 with {"error":"<the failed check>"}
// (which check and why, nothing secret) without calling next. On success
// it calls next with the body restored, so next reads the same bytes; the
// verified webhook id is r.Header.Get(HeaderID), for dropping duplicates
// (retries keep the id).
func (v *Verifier) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		limit := v.MaxBodyBytes
		if limit <= 0 {
			limit = DefaultMaxBodyBytes
		}
		var body []byte
		if r.Body != nil {
			var err error
			body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
			if err != nil {
				if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
					writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body is larger than %d bytes", limit))
					return
				}
				writeError(w, http.StatusBadRequest, "cannot read body")
				return
			}
		}
		if err := v.Verify(r.Header, body); err != nil {
			writeError(w, http.StatusUnauthorized, strings.TrimPrefix(err.Error(), "verify: "))
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		next.ServeHTTP(w, r)
	})
}

func writeError(w http.ResponseWriter, code int, msg string) {
	b, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{msg})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}
