// Package redistest gives tests a real Redis: the one REDIS_URL names, or a
// private redis-server started on a free loopback port for the test and
// stopped when it ends. A test that can have neither is skipped, never
// failed: install redis-server (apt-get install redis-server) or set
// REDIS_URL to run it.
//
// Tests sharing a server stay independent by using their own stream and
// group names (see Name); a private server holds one test's data only.
package redistest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/redis/go-redis/v9"
)

// startTimeout bounds how long a redis-server may take to answer PING
// after it was started; stopTimeout how long it may take to exit.
const (
	startTimeout = 10 * time.Second
	stopTimeout  = 5 * time.Second
)

const skipHint = "set REDIS_URL or install redis-server (apt-get install redis-server) to run"

// URL returns the URL of a Redis for t: REDIS_URL when it is set (shared:
// use Name for keys), otherwise a private redis-server without persistence,
// started for t on a free loopback port and stopped in t.Cleanup. It never
// uses a system Redis on 6379 unless REDIS_URL names it. Without either, t
// is skipped. Call it from the test goroutine.
func URL(t testing.TB) string {
	t.Helper()
	if u := os.Getenv("REDIS_URL"); u != "" {
		return u
	}
	return start(t, false).URL()
}

// Start starts a private redis-server for t, whatever REDIS_URL says, so
// that the test can stop, kill and restart it. It writes an append-only
// file synced on every write, so Restart and even Kill lose nothing Redis
// acknowledged, as with a production Redis that persists. The server is
// stopped in t.Cleanup. Without redis-server on PATH, t is skipped. Call it
// from the test goroutine.
func Start(t testing.TB) *Server {
	t.Helper()
	return start(t, true)
}

// Name returns base followed by a random suffix: a stream, topic or group
// name no other test uses, for tests sharing a server.
func Name(base string) string {
	return base + "." + watermill.NewShortUUID()
}

// DeleteKeys registers a t.Cleanup that deletes, on the Redis at url,
// every key matching one of the glob patterns (SCAN MATCH): what a test
// wrote to a shared REDIS_URL server. Failures are reported with t.Errorf.
func DeleteKeys(t testing.TB, url string, patterns ...string) {
	t.Helper()
	t.Cleanup(func() {
		opts, err := redis.ParseURL(url)
		if err != nil {
			t.Errorf("redistest: %v", err)
			return
		}
		c := redis.NewClient(opts)
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, p := range patterns {
			iter := c.Scan(ctx, 0, p, 1000).Iterator()
			for iter.Next(ctx) {
				if err := c.Del(ctx, iter.Val()).Err(); err != nil {
					t.Errorf("redistest: deleting %s: %v", iter.Val(), err)
					return
				}
			}
			if err := iter.Err(); err != nil {
				t.Errorf("redistest: scanning %s: %v", p, err)
			}
		}
	})
}

// Server is a redis-server process owned by one test. Its methods are safe
// from several goroutines and return errors rather than failing the test,
// so they may run outside the test goroutine.
type Server struct {
	bin        string
	dir        string
	port       int
	persistent bool

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	log  *syncWriter   // the server's output, for failure reports
}

// URL returns redis://127.0.0.1:<port>/0. It stays the same across
// Restart.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// Addr returns 127.0.0.1:<port>.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

func start(t testing.TB, persistent bool) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server not found on PATH: " + skipHint)
	}
	s := &Server{bin: bin, dir: t.TempDir(), persistent: persistent}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("redistest: %v", err)
		}
	})
	// The free port is found by listening and closing: another process may
	// take it in between, so try a few.
	for try := 0; ; try++ {
		s.port, err = freePort()
		if err == nil {
			err = s.run()
		}
		if err == nil {
			return s
		}
		if try == 2 {
			t.Fatalf("redistest: %v", err)
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// run starts the process and waits until it answers PING.
func (s *Server) run() error {
	args := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--dir", s.dir,
		"--save", "",
		"--daemonize", "no",
		"--logfile", "",
	}
	if s.persistent {
		args = append(args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		args = append(args, "--appendonly", "no")
	}
	cmd := exec.Command(s.bin, args...)
	log := &syncWriter{}
	cmd.Stdout = log
	cmd.Stderr = log
	cmd.Dir = s.dir
	setParentDeathSignal(cmd)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting redis-server: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.mu.Lock()
	s.cmd, s.done, s.log = cmd, done, log
	s.mu.Unlock()

	deadline := time.Now().Add(startTimeout)
	for {
		if err := ping(s.Addr()); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			_ = s.Stop()
			return fmt.Errorf("redis-server on %s did not answer PING within %s: %v\n%s", s.Addr(), startTimeout, err, s.output())
		}
		select {
		case <-done:
			return fmt.Errorf("redis-server on %s exited at start:\n%s", s.Addr(), s.output())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (s *Server) output() string {
	s.mu.Lock()
	log := s.log
	s.mu.Unlock()
	if log == nil {
		return ""
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	return log.buf.String()
}

// Stop shuts the server down (SIGTERM: Redis flushes its append-only file
// and exits), killing it if it has not exited within five seconds. Stop is
// idempotent; a stopped server can be started again with Restart.
func (s *Server) Stop() error {
	return s.signal(os.Interrupt, stopTimeout)
}

// Kill kills the server with SIGKILL, as a crash would, and waits for it
// to exit. With Start's append-only file synced on every write, nothing
// Redis acknowledged is lost.
func (s *Server) Kill() error {
	return s.signal(os.Kill, stopTimeout)
}

func (s *Server) signal(sig os.Signal, wait time.Duration) error {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	default:
	}
	if err := cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signalling redis-server: %w", err)
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-done:
		return nil
	case <-t.C:
	}
	_ = cmd.Process.Kill()
	select {
	case <-done:
		return fmt.Errorf("redis-server on %s did not stop within %s; killed", s.Addr(), wait)
	case <-time.After(stopTimeout):
		return fmt.Errorf("redis-server on %s (pid %d) survived SIGKILL", s.Addr(), cmd.Process.Pid)
	}
}

// Restart stops the server (as Stop) and starts it again on the same port
// and directory, returning once it answers PING. Clients see their
// connections drop and must reconnect. The data survives: Start's server
// writes an append-only file.
func (s *Server) Restart() error {
	if err := s.Stop(); err != nil {
		return err
	}
	return s.run()
}

// ping sends PING over a fresh connection and expects +PONG.
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+PONG" {
		return fmt.Errorf("PING answered %q", strings.TrimSpace(line))
	}
	return nil
}

// syncWriter collects the server's output; exec writes it from its own
// goroutine.
type syncWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}
