package middleware

import (
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/memhook/memhook/verify"
)

// Header names the signer sets besides the Standard Webhooks ones.
const (
	// HeaderLegacySecret is the seed's "signature" header: the raw secret.
	HeaderLegacySecret = "X-Webhook-Secret"
	// HeaderWebhookID is the Standard Webhooks id header: the event id.
	HeaderWebhookID = "webhook-id"
	// HeaderWebhookTimestamp is the Standard Webhooks timestamp header.
	HeaderWebhookTimestamp = "webhook-timestamp"
)

// Signer sets the headers of one delivery attempt and hands them to the
// deliver handler through the message context (WithHeaders), never through
// metadata, so no credential reaches a transport. It sits inside Retry:
// every attempt gets fresh headers (a fresh timestamp and signature) while
// webhook-id, the message UUID, stays the same. The signature covers the
// payload as it is when Signer runs: middleware that changes the payload
// must run before it.
type Signer struct {
	// Token, when set, is sent as "Authorization: Bearer <Token>" (seed).
	Token string
	// LegacySecret, when set, is sent as-is in X-Webhook-Secret (the seed's
	// header, for old receivers). Empty sends no such header.
	LegacySecret string
	// Secrets, when set, sign every attempt the Standard Webhooks way:
	// webhook-signature holds one "v1,<base64>" per secret (rotation).
	Secrets []verify.Secret
	// UserAgent is the User-Agent header; empty means "memhook".
	UserAgent string
	// Now is the clock for webhook-timestamp; nil means time.Now.
	Now func() time.Time
	// Headers are added to every attempt (an endpoint's custom headers);
	// they never replace the ones above. Keys in canonical form.
	Headers http.Header
}

// Middleware implements message.HandlerMiddleware.
func (s Signer) Middleware(h message.HandlerFunc) message.HandlerFunc {
	ua := s.UserAgent
	if ua == "" {
		ua = "memhook"
	}
	now := s.Now
	if now == nil {
		now = time.Now
	}
	// The values that never change are built once and shared by every
	// attempt's header (net/http only reads them), the timestamp once a
	// second.
	contentType, userAgent := []string{"application/json"}, []string{ua}
	var auth, legacy []string
	if s.Token != "" {
		auth = []string{"Bearer " + s.Token}
	}
	if s.LegacySecret != "" {
		legacy = []string{s.LegacySecret}
	}
	var stamps atomic.Pointer[stamp] // the last second's webhook-timestamp value
	timestamp := func(unix int64) []string {
		if st := stamps.Load(); st != nil && st.unix == unix {
			return st.value
		}
		st := &stamp{unix: unix, value: []string{strconv.FormatInt(unix, 10)}}
		stamps.Store(st)
		return st.value
	}
	headers := func(msg *message.Message, ts int64, signature string) http.Header {
		hd := make(http.Header, 7+len(s.Headers))
		for k, v := range s.Headers {
			hd[k] = v
		}
		// The two values of this attempt's own in one array; each slice's
		// capacity ends at its value, so an append copies.
		own := &[2]string{msg.UUID, signature}
		hd["Content-Type"] = contentType
		hd["User-Agent"] = userAgent
		hd[canonicalWebhookID] = own[0:1:1]
		hd[canonicalWebhookTimestamp] = timestamp(ts)
		if auth != nil {
			hd["Authorization"] = auth
		}
		if legacy != nil {
			hd[HeaderLegacySecret] = legacy
		}
		if signature != "" {
			hd[canonicalWebhookSignature] = own[1:2:2]
		}
		return hd
	}
	return func(msg *message.Message) ([]*message.Message, error) {
		// Signed here, in the smallest frame: the router runs each message
		// on a new goroutine, whose stack the HMAC would otherwise grow
		// (a copy of it, every message).
		ts := now()
		var signature string
		if len(s.Secrets) > 0 {
			signature = verify.Sign(s.Secrets, msg.UUID, ts, msg.Payload)
		}
		ctx := msg.Context()
		msg.SetContext(WithHeaders(ctx, headers(msg, ts.Unix(), signature)))
		defer msg.SetContext(ctx)
		return h(msg)
	}
}

// stamp is a webhook-timestamp value, kept while the second lasts: every
// attempt in it shares the one slice (net/http only reads it).
type stamp struct {
	unix  int64
	value []string
}

// Canonical forms (http.CanonicalHeaderKey) of the Standard Webhooks header
// names, as net/http stores them.
const (
	canonicalWebhookID        = "Webhook-Id"
	canonicalWebhookTimestamp = "Webhook-Timestamp"
	canonicalWebhookSignature = "Webhook-Signature"
)
