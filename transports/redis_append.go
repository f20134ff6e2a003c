package transports

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// maxAppendBatch caps the XADDs of one pipeline.
const maxAppendBatch = 256

// appender sends the XADDs of concurrent Publish calls together: while one
// pipeline is on its way, the entries handed to it gather, and go in the
// next pipeline, one round trip for all of them. A lone caller pays one
// round trip, as with a plain XADD; many callers share them. One pipeline
// at a time keeps the entries in the order they were handed over.
type appender struct {
	client  *redis.Client
	timeout time.Duration

	mu      sync.Mutex
	pending []*appendItem
	busy    bool
}

type appendItem struct {
	stream string
	values map[string]any
	done   chan error // buffered
}

// add queues the XADD of values to stream and returns the channel that
// receives its outcome.
func (a *appender) add(stream string, values map[string]any) <-chan error {
	it := &appendItem{stream: stream, values: values, done: make(chan error, 1)}
	a.mu.Lock()
	a.pending = append(a.pending, it)
	if !a.busy {
		a.busy = true
		go a.run()
	}
	a.mu.Unlock()
	return it.done
}

// run sends pipelines until nothing is pending.
func (a *appender) run() {
	for {
		a.mu.Lock()
		n := min(len(a.pending), maxAppendBatch)
		if n == 0 {
			a.busy = false
			a.mu.Unlock()
			return
		}
		batch := a.pending[:n:n]
		a.pending = a.pending[n:]
		if len(a.pending) == 0 {
			a.pending = nil
		}
		a.mu.Unlock()
		a.send(batch)
	}
}

func (a *appender) send(batch []*appendItem) {
	ctx, cancel := context.WithTimeout(context.Background(), a.timeout)
	defer cancel()
	if len(batch) == 1 {
		batch[0].done <- a.client.XAdd(ctx, &redis.XAddArgs{Stream: batch[0].stream, Values: batch[0].values}).Err()
		return
	}
	cmds := make([]*redis.StringCmd, len(batch))
	_, err := a.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, it := range batch {
			cmds[i] = p.XAdd(ctx, &redis.XAddArgs{Stream: it.stream, Values: it.values})
		}
		return nil
	})
	for i, it := range batch {
		if cerr := cmds[i].Err(); cerr != nil || err == nil {
			it.done <- cerr
		} else {
			it.done <- err
		}
	}
}
