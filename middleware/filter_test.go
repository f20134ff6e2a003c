package middleware_test

import (
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/middleware"
)

func TestFilter(t *testing.T) {
	tests := []struct {
		name     string
		events   event.Set
		typ      string // "" leaves the metadata key unset
		wantPass bool
	}{
		{name: "zero Set passes memory_added", typ: "memory_added", wantPass: true},
		{name: "zero Set passes memory_error", typ: "memory_error", wantPass: true},
		{name: "AllTypes passes graph_built", events: event.AllTypes, typ: "graph_built", wantPass: true},
		{name: "NoTypes filters memory_added", events: event.NoTypes, typ: "memory_added"},
		{name: "listed type passes", events: event.SetOf(event.MemoryAdded, event.MemoryDeleted), typ: "memory_deleted", wantPass: true},
		{name: "unlisted type is filtered", events: event.SetOf(event.MemoryAdded, event.MemoryDeleted), typ: "memory_searched"},
		{name: "no metadata key is filtered", events: event.AllTypes, typ: ""},
		{name: "unknown type is filtered", events: event.AllTypes, typ: "memory_exploded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := message.NewMessage("m1", []byte("not even JSON: the filter never decodes"))
			if tt.typ != "" {
				msg.Metadata.Set(event.MetaType, tt.typ)
			}
			ran := false
			produced := []*message.Message{message.NewMessage("out", nil)}
			var filtered []*message.Message
			f := middleware.Filter{Events: tt.events, OnFiltered: func(m *message.Message) { filtered = append(filtered, m) }}
			out, err := f.Middleware(func(*message.Message) ([]*message.Message, error) {
				ran = true
				return produced, nil
			})(msg)
			if err != nil {
				t.Fatalf("err = %v, want nil (ack)", err)
			}
			if ran != tt.wantPass {
				t.Errorf("handler ran = %t, want %t", ran, tt.wantPass)
			}
			if tt.wantPass {
				if len(out) != 1 || out[0] != produced[0] || len(filtered) != 0 {
					t.Errorf("passed message: out %v, OnFiltered %d times", out, len(filtered))
				}
				return
			}
			if out != nil || len(filtered) != 1 || filtered[0] != msg {
				t.Errorf("filtered message: out %v, OnFiltered got %v", out, filtered)
			}
		})
	}
}

func TestFilterWithoutOnFiltered(t *testing.T) {
	msg := message.NewMessage("m1", nil)
	msg.Metadata.Set(event.MetaType, "memory_added")
	out, err := middleware.Filter{Events: event.NoTypes}.Middleware(func(*message.Message) ([]*message.Message, error) {
		t.Error("handler ran for a filtered message")
		return nil, nil
	})(msg)
	if out != nil || err != nil {
		t.Errorf("Filter = %v, %v; want nil, nil", out, err)
	}
}
