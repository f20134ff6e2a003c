package transports_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/memhook/memhook/internal/redistest"
	"github.com/memhook/memhook/transports"
)

// A Redis at maxmemory with noeviction refuses XGROUP CREATE with OOM, even
// for a group that exists. A subscriber whose group exists joins it anyway
// and drains the backlog (reading and acking still work on a full Redis);
// one whose group is missing gets ErrRedisFull, not a generic error.
func TestRedisSubscribeOnAFullRedis(t *testing.T) {
	tests := []struct {
		name     string
		group    bool // the consumer group exists before Redis fills up
		stream   bool // the stream exists
		wantFull bool
	}{
		{name: "group exists: joins and drains the backlog", group: true, stream: true},
		{name: "stream without the group", stream: true, wantFull: true},
		{name: "no stream", wantFull: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := redistest.Start(t)
			cfg := redisConfig(t, srv.URL())
			ctx := context.Background()
			rc := rawClient(t, srv.URL())
			if tt.group {
				if err := rc.XGroupCreateMkStream(ctx, cfg.EventsTopic, cfg.ConsumerGroup, "0").Err(); err != nil {
					t.Fatal(err)
				}
			}
			var backlog []string
			if tt.stream {
				p := newRedisPublisher(t, cfg)
				for range 3 {
					m := message.NewMessage(watermill.NewUUID(), []byte("{}"))
					if err := p.Publish(cfg.EventsTopic, m); err != nil {
						t.Fatal(err)
					}
					backlog = append(backlog, m.UUID)
				}
			}
			if err := srv.Fill(ctx); err != nil {
				t.Fatal(err)
			}
			s := newRedisSubscriber(t, cfg)
			sctx, cancel := context.WithCancel(ctx)
			defer cancel()
			ch, err := s.Subscribe(sctx, cfg.EventsTopic)
			if tt.wantFull {
				if err == nil {
					t.Fatal("Subscribe on a full Redis without the group succeeded")
				}
				if !errors.Is(err, transports.ErrRedisFull) {
					t.Errorf("err = %v, want errors.Is ErrRedisFull", err)
				}
				for _, want := range []string{"full", "maxmemory", cfg.ConsumerGroup} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("err = %q does not say %q", err, want)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Subscribe on a full Redis whose group exists: %v", err)
			}
			want := map[string]bool{}
			for _, id := range backlog {
				want[id] = true
			}
			for range backlog {
				got := receive(t, ch, 5*time.Second)
				if !want[got.UUID] {
					t.Errorf("got %s, not one of the backlog's, or twice", got.UUID)
				}
				delete(want, got.UUID)
				got.Ack()
			}
			eventually(t, 5*time.Second, "the backlog acknowledged on the full Redis", func() bool {
				groups, err := rc.XInfoGroups(ctx, cfg.EventsTopic).Result()
				return err == nil && len(groups) == 1 && groups[0].Pending == 0 && groups[0].EntriesRead == int64(len(backlog))
			})
		})
	}
}
