package attemptlog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/memhook/memhook/transports"
)

// Defaults of RedisConfig.
const (
	// DefaultStream is the stream of the attempt log: beside the events
	// stream, memory.events.
	DefaultStream = transports.DefaultEventsTopic + ":attempts"
	// DefaultRedisMaxLen is how many attempts the stream keeps, about:
	// XADD trims it with an approximate MAXLEN.
	DefaultRedisMaxLen = 100_000
	// DefaultFlushInterval is how long an attempt waits, at most, for
	// the writer to send it.
	DefaultFlushInterval = 100 * time.Millisecond
	// DefaultBatchSize is how many attempts one pipeline sends at most;
	// a full batch goes at once.
	DefaultBatchSize = 256
	// DefaultBuffer is how many attempts wait for the writer before
	// Record drops.
	DefaultBuffer = 8192
	// DefaultScanLimit is how many stream entries one Query reads at
	// most.
	DefaultScanLimit = 10_000
	// DefaultWriteTimeout bounds one pipeline.
	DefaultWriteTimeout = 2 * time.Second
)

// SinceSlack is how far before Filter.Since a Redis query starts reading
// the stream: entry ids are Redis's clock at the time of writing, Start
// a router's at the start of the attempt.
const SinceSlack = time.Minute

// RedisConfig configures the Redis attempt log.
type RedisConfig struct {
	// Redis is where: its URL and timeouts (the transport's).
	Redis transports.RedisConfig
	// Stream is the stream's key; empty means DefaultStream.
	Stream string
	// MaxLen is how many attempts the stream keeps (approximately: a few
	// hundred more at most); 0 means DefaultRedisMaxLen.
	MaxLen int64
	// FlushInterval: 0 means DefaultFlushInterval.
	FlushInterval time.Duration
	// BatchSize: 0 means DefaultBatchSize.
	BatchSize int
	// Buffer: 0 means DefaultBuffer.
	Buffer int
	// ScanLimit: 0 means DefaultScanLimit.
	ScanLimit int
	// WriteTimeout: 0 means DefaultWriteTimeout.
	WriteTimeout time.Duration
	// Logger gets a WARN, at most once a second, while attempts are
	// dropped (buffer full, or Redis refusing the writes); nil means
	// none.
	Logger *slog.Logger
}

