package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"strconv"
	"syscall"

	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/bus/event"
)

// The ordering runs (issue #14): the same n events, their user ids round
// robin over orderingUsers users, delivered once with ordering off and
// once with ordering per user, to the same receiver in the same round (the
// two in turns: off first in even rounds, on first in odd ones, so that
// neither always comes second).
//
//   - ordering: the memory transport, the whole chain, in this process.
//   - ordering-redis: two `memhook serve` children on Redis Streams
//     (MEMHOOK_ORDERING=user for the ordered phase), events appended from
//     this process.
//
// Events/s is the ordered phase's; its ratio to the unordered phase's in
// the same round must be at least orderingWant.

// orderingUsers is how many users the ordering runs' events are spread
// over, round robin.
const orderingUsers = 10_000

// orderingWant is the least ratio of the ordered phase's events/s to the
// unordered one's that issue #14 asks.
const orderingWant = 0.8

// orderingDetail is what an ordering run reports beside its row.
type orderingDetail struct {
	Transport string `json:"transport"`
	Routers   int    `json:"routers,omitempty"`
	Users     int    `json:"users"`
	// UnorderedPerSec is the events/s of the same events with ordering
	// off, in the same round.
	UnorderedPerSec float64 `json:"unordered_events_per_sec"`
	// Ratio is the row's events/s over UnorderedPerSec; on the summary
	// row the median of the rounds' ratios, with their range.
	Ratio    float64 `json:"ratio"`
	RatioMin float64 `json:"ratio_min"`
	RatioMax float64 `json:"ratio_max"`
	// UnorderedCPUPer1000 is the CPU seconds per 1000 events with
	// ordering off (the row's CPU s/1000 is with ordering on).
	UnorderedCPUPer1000 float64 `json:"unordered_cpu_seconds_per_1000"`
}

// orderingSetup says on which transport an ordering run runs.
type orderingSetup struct {
	name    string       // the row's name
	redis   *redisTarget // nil: memory, in this process
	routers int          // redis: `memhook serve` children
	profile string       // --cpuprofile, for the children's
}

// benchOrdering is one round of an ordering run; see the comment at the
// top of this file.
func benchOrdering(rcv *benchReceiver, e event.Event, n, w, rate, round int, s orderingSetup) benchResult {
	users := make([]string, orderingUsers)
	for i := range users {
		users[i] = fmt.Sprintf("user_%05d", i)
	}
	phases := []bool{false, true}
	if round%2 == 1 {
		phases = []bool{true, false}
	}
	var off, on benchResult
	for i, ordered := range phases {
		if i > 0 {
			runtime.GC() // as before every run: the other phase's garbage is not this one's
		}
		r := orderingPhase(rcv, e, n, w, rate, users, ordered, s)
		r.Name = s.name
		if r.Error == "" && (r.Missing != 0 || r.Duplicates != 0) {
			r.Error = fmt.Sprintf("%d missing, %d duplicates", r.Missing, r.Duplicates)
		}
		if r.Error != "" {
			r.Error = map[bool]string{false: "ordering off: ", true: "ordering on: "}[ordered] + r.Error
			return r
		}
		if ordered {
			on = r
		} else {
			off = r
		}
	}
	d := &orderingDetail{Transport: "memory", Users: orderingUsers, UnorderedPerSec: off.EventsPerSec, UnorderedCPUPer1000: off.CPUPer1000}
	if s.redis != nil {
		d.Transport, d.Routers = "redis", s.routers
	}
	if off.EventsPerSec > 0 {
		d.Ratio = on.EventsPerSec / off.EventsPerSec
		d.RatioMin, d.RatioMax = d.Ratio, d.Ratio
	}
	on.Ordering = d
	return on
}

