package main_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/internal/redistest"
	"github.com/memhook/memhook/middleware"
	"github.com/memhook/memhook/transports"
)

// poisonFor puts n events poisoned for endpoint in the poison stream at
// url, as a router's PoisonQueue does ("" names none, as before there
// were endpoints), and returns their ids.
func poisonFor(t *testing.T, url, endpoint string, n int) []string {
	t.Helper()
	p, err := transports.NewRedisPublisher(transports.RedisConfig{URL: url}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var ids []string
	for range n {
		msg := message.NewMessage(uuid.NewString(), []byte(`{"event":"memory_added"}`))
		msg.Metadata.Set(event.MetaType, "memory_added")
		if endpoint != "" {
			msg.Metadata.Set(middleware.EndpointKey, endpoint)
		}
		poisoned := middleware.Poisoned(msg, &middleware.GiveUpError{Attempts: 3, Err: &middleware.StatusError{Code: 503}})
		poisoned.Metadata.Set(middleware.PoisonTopicKey, bus.Topic)
		if err := p.Publish(bus.PoisonTopic, poisoned); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, msg.UUID)
	}
	return ids
}

// dlqLine is one line of `memhook dlq list --json`.
type dlqLine struct {
	EntryID  string `json:"entry_id"`
	Endpoint string `json:"endpoint"`
	ID       string `json:"id"`
	Attempts int    `json:"attempts"`
}

// dlqRun runs `memhook dlq args…` on the Redis at url, expecting exit 0.
func dlqRun(t *testing.T, url string, args ...string) string {
	t.Helper()
	code, stdout, stderr := run(t, env{"MEMHOOK_REDIS_URL": url}, 30*time.Second, append([]string{"dlq"}, args...)...)
	if code != 0 {
		t.Fatalf("memhook dlq %s: exit %d: %s", strings.Join(args, " "), code, stderr)
	}
	return stdout
}

func dlqList(t *testing.T, url string, args ...string) []dlqLine {
	t.Helper()
	var out []dlqLine
	for _, l := range strings.Split(strings.TrimSpace(dlqRun(t, url, append([]string{"list", "--json"}, args...)...)), "\n") {
		if l == "" {
			continue
		}
		var d dlqLine
		if err := json.Unmarshal([]byte(l), &d); err != nil {
			t.Fatalf("dlq list --json line %q: %v", l, err)
		}
		out = append(out, d)
	}
	return out
}

// `memhook dlq … --endpoint NAME` keeps to that endpoint's dead letters
// (those naming none are the default endpoint's); a replay goes to that
// endpoint's retry stream only, never to the events stream.
func TestDLQPerEndpoint(t *testing.T) {
	url := redistest.Start(t).URL()
	legacy := poisonFor(t, url, "", 1)
	crm := poisonFor(t, url, "crm", 2)
	ops := poisonFor(t, url, "ops", 1)

	for _, c := range []struct {
		endpoint string
		want     []string
	}{
		{"crm", crm},
		{"default", legacy},
		{"nobody", nil},
	} {
		t.Run("list "+c.endpoint, func(t *testing.T) {
			got := dlqList(t, url, "--endpoint", c.endpoint)
			if len(got) != len(c.want) {
				t.Fatalf("listed %+v, want %v", got, c.want)
			}
			for i, l := range got {
				if l.ID != c.want[i] || l.Endpoint != c.endpoint || l.Attempts != 3 {
					t.Errorf("line %d = %+v, want %s of %s, 3 attempts", i, l, c.want[i], c.endpoint)
				}
			}
		})
	}
	all := dlqList(t, url)
	if len(all) != 4 {
		t.Fatalf("dlq list: %+v, want all 4", all)
	}
	table := strings.Split(strings.TrimSpace(dlqRun(t, url, "list", "--endpoint", "ops")), "\n")
	if len(table) != 2 || !strings.Contains(table[0], "ENDPOINT") || !strings.Contains(table[1], " ops ") || !strings.Contains(table[1], ops[0]) {
		t.Errorf("dlq list --endpoint ops table:\n%s", strings.Join(table, "\n"))
	}

	if out := dlqRun(t, url, "replay", "--all", "--endpoint", "crm"); !strings.Contains(out, "replayed 2") {
		t.Fatalf("dlq replay --all --endpoint crm: %q", out)
	}
	o, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	rc := redis.NewClient(o)
	defer rc.Close()
	ctx := context.Background()
	xs, err := rc.XRange(ctx, transports.EndpointRetryTopic("crm"), "-", "+").Result()
	if err != nil || len(xs) != 2 {
		t.Fatalf("crm's retry stream: %d entries, %v; want its 2", len(xs), err)
	}
	for i, x := range xs {
		msg, err := redisstream.DefaultMarshallerUnmarshaller{}.Unmarshal(x.Values)
		if err != nil || msg.UUID != crm[i] {
			t.Errorf("replayed %d: %v %v, want %s", i, msg, err, crm[i])
		}
	}
	if n := rc.XLen(ctx, bus.Topic).Val(); n != 0 {
		t.Errorf("the events stream holds %d after a replay to crm, want 0", n)
	}
	if got := dlqList(t, url, "--endpoint", "crm"); len(got) != 0 {
		t.Errorf("crm's dead letters after the replay: %+v", got)
	}
	// --id of another endpoint's entry: refused, left in place.
	code, _, stderr := run(t, env{"MEMHOOK_REDIS_URL": url}, 30*time.Second, "dlq", "replay", "--endpoint", "crm", "--id", all[3].EntryID)
	if code != 1 || !strings.Contains(stderr, "another endpoint") {
		t.Errorf("replay --endpoint crm --id <ops entry>: exit %d, stderr %q; want 1, refused", code, stderr)
	}
	if out := dlqRun(t, url, "purge", "--endpoint", "ops"); !strings.Contains(out, "purged 1") {
		t.Errorf("dlq purge --endpoint ops: %q", out)
	}
	if left := dlqList(t, url); len(left) != 1 || left[0].ID != legacy[0] {
		t.Errorf("left after replaying crm's and purging ops's: %+v, want the default one", left)
	}
	if code, _, stderr := run(t, env{"MEMHOOK_REDIS_URL": url}, 30*time.Second, "dlq", "list", "--endpoint="); code != 2 || !strings.Contains(stderr, "--endpoint") {
		t.Errorf("dlq list --endpoint= : exit %d, %q; want 2", code, stderr)
	}
}
