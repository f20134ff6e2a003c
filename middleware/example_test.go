package middleware_test

import (
	"context"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	wmiddleware "github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/middleware"
)

// trace wraps layer m so that entering and leaving it is printed.
func trace(name string, m message.HandlerMiddleware) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		inner := m(h)
		return func(msg *message.Message) ([]*message.Message, error) {
			fmt.Printf("-> %s (attempt %d)\n", name, middleware.AttemptFromContext(msg.Context()))
			out, err := inner(msg)
			if err != nil {
				fmt.Printf("<- %s: %v\n", name, err)
			} else {
				fmt.Printf("<- %s\n", name)
			}
			return out, err
		}
	}
}

// Example shows memhook's delivery chain on a Watermill router and the order
// its layers run for one message whose first attempt gets a 503: recoverer,
// poison queue, filter, retry, signer, then the handler; Retry runs the
// signer and the handler again, and the message is acked.
func Example() {
	logger := watermill.NopLogger{}
	// Publish returns once the router has acked the message, so everything
	// below has printed by then.
	pubsub := gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true}, logger)
	router, err := message.NewRouter(message.RouterConfig{}, logger)
	if err != nil {
		fmt.Println(err)
		return
	}
	answers := []error{&middleware.StatusError{Code: 503}, nil}
	deliver := func(msg *message.Message) error {
		hd := middleware.HeadersFromContext(msg.Context())
		err := answers[0]
		answers = answers[1:]
		fmt.Printf("   deliver %s: webhook-id %s, %s, timestamp %s -> %v\n",
			msg.Metadata.Get(event.MetaType), hd.Get("webhook-id"), hd.Get("Authorization"), hd.Get("webhook-timestamp"), err)
		return err
	}
	router.AddConsumerHandler("memhook.deliver", "memory.events", pubsub, deliver).AddMiddleware(
		trace("recoverer", wmiddleware.Recoverer),
		trace("poison", middleware.PoisonQueue{Publisher: pubsub}.Middleware),
		trace("filter", middleware.Filter{Events: event.SetOf(event.MemoryAdded)}.Middleware),
		trace("retry", middleware.Retry{InitialInterval: time.Millisecond, Jitter: middleware.NoJitter}.Middleware),
		trace("signer", middleware.Signer{Token: "my-secret-token", Now: func() time.Time { return time.Unix(1705314600, 0) }}.Middleware),
	)
	go func() { _ = router.Run(context.Background()) }()
	<-router.Running()

	msg := message.NewMessage("0b9f2c8e-4a1d-4f57-9a43-7f0c2d5e6a10", []byte(`{"event":"memory_added"}`))
	msg.Metadata.Set(event.MetaType, string(event.MemoryAdded))
	if err := pubsub.Publish("memory.events", msg); err != nil {
		fmt.Println(err)
	}
	_ = router.Close()
	_ = pubsub.Close()
	// Output:
	// -> recoverer (attempt 1)
	// -> poison (attempt 1)
	// -> filter (attempt 1)
	// -> retry (attempt 1)
	// -> signer (attempt 1)
	//    deliver memory_added: webhook-id 0b9f2c8e-4a1d-4f57-9a43-7f0c2d5e6a10, Bearer my-secret-token, timestamp 1705314600 -> webhook receiver answered 503 Service Unavailable
	// <- signer: webhook receiver answered 503 Service Unavailable
	// -> signer (attempt 2)
	//    deliver memory_added: webhook-id 0b9f2c8e-4a1d-4f57-9a43-7f0c2d5e6a10, Bearer my-secret-token, timestamp 1705314600 -> <nil>
	// <- signer
	// <- retry
	// <- filter
	// <- poison
	// <- recoverer
}