// orderingPhase delivers n events spread over users, with ordering per
// user or without, and measures until the receiver has them all.
func orderingPhase(rcv *benchReceiver, e event.Event, n, w, rate int, users []string, ordered bool, s orderingSetup) benchResult {
	quiet := bus.WithLogger(slog.New(slog.DiscardHandler))
	rcv.reset(n)
	if s.redis == nil {
		cfg := bus.Config{WebhookURL: rcv.url, Token: "bench-token", Secret: "bench-secret", Concurrency: w, QueueCapacity: n}
		if ordered {
			cfg.Ordering = bus.OrderingUser
		}
		b, err := bus.New(cfg, quiet)
		if err != nil {
			return benchResult{Error: err.Error()}
		}
		return runUsers(rcv, b, e, n, w, rate, users)
	}
	if err := s.redis.reset(context.Background()); err != nil {
		return benchResult{Error: err.Error()}
	}
	var pids []int
	for i := range s.routers {
		env := []string{"MEMHOOK_TRANSPORT=redis", "MEMHOOK_REDIS_URL=" + s.redis.url, "MEM0_WEBHOOK_URL=" + rcv.url,
			"MEM0_WEBHOOK_TOKEN=bench-token", "MEM0_WEBHOOK_SECRET=bench-secret", "MEMHOOK_CONCURRENCY=" + strconv.Itoa(w),
			"MEMHOOK_REDIS_CONSUMER=bench-" + strconv.Itoa(i), "MEMHOOK_REDIS_MAXLEN=" + strconv.Itoa(n+1)}
		if ordered {
			env = append(env, "MEMHOOK_ORDERING="+bus.OrderingUser)
		}
		cmd, _, err := startRouter(childProfile(s.profile, fmt.Sprintf("ordering-%t-%d", ordered, i)), env...)
		if err != nil {
			return benchResult{Error: fmt.Sprintf("router %d: %v", i, err)}
		}
		defer func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			_ = cmd.Wait()
		}()
		pids = append(pids, cmd.Process.Pid)
	}
	b, err := bus.New(bus.Config{Transport: bus.TransportRedis, RedisURL: s.redis.url, Concurrency: w, RedisMaxLen: int64(n) + 1}, quiet)
	if err != nil {
		return benchResult{Error: err.Error()}
	}
	return runUsers(rcv, b, e, n, w, rate, users, pids...)
}

// runUsers is runBus with the i-th event's user id users[i % len(users)].
func runUsers(rcv *benchReceiver, b *bus.Bus, e event.Event, n, w, rate int, users []string, pids ...int) benchResult {
	return runEmitting(rcv, b, "", n, func() error {
		return emitEach(b, n, w, rate, func(i int) event.Event {
			ev := e
			ev.UserID = users[i%len(users)]
			return ev
		})
	}, pids...)
}

// orderingSummary gives the row of an ordering run (median, the run median
// chose) the median of its rounds' ratios and their range.
func orderingSummary(res *benchResult, runs []benchResult) {
	if res.Ordering == nil {
		return
	}
	var ratios []float64
	for _, r := range runs {
		if r.Ordering != nil && r.Ordering.Ratio > 0 {
			ratios = append(ratios, r.Ordering.Ratio)
		}
	}
	if len(ratios) == 0 {
		return
	}
	slices.Sort(ratios)
	d := *res.Ordering
	d.Ratio, d.RatioMin, d.RatioMax = ratios[len(ratios)/2], ratios[0], ratios[len(ratios)-1]
	res.Ordering = &d
}

// printOrdering writes the detail line of an ordering run.
func printOrdering(w io.Writer, r benchResult) {
	d := r.Ordering
	if d == nil {
		return
	}
	verdict := "at least"
	if d.Ratio < orderingWant {
		verdict = "BELOW"
	}
	fmt.Fprintf(w, "%s: ordering per user at %.2f of the events/s with ordering off (rounds %.2f-%.2f; off %.0f/s, CPU s/1000 events %.3f off, %.3f on), %s the %.1f wanted; %d users round robin",
		r.Name, d.Ratio, d.RatioMin, d.RatioMax, d.UnorderedPerSec, d.UnorderedCPUPer1000, r.CPUPer1000, verdict, orderingWant, d.Users)
	if d.Routers > 0 {
		fmt.Fprintf(w, ", %d routers", d.Routers)
	}
	fmt.Fprintln(w)
}
