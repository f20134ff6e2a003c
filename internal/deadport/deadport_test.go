package deadport

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// A reserved port refuses connections, cannot be taken by another
// listener, and accepts once Listen is called.
func TestReserveRefusesHoldsAndListens(t *testing.T) {
	p, err := Reserve()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	_, err = net.DialTimeout("tcp", p.Addr(), 2*time.Second)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial a reserved port: %v, want connection refused", err)
	}
	if other, err := net.Listen("tcp", p.Addr()); err == nil {
		other.Close()
		t.Fatalf("another listener took the reserved port %s", p.Addr())
	}

	ln, err := p.Listen()
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			_, _ = c.Write([]byte("up"))
			c.Close()
		}
	}()
	c, err := net.DialTimeout("tcp", p.Addr(), 2*time.Second)
	if err != nil {
		t.Fatalf("dial after Listen: %v", err)
	}
	defer c.Close()
	got, _ := io.ReadAll(c)
	if string(got) != "up" {
		t.Fatalf("read %q after Listen, want %q", got, "up")
	}
	if _, err := p.Listen(); err == nil {
		t.Fatal("a second Listen succeeded")
	}
}
