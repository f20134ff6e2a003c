package middleware_test

import (
	"context"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	wmiddleware "github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/middleware"
	"github.com/memhook/memhook/verify"
)

type discardPublisher struct{}

func (discardPublisher) Publish(string, ...*message.Message) error { return nil }
func (discardPublisher) Close() error                              { return nil }

// BenchmarkChain is memhook's whole chain per message (recoverer, poison
// queue, filter, retry, signer with a token, the legacy header and one
// HMAC secret) around a handler that does nothing: the cost memhook adds
// to each delivery, HTTP aside.
func BenchmarkChain(b *testing.B) {
	secrets, err := verify.ParseSecrets("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		b.Fatal(err)
	}
	chain := []message.HandlerMiddleware{
		wmiddleware.Recoverer,
		middleware.PoisonQueue{Publisher: discardPublisher{}}.Middleware,
		middleware.Filter{}.Middleware,
		middleware.Retry{}.Middleware,
		middleware.Signer{Token: "tok", LegacySecret: "sec", Secrets: secrets}.Middleware,
	}
	h := func(msg *message.Message) ([]*message.Message, error) {
		_ = middleware.HeadersFromContext(msg.Context())
		return nil, nil
	}
	for i := len(chain) - 1; i >= 0; i-- {
		h = chain[i](h)
	}
	payload := make([]byte, 420)
	msg := message.NewMessage("6ba7b810-9dad-11d1-80b4-00c04fd430c8", payload)
	msg.Metadata.Set(event.MetaType, string(event.MemoryAdded))
	msg.SetContext(context.Background())
	b.ReportAllocs()
	for range b.N {
		if _, err := h(msg); err != nil {
			b.Fatal(err)
		}
	}
}
