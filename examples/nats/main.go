// Command nats runs memhook on NATS JetStream through watermill-nats, an
// integrator's own Watermill pub/sub under the bus (bus.WithPubSub):
//
//	nats deliver        # subscribe and send webhooks to MEM0_WEBHOOK_URL; run any number
//	nats emit -n 100    # an application: emit 100 memory_added events and exit
//
// Both read the seed's MEM0_* and memhook's MEMHOOK_* variables
// (bus.ConfigFromEnv) and NATS_URL, NATS_MAX_ACK_PENDING and
// NATS_STREAM_MAX_AGE. The delivering processes of one MEMHOOK_REDIS_GROUP
// share the events: each event goes to one of them, and one that dies
// before acking an event leaves it to the others after AckWait.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/bus/event"
)

const usage = "usage: nats deliver | nats emit [-n N]"

// closeTimeout bounds bus.Close at exit.
const closeTimeout = 30 * time.Second

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(os.Args[1:], log); err != nil {
		fmt.Fprintln(os.Stderr, "nats:", err)
		os.Exit(1)
	}
}

func run(args []string, log *slog.Logger) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	n := 0
	switch args[0] {
	case "deliver":
		if len(args) > 1 {
			return fmt.Errorf("deliver takes no arguments, got %q: %s", args[1:], usage)
		}
	case "emit":
		fs := flag.NewFlagSet("emit", flag.ContinueOnError)
		fs.IntVar(&n, "n", 1, "how many events to emit")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if n < 1 || fs.NArg() > 0 {
			return fmt.Errorf("emit -n %d %q: want a count of at least 1 and nothing else", n, fs.Args())
		}
	default:
		return fmt.Errorf("unknown command %q: %s", args[0], usage)
	}
	cfg, err := bus.ConfigFromEnv()
	if err != nil {
		return err
	}
	ncfg, err := natsConfigFromEnv(os.LookupEnv, cfg)
	if err != nil {
		return err
	}
	if args[0] == "deliver" && cfg.WebhookURL == "" {
		return errors.New("deliver needs MEM0_WEBHOOK_URL, where the webhooks go")
	}
	if err := ensureStreams(ncfg); err != nil {
		return err
	}
	b, pub, err := newBus(cfg, ncfg, args[0] == "deliver", log)
	if err != nil {
		return err
	}
	defer pub.Close() // after the bus: it may publish poisoned events until Close returns
	if args[0] == "deliver" {
		return deliver(b, cfg, ncfg, log)
	}
	return emit(b, n, log)
}

// newBus builds the bus on NATS JetStream. A delivering process passes a
// subscribe func; an application passes nil and only publishes. The
// caller closes pub after the bus; the bus closes the subscribers.
func newBus(cfg bus.Config, ncfg natsConfig, delivers bool, log *slog.Logger) (*bus.Bus, message.Publisher, error) {
	wlog := watermill.NewSlogLogger(log)
	// Bring your own pub/sub (README).
	pub, err := newPublisher(ncfg, wlog) // watermill-nats, JetStream, Nats-Msg-Id = event id (+ attempt)
	if err != nil {
		return nil, nil, err
	}
	var subscribe func(group string) (message.Subscriber, error) // nil: only publish
	if delivers {
		subscribe = groupSubscribers{cfg: ncfg, logger: wlog}.Subscribe // durable consumer per group
	}
	b, err := bus.New(cfg, bus.WithPubSub(pub, subscribe), bus.WithLogger(log))
	// (end of README snippet)
	if err != nil {
		_ = pub.Close()
		return nil, nil, err
	}
	return b, pub, nil
}

// deliver runs until SIGTERM or SIGINT, then closes the bus: what it had
// not acked stays with JetStream for the other processes of the group.
func deliver(b *bus.Bus, cfg bus.Config, ncfg natsConfig, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	log.Info("memhook-nats: delivering", "url", b.WebhookURL(), "nats", redactURL(ncfg.URL), "group", cfg.RedisGroup,
		"concurrency", ncfg.Concurrency, "ack_wait", ncfg.AckWait, "max_ack_pending", ncfg.MaxAckPending)
	<-ctx.Done()
	stop()
	log.Info("memhook-nats: stopping")
	closeCtx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	if err := b.Close(closeCtx); err != nil {
		return err
	}
	log.Info("memhook-nats: stopped", "stats", fmt.Sprintf("%+v", b.Stats()))
	return nil
}

// emit emits n memory_added events (memory ids mem_0 … mem_<n-1>) and
// closes the bus.
func emit(b *bus.Bus, n int, log *slog.Logger) error {
	ctx := context.Background()
	var errs []error
	for i := range n {
		e := event.NewMemoryAdded("user123", event.Memory{ID: fmt.Sprintf("mem_%d", i), Content: "emitted by examples/nats"})
		if err := b.Emit(ctx, e); err != nil {
			errs = append(errs, fmt.Errorf("event %d: %w", i, err))
			break // NATS refuses: the rest would fail the same way
		}
	}
	closeCtx, cancel := context.WithTimeout(ctx, closeTimeout)
	defer cancel()
	if err := b.Close(closeCtx); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	log.Info("memhook-nats: emitted", "events", n, "stats", fmt.Sprintf("%+v", b.Stats()))
	return nil
}
