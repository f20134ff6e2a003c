package transports

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
)

const (
	// ackRetryMin and ackRetryMax bound the wait before a failed XACK is
	// sent again.
	ackRetryMin = 50 * time.Millisecond
	ackRetryMax = time.Second
	// ackFlushTimeout bounds the last XACK, sent when a subscription ends.
	ackFlushTimeout = 2 * time.Second
	// consumerCheckInterval is how often a subscription deletes the
	// group's consumers idle for longer than consumerTimeout with nothing
	// pending: processes gone for good. Consumers with a heartbeat are
	// removed sooner, once it is gone (see takeOver).
	consumerCheckInterval = 5 * time.Minute
	consumerTimeout       = 10 * time.Minute
)

// subscription is one Subscribe call: a reader, a claimer, Consumers
// workers and an acker.
//
// The reader keeps at most 2 × Consumers read entries out (handed to a
// handler, or queued for the next free worker): one batch for the workers
// to take as soon as they are free, never more. The claimer keeps at most
// Consumers claimed entries out on top. So an entry waits for at most two
// other handlings before its own: within ClaimTimeout's four.
type subscription struct {
	s     *RedisSubscriber
	topic string
	ctx   context.Context // the messages' context: ends with Subscribe's ctx, or CloseTimeout into Close
	// intake ends with ctx or when Close starts: then nothing more is read,
	// claimed or handed out, and handlers finish what they hold.
	intake context.Context
	out    chan *message.Message
	queue  chan delivery // entries for the workers; never full (see enqueue)

	mu      sync.Mutex
	read    int                 // read entries out
	claimed int                 // claimed entries out
	unacked map[string]struct{} // ids read or claimed and not acked yet, released when the subscription ends
	freed   chan struct{}       // signalled when an entry leaves, for the reader

	ackMu   sync.Mutex
	acks    []string      // ids to XACK
	passes  []turnPass    // turns passed on with the acks (ordered groups)
	ackKick chan struct{} // signalled when acks grows

	joined   chan struct{} // closed once the consumer group exists
	joinedAt time.Time     // set before joined is closed
	joinMu   sync.Mutex
	joinErr  error // why the last try to join failed

	order       *orderSpec // set: the group is ordered (RedisTransport.Order); read with readOrdered
	pass        *orderSpec // set: turns of the group pass on with acks (PassTurnKey); on its events and retry topics
	lastSeen    string     // ordered: the last entry id seen, to wait for newer ones
	lastFullLog time.Time  // ordered: when parkedFull last logged
}

// join creates the consumer group (and the stream) until it exists or the
// subscription ends (false), waiting longer after each failure, up to
// resubscribeMax.
func (sub *subscription) join() bool {
	s := sub.s
	backoff := resubscribeMin
	for {
		err := s.createGroup(sub.intake, sub.topic, s.cfg.GroupStart.id())
		if err == nil {
			// This router's endpoints want the group: one removed before
			// is wanted again.
			_ = s.client.Del(sub.intake, removedKey(sub.topic, s.cfg.ConsumerGroup)).Err()
			sub.joinMu.Lock()
			sub.joinErr = nil
			sub.joinMu.Unlock()
			sub.joinedAt = time.Now()
			close(sub.joined)
			if s.cfg.OnJoined != nil {
				s.cfg.OnJoined(sub.topic)
			}
			return true
		}
		if sub.intake.Err() != nil {
			return false
		}
		err = fmt.Errorf("redis transport: joining group %s on %s: %w", s.cfg.ConsumerGroup, sub.topic, err)
		sub.joinMu.Lock()
		sub.joinErr = err
		sub.joinMu.Unlock()
		if s.cfg.OnJoinRetry != nil {
			s.cfg.OnJoinRetry(sub.topic, err, backoff)
		} else {
			s.logger.Error("redis transport: cannot join the consumer group, retrying", err,
				watermill.LogFields{"topic": sub.topic, "group": s.cfg.ConsumerGroup, "retry_in": backoff})
		}
		if !sleepCtx(sub.intake, backoff) {
			return false
		}
		backoff = min(2*backoff, resubscribeMax)
	}
}

