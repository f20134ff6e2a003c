package middleware

import (
	"net/http"
	"strconv"
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
	// attempt's header (net/http only reads them).
	contentType, userAgent := []string{"application/json"}, []string{ua}
	var auth, legacy []string
	if s.Token != "" {
		auth = []string{"Bearer " + s.Token}
	}
	if s.LegacySecret != "" {
		legacy = []string{s.LegacySecret}
	}
	return func(msg *message.Message) ([]*message.Message, error) {
		ts := now()
		hd := make(http.Header, 7+len(s.Headers))
		for k, v := range s.Headers {
			hd[k] = v
		}
		hd["Content-Type"] = contentType
		hd["User-Agent"] = userAgent
		hd[canonicalWebhookID] = []string{msg.UUID}
		hd[canonicalWebhookTimestamp] = []string{strconv.FormatInt(ts.Unix(), 10)}
		if auth != nil {
			hd["Authorization"] = auth
		}
		if legacy != nil {
			hd[HeaderLegacySecret] = legacy
		}
		if len(s.Secrets) > 0 {
			hd[canonicalWebhookSignature] = []string{verify.Sign(s.Secrets, msg.UUID, ts, msg.Payload)}
		}
		ctx := msg.Context()
		msg.SetContext(WithHeaders(ctx, hd))
		defer msg.SetContext(ctx)
		return h(msg)
	}
}

// Canonical forms (http.CanonicalHeaderKey) of the Standard Webhooks header
// names, as net/http stores them.
const (
	canonicalWebhookID        = "Webhook-Id"
	canonicalWebhookTimestamp = "Webhook-Timestamp"
	canonicalWebhookSignature = "Webhook-Signature"
)
