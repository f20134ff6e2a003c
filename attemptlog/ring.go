package attemptlog

import (
	"context"
	"strconv"
	"sync"
)

// DefaultRingSize is how many attempts a Ring keeps unless told.
const DefaultRingSize = 10_000

// ringScan is how many entries a Query reads per hold of the lock, so
// that a query never holds Record up for long.
const ringScan = 256

// Ring is a Log in memory: the latest attempts, up to its size; each new
// one past it replaces the oldest. Record copies the attempt under a lock
// held for that alone. Safe for concurrent use.
type Ring struct {
	mu   sync.Mutex
	buf  []Attempt
	next uint64 // sequence number of the next attempt; attempt s is at buf[s%len(buf)]
}

var _ Log = (*Ring)(nil)

// NewRing returns a Ring keeping size attempts; size <= 0 means
// DefaultRingSize.
func NewRing(size int) *Ring {
	if size <= 0 {
		size = DefaultRingSize
	}
	return &Ring{buf: make([]Attempt, size)}
}

// Record keeps a, replacing the oldest attempt when the ring is full.
func (r *Ring) Record(a Attempt) {
	r.mu.Lock()
	r.buf[r.next%uint64(len(r.buf))] = a
	r.next++
	r.mu.Unlock()
}

// Query returns the attempts f selects, newest first. Its cursor is the
// sequence number of the next older attempt to look at; one that passed
// out of the ring since continues with the oldest still held.
func (r *Ring) Query(ctx context.Context, f Filter) (Page, error) {
	if err := f.Validate(); err != nil {
		return Page{}, err
	}
	limit := f.limit()
	r.mu.Lock()
	hi := r.next // exclusive
	r.mu.Unlock()
	if f.Cursor != "" {
		c, err := strconv.ParseUint(f.Cursor, 10, 64)
		if err != nil {
			return Page{}, &ParamError{Param: "cursor", Value: f.Cursor, Problem: "not a cursor of this log"}
		}
		hi = min(hi, c)
	}
	page := Page{Attempts: []Attempt{}}
	size := uint64(len(r.buf))
	for hi > 0 {
		if err := ctx.Err(); err != nil {
			return Page{}, err
		}
		r.mu.Lock()
		lo := uint64(0) // the oldest still held
		if r.next > size {
			lo = r.next - size
		}
		if hi <= lo {
			r.mu.Unlock()
			return page, nil
		}
		stop := max(lo, hi-min(hi, ringScan))
		for s := hi; s > stop; s-- {
			a := &r.buf[(s-1)%size]
			if !f.match(a) {
				continue
			}
			page.Attempts = append(page.Attempts, *a)
			if len(page.Attempts) == limit {
				r.mu.Unlock()
				if s-1 > lo {
					page.Next = strconv.FormatUint(s-1, 10)
				}
				return page, nil
			}
		}
		r.mu.Unlock()
		hi = stop
	}
	return page, nil
}

// Close does nothing: a Ring holds nothing to write out.
func (r *Ring) Close() error { return nil }