// joinState is nil once the subscription joined its group, else why not.
func (sub *subscription) joinState() error {
	select {
	case <-sub.joined:
		return nil
	default:
	}
	sub.joinMu.Lock()
	defer sub.joinMu.Unlock()
	if sub.joinErr != nil {
		return sub.joinErr
	}
	return fmt.Errorf("redis transport: joining group %s on %s", sub.s.cfg.ConsumerGroup, sub.topic)
}

// delivery is a stream entry for a worker to hand out.
type delivery struct {
	id      string
	values  map[string]any
	claimed bool
}

func (sub *subscription) readLimit() int  { return 2 * sub.s.cfg.Consumers }
func (sub *subscription) claimLimit() int { return sub.s.cfg.Consumers }

// start runs the subscription's goroutines, counted in s.wg (the caller
// holds s.mu, s being open). out is closed once the workers are done; the
// acks are flushed once nothing else runs.
func (sub *subscription) start(cancelMsgs, cancel context.CancelFunc) {
	s := sub.s
	var workers, others sync.WaitGroup
	workers.Add(s.cfg.Consumers)
	for range s.cfg.Consumers {
		go func() {
			defer workers.Done()
			sub.work()
		}()
	}
	workersDone := make(chan struct{})
	s.wg.Add(1)
	go func() { // the handlers' grace once intake ends
		defer s.wg.Done()
		select {
		case <-sub.intake.Done():
		case <-workersDone:
			return
		}
		t := time.NewTimer(s.cfg.CloseTimeout)
		defer t.Stop()
		select {
		case <-workersDone:
		case <-t.C:
			s.logger.Info("redis transport: handlers still busy at the close timeout; cancelling them",
				watermill.LogFields{"topic": sub.topic, "close_timeout": s.cfg.CloseTimeout})
			cancelMsgs()
		}
	}()
	others.Add(2)
	go func() {
		defer others.Done()
		if sub.join() {
			sub.readLoop()
		}
	}()
	go func() {
		defer others.Done()
		select {
		case <-sub.joined:
			sub.claimLoop()
		case <-sub.intake.Done():
		}
	}()
	stopAcks := make(chan struct{})
	acked := make(chan struct{})
	go func() {
		defer close(acked)
		sub.ackLoop(stopAcks)
	}()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		workers.Wait()
		close(workersDone)
		close(sub.out)
		others.Wait()
		cancel()
		for len(sub.queue) > 0 { // entries never handed out: released below
			s.untrack(sub.key((<-sub.queue).id))
		}
		close(stopAcks)
		<-acked
		sub.release()
		s.mu.Lock()
		s.subs = slices.DeleteFunc(s.subs, func(x *subscription) bool { return x == sub })
		s.mu.Unlock()
	}()
}

func (sub *subscription) key(id string) string { return sub.topic + "\x00" + id }

// readLoop reads new entries, as many at once as there are free read
// slots, waiting for half the workers' worth to be free so that reads
// come in batches; it never reads while all slots are taken.
func (sub *subscription) readLoop() {
	s := sub.s
	threshold := max(1, s.cfg.Consumers/2)
	failures := 0
	for {
		if s.gate != nil && s.gate(sub.intake) != nil {
			return
		}
		n := sub.waitReadSlots(threshold)
		if n == 0 {
			return
		}
		msgs, err := sub.readNew(n)
		if err == nil {
			failures = 0
			sub.enqueue(msgs, false)
			continue
		}
		if sub.intake.Err() != nil {
			return
		}
		failures++
		if !sub.recover(err, "reading", failures) {
			return
		}
	}
}

// readNew reads up to n new entries for the group: with XREADGROUP,
// blocking up to blockTime, or, ordered, with readOrdered (which takes
// the turns as it reads).
func (sub *subscription) readNew(n int) ([]redis.XMessage, error) {
	if sub.order != nil {
		return sub.readOrderedEntries(n)
	}
	s := sub.s
	streams, err := s.client.XReadGroup(sub.intake, &redis.XReadGroupArgs{
		Group:    s.cfg.ConsumerGroup,
		Consumer: s.cfg.Consumer,
		Streams:  []string{sub.topic, ">"},
		Count:    int64(n),
		Block:    blockTime,
	}).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	if len(streams) == 1 {
		return streams[0].Messages, nil
	}
	var msgs []redis.XMessage
	for _, st := range streams {
		msgs = append(msgs, st.Messages...)
	}
	return msgs, nil
}

