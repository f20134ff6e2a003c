package middleware

import (
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/memhook/memhook/bus/event"
)

// Filter passes on only the messages whose event type (metadata
// event.MetaType) is in Events; the others are acked without running the
// handler, and counted through OnFiltered. It never decodes the payload. A
// message without the metadata key is filtered out.
type Filter struct {
	// Events to deliver; the zero Set delivers all (the seed's default).
	Events event.Set
	// OnFiltered, if set, is called for each message filtered out.
	OnFiltered func(msg *message.Message)
}

// Middleware implements message.HandlerMiddleware.
func (f Filter) Middleware(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		if !f.Events.Has(event.Type(msg.Metadata.Get(event.MetaType))) {
			if f.OnFiltered != nil {
				f.OnFiltered(msg)
			}
			return nil, nil
		}
		return h(msg)
	}
}
