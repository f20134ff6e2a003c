package transports

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	whttp "github.com/ThreeDotsLabs/watermill-http/v2/pkg/http"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/middleware"
	"github.com/memhook/memhook/verify"
)

// Forward makes the headers with which an application hands events to a
// `memhook serve` router over HTTP (transport "http"): the router's ingest
// token and signature and, for one event alone, the message UUID and
// metadata in watermill-http's headers (Watermill-UUID,
// Watermill-Metadata), so the router's watermill-http subscriber rebuilds
// the same message.
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

// Headers returns the headers of one request to the router whose id
// (webhook-id) is id and whose body is body: content type, user agent,
// the bearer token and the Standard Webhooks signature over body. A batch
// of events (POST /ingest/batch) is sent with these alone.
func (f Forward) Headers(id string, body []byte) http.Header {
	ua := f.UserAgent
	if ua == "" {
		ua = "memhook"
	}
	hd := make(http.Header, 9)
	hd.Set("Content-Type", "application/json")
	hd.Set("User-Agent", ua)
	hd.Set(middleware.HeaderWebhookID, id)
	if f.Token != "" {
		hd.Set("Authorization", "Bearer "+f.Token)
	}
	if len(f.Secrets) > 0 {
		now := f.Now
		if now == nil {
			now = time.Now
		}
		ts := now()
		hd.Set(middleware.HeaderWebhookTimestamp, strconv.FormatInt(ts.Unix(), 10))
		hd.Set(verify.HeaderSignature, verify.Sign(f.Secrets, id, ts, body))
	}
	return hd
}

// MessageHeaders returns the headers of a request carrying msg alone (POST
// event.IngestPath): Headers plus watermill-http's UUID and metadata, and
// the traceparent header of msg's trace context, if any.
func (f Forward) MessageHeaders(msg *message.Message) (http.Header, error) {
	meta, err := json.Marshal(msg.Metadata)
	if err != nil {
		return nil, fmt.Errorf("forward: metadata: %w", err)
	}
	hd := f.Headers(msg.UUID, msg.Payload)
	hd.Set(whttp.HeaderUUID, msg.UUID)
	hd.Set(whttp.HeaderMetadata, string(meta))
	if tp := msg.Metadata.Get(event.HeaderTraceparent); tp != "" {
		hd.Set(event.HeaderTraceparent, tp) // the router keeps a valid one
	}
	return hd, nil
}
