package main

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/memhook/memhook/bus"
)

func lookupFrom(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := env[k]; return v, ok }
}

func TestNATSConfigFromEnv(t *testing.T) {
	seed := bus.Config{Timeout: 30 * time.Second, RetryCount: 3, RetryDelay: time.Second, MaxRetryAfter: 60 * time.Second, Concurrency: 16}
	// One handling is one attempt of at most 30 s; 16 messages may be out.
	defaultAckWait := 16*30*time.Second + AckWaitMargin
	tests := []struct {
		name    string
		env     map[string]string
		bc      func(*bus.Config)
		check   func(natsConfig) bool
		wantErr []string // each in the error
	}{
		{"defaults", nil, nil, func(c natsConfig) bool {
			return c.URL == DefaultNATSURL && c.Concurrency == 16 && c.MaxAckPending == 16 &&
				c.AckWait == defaultAckWait && c.StreamMaxAge == DefaultStreamMaxAge
		}, nil},
		{"one pending", map[string]string{"NATS_MAX_ACK_PENDING": "1"}, func(c *bus.Config) { c.Timeout = 2 * time.Second },
			func(c natsConfig) bool { return c.MaxAckPending == 1 && c.AckWait == 2*time.Second+AckWaitMargin }, nil},
		{"zero timeout is the default", nil, func(c *bus.Config) { c.Timeout = 0 },
			func(c natsConfig) bool { return c.AckWait == 16*bus.DefaultTimeout+AckWaitMargin }, nil},
		{"max ack pending 0 is concurrency", map[string]string{"NATS_MAX_ACK_PENDING": "0"}, nil,
			func(c natsConfig) bool { return c.MaxAckPending == 16 }, nil},
		{"url list and max age", map[string]string{"NATS_URL": "nats://a:4222, tls://b:4222", "NATS_STREAM_MAX_AGE": "1h"}, nil,
			func(c natsConfig) bool { return c.URL == "nats://a:4222, tls://b:4222" && c.StreamMaxAge == time.Hour }, nil},
		{"bad max ack pending", map[string]string{"NATS_MAX_ACK_PENDING": "many"}, nil, nil, []string{"NATS_MAX_ACK_PENDING", `"many"`}},
		{"negative max ack pending", map[string]string{"NATS_MAX_ACK_PENDING": "-2"}, nil, nil, []string{"NATS_MAX_ACK_PENDING"}},
		{"bad max age", map[string]string{"NATS_STREAM_MAX_AGE": "a week"}, nil, nil, []string{"NATS_STREAM_MAX_AGE", `"a week"`}},
		{"every problem at once", map[string]string{"NATS_STREAM_MAX_AGE": "-1h", "NATS_MAX_ACK_PENDING": "x"}, nil, nil,
			[]string{"NATS_STREAM_MAX_AGE", "NATS_MAX_ACK_PENDING"}},
		{"bad url, password not echoed", map[string]string{"NATS_URL": "http://user:s3cret@host:4222"}, nil, nil, []string{"NATS_URL", "host:4222"}},
		{"url without host", map[string]string{"NATS_URL": "nats://"}, nil, nil, []string{"NATS_URL"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bc := seed
			if tt.bc != nil {
				tt.bc(&bc)
			}
			c, err := natsConfigFromEnv(lookupFrom(tt.env), bc)
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("got %+v, want an error", c)
				}
				for _, want := range tt.wantErr {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not name %s", err, want)
					}
				}
				if strings.Contains(err.Error(), "s3cret") {
					t.Errorf("error %q echoes the password", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(c) {
				t.Fatalf("got %+v", c)
			}
		})
	}
}

func TestAckWait(t *testing.T) {
	tests := []struct {
		name          string
		worst         time.Duration
		maxAckPending int
		want          time.Duration
	}{
		{"one pending", 10 * time.Second, 1, 10*time.Second + AckWaitMargin},
		{"behind three others", 10 * time.Second, 4, 40*time.Second + AckWaitMargin},
		{"zero pending counts as one", time.Second, 0, time.Second + AckWaitMargin},
		{"negative worst case counts as zero", -time.Second, 3, AckWaitMargin},
		{"saturates", time.Duration(1<<62) / 3, 16, time.Duration(1<<63 - 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ackWait(tt.worst, tt.maxAckPending); got != tt.want {
				t.Fatalf("ackWait(%s, %d) = %s, want %s", tt.worst, tt.maxAckPending, got, tt.want)
			}
		})
	}
}

