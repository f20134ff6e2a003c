package handlers

import (
	"context"
	"sync"
	"time"
)

// SeenStore keeps, for the duplicate guard of the event endpoints (POST
// /webhooks/memory, /ingest, /ingest/batch), which event ids are being
// processed and which were processed within the replay window. The API's
// default, NewMemorySeen, keeps them in the process; transports.RedisSeen
// keeps them in Redis, shared by every router process on it and surviving
// their restarts. Implementations are safe for concurrent use.
//
// The guard calls Begin before processing an event and, when Begin
// claimed the id, End after. An error from either makes the guard answer
// 503 with Retry-After (Begin: nothing processed) or log a warning (End:
// the claim lapses after its in-progress time).
type SeenStore interface {
	// Begin claims id unless it is claimed or done already. It returns
	// claimed true when the caller now holds id, in progress for at most
	// inProgress (a holder that dies without End loses it then), and must
	// call End; done true when id was processed within the window;
	// neither while another request holds it.
	Begin(ctx context.Context, id string, inProgress time.Duration) (claimed, done bool, err error)
	// End ends the caller's claim on id: processed (ok), id is done for
	// window; not processed, id is forgotten, so that a retry is
	// processed.
	End(ctx context.Context, id string, ok bool, window time.Duration) error
}

// DefaultMaxSeen is how many ids NewMemorySeen keeps at most.
const DefaultMaxSeen = 1_000_000

// MemorySeen is the SeenStore of one process: ids live in its memory, at
// most max of them. Full of live ids, it lets new ones through without
// recording them (so processed at most once per router process only
// until then). Use transports.RedisSeen to share ids between processes.
type MemorySeen struct {
	max int

	mu    sync.Mutex
	ids   map[string]seenEntry
	calls int
}

type seenEntry struct {
	expires time.Time
	done    bool
}

var _ SeenStore = (*MemorySeen)(nil)

// NewMemorySeen returns an empty MemorySeen keeping at most max ids; 0
// means DefaultMaxSeen.
func NewMemorySeen(max int) *MemorySeen {
	if max <= 0 {
		max = DefaultMaxSeen
	}
	return &MemorySeen{max: max, ids: map[string]seenEntry{}}
}

// Begin implements SeenStore; it never fails.
func (m *MemorySeen) Begin(_ context.Context, id string, inProgress time.Duration) (claimed, done bool, err error) {
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls++
	if m.calls%1024 == 0 || len(m.ids) >= m.max {
		for k, e := range m.ids {
			if now.After(e.expires) {
				delete(m.ids, k)
			}
		}
	}
	if e, ok := m.ids[id]; ok && now.Before(e.expires) {
		return false, e.done, nil
	}
	if len(m.ids) >= m.max {
		return true, false, nil // full of live ids: process, do not record
	}
	m.ids[id] = seenEntry{expires: now.Add(inProgress)}
	return true, false, nil
}

// End implements SeenStore; it never fails.
func (m *MemorySeen) End(_ context.Context, id string, ok bool, window time.Duration) error {
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, tracked := m.ids[id]; !tracked {
		return nil
	}
	if ok {
		m.ids[id] = seenEntry{expires: now.Add(window), done: true}
	} else {
		delete(m.ids, id)
	}
	return nil
}