// waitReadSlots waits until at least want read slots are free, or fewer
// but no entry waits for a worker, and returns how many are free; 0 once
// the subscription ends.
func (sub *subscription) waitReadSlots(want int) int {
	for {
		sub.mu.Lock()
		free := sub.readLimit() - sub.read
		sub.mu.Unlock()
		if free >= want || (free > 0 && len(sub.queue) == 0) {
			return free
		}
		select {
		case <-sub.freed:
		case <-sub.intake.Done():
			return 0
		}
	}
}

// recover handles a failed read or claim: a lost group is created again,
// at once the first time; other errors are logged. It waits before the
// next try (failures so far set how long), and reports false once the
// subscription ends.
func (sub *subscription) recover(err error, what string, failures int) bool {
	s := sub.s
	fields := watermill.LogFields{"topic": sub.topic, "group": s.cfg.ConsumerGroup}
	if groupLost(err) || sub.order != nil && scriptGroupLost(err) { // readOrdered's XREADGROUP
		cerr := s.recreateLost(sub.intake, sub.topic)
		if cerr == nil {
			s.logger.Info("redis transport: consumer group lost, created again", fields)
			if failures == 1 {
				return true
			}
		} else {
			err = cerr
		}
	}
	backoff := resubscribeMin
	for i := 1; i < failures && backoff < resubscribeMax; i++ {
		backoff *= 2
	}
	backoff = min(backoff, resubscribeMax)
	fields["retry_in"] = backoff
	s.logger.Error("redis transport: "+what+" failed", err, fields)
	return sleepCtx(sub.intake, backoff)
}

// claimLoop takes over, as many as there are free claim slots, the
// entries of consumers whose heartbeat is gone, every aliveCheckInterval
// (sooner while they hold more), and entries idle for longer than
// MaxIdleTime, every claim interval: the fallback for consumers without a
// heartbeat, and for a live one stuck past MaxIdleTime. Its looks of the
// first aliveTimeout (and at least one) also take the entries an earlier
// process of this consumer's name left pending (a router restarted with
// the same name, at once or later).
func (sub *subscription) claimLoop() {
	s := sub.s
	tick := time.NewTicker(min(max(s.cfg.MaxIdleTime/2, 10*time.Millisecond), maxClaimInterval))
	defer tick.Stop()
	alive := time.NewTimer(0)
	defer alive.Stop()
	check := time.NewTicker(consumerCheckInterval)
	defer check.Stop()
	auto := autoClaim{cursor: "0-0"}
	inheritUntil := sub.joinedAt.Add(aliveTimeout)
	inherit := true
	aliveFailures := 0
	for {
		select {
		case <-tick.C:
			if !sub.autoClaim(&auto) {
				return
			}
		case <-alive.C:
			next := aliveCheckInterval
			switch more, err := sub.takeOver(inherit); {
			case err == nil:
				inherit, aliveFailures = time.Now().Before(inheritUntil), 0
				if more {
					next = aliveHurry
				}
			case sub.intake.Err() != nil:
				return
			default:
				aliveFailures++
				if scriptGroupLost(err) {
					cerr := s.recreateLost(sub.intake, sub.topic)
					if cerr == nil {
						break
					}
					err = cerr // Redis full, say: the reason the group is still missing
				}
				if aliveFailures == 1 || aliveFailures%aliveLogEvery == 0 {
					s.logger.Error("redis transport: taking over the entries of gone consumers failed", err,
						watermill.LogFields{"topic": sub.topic, "group": s.cfg.ConsumerGroup, "failures": aliveFailures})
				}
			}
			alive.Reset(next)
		case <-check.C:
			sub.deleteIdleConsumers()
		case <-sub.intake.Done():
			return
		}
	}
}

// takeOver claims, into the free claim slots, the entries of the group's
// consumers whose heartbeat is gone (once this process's own heartbeat is
// steady) and, with inherit, those this consumer's name got before the
// subscription joined: an earlier process's. It removes gone consumers
// that hold nothing. It reports whether gone consumers hold more than it
// claimed.
func (sub *subscription) takeOver(inherit bool) (more bool, err error) {
	sub.mu.Lock()
	n := sub.claimLimit() - sub.claimed
	sub.mu.Unlock()
	ownIdle := time.Duration(-1)
	if inherit {
		ownIdle = time.Since(sub.joinedAt)
	}
	others, own, more, err := sub.takeOverOnce(max(n, 0), sub.s.alive.steady(), ownIdle)
	if err != nil {
		return false, err
	}
	sub.enqueue(others, true)
	sub.enqueue(own, true)
	return more && n > 0, nil
}

