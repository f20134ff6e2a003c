package main

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/bus/event"
)

func main() {
	cfg, err := bus.ConfigFromEnv() // MEM0_WEBHOOK_URL, MEM0_WEBHOOK_TOKEN, ...
	if err != nil {
		log.Fatal(err) // names the variable and the bad value
	}
	b, err := bus.New(cfg)
	if err != nil {
		log.Fatal(err)
	}

	// After each memory operation: returns at once, never waits for a webhook.
	err = b.Emit(context.Background(), event.NewMemoryAdded("user123", event.Memory{
		ID: "mem_456", Content: "User prefers morning meetings",
	}))
	if err != nil {
		log.Print(err) // invalid event, or bus.ErrQueueFull
	}

	// On shutdown: waits until every accepted event is delivered, filtered
	// or poisoned; reports the rest in a *bus.UndeliveredError.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.Close(ctx); err != nil {
		log.Print(err)
	}
	fmt.Printf("%+v\n", b.Stats())
}
