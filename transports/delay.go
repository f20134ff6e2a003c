package transports

import (
	"container/heap"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// redeliverRetry is how long a due message whose publish failed (its
// queue full) waits before it is tried again.
const redeliverRetry = 100 * time.Millisecond

// timerHeap holds messages until their due time, then calls deliver with
// each, from one goroutine (never one per message). A message deliver
// refuses is tried again after redeliverRetry. It is the in-process delay
// store of the memory transport and of brought pub/subs.
type timerHeap struct {
	deliver func(topic string, msg *message.Message) error

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

func newTimerHeap(deliver func(topic string, msg *message.Message) error) *timerHeap {
	h := &timerHeap{deliver: deliver, kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go h.run()
	return h
}

// add keeps msg until due; false once stopped.
func (h *timerHeap) add(topic string, msg *message.Message, due time.Time) bool {
	h.mu.Lock()
	if h.stopped {
		h.mu.Unlock()
		return false
	}
	heap.Push(&h.items, delayedItem{due: due, topic: topic, msg: msg})
	h.n.Store(int64(len(h.items)))
	first := h.items[0].msg == msg
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

func (h *timerHeap) run() {
	defer close(h.done)
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
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
		if err := h.deliver(it.topic, it.msg); err != nil {
			h.mu.Lock()
			if !h.stopped {
				it.due = now.Add(redeliverRetry)
				heap.Push(&h.items, it)
				h.n.Store(int64(len(h.items)))
			}
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
	items := h.items
	h.items = nil
	h.n.Store(0)
	h.mu.Unlock()
	close(h.stop)
	<-h.done
	left := Left{}
	for _, it := range items {
		left[it.topic] = append(left[it.topic], it.msg)
	}
	return left
}
