// Package redisserver runs a private redis-server: a child process on a
// free loopback port, with its data in a directory the caller owns, stopped
// by the caller. memhook's tests (through internal/redistest) and `memhook
// bench` use it, so that neither ever touches a Redis someone else runs.
package redisserver

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/memhook/memhook/internal/syncbuf"
)

// StartTimeout bounds how long a redis-server may take to answer PING
// after it was started; StopTimeout how long it may take to exit.
const (
	StartTimeout = 10 * time.Second
	StopTimeout  = 5 * time.Second
)

// ErrNotFound is returned by Start when there is no redis-server on PATH.
var ErrNotFound = errors.New("redisserver: redis-server not found on PATH (apt-get install redis-server)")

// Config says how to run the server.
type Config struct {
	// Dir is the server's working directory, where a persistent server
	// writes its append-only file. Required; the caller creates and removes
	// it.
	Dir string
	// Persistent makes the server write an append-only file synced on every
	// write, so that Restart and even Kill lose nothing Redis acknowledged,
	// as with a production Redis that persists. Default false: no
	// persistence at all (no snapshots, no append-only file).
	Persistent bool
}

// Validate reports what is wrong with c.
func (c Config) Validate() error {
	if c.Dir == "" {
		return errors.New("redisserver: Config.Dir is required")
	}
	return nil
}

// Server is a private redis-server process. Its methods are safe from
// several goroutines.
type Server struct {
	bin        string
	dir        string
	port       int
	persistent bool

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}   // closed when cmd has exited
	log  *syncbuf.Buffer // the server's output, for failure reports
}

// Start starts redis-server on a free loopback port and returns once it
// answers PING. It returns ErrNotFound when there is no redis-server on
// PATH. The caller stops the server with Stop.
func Start(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, ErrNotFound
	}
	s := &Server{bin: bin, dir: cfg.Dir, persistent: cfg.Persistent}
	// The free port is found by listening and closing: another process may
	// take it in between, so try a few.
	for try := 0; ; try++ {
		s.port, err = freePort()
		if err == nil {
			err = s.run()
		}
		if err == nil {
			return s, nil
		}
		if try == 2 {
			return nil, fmt.Errorf("redisserver: %w", err)
		}
	}
}

// URL returns redis://127.0.0.1:<port>/0. It stays the same across
// Restart.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// Addr returns 127.0.0.1:<port>.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

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
	log := &syncbuf.Buffer{}
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

	deadline := time.Now().Add(StartTimeout)
	for {
		if err := ping(s.Addr()); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			_ = s.Stop()
			return fmt.Errorf("redis-server on %s did not answer PING within %s: %v\n%s", s.Addr(), StartTimeout, err, s.Output())
		}
		select {
		case <-done:
			return fmt.Errorf("redis-server on %s exited at start:\n%s", s.Addr(), s.Output())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Output returns what the server wrote to stdout and stderr so far.
func (s *Server) Output() string {
	s.mu.Lock()
	log := s.log
	s.mu.Unlock()
	if log == nil {
		return ""
	}
	return log.String()
}

// Stop shuts the server down (SIGTERM: Redis flushes its append-only file
// and exits), killing it if it has not exited within StopTimeout. Stop is
// idempotent; a stopped server can be started again with Restart.
func (s *Server) Stop() error {
	return s.signal(os.Interrupt, StopTimeout)
}

// Kill kills the server with SIGKILL, as a crash would, and waits for it
// to exit. A Persistent server loses nothing Redis acknowledged.
func (s *Server) Kill() error {
	return s.signal(os.Kill, StopTimeout)
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
	case <-time.After(StopTimeout):
		return fmt.Errorf("redis-server on %s (pid %d) survived SIGKILL", s.Addr(), cmd.Process.Pid)
	}
}

// Restart stops the server (as Stop) and starts it again on the same port
// and directory, returning once it answers PING. Clients see their
// connections drop and must reconnect. A Persistent server's data
// survives.
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
