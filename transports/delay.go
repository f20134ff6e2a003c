package transports

import (
	"container/heap"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/memhook/memhook/middleware"
)

// redeliverRetry is how long a due message whose publish failed (its
// queue full) waits before it is tried again.
const redeliverRetry = 100 * time.Millisecond

// timerHeap holds messages until their due time, then calls deliver with
// each, from one goroutine (never one per message). A message deliver
// refuses is tried again after redeliverRetry. It is the in-process delay
// store of the memory transport and of brought pub/subs.
type timerHeap struct {
	deliver func(it delayedItem) error

	mu      sync.Mutex
	items   delayedItems
	n       atomic.Int64 // len(items), read without the lock on every publish
	kick    chan struct{}
	stop    chan struct{}
	done    chan struct{}
	stopped bool
}

type delayedItem struct {
	due   time.Time
	topic string
	msg   *message.Message
	// groups are the consumer groups the message counts against while it
	// waits (the memory transport's; nil for a brought pub/sub). The slice
	// is shared and never modified.
	groups []string
}

type delayedItems []delayedItem

func (d delayedItems) Len() int           { return len(d) }
func (d delayedItems) Less(i, j int) bool { return d[i].due.Before(d[j].due) }
func (d delayedItems) Swap(i, j int)      { d[i], d[j] = d[j], d[i] }
func (d *delayedItems) Push(x any)        { *d = append(*d, x.(delayedItem)) }
func (d *delayedItems) Pop() any {
	old := *d
	it := old[len(old)-1]
	old[len(old)-1] = delayedItem{}
	*d = old[:len(old)-1]
	return it
}

func newTimerHeap(deliver func(it delayedItem) error) *timerHeap {
	h := &timerHeap{deliver: deliver, kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go h.run()
	return h
}

// add keeps it.msg until it.due; false once stopped.
func (h *timerHeap) add(it delayedItem) bool {
	h.mu.Lock()
	if h.stopped {
		h.mu.Unlock()
		return false
	}
	heap.Push(&h.items, it)
	h.n.Store(int64(len(h.items)))
	first := h.items[0].msg == it.msg
	h.mu.Unlock()
	if first {
		select {
		case h.kick <- struct{}{}:
		default:
		}
	}
	return true
}

// Len is how many messages wait.
func (h *timerHeap) Len() int { return int(h.n.Load()) }

// Oldest is the earliest due time; zero when none waits.
func (h *timerHeap) Oldest() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.items) == 0 {
		return time.Time{}
	}
	return h.items[0].due
}

// oldestOf is the earliest due time of topic's messages; zero when none
// waits. It looks at every message: for status, not for the message path.
func (h *timerHeap) oldestOf(topic string) time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	var oldest time.Time
	for _, it := range h.items {
		if it.topic == topic && (oldest.IsZero() || it.due.Before(oldest)) {
			oldest = it.due
		}
	}
	return oldest
}

// expedite makes every message of topic that Health held
// (middleware.HeldKey) and is not yet due, due now, and returns how many.
func (h *timerHeap) expedite(topic string) int {
	now := time.Now()
	h.mu.Lock()
	n := 0
	for i := range h.items {
		it := &h.items[i]
		if it.topic == topic && it.due.After(now) && it.msg.Metadata.Get(middleware.HeldKey) != "" {
			it.due = now
			n++
		}
	}
	if n > 0 {
		heap.Init(&h.items)
	}
	h.mu.Unlock()
	if n > 0 {
		select {
		case h.kick <- struct{}{}:
		default:
		}
	}
	return n
}

// removeTopic takes every message of topic out and returns them, soonest
// due first.
func (h *timerHeap) removeTopic(topic string) []delayedItem {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []delayedItem
	kept := h.items[:0]
	for _, it := range h.items {
		if it.topic == topic {
			out = append(out, it)
		} else {
			kept = append(kept, it)
		}
	}
	clear(h.items[len(kept):])
	h.items = kept
	heap.Init(&h.items)
	h.n.Store(int64(len(h.items)))
	slices.SortStableFunc(out, func(a, b delayedItem) int { return a.due.Compare(b.due) })
	return out
}

func (h *timerHeap) run() {
	defer close(h.done)
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		default:
		}
		h.mu.Lock()
		wait := time.Hour
		if len(h.items) > 0 {
			wait = time.Until(h.items[0].due)
		}
		h.mu.Unlock()
		if wait > 0 {
			t.Reset(wait)
			select {
			case <-t.C:
			case <-h.kick:
				t.Stop() // Go ≥ 1.23: no stale tick after Stop or Reset
				continue
			case <-h.stop:
				return
			}
		}
		h.fire()
	}
}

// fire delivers every message due now.
func (h *timerHeap) fire() {
	now := time.Now()
	for {
		h.mu.Lock()
		if h.stopped || len(h.items) == 0 || h.items[0].due.After(now) {
			h.mu.Unlock()
			return
		}
		it := heap.Pop(&h.items).(delayedItem)
		h.n.Store(int64(len(h.items)))
		h.mu.Unlock()
		if err := h.deliver(it); err != nil {
			// Kept even when close has begun: close takes what is left
			// once this goroutine has ended, so it reports it.
			h.mu.Lock()
			it.due = now.Add(redeliverRetry)
			heap.Push(&h.items, it)
			h.n.Store(int64(len(h.items)))
			h.mu.Unlock()
		}
	}
}

// close stops the timer and returns what still waits, by topic.
func (h *timerHeap) close() Left {
	h.mu.Lock()
	if h.stopped {
		h.mu.Unlock()
		return nil
	}
	h.stopped = true
	h.mu.Unlock()
	close(h.stop)
	<-h.done // no message is between the heap and deliver any more
	h.mu.Lock()
	items := h.items
	h.items = nil
	h.n.Store(0)
	h.mu.Unlock()
	left := Left{}
	for _, it := range items {
		left[it.topic] = append(left[it.topic], it.msg)
	}
	return left
}