func (c *RedisConfig) setDefaults() {
	if c.Stream == "" {
		c.Stream = DefaultStream
	}
	if c.MaxLen == 0 {
		c.MaxLen = DefaultRedisMaxLen
	}
	if c.FlushInterval == 0 {
		c.FlushInterval = DefaultFlushInterval
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.Buffer == 0 {
		c.Buffer = DefaultBuffer
	}
	if c.ScanLimit == 0 {
		c.ScanLimit = DefaultScanLimit
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports every problem at once (errors.Join), naming the field.
func (c RedisConfig) Validate() error {
	var errs []error
	for _, f := range []struct {
		name string
		bad  bool
	}{
		{"MaxLen", c.MaxLen < 0},
		{"FlushInterval", c.FlushInterval < 0},
		{"BatchSize", c.BatchSize < 0},
		{"Buffer", c.Buffer < 0},
		{"ScanLimit", c.ScanLimit < 0},
		{"WriteTimeout", c.WriteTimeout < 0},
	} {
		if f.bad {
			errs = append(errs, fmt.Errorf("attempt log: %s must not be negative", f.name))
		}
	}
	if err := c.Redis.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Redis is a Log on a Redis stream that every router process shares:
// each XADD trims it to about MaxLen entries (MAXLEN ~). Record hands the
// attempt to one writer goroutine through a buffer of Buffer attempts —
// when that is full, the attempt is dropped, counted (Dropped) and
// warned of — and the writer sends them in pipelines of up to BatchSize,
// at least every FlushInterval. A batch Redis refuses (down, full) is
// dropped and counted too: delivery never waits for the log. Query reads
// the stream newest first (XREVRANGE, Redis 6.2 or later), filtering
// here, at most ScanLimit entries a call. Safe for concurrent use.
type Redis struct {
	cfg    RedisConfig
	client *redis.Client
	in     chan Attempt
	stop   chan struct{}
	done   chan struct{}

	closed    atomic.Bool
	closeOnce sync.Once
	dropped   atomic.Uint64
	lastWarn  atomic.Int64
}

var _ Log = (*Redis)(nil)

// NewRedis returns the log cfg configures, with its own Redis client
// (closed by Close), and starts its writer. It does not connect: a Redis
// that is down shows as dropped attempts.
func NewRedis(cfg RedisConfig) (*Redis, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	client, err := cfg.Redis.NewClient(2) // the writer and a query or two
	if err != nil {
		return nil, err
	}
	l := &Redis{cfg: cfg, client: client, in: make(chan Attempt, cfg.Buffer),
		stop: make(chan struct{}), done: make(chan struct{})}
	go l.run()
	return l, nil
}

// Record hands a to the writer, or drops it (counted) when the buffer is
// full or the log closed. It never blocks.
func (l *Redis) Record(a Attempt) {
	if l.closed.Load() {
		l.drop(1, "closed", nil)
		return
	}
	select {
	case l.in <- a:
	default:
		l.drop(1, "buffer full", nil)
	}
}

// Dropped returns how many attempts were not kept: the buffer full,
// Redis refusing a batch, or Record after Close.
func (l *Redis) Dropped() uint64 { return l.dropped.Load() }

// drop counts n attempts lost and warns, at most once a second.
func (l *Redis) drop(n int, why string, err error) {
	total := l.dropped.Add(uint64(n))
	now := time.Now().UnixNano()
	last := l.lastWarn.Load()
	if now-last < int64(time.Second) || !l.lastWarn.CompareAndSwap(last, now) {
		return
	}
	args := []any{"reason", why, "stream", l.cfg.Stream, "dropped_total", total}
	if err != nil {
		args = append(args, "error", err.Error())
	}
	l.cfg.Logger.Warn("memhook: attempt log: attempts not recorded", args...)
}

// run is the writer: it gathers attempts and sends a batch when full or
// every FlushInterval; at Close, everything buffered.
func (l *Redis) run() {
	defer close(l.done)
	batch := make([]Attempt, 0, l.cfg.BatchSize)
	tick := time.NewTicker(l.cfg.FlushInterval)
	defer tick.Stop()
	for {
		select {
		case a := <-l.in:
			batch = append(batch, a)
			if len(batch) == l.cfg.BatchSize {
				l.flush(batch)
				batch = batch[:0]
			}
		case <-tick.C:
			if len(batch) > 0 {
				l.flush(batch)
				batch = batch[:0]
			}
		case <-l.stop:
			failed := false
			for {
				select {
				case a := <-l.in:
					batch = append(batch, a)
					if len(batch) < l.cfg.BatchSize {
						continue
					}
				default:
				}
				if len(batch) == 0 {
					return
				}
				if failed { // Redis refused once: Close does not wait a timeout per batch
					l.drop(len(batch), "closing after a failed write", nil)
				} else {
					failed = !l.flush(batch)
				}
				batch = batch[:0]
			}
		}
	}
}

// flush sends batch in one pipeline; it reports whether Redis took all.
func (l *Redis) flush(batch []Attempt) bool {
	ctx, cancel := context.WithTimeout(context.Background(), l.cfg.WriteTimeout)
	defer cancel()
	cmds, err := l.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range batch {
			p.XAdd(ctx, &redis.XAddArgs{Stream: l.cfg.Stream, MaxLen: l.cfg.MaxLen, Approx: true, Values: encode(&batch[i])})
		}
		return nil
	})
	if err == nil {
		return true
	}
	failed := 0
	for _, c := range cmds {
		if c.Err() != nil {
			failed++
		}
	}
	if failed == 0 || len(cmds) == 0 {
		failed = len(batch)
	}
	l.drop(failed, "write failed", err)
	return false
}

// The fields of a stream entry.
const (
	fEndpoint   = "endpoint"
	fEventID    = "event_id"
	fEventType  = "event_type"
	fUserID     = "user_id"
	fNumber     = "attempt"
	fStart      = "start_ns" // Unix nanoseconds
	fDuration   = "duration_ns"
	fSucceeded  = "succeeded" // 1 or 0
	fStatus     = "status"
	fErrorClass = "error_class"
	fError      = "error"
	fResponse   = "response"
	fTraceID    = "trace_id"
)

// encode makes the entry of a: one field each, empty ones left out, so
// that redis-cli shows it plainly.
func encode(a *Attempt) []any {
	v := make([]any, 0, 26)
	v = append(v, fEndpoint, a.Endpoint, fEventID, a.EventID, fEventType, a.EventType, fUserID, a.UserID,
		fNumber, a.Number, fStart, a.Start.UnixNano(), fDuration, int64(a.Duration), fSucceeded, boolInt(a.Succeeded))
	for _, f := range []struct {
		name, val string
	}{{fErrorClass, a.ErrorClass}, {fError, a.Error}, {fResponse, a.Response}, {fTraceID, a.TraceID}} {
		if f.val != "" {
			v = append(v, f.name, f.val)
		}
	}
	if a.Status != 0 {
		v = append(v, fStatus, a.Status)
	}
	return v
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// decode reads an entry encode made; ok false for one it did not.
func decode(x redis.XMessage) (a Attempt, ok bool) {
	str := func(k string) string { s, _ := x.Values[k].(string); return s }
	num := func(k string) int64 { n, _ := strconv.ParseInt(str(k), 10, 64); return n }
	if _, has := x.Values[fStart]; !has {
		return Attempt{}, false
	}
	return Attempt{
		Endpoint:   str(fEndpoint),
		EventID:    str(fEventID),
		EventType:  str(fEventType),
		UserID:     str(fUserID),
		Number:     int(num(fNumber)),
		Start:      time.Unix(0, num(fStart)),
		Duration:   time.Duration(num(fDuration)),
		Succeeded:  str(fSucceeded) == "1",
		Status:     int(num(fStatus)),
		ErrorClass: str(fErrorClass),
		Error:      str(fError),
		Response:   str(fResponse),
		TraceID:    str(fTraceID),
	}, true
}

// streamID is a Redis stream entry id: a Redis cursor.
var streamID = regexp.MustCompile(`^[0-9]{1,20}-[0-9]{1,20}$`)

// queryChunk is how many entries one XREVRANGE reads.
const queryChunk = 500

// Query returns the attempts f selects, newest first, reading at most
// ScanLimit entries; when it stops there, Next continues. Its cursor is
// the stream id of the last entry read.
func (l *Redis) Query(ctx context.Context, f Filter) (Page, error) {
	if err := f.Validate(); err != nil {
		return Page{}, err
	}
	end := "+"
	if f.Cursor != "" {
		if !streamID.MatchString(f.Cursor) {
			return Page{}, &ParamError{Param: "cursor", Value: f.Cursor, Problem: "not a cursor of this log"}
		}
		end = "(" + f.Cursor
	}
	start := "-"
	if !f.Since.IsZero() {
		if ms := f.Since.Add(-SinceSlack).UnixMilli(); ms > 0 {
			start = strconv.FormatInt(ms, 10)
		}
	}
	limit := f.limit()
	page := Page{Attempts: []Attempt{}}
	for scanned := 0; scanned < l.cfg.ScanLimit; {
		n := min(queryChunk, l.cfg.ScanLimit-scanned)
		// One more than read: whether anything older is left.
		xs, err := l.client.XRevRangeN(ctx, l.cfg.Stream, end, start, int64(n+1)).Result()
		if err != nil {
			return Page{}, fmt.Errorf("attempt log: %w", err)
		}
		read := xs[:min(len(xs), n)]
		for i, x := range read {
			a, ok := decode(x)
			if ok && f.match(&a) {
				page.Attempts = append(page.Attempts, a)
				if len(page.Attempts) == limit {
					if i+1 < len(xs) {
						page.Next = x.ID
					}
					return page, nil
				}
			}
		}
		scanned += len(read)
		if len(xs) <= n {
			return page, nil // the start of the stream, or of Since
		}
		end = "(" + read[len(read)-1].ID
		page.Next = read[len(read)-1].ID
	}
	return page, nil // ScanLimit read: Next continues
}

// Close stops Record, writes out what it buffered (giving up after the
// first batch Redis refuses), and closes the client. Idempotent.
func (l *Redis) Close() error {
	var err error
	l.closeOnce.Do(func() {
		l.closed.Store(true)
		close(l.stop)
		<-l.done
		err = l.client.Close()
	})
	return err
}
