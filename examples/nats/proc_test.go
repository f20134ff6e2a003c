package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// process is a started binary whose stderr is kept line by line (an
// example module cannot import memhook's internal/proc; this is the part
// of it the test needs). On Linux the process dies with the test binary.
type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed once it exited and its output is read

	mu      sync.Mutex
	stderr  bytes.Buffer
	changed chan struct{} // closed and replaced on every write
}

// start runs path with args and exactly env; t's cleanup kills it (if
// still running), waits for it and, when t failed, logs its stderr.
func start(t *testing.T, name, path string, args, env []string) *process {
	t.Helper()
	p := &process{name: name, done: make(chan struct{}), changed: make(chan struct{})}
	p.cmd = exec.Command(path, args...)
	p.cmd.Env = env
	p.cmd.Stderr = (*stderrWriter)(p)
	p.cmd.WaitDelay = 5 * time.Second
	setParentDeathSignal(p.cmd)
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		_ = p.cmd.Wait() // the exit code is read from ProcessState after done
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Errorf("%s (pid %d) did not exit after SIGKILL", name, p.cmd.Process.Pid)
		}
		if t.Failed() {
			t.Logf("stderr of %s:\n%s", name, p.output())
		}
	})
	return p
}

type stderrWriter process

func (w *stderrWriter) Write(b []byte) (int, error) {
	p := (*process)(w)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stderr.Write(b)
	close(p.changed)
	p.changed = make(chan struct{})
	return len(b), nil
}

func (p *process) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// waitLine waits up to timeout for a complete stderr line containing
// substr.
func (p *process) waitLine(substr string, timeout time.Duration) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		p.mu.Lock()
		changed := p.changed
		text := p.stderr.String()
		p.mu.Unlock()
		if i := strings.LastIndexByte(text, '\n'); i >= 0 && strings.Contains(text[:i], substr) {
			return nil
		}
		select {
		case <-changed:
		case <-p.done:
			if strings.Contains(p.output(), substr) {
				return nil
			}
			return fmt.Errorf("%s exited (%s) before writing %q", p.name, p.cmd.ProcessState, substr)
		case <-deadline.C:
			return fmt.Errorf("%s did not write %q within %s", p.name, substr, timeout)
		}
	}
}

// wait waits up to timeout for the process to exit and returns its exit
// code (-1 when a signal ended it).
func (p *process) wait(timeout time.Duration) (int, error) {
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode(), nil
	case <-time.After(timeout):
		return 0, fmt.Errorf("%s still running after %s", p.name, timeout)
	}
}

// kill sends SIGKILL, without waiting.
func (p *process) kill() { _ = p.cmd.Process.Kill() }

// terminate sends SIGTERM and waits up to grace for the exit code.
func (p *process) terminate(grace time.Duration) (int, error) {
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) && !strings.Contains(err.Error(), "finished") {
		return 0, err
	}
	return p.wait(grace)
}

// freePort returns a loopback port nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