// autoClaim is the XAUTOCLAIM scan's state.
type autoClaim struct {
	cursor   string
	failures int
	retryAt  time.Time
}

// autoClaim takes over entries idle for longer than MaxIdleTime, as many
// as there are free claim slots. It reports false once the subscription
// ends.
func (sub *subscription) autoClaim(st *autoClaim) bool {
	s := sub.s
	if time.Now().Before(st.retryAt) {
		return true
	}
	for {
		sub.mu.Lock()
		n := sub.claimLimit() - sub.claimed
		sub.mu.Unlock()
		if n <= 0 {
			return true
		}
		msgs, next, err := s.client.XAutoClaim(sub.intake, &redis.XAutoClaimArgs{
			Stream:   sub.topic,
			Group:    s.cfg.ConsumerGroup,
			Consumer: s.cfg.Consumer,
			MinIdle:  s.cfg.MaxIdleTime,
			Start:    st.cursor,
			Count:    int64(n),
		}).Result()
		if err != nil {
			if sub.intake.Err() != nil {
				return false
			}
			st.failures++
			st.cursor = "0-0"
			if groupLost(err) {
				cerr := s.createGroup(sub.intake, sub.topic, GroupStartOldest.id())
				if cerr == nil {
					return true
				}
				err = cerr // Redis full, say: the reason the group is still missing
			}
			backoff := min(resubscribeMin<<min(st.failures-1, 6), resubscribeMax)
			st.retryAt = time.Now().Add(backoff)
			s.logger.Error("redis transport: claiming idle entries failed", err,
				watermill.LogFields{"topic": sub.topic, "group": s.cfg.ConsumerGroup, "retry_in": backoff})
			return true
		}
		st.failures = 0
		sub.enqueue(msgs, true)
		st.cursor = next
		if next == "0-0" || len(msgs) < n {
			return true
		}
	}
}

// deleteIdleConsumers removes the group's consumers idle for longer than
// consumerTimeout with nothing pending, as redisstream did: the fallback
// for consumers without a heartbeat.
func (sub *subscription) deleteIdleConsumers() {
	s := sub.s
	consumers, err := s.client.XInfoConsumers(sub.intake, sub.topic, s.cfg.ConsumerGroup).Result()
	if err != nil {
		return // the claimer or the reader reports Redis errors
	}
	for _, c := range consumers {
		if c.Name == s.cfg.Consumer || c.Pending > 0 || c.Idle < consumerTimeout {
			continue
		}
		if err := s.client.XGroupDelConsumer(sub.intake, sub.topic, s.cfg.ConsumerGroup, c.Name).Err(); err != nil {
			s.logger.Error("redis transport: deleting an idle consumer failed", err,
				watermill.LogFields{"topic": sub.topic, "consumer": c.Name})
		}
	}
}

// enqueue queues read or claimed entries for the workers. A claimed entry
// this process still has out is skipped unless its only copy is held by a
// handler: that one is delivered again (see ClaimTimeout). The queue has
// room for every slot, so this does not block.
func (sub *subscription) enqueue(msgs []redis.XMessage, claimed bool) {
	for _, m := range msgs {
		if m.ID == "" { // deleted while pending (Redis 6.2 reports it so)
			continue
		}
		k := sub.key(m.ID)
		if claimed {
			if !sub.s.trackClaimed(k) {
				continue
			}
		} else {
			sub.s.track(k)
		}
		sub.mu.Lock()
		if claimed {
			sub.claimed++
		} else {
			sub.read++
		}
		sub.unacked[m.ID] = struct{}{}
		sub.mu.Unlock()
		select {
		case sub.queue <- delivery{id: m.ID, values: m.Values, claimed: claimed}:
		case <-sub.intake.Done(): // released when the subscription ends
			sub.s.untrack(k)
		}
	}
}

