package bus

import (
	"context"
	"sync/atomic"

	"github.com/memhook/memhook/bus/event"
)

// Batch counts the items of one batch operation so that it sends a single
// batch_operation_completed webhook, as the seed asks, instead of one per
// item. Record each item with Add; call Done once at the end. A Batch is
// safe for concurrent use.
type Batch struct {
	bus       *Bus
	userID    string
	operation string
	requestID string
	ok, bad   atomic.Int64
}

// Batch starts counting a batch operation (e.g. "batch_add_memories") for
// userID; requestID may be empty.
func (b *Bus) Batch(userID, operation, requestID string) *Batch {
	return &Batch{bus: b, userID: userID, operation: operation, requestID: requestID}
}

// Add records one item: err nil counts it as succeeded, otherwise failed.
func (bt *Batch) Add(err error) {
	if err == nil {
		bt.ok.Add(1)
	} else {
		bt.bad.Add(1)
	}
}

// Result returns the counts so far.
func (bt *Batch) Result() event.BatchResult {
	ok, bad := int(bt.ok.Load()), int(bt.bad.Load())
	return event.BatchResult{Operation: bt.operation, Total: ok + bad, Succeeded: ok, Failed: bad}
}

// Done emits the one batch_operation_completed event with the counts; it
// returns what Emit returns.
func (bt *Batch) Done(ctx context.Context) error {
	e := event.NewBatchOperationCompleted(bt.userID, bt.Result())
	e.RequestID = bt.requestID
	return bt.bus.Emit(ctx, e)
}
