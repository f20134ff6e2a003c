package redisfault_test

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/internal/redistest"
	"github.com/memhook/memhook/transports"
)

// A router whose first subscription fails although Redis answers (the
// events key holds a string, so the consumer group cannot be made) keeps
// trying with a fresh subscriber, and delivers once the key is fixed.
func TestRouterRecoversFromAFailedSubscribe(t *testing.T) {
	srv := redistest.Start(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer c.Close()
	ctx := context.Background()
	if err := c.Set(ctx, bus.Topic, "not a stream", 0).Err(); err != nil {
		t.Fatal(err)
	}
	cnt, rcv := startCounting(t, 0, nil)
	r := serve(t, routerEnv(srv.URL(), rcv.URL, "wrongtype-a")...)
	deadline := time.Now().Add(15 * time.Second)
	for strings.Count(r.log(), "WRONGTYPE") < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no two failed tries naming WRONGTYPE:\n%s", r.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.wantNotReady(t)
	if err := c.Del(ctx, bus.Topic).Err(); err != nil {
		t.Fatal(err)
	}
	r.waitReady(t, 30*time.Second)
	emit(t, srv.URL(), 10)
	cnt.waitDistinct(t, 10, 30*time.Second)
}

// A router with every event filtered out (MEM0_WEBHOOK_EVENTS=none) still
// consumes the stream, acknowledging each entry as filtered, so that the
// stream does not fill up to MEMHOOK_REDIS_MAXLEN; a router without a
// webhook URL says at start that it does not consume.
func TestRouterWithEventsNoneConsumes(t *testing.T) {
	srv := redistest.Start(t)
	cnt, rcv := startCounting(t, 0, nil)
	r := serve(t, append(routerEnv(srv.URL(), rcv.URL, "none-a"), "MEM0_WEBHOOK_EVENTS=none")...)
	r.waitReady(t, 30*time.Second)
	emit(t, srv.URL(), 20)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer c.Close()
	ctx := context.Background()
	deadline := time.Now().Add(30 * time.Second)
	for {
		groups, err := c.XInfoGroups(ctx, bus.Topic).Result()
		if err == nil && len(groups) == 1 && groups[0].Pending == 0 && groups[0].EntriesRead == 20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("entries not all read and acknowledged: %+v %v\n%s", groups, err, r.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := cnt.distinct(); n != 0 {
		t.Errorf("%d webhooks sent with MEM0_WEBHOOK_EVENTS=none", n)
	}

	idle := serve(t, "MEMHOOK_TRANSPORT=redis", "MEMHOOK_REDIS_URL="+srv.URL(), "MEMHOOK_LOG_LEVEL=warn")
	deadline = time.Now().Add(15 * time.Second)
	for !strings.Contains(idle.log(), "without MEM0_WEBHOOK_URL or endpoints file: this process does not consume") {
		if time.Now().After(deadline) {
			t.Fatalf("no warning from a router without a webhook URL:\n%s", idle.log())
		}
		time.Sleep(50 * time.Millisecond)
	}

	// With an endpoints file and no MEM0_WEBHOOK_URL, a router consumes
	// (its endpoint's group starts at the stream's oldest entry) and says
	// nothing of the kind.
	file := filepath.Join(t.TempDir(), "endpoints.yaml")
	fileCnt, fileRcv := startCounting(t, 0, nil)
	writeEndpoints(t, file, []string{"crm"}, map[string]string{"crm": fileRcv.URL})
	fileOnly := serve(t, "MEMHOOK_TRANSPORT=redis", "MEMHOOK_REDIS_URL="+srv.URL(), "MEMHOOK_REDIS_CONSUMER=file-only",
		"MEMHOOK_ENDPOINTS_FILE="+file, "MEMHOOK_LOG_LEVEL=warn")
	fileOnly.waitReady(t, 30*time.Second)
	deadline = time.Now().Add(15 * time.Second)
	for fileCnt.distinct() < 20 {
		if time.Now().After(deadline) {
			t.Fatalf("a router with only an endpoints file delivered %d of 20:\n%s", fileCnt.distinct(), fileOnly.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if strings.Contains(fileOnly.log(), "does not consume") {
		t.Errorf("a router with an endpoints file warns that it does not consume:\n%s", fileOnly.log())
	}
}

// SIGTERM to a router with deliveries in flight and entries read ahead:
// the deliveries finish and are acknowledged (no duplicate), and the
// entries it read but never handled are released, so that the next router
// delivers them within seconds, not after the claim timeout
// (transports.ClaimTimeout of the 5 s webhook timeout: 30 s here).
func TestSIGTERMedRouterFinishesAndReleases(t *testing.T) {
	srv := redistest.Start(t)
	cnt, rcv := startCounting(t, 300*time.Millisecond, nil)
	env := append(routerEnv(srv.URL(), rcv.URL, ""), "MEM0_WEBHOOK_TIMEOUT=5")
	const n = 40
	emit(t, srv.URL(), n)
	a := serve(t, append(env, "MEMHOOK_REDIS_CONSUMER=grace-a")...)
	deadline := time.Now().Add(15 * time.Second)
	for cnt.distinct() < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("router a delivered nothing:\n%s", a.log())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.done:
	case <-time.After(15 * time.Second):
		t.Fatalf("router a did not exit after SIGTERM:\n%s", a.log())
	}
	byA := cnt.distinct()

	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer c.Close()
	pending, err := c.XPendingExt(context.Background(), &redis.XPendingExtArgs{
		Stream: bus.Topic, Group: "memhook", Start: "-", End: "+", Count: n,
	}).Result()
	if err != nil {
		t.Fatal(err)
	}
	claimTimeout := transports.ClaimTimeout(5 * time.Second) // MEM0_WEBHOOK_TIMEOUT=5
	for _, p := range pending {
		if p.Idle < claimTimeout {
			t.Errorf("entry %s left pending by router a, idle %s: not released", p.ID, p.Idle)
		}
	}

	start := time.Now()
	serve(t, append(env, "MEMHOOK_REDIS_CONSUMER=grace-b")...)
	cnt.waitDistinct(t, n, 20*time.Second)
	t.Logf("router a delivered %d before exiting and released %d; router b delivered the other %d in %s",
		byA, len(pending), n-byA, time.Since(start).Round(time.Millisecond))
	if d := cnt.duplicates(); d != 0 {
		t.Errorf("%d duplicate deliveries: deliveries in flight at SIGTERM were not finished and acknowledged", d)
	}
}

// wantNotReady fails t unless /readyz answers 503.
func (p *proc) wantNotReady(t *testing.T) {
	t.Helper()
	resp, err := http.Get("http://" + p.addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz = %d, want 503 (not ready)", resp.StatusCode)
	}
}
