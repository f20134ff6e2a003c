package main

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// A serve child whose port another process holds says so and exits:
// startRouterOn reports errPortTaken at once (startRouter then tries
// another port) instead of waiting 15 s for a router that is not there.
func TestStartRouterOnATakenPort(t *testing.T) {
	exe := os.Getenv("MEMHOOK_TEST_BINARY") // built by TestMain
	if exe == "" {
		t.Fatal("MEMHOOK_TEST_BINARY is not set: TestMain builds the binary and sets it")
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	start := time.Now()
	cmd, err := startRouterOn(exe, taken.Addr().String(), "", "MEM0_WEBHOOK_URL=http://127.0.0.1:9/hook")
	if cmd != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	if !errors.Is(err, errPortTaken) {
		t.Fatalf("startRouterOn a taken port: %v, want errPortTaken", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("errPortTaken after %s: it waited for the health check to time out", took.Round(time.Millisecond))
	}
}
