// Package proc starts a built binary for tests, keeps its output line by
// line, and stops it: memhook's process tests use it to run `memhook
// serve`, `memhook emit` and the other commands as users run them. Every
// wait is bounded by a timeout given by the caller.
package proc

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrTimeout is returned by the waits when the time given ran out first.
var ErrTimeout = errors.New("proc: timed out")

// ErrExited is returned by WaitLine when the process exited without
// writing the line.
var ErrExited = errors.New("proc: process exited")

// Process is a started binary. Its stdout and stderr are kept in memory.
// It is safe for concurrent use.
type Process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process exited and its output is read

	mu      sync.Mutex
	stdout  bytes.Buffer
	stderr  bytes.Buffer
	changed chan struct{} // closed and replaced on every write to stderr
	code    int
	waitErr error
}

// Start runs path with args and exactly env (nothing is inherited from the
// calling process). On Linux the process is killed if the caller dies
// without stopping it.
func Start(path string, args, env []string) (*Process, error) {
	p := &Process{done: make(chan struct{}), changed: make(chan struct{})}
	cmd := exec.Command(path, args...)
	cmd.Env = env
	cmd.Stdout = &output{p: p, buf: &p.stdout}
	cmd.Stderr = &output{p: p, buf: &p.stderr, notify: true}
	cmd.WaitDelay = 5 * time.Second // a child holding the pipes must not hang Wait
	setParentDeathSignal(cmd)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p.cmd = cmd
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.code = cmd.ProcessState.ExitCode()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			p.waitErr = err
		}
		p.mu.Unlock()
		close(p.done)
	}()
	return p, nil
}

// Pid returns the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed once the process exited and its output was read.
func (p *Process) Done() <-chan struct{} { return p.done }

// Stdout returns everything the process wrote to stdout so far.
func (p *Process) Stdout() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stdout.String()
}

// Stderr returns everything the process wrote to stderr so far.
func (p *Process) Stderr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// Lines returns the complete lines of stderr so far.
func (p *Process) Lines() []string {
	s := p.Stderr()
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return strings.Split(s[:i], "\n")
	}
	return nil
}

// WaitLine waits until a complete stderr line satisfies match and returns
// it. It returns ErrExited if the process exits first, ErrTimeout if the
// timeout passes first.
func (p *Process) WaitLine(match func(line string) bool, timeout time.Duration) (string, error) {
	lines, err := p.WaitLines(match, 1, timeout)
	if err != nil {
		return "", err
	}
	return lines[0], nil
}

// WaitLines waits until at least n complete stderr lines satisfy match and
// returns them all. It returns ErrExited if the process exits with fewer,
// ErrTimeout if the timeout passes first.
func (p *Process) WaitLines(match func(line string) bool, n int, timeout time.Duration) ([]string, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	matching := func() []string {
		var out []string
		for _, l := range p.Lines() {
			if match(l) {
				out = append(out, l)
			}
		}
		return out
	}
	for {
		p.mu.Lock()
		ch := p.changed
		p.mu.Unlock()
		if got := matching(); len(got) >= n {
			return got, nil
		}
		select {
		case <-ch:
		case <-p.done:
			if got := matching(); len(got) >= n {
				return got, nil
			}
			return nil, ErrExited
		case <-deadline.C:
			return nil, ErrTimeout
		}
	}
}

// Signal sends sig to the process.
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Wait waits up to timeout for the process to exit and returns its exit
// code (-1 when a signal ended it). It returns ErrTimeout, leaving the
// process running, if it did not exit in time.
func (p *Process) Wait(timeout time.Duration) (int, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		select {
		case <-p.done: // exited as the time ran out (or timeout was 0)
		default:
			return 0, fmt.Errorf("%w: pid %d still running after %s", ErrTimeout, p.Pid(), timeout)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.code, p.waitErr
}

// Stop sends SIGTERM and waits up to grace for the process to exit; if it
// does not, it sends SIGKILL and returns ErrTimeout with the exit code -1.
// Stopping a process that has exited returns its exit code.
func (p *Process) Stop(grace time.Duration) (int, error) {
	select {
	case <-p.done:
		return p.Wait(0)
	default:
	}
	_ = p.Signal(syscall.SIGTERM) // it may exit meanwhile: Wait tells
	code, err := p.Wait(grace)
	if errors.Is(err, ErrTimeout) {
		_ = p.cmd.Process.Kill()
		if _, werr := p.Wait(10 * time.Second); werr != nil {
			return -1, werr
		}
		return -1, fmt.Errorf("%w: pid %d ignored SIGTERM for %s, killed", ErrTimeout, p.Pid(), grace)
	}
	return code, err
}

// Kill ends the process with SIGKILL, without waiting.
func (p *Process) Kill() { _ = p.cmd.Process.Kill() }

// FreeAddr returns a loopback address with a port nothing listens on now.
// Another process may take it before the caller listens: good enough for
// tests on one machine.
func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		return "", err
	}
	return addr, nil
}

// output keeps one of the process's streams; a write to stderr wakes
// WaitLine.
type output struct {
	p      *Process
	buf    *bytes.Buffer
	notify bool
}

func (o *output) Write(b []byte) (int, error) {
	o.p.mu.Lock()
	defer o.p.mu.Unlock()
	o.buf.Write(b)
	if o.notify {
		close(o.p.changed)
		o.p.changed = make(chan struct{})
	}
	return len(b), nil
}