func TestNames(t *testing.T) {
	for _, tt := range []struct{ got, want string }{
		{streamName(bus.Topic), "MEMORY_EVENTS"},
		{streamName(bus.PoisonTopic), "MEMORY_EVENTS_POISON"},
		{streamName(bus.IncomingTopic), "MEMORY_INCOMING"},
		{consumerName("memhook", bus.Topic), "memhook__memory_events"},
		{consumerName("memhook.poison", bus.PoisonTopic), "memhook_poison__memory_events_poison"},
	} {
		if tt.got != tt.want || strings.ContainsAny(tt.got, ". *>") {
			t.Errorf("got %q, want %q (no dots, spaces or wildcards)", tt.got, tt.want)
		}
	}
	for _, g := range []string{"", "a b", "a*", "a>", "a/b"} {
		if validGroup(g) == nil {
			t.Errorf("validGroup(%q) = nil, want an error", g)
		}
	}
	if err := validGroup("memhook.poison"); err != nil {
		t.Errorf("validGroup(memhook.poison) = %v", err)
	}
}

func TestRedactURL(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"nats://a:4222,tls://b:4222", "nats://a:4222,tls://b:4222"},
		{"nats://user:s3cret@host:4222", "nats://xxxxx@host:4222"},
		{"nats://s3cret@host:4222", "nats://xxxxx@host:4222"}, // a token in the user's place
		{"nats://a:4222,nats://u:s3cret@b:4222", "nats://xxxxx@b:4222"},
		{"nats://u:s3/cr,et@host:4222", "nats://xxxxx@host:4222"}, // unencoded '/' and ','
		{"u:s3cret@host", "xxxxx@host"},
	} {
		if got := redactURL(tt.in); got != tt.want {
			t.Errorf("redactURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// FuzzRedactURL: whatever stands before the last '@' of NATS_URL (user,
// password, token, other servers), none of it survives redaction.
func FuzzRedactURL(f *testing.F) {
	f.Add("user:", "s3cret", "host:4222")
	f.Add("a:4222,tls://", "tok", "b:4222")
	f.Add("u:p@", "w/x,y", "host")
	f.Fuzz(func(t *testing.T, before, secret, host string) {
		if strings.Contains(host, "@") {
			return
		}
		raw := "nats://" + before + secret + "@" + host
		if got, want := redactURL(raw), "nats://xxxxx@"+host; got != want {
			t.Fatalf("redactURL(%q) = %q, want %q", raw, got, want)
		}
	})
}

func TestRunRefusesBadCommands(t *testing.T) {
	t.Setenv("MEM0_WEBHOOK_URL", "")
	for _, tt := range []struct {
		args []string
		want string
	}{
		{nil, "usage"},
		{[]string{"serve"}, `unknown command "serve"`},
		{[]string{"emit", "-n", "0"}, "at least 1"},
		{[]string{"emit", "extra"}, "nothing else"},
		{[]string{"deliver", "x"}, "no arguments"},
		{[]string{"deliver"}, "MEM0_WEBHOOK_URL"},
	} {
		err := run(tt.args, nil)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("run(%q) = %v, want an error with %q", tt.args, err, tt.want)
		}
	}
}

// The README's "Bring your own pub/sub" shows newBus's lines between the
// two markers, one tab less indented; this keeps the two the same.
func TestREADMEHoldsTheSnippet(t *testing.T) {
	src, err := os.ReadFile("main.go")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	const begin, end = "\t// Bring your own pub/sub (README).\n", "\t// (end of README snippet)\n"
	_, rest, ok1 := strings.Cut(string(src), begin)
	snippet, _, ok2 := strings.Cut(rest, end)
	if !ok1 || !ok2 {
		t.Fatal("main.go lost the README snippet's markers")
	}
	var b strings.Builder
	for _, line := range strings.SplitAfter(snippet, "\n") {
		b.WriteString(strings.TrimPrefix(line, "\t"))
	}
	if !strings.Contains(string(readme), "```go\n"+b.String()+"```\n") {
		t.Fatalf("README.md does not hold this snippet of examples/nats/main.go verbatim:\n%s", b.String())
	}
}
