// Command custommiddleware shows how an integrator adds a Watermill
// middleware to memhook's delivery chain without forking it: Redact removes
// the content of the memories a memory_searched event carries before the
// webhook leaves the process, so search results never reach the analytics
// receiver while the query and counts still do.
//
//	go run ./examples/custommiddleware
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/bus/event"
)

// Redact is a plain message.HandlerMiddleware. bus.WithMiddleware puts it
// after the filter and before retry, so it runs once per event that will be
// sent, and every retry sends the redacted payload. It routes on the
// event_type metadata and decodes only the events it changes.
func Redact(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		if msg.Metadata.Get(event.MetaType) != string(event.MemorySearched) {
			return h(msg)
		}
		var env map[string]any
		if err := json.Unmarshal(msg.Payload, &env); err != nil {
			return nil, fmt.Errorf("redact: %w", err) // goes to the poison queue
		}
		if data, ok := env["data"].(map[string]any); ok {
			if mems, ok := data["memories"].([]any); ok {
				for _, m := range mems {
					if mm, ok := m.(map[string]any); ok {
						mm["content"] = "[redacted]"
					}
				}
			}
		}
		payload, err := json.Marshal(env)
		if err != nil {
			return nil, fmt.Errorf("redact: %w", err)
		}
		msg.Payload = payload
		return h(msg)
	}
}

func main() {
	if err := run(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "custommiddleware:", err)
		os.Exit(1)
	}
}

func run(out io.Writer) error {
	bodies := make(chan []byte, 1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		bodies <- body
	})}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	b, err := bus.New(bus.Config{WebhookURL: "http://" + ln.Addr().String() + "/analytics"},
		bus.WithMiddleware(Redact),
		bus.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		return err
	}
	results := []event.Memory{{ID: "mem_1", Content: "lives at 12 Elm Street"}, {ID: "mem_2", Content: "allergic to peanuts"}}
	if err := b.Emit(context.Background(), event.NewMemorySearched("user123", "where does the user live", 5, results)); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.Close(ctx); err != nil {
		return err
	}
	var env struct {
		Data json.RawMessage `json:"data"`
	}
	select {
	case body := <-bodies:
		if err := json.Unmarshal(body, &env); err != nil {
			return err
		}
	default:
		return fmt.Errorf("the receiver got nothing")
	}
	fmt.Fprintf(out, "receiver got data=%s\n", env.Data)
	return nil
}
