package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/memhook/memhook/bus"
)

// natsServer starts a private nats-server with JetStream on a free
// loopback port, its store in a temporary directory, and returns its URL.
// Without the binary the test skips, except under CI=true where it fails.
func natsServer(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		const how = "nats-server not on PATH; install it (Debian: apt-get install nats-server) to run this test"
		if os.Getenv("CI") == "true" {
			t.Fatal(how)
		}
		t.Skip(how)
	}
	port := freePort(t)
	p := start(t, "nats-server", bin, []string{
		"-js", "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-sd", t.TempDir(),
	}, nil)
	if err := p.waitLine("Server is ready", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("nats://127.0.0.1:%d", port)
}

// buildExample builds this example into a temporary directory.
func buildExample(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "nats-example")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// counting is a webhook receiver on loopback. It counts the webhooks it
// answered 200, by webhook-id and by memory id (the event's index), per
// path (each delivering process gets its own). Once holdAfter webhooks
// were answered, it holds every request to holdPath unanswered until
// release is called: that process then has events in hand, unacked.
type counting struct {
	srv       *httptest.Server
	holdAfter int
	holdPath  string
	released  chan struct{}
	once      sync.Once

	mu     sync.Mutex
	ids    map[string]int // webhook-id → answers
	mems   map[string]bool
	total  int
	held   map[string]int // path → requests being held
	byPath map[string]int
}

func newCounting(t *testing.T, holdAfter int, holdPath string) *counting {
	c := &counting{
		holdAfter: holdAfter, holdPath: holdPath, released: make(chan struct{}),
		ids: map[string]int{}, mems: map[string]bool{}, held: map[string]int{}, byPath: map[string]int{},
	}
	c.srv = httptest.NewServer(http.HandlerFunc(c.serve))
	t.Cleanup(func() {
		c.release()
		c.srv.Close()
	})
	return c
}

func (c *counting) release() { c.once.Do(func() { close(c.released) }) }

