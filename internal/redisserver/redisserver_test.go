package redisserver_test

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/memhook/memhook/internal/redisserver"
)

func TestStartWithoutRedisServer(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := redisserver.Start(redisserver.Config{Dir: t.TempDir()})
	if !errors.Is(err, redisserver.ErrNotFound) {
		t.Fatalf("Start without redis-server on PATH: %v, want ErrNotFound", err)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (redisserver.Config{}).Validate(); err == nil || !strings.Contains(err.Error(), "Config.Dir") {
		t.Errorf("Validate of a Config without Dir: %v, want an error naming Config.Dir", err)
	}
	if err := (redisserver.Config{Dir: t.TempDir()}).Validate(); err != nil {
		t.Errorf("Validate of a Config with Dir: %v", err)
	}
}

// TestStartStop: the server answers on a loopback port other than 6379
// and, once stopped, no longer does; Stop is idempotent.
func TestStartStop(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("redis-server not found on PATH; CI must install it (apt-get install redis-server)")
		}
		t.Skip("redis-server not found on PATH: install redis-server (apt-get install redis-server) to run")
	}
	s, err := redisserver.Start(redisserver.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop() })
	if _, port, _ := net.SplitHostPort(s.Addr()); port == "6379" {
		t.Errorf("private server on 6379")
	}
	if want := "redis://" + s.Addr() + "/0"; s.URL() != want {
		t.Errorf("URL %q, want %q", s.URL(), want)
	}
	c, err := net.DialTimeout("tcp", s.Addr(), time.Second)
	if err != nil {
		t.Fatalf("server not answering: %v", err)
	}
	_ = c.Close()
	for i := range 2 {
		if err := s.Stop(); err != nil {
			t.Fatalf("Stop %d: %v", i+1, err)
		}
	}
	if c, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
		_ = c.Close()
		t.Errorf("server still answers after Stop")
	}
}
