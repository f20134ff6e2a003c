package proc_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/memhook/memhook/internal/proc"
)

func start(t *testing.T, script string) *proc.Process {
	t.Helper()
	p, err := proc.Start("/bin/sh", []string{"-c", script}, []string{"PATH=/usr/bin:/bin"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	return p
}

func TestWaitLineAndStop(t *testing.T) {
	p := start(t, `trap 'echo bye >&2; exit 5' TERM; echo out; echo "ready now" >&2; while :; do sleep 0.05; done`)
	line, err := p.WaitLine(func(l string) bool { return strings.HasPrefix(l, "ready") }, 10*time.Second)
	if err != nil || line != "ready now" {
		t.Fatalf("WaitLine = %q, %v; want \"ready now\"", line, err)
	}
	if _, err := p.WaitLines(func(l string) bool { return l == "out" }, 1, 50*time.Millisecond); !errors.Is(err, proc.ErrTimeout) {
		t.Errorf("WaitLines found a stdout line on stderr: %v", err)
	}
	code, err := p.Stop(10 * time.Second)
	if err != nil || code != 5 {
		t.Fatalf("Stop = %d, %v; want 5 (the TERM trap's exit)", code, err)
	}
	if got := p.Stdout(); got != "out\n" {
		t.Errorf("Stdout = %q", got)
	}
	if got := p.Lines(); len(got) != 2 || got[1] != "bye" {
		t.Errorf("Lines = %q; want [ready now bye]", got)
	}
}

func TestWaitLines(t *testing.T) {
	p := start(t, `for i in 1 2 3; do echo "n $i" >&2; done; echo partial >&2; exec sleep 60`)
	lines, err := p.WaitLines(func(l string) bool { return strings.HasPrefix(l, "n ") }, 3, 10*time.Second)
	if err != nil || len(lines) != 3 || lines[2] != "n 3" {
		t.Fatalf("WaitLines = %q, %v", lines, err)
	}
	if _, err := p.WaitLines(func(l string) bool { return strings.HasPrefix(l, "n ") }, 4, 100*time.Millisecond); !errors.Is(err, proc.ErrTimeout) {
		t.Fatalf("WaitLines for 4 err = %v; want ErrTimeout", err)
	}
}

func TestStopKillsAfterGrace(t *testing.T) {
	p := start(t, `trap '' TERM; echo ready >&2; while :; do sleep 0.05; done`)
	if _, err := p.WaitLine(func(l string) bool { return l == "ready" }, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	code, err := p.Stop(200 * time.Millisecond)
	if !errors.Is(err, proc.ErrTimeout) || code != -1 {
		t.Fatalf("Stop = %d, %v; want -1, ErrTimeout", code, err)
	}
}

func TestWaitLineReportsExit(t *testing.T) {
	p := start(t, `echo nothing >&2; exit 7`)
	if _, err := p.WaitLine(func(l string) bool { return l == "never" }, 10*time.Second); !errors.Is(err, proc.ErrExited) {
		t.Fatalf("WaitLine err = %v; want ErrExited", err)
	}
	if code, err := p.Wait(10 * time.Second); err != nil || code != 7 {
		t.Fatalf("Wait = %d, %v; want 7", code, err)
	}
	for range 100 { // a stopped process always tells its code, never a timeout
		if code, err := p.Stop(0); err != nil || code != 7 {
			t.Fatalf("Stop after exit = %d, %v; want 7", code, err)
		}
	}
}

func TestWaitTimesOut(t *testing.T) {
	p := start(t, `while :; do sleep 0.05; done`)
	if _, err := p.Wait(50 * time.Millisecond); !errors.Is(err, proc.ErrTimeout) {
		t.Fatalf("Wait err = %v; want ErrTimeout", err)
	}
	if _, err := p.WaitLine(func(string) bool { return true }, 50*time.Millisecond); !errors.Is(err, proc.ErrTimeout) {
		t.Fatalf("WaitLine err = %v; want ErrTimeout", err)
	}
}

func TestFreeAddr(t *testing.T) {
	addr, err := proc.FreeAddr()
	if err != nil || !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("FreeAddr = %q, %v", addr, err)
	}
}
