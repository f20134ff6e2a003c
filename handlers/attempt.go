package handlers

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/memhook/memhook/middleware"
)

// MaxAttemptResponse is how much of a response body, 2xx or not, an
// attempt keeps for DeliverConfig.OnAttempt: the first 1 KiB.
const MaxAttemptResponse = 1 << 10

// The classes of a failed attempt, as ClassifyError returns them.
const (
	ErrorClassStatus  = "status" // the receiver answered, not 2xx (see AttemptResult.Status)
	ErrorClassTimeout = "timeout"
	ErrorClassRefused = "connection_refused"
	ErrorClassReset   = "connection_reset"
	ErrorClassDNS     = "dns"
	ErrorClassTLS     = "tls"
	ErrorClassOther   = "other"
)

// AttemptResult is one delivery attempt as DeliverConfig.OnAttempt sees
// it. It never holds a request header.
type AttemptResult struct {
	// Attempt is the attempt's number, 1 for the first
	// (middleware.AttemptFromContext).
	Attempt  int
	Start    time.Time
	Duration time.Duration
	// Status is the receiver's answer, 0 when it gave none.
	Status int
	// Err is what Handle returns (the URL redacted); nil on a 2xx answer.
	Err error
	// Class is ClassifyError(Err): empty on success.
	Class string
	// Response is the first MaxAttemptResponse bytes of the response
	// body. It is valid only during the call: copy what you keep.
	Response []byte
}

// ClassifyError says why an attempt failed: one of the ErrorClass…
// constants; "" for nil. A *middleware.StatusError is ErrorClassStatus;
// TLS failures (a record header that is not TLS, an unknown authority, a
// bad host name or certificate, a handshake alert) ErrorClassTLS; a
// *net.DNSError ErrorClassDNS; ECONNREFUSED ErrorClassRefused; ECONNRESET,
// EPIPE and a connection closed before the answer (EOF)
// ErrorClassReset; the attempt's deadline or a network timeout
// ErrorClassTimeout; anything else ErrorClassOther.
func ClassifyError(err error) string {
	if err == nil {
		return ""
	}
	var (
		se     *middleware.StatusError
		rhe    tls.RecordHeaderError
		cve    *tls.CertificateVerificationError
		alert  tls.AlertError
		ua     x509.UnknownAuthorityError
		he     x509.HostnameError
		ci     x509.CertificateInvalidError
		dns    *net.DNSError
		netErr net.Error
	)
	switch {
	case errors.As(err, &se):
		return ErrorClassStatus
	case errors.As(err, &rhe), errors.As(err, &cve), errors.As(err, &alert),
		errors.As(err, &ua), errors.As(err, &he), errors.As(err, &ci):
		return ErrorClassTLS
	case errors.As(err, &dns):
		return ErrorClassDNS
	case errors.Is(err, syscall.ECONNREFUSED):
		return ErrorClassRefused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return ErrorClassReset
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return ErrorClassTimeout
	}
	return ErrorClassOther
}