// work hands queued entries out, one at a time, until the subscription
// ends.
func (sub *subscription) work() {
	for {
		if sub.intake.Err() != nil { // closing: hand out nothing more
			return
		}
		select {
		case d := <-sub.queue:
			sub.deliver(d)
			sub.s.untrack(sub.key(d.id))
			sub.mu.Lock()
			if d.claimed {
				sub.claimed--
			} else {
				sub.read--
			}
			sub.mu.Unlock()
			select {
			case sub.freed <- struct{}{}:
			default:
			}
		case <-sub.intake.Done():
			return
		}
	}
}

// deliver hands an entry out and waits for its ack, queued for XACK, or
// its nack, after which a copy is handed out again after NackDelay. An
// undecodable entry is diverted instead. It gives up, leaving the entry
// pending, when the subscription ends.
func (sub *subscription) deliver(d delivery) {
	s := sub.s
	k := sub.key(d.id)
	msg, _ := s.decode.Unmarshal(d.values) // never fails: see flaggingUnmarshaller
	for {
		switch sub.handOut(k, msg) {
		case handedAcked:
			sub.ack(d.id, sub.passOf(msg))
			return
		case handedEnded:
			return
		}
		if !sleepCtx(sub.intake, s.cfg.NackDelay) {
			return
		}
		msg = msg.Copy()
	}
}

type handed int

const (
	handedAcked handed = iota
	handedNacked
	handedEnded // the subscription ended first
)

// handOut sends msg, or diverts it, and waits for its ack or nack. The
// message's context ends then: a handler may not use it after acking.
func (sub *subscription) handOut(k string, msg *message.Message) handed {
	s := sub.s
	ctx, cancel := context.WithCancel(sub.ctx)
	defer cancel()
	msg.SetContext(ctx)
	if reason, bad := msg.Metadata[s.mark]; bad {
		s.divert(ctx, sub.topic, msg, reason)
	} else {
		select {
		case sub.out <- msg:
		case <-sub.intake.Done():
			return handedEnded
		}
	}
	s.hold(k, 1)
	defer s.hold(k, -1)
	select {
	case <-msg.Acked():
		return handedAcked
	case <-msg.Nacked():
		return handedNacked
	case <-ctx.Done():
		return handedEnded
	}
}

// passOf returns the turn an acked msg passes on (PassTurnKey), if any.
func (sub *subscription) passOf(msg *message.Message) *turnPass {
	if sub.pass == nil {
		return nil
	}
	key := msg.Metadata.Get(PassTurnKey)
	if key == "" {
		return nil
	}
	return &turnPass{key: key, uuid: msg.UUID}
}

// ack queues id for the acker, and the turn it passes on.
func (sub *subscription) ack(id string, pass *turnPass) {
	sub.mu.Lock()
	delete(sub.unacked, id)
	sub.mu.Unlock()
	sub.ackMu.Lock()
	sub.acks = append(sub.acks, id)
	if pass != nil {
		sub.passes = append(sub.passes, *pass)
	}
	sub.ackMu.Unlock()
	select {
	case sub.ackKick <- struct{}{}:
	default:
	}
}

func (sub *subscription) takeAcks() ([]string, []turnPass) {
	sub.ackMu.Lock()
	defer sub.ackMu.Unlock()
	ids, passes := sub.acks, sub.passes
	sub.acks, sub.passes = nil, nil
	return ids, passes
}

// ackLoop sends one XACK for every id queued, as soon as the previous one
// returned; a failed XACK is sent again after a backoff. Once stop is
// closed it sends what is left, within ackFlushTimeout, and returns.
func (sub *subscription) ackLoop(stop <-chan struct{}) {
	backoff := ackRetryMin
	var ids []string
	var passes []turnPass
	for {
		moreIDs, morePasses := sub.takeAcks()
		ids, passes = append(ids, moreIDs...), append(passes, morePasses...)
		if len(ids) == 0 {
			select {
			case <-sub.ackKick:
				continue
			case <-stop:
				sub.flushAcks(nil, nil)
				return
			}
		}
		err := sub.xack(context.Background(), ids, passes)
		if err == nil {
			ids, passes, backoff = ids[:0], passes[:0], ackRetryMin
			continue
		}
		sub.s.logger.Error("redis transport: acking failed, will retry", err,
			watermill.LogFields{"topic": sub.topic, "entries": len(ids), "retry_in": backoff})
		select {
		case <-time.After(backoff):
			backoff = min(2*backoff, ackRetryMax)
		case <-stop:
			sub.flushAcks(ids, passes)
			return
		}
	}
}

