package middleware

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	whttp "github.com/ThreeDotsLabs/watermill-http/v2/pkg/http"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/memhook/memhook/verify"
)

// Forward sets the headers with which an application hands an event to a
// `memhook serve` router over HTTP (transport "http"): the message UUID and
// metadata in watermill-http's headers (Watermill-UUID,
// Watermill-Metadata), so the router's watermill-http subscriber rebuilds
// the same message, and the router's ingest token. Like Signer it passes
// headers through the context; put the deliver handler after it.
type Forward struct {
	// Token, when set, is sent as "Authorization: Bearer <Token>".
	Token string
	// Secrets, when set, sign the request the Standard Webhooks way
	// (webhook-id is the message UUID), which the router checks against
	// MEMHOOK_INGEST_SECRET.
	Secrets []verify.Secret
	// Now is the clock of webhook-timestamp; nil means time.Now.
	Now func() time.Time
	// UserAgent is the User-Agent header; empty means "memhook".
	UserAgent string
}

// Middleware implements message.HandlerMiddleware.
func (f Forward) Middleware(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		meta, err := json.Marshal(msg.Metadata)
		if err != nil {
			return nil, fmt.Errorf("forward: metadata: %w", err)
		}
		hd := f.Headers(msg.UUID, msg.Payload)
		hd.Set(whttp.HeaderUUID, msg.UUID)
		hd.Set(whttp.HeaderMetadata, string(meta))
		ctx := msg.Context()
		msg.SetContext(WithHeaders(ctx, hd))
		defer msg.SetContext(ctx)
		return h(msg)
	}
}

// Headers returns the headers of one request to the router whose id
// (webhook-id) is id and whose body is body: content type, user agent,
// the bearer token and the Standard Webhooks signature over body. A batch
// of events (POST /ingest/batch) is sent with these alone.
func (f Forward) Headers(id string, body []byte) http.Header {
	ua := f.UserAgent
	if ua == "" {
		ua = "memhook"
	}
	hd := make(http.Header, 7)
	hd.Set("Content-Type", "application/json")
	hd.Set("User-Agent", ua)
	hd.Set(HeaderWebhookID, id)
	if f.Token != "" {
		hd.Set("Authorization", "Bearer "+f.Token)
	}
	if len(f.Secrets) > 0 {
		now := f.Now
		if now == nil {
			now = time.Now
		}
		ts := now()
		hd.Set(HeaderWebhookTimestamp, strconv.FormatInt(ts.Unix(), 10))
		hd.Set(verify.HeaderSignature, verify.Sign(f.Secrets, id, ts, body))
	}
	return hd
}
