// Command nats runs memhook on NATS JetStream through watermill-nats: an
// integrator's own Watermill pub/sub under the bus.
//
//	nats deliver        # subscribe and send webhooks to MEM0_WEBHOOK_URL (run any number)
//	nats emit -n 100    # an application: emit 100 memory_added events
//
// PHASE 1 (until bus.WithPubSub lands): deliver runs a plain Watermill
// router over watermill-nats to check JetStream's semantics.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/bus/event"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(os.Args[1:], log); err != nil {
		fmt.Fprintln(os.Stderr, "nats:", err)
		os.Exit(1)
	}
}

func run(args []string, log *slog.Logger) error {
	if len(args) == 0 {
		return errors.New("usage: nats deliver | nats emit -n N")
	}
	cfg, err := bus.ConfigFromEnv()
	if err != nil {
		return err
	}
	ncfg, err := natsConfigFromEnv(os.LookupEnv, cfg)
	if err != nil {
		return err
	}
	switch args[0] {
	case "deliver":
		return deliver(cfg, ncfg, log)
	case "emit":
		fs := flag.NewFlagSet("emit", flag.ContinueOnError)
		n := fs.Int("n", 1, "how many events to emit")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *n < 1 {
			return fmt.Errorf("emit -n %d: must be at least 1", *n)
		}
		return emit(cfg, ncfg, *n, log)
	default:
		return fmt.Errorf("unknown command %q: usage: nats deliver | nats emit -n N", args[0])
	}
}

func deliver(cfg bus.Config, ncfg natsConfig, log *slog.Logger) error {
	if err := ensureStreams(ncfg); err != nil {
		return err
	}
	wlog := watermill.NewSlogLogger(log)
	subs := &subscribers{cfg: ncfg, logger: wlog}
	defer subs.Close()
	sub, err := subs.Subscribe(cfg.RedisGroup)
	if err != nil {
		return err
	}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, wlog)
	if err != nil {
		return err
	}
	client := &http.Client{Timeout: cfg.Timeout}
	router.AddConsumerHandler("deliver", bus.Topic, sub, func(msg *message.Message) error {
		req, err := http.NewRequestWithContext(msg.Context(), http.MethodPost, cfg.WebhookURL, bytes.NewReader(msg.Payload))
		if err != nil {
			return err
		}
		req.Header.Set("webhook-id", msg.UUID)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		<-router.Running()
		log.Info("memhook-nats: delivering", "group", cfg.RedisGroup, "ack_wait", ncfg.AckWait, "max_ack_pending", ncfg.MaxAckPending)
	}()
	return router.Run(ctx)
}

func emit(cfg bus.Config, ncfg natsConfig, n int, log *slog.Logger) error {
	if err := ensureStreams(ncfg); err != nil {
		return err
	}
	pub, err := newPublisher(ncfg, watermill.NewSlogLogger(log))
	if err != nil {
		return err
	}
	defer pub.Close()
	for i := range n {
		id := uuid.NewString()
		e := event.NewMemoryAdded("user123", event.Memory{ID: fmt.Sprintf("mem_%d", i), Content: "event"})
		payload, err := event.Encode(e, event.Meta{ID: id, Time: time.Now(), Source: cfg.Source, BotVersion: cfg.BotVersion})
		if err != nil {
			return err
		}
		if err := pub.Publish(bus.Topic, message.NewMessage(id, payload)); err != nil {
			return err
		}
	}
	log.Info("memhook-nats: emitted", "events", n)
	return nil
}