// flushAcks sends ids and whatever else is queued in one last XACK,
// within ackFlushTimeout.
func (sub *subscription) flushAcks(ids []string, passes []turnPass) {
	moreIDs, morePasses := sub.takeAcks()
	ids, passes = append(ids, moreIDs...), append(passes, morePasses...)
	if len(ids) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), ackFlushTimeout)
	defer cancel()
	if err := sub.xack(ctx, ids, passes); err != nil {
		sub.s.logger.Error("redis transport: acking failed, entries left pending", err,
			watermill.LogFields{"topic": sub.topic, "entries": len(ids)})
	}
}

// xack acks ids, passing on the turns passes (one script: an entry is
// acknowledged with its turn passed on, or neither); when the group is
// gone there is nothing left to ack.
func (sub *subscription) xack(ctx context.Context, ids []string, passes []turnPass) error {
	if len(passes) > 0 {
		err := sub.ackPassing(ctx, ids, passes)
		if scriptGroupLost(err) {
			return nil
		}
		return err
	}
	err := sub.s.client.XAck(ctx, sub.topic, sub.s.cfg.ConsumerGroup, ids...).Err()
	if groupLost(err) {
		return nil
	}
	return err
}

// release makes the entries this subscription read or claimed and did not
// ack (never handed out, waiting out a NackDelay, or cut by CloseTimeout)
// claimable at once by the group's other consumers: XCLAIM to itself with
// IDLE MaxIdleTime and JUSTID (no delivery counted). Without it they would
// wait MaxIdleTime — 20 min with the defaults — for a claimer.
func (sub *subscription) release() {
	sub.mu.Lock()
	ids := make([]any, 0, len(sub.unacked))
	for id := range sub.unacked {
		ids = append(ids, id)
	}
	sub.unacked = nil
	sub.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	s := sub.s
	ctx, cancel := context.WithTimeout(context.Background(), ackFlushTimeout)
	defer cancel()
	args := append([]any{"XCLAIM", sub.topic, s.cfg.ConsumerGroup, s.cfg.Consumer, 0}, ids...)
	args = append(args, "IDLE", s.cfg.MaxIdleTime.Milliseconds(), "JUSTID")
	fields := watermill.LogFields{"topic": sub.topic, "entries": len(ids)}
	if err := s.client.Do(ctx, args...).Err(); err != nil && !groupLost(err) {
		s.logger.Error("redis transport: releasing unhandled entries failed; they wait for the claim timeout", err, fields)
		return
	}
	s.logger.Info("redis transport: unhandled entries released to the group's other consumers", fields)
}

// sleepCtx waits d, and reports false if ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// flight counts the copies of one entry this process has out, and how
// many of them a handler holds.
type flight struct{ copies, held int }

func (s *RedisSubscriber) track(k string) {
	s.flightMu.Lock()
	defer s.flightMu.Unlock()
	f := s.flights[k]
	if f == nil {
		f = &flight{}
		s.flights[k] = f
	}
	f.copies++
}

// trackClaimed tracks a claimed entry, and reports false, tracking
// nothing, when the entry is out here already and must not be handed out
// again: its copy waits for a worker or its NackDelay, or it has two.
func (s *RedisSubscriber) trackClaimed(k string) bool {
	s.flightMu.Lock()
	defer s.flightMu.Unlock()
	f := s.flights[k]
	if f == nil {
		s.flights[k] = &flight{copies: 1}
		return true
	}
	if f.copies > 1 || f.held < f.copies {
		return false
	}
	f.copies++
	return true
}

// isOut reports whether this process has a copy of the entry out.
func (s *RedisSubscriber) isOut(k string) bool {
	s.flightMu.Lock()
	defer s.flightMu.Unlock()
	return s.flights[k] != nil
}

func (s *RedisSubscriber) hold(k string, delta int) {
	s.flightMu.Lock()
	defer s.flightMu.Unlock()
	if f := s.flights[k]; f != nil {
		f.held += delta
	}
}

func (s *RedisSubscriber) untrack(k string) {
	s.flightMu.Lock()
	defer s.flightMu.Unlock()
	if f := s.flights[k]; f != nil {
		if f.copies--; f.copies <= 0 {
			delete(s.flights, k)
		}
	}
}