func (c *counting) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	var env struct {
		Data struct {
			Result struct {
				ID string `json:"id"`
			} `json:"result"`
		} `json:"data"`
	}
	if err == nil {
		err = json.Unmarshal(body, &env)
	}
	id := r.Header.Get("webhook-id")
	if err != nil || id == "" || env.Data.Result.ID == "" {
		http.Error(w, "want a memory_added envelope and a webhook-id", http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	hold := r.URL.Path == c.holdPath && c.total >= c.holdAfter
	if hold {
		c.held[r.URL.Path]++
	}
	c.mu.Unlock()
	if hold {
		select {
		case <-c.released:
		case <-r.Context().Done(): // the sender died: nothing was delivered
			return
		}
	}
	c.mu.Lock()
	c.ids[id]++
	c.mems[env.Data.Result.ID] = true
	c.total++
	c.byPath[r.URL.Path]++
	c.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

// snapshot returns the distinct webhook-ids answered, all answers, and
// the requests held on holdPath.
func (c *counting) snapshot() (distinct, total, held int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.ids), c.total, c.held[c.holdPath]
}

// waitUntil polls cond every 20 ms until it holds or timeout passes.
func waitUntil(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// TestEveryEventArrivesWhenADeliveringProcessStops runs two delivering
// processes of one consumer group, emits 1 000 events, stops one while it
// holds events unacked (its webhooks held unanswered by the receiver) and
// checks that JetStream hands those to the other process: every event
// arrives. SIGKILL: the broker's AckWait runs out. SIGTERM: the process
// must not ack what it did not deliver (nats.go acks a message whose
// callback returned unless acks are manual), nor delete the group's
// consumer (nats.go deletes one it created when unsubscribing).
func TestEveryEventArrivesWhenADeliveringProcessStops(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nats-server and four processes")
	}
	for _, tt := range []struct {
		name string
		stop func(*process) error
	}{
		{"SIGKILL", func(p *process) error { p.kill(); _, err := p.wait(10 * time.Second); return err }},
		{"SIGTERM", func(p *process) error {
			code, err := p.terminate(30 * time.Second)
			if err == nil && code != 0 {
				err = fmt.Errorf("exit code %d after SIGTERM, want 0", code)
			}
			return err
		}},
	} {
		t.Run(tt.name, func(t *testing.T) { testTakeover(t, tt.stop) })
	}
}

func testTakeover(t *testing.T, stop func(*process) error) {
	const events = 1000
	url := natsServer(t)
	bin := buildExample(t)
	rcv := newCounting(t, 300, "/p1")
	env := func(path string) []string {
		return []string{
			"NATS_URL=" + url,
			"MEM0_WEBHOOK_URL=" + rcv.srv.URL + path,
			"MEM0_WEBHOOK_TIMEOUT=3", // the receiver holds p1's requests for less; AckWait = 2 × 3 s + 5 s
			"MEMHOOK_CONCURRENCY=2",
		}
	}
	// p1 first: it is the process that found the group's consumer missing.
	p1 := start(t, "deliver p1", bin, []string{"deliver"}, env("/p1"))
	if err := p1.waitLine("memhook-nats: delivering", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	p2 := start(t, "deliver p2", bin, []string{"deliver"}, env("/p2"))
	if err := p2.waitLine("memhook-nats: delivering", 30*time.Second); err != nil {
		t.Fatal(err)
	}

	em := start(t, "emit", bin, []string{"emit", "-n", strconv.Itoa(events)}, env("/unused"))
	if code, err := em.wait(60 * time.Second); err != nil || code != 0 {
		t.Fatalf("emit exit %d, %v", code, err)
	}

	// Once p1 holds an event unacked, stop it.
	if !waitUntil(60*time.Second, func() bool { _, _, held := rcv.snapshot(); return held > 0 }) {
		d, total, _ := rcv.snapshot()
		t.Fatalf("p1 got no webhook to hold (%d distinct of %d answered)", d, total)
	}
	distinct, _, held := rcv.snapshot()
	if err := stop(p1); err != nil {
		t.Fatal(err)
	}
	stoppedAt := time.Now()
	if distinct == 0 || distinct >= events {
		t.Fatalf("stopped p1 after %d of %d events arrived; want some but not all", distinct, events)
	}
	t.Logf("stopped p1 after %d of %d events arrived, %d of its webhooks held unanswered", distinct, events, held)
	rcv.release()

	if !waitUntil(60*time.Second, func() bool { d, _, _ := rcv.snapshot(); return d >= events }) {
		d, _, _ := rcv.snapshot()
		t.Fatalf("%d of %d events arrived within 60 s of stopping p1 (AckWait is 11 s)", d, events)
	}
	rcv.mu.Lock()
	missing := 0
	for i := range events {
		if !rcv.mems[fmt.Sprintf("mem_%d", i)] {
			missing++
		}
	}
	dups := rcv.total - len(rcv.ids)
	perPath := fmt.Sprint(rcv.byPath)
	rcv.mu.Unlock()
	if missing > 0 {
		t.Fatalf("%d events missing though %d webhook-ids arrived", missing, events)
	}
	t.Logf("all %d events arrived %s after p1 stopped; %d duplicate deliveries; answered per process %s",
		events, time.Since(stoppedAt).Round(time.Millisecond), dups, perPath)

	if code, err := p2.terminate(30 * time.Second); err != nil || code != 0 {
		t.Errorf("p2 after SIGTERM: exit %d, %v", code, err)
	}
}

// TestGroupsAndPoison runs one delivering process in each of two consumer
// groups: each group gets every event. Group b's receiver refuses every
// tenth event for good (400): those are poisoned, and the poisoned copies
// (which keep the event's id, hence its Nats-Msg-Id) must land in the
// poison stream, not be taken for duplicates of the events.
func TestGroupsAndPoison(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nats-server and three processes")
	}
	const events = 100
	url := natsServer(t)
	bin := buildExample(t)

	var mu sync.Mutex
	got := map[string]map[string]int{"/a": {}, "/b": {}} // path → memory id → requests
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var env struct {
			Data struct {
				Result struct {
					ID string `json:"id"`
				} `json:"result"`
			} `json:"data"`
		}
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&env); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		got[r.URL.Path][env.Data.Result.ID]++
		mu.Unlock()
		var i int
		if _, err := fmt.Sscanf(env.Data.Result.ID, "mem_%d", &i); err == nil && i%10 == 0 && r.URL.Path == "/b" {
			http.Error(w, "refused for good", http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)
	env := func(group string) []string {
		return []string{"NATS_URL=" + url, "MEM0_WEBHOOK_URL=" + srv.URL + "/" + group, "MEMHOOK_REDIS_GROUP=" + group, "MEMHOOK_CONCURRENCY=4"}
	}
	for _, g := range []string{"a", "b"} {
		p := start(t, "deliver "+g, bin, []string{"deliver"}, env(g))
		if err := p.waitLine("memhook-nats: delivering", 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	em := start(t, "emit", bin, []string{"emit", "-n", strconv.Itoa(events)}, env("a"))
	if code, err := em.wait(60 * time.Second); err != nil || code != 0 {
		t.Fatalf("emit exit %d, %v", code, err)
	}

	if !waitUntil(30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got["/a"]) == events && len(got["/b"]) == events
	}) {
		mu.Lock()
		t.Fatalf("group a got %d, group b %d distinct events of %d", len(got["/a"]), len(got["/b"]), events)
	}

	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := nc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	var poisoned uint64
	if !waitUntil(30*time.Second, func() bool {
		info, err := js.StreamInfo(streamName(bus.PoisonTopic), &nats.StreamInfoRequest{SubjectsFilter: bus.PoisonTopic})
		if err == nil {
			poisoned = info.State.Subjects[bus.PoisonTopic]
		}
		return poisoned >= events/10
	}) {
		t.Fatalf("poison stream holds %d events, want %d", poisoned, events/10)
	}
	if poisoned != events/10 {
		t.Errorf("poison stream holds %d events, want %d", poisoned, events/10)
	}
	mu.Lock()
	defer mu.Unlock()
	for path, ids := range got {
		for id, n := range ids {
			if n != 1 {
				t.Errorf("%s got %s %d times, want once (a permanent refusal is not retried)", path, id, n)
			}
		}
	}
}

// TestRetriesThroughJetStream: the receiver answers 503 to the first two
// attempts of every event, so each event is retried twice; due retries
// travel on the retry topic's stream with the event's id, and both must
// arrive (the third attempt is not taken for a duplicate of the second).
func TestRetriesThroughJetStream(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nats-server and two processes")
	}
	const events = 20
	url := natsServer(t)
	bin := buildExample(t)

	var mu sync.Mutex
	attempts := map[string]int{} // webhook-id → requests
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("webhook-id")
		mu.Lock()
		attempts[id]++
		n := attempts[id]
		mu.Unlock()
		if n <= 2 {
			http.Error(w, "try again", http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)
	env := []string{"NATS_URL=" + url, "MEM0_WEBHOOK_URL=" + srv.URL, "MEM0_WEBHOOK_RETRY_DELAY=100ms", "MEM0_WEBHOOK_RETRY_COUNT=3",
		"MEMHOOK_PAUSE_AFTER=0"} // retries, not the endpoint pausing after 10 failures in a row
	p := start(t, "deliver", bin, []string{"deliver"}, env)
	if err := p.waitLine("memhook-nats: delivering", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	em := start(t, "emit", bin, []string{"emit", "-n", strconv.Itoa(events)}, env)
	if code, err := em.wait(60 * time.Second); err != nil || code != 0 {
		t.Fatalf("emit exit %d, %v", code, err)
	}
	done := func() (int, map[int]int) {
		mu.Lock()
		defer mu.Unlock()
		delivered, hist := 0, map[int]int{}
		for _, n := range attempts {
			hist[n]++
			if n >= 3 {
				delivered++
			}
		}
		return delivered, hist
	}
	if !waitUntil(30*time.Second, func() bool { d, _ := done(); return d == events }) {
		d, hist := done()
		t.Fatalf("%d of %d events reached their third attempt; events by attempts made: %v", d, events, hist)
	}
	if _, hist := done(); hist[3] != events {
		t.Errorf("events by attempts made: %v, want all %d at 3", hist, events)
	}
}
