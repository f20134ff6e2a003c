// Package deadport gives tests and the benchmark a loopback port where
// nothing listens (connections to it are refused) that stays theirs: no
// other server started meanwhile can take it, and a receiver can listen on
// it later to bring a dead endpoint back.
//
// Closing a listener to get such a port, as tests used to, leaves it free
// for any other process on the machine; when another test's server took
// it, the "dead" endpoint answered 404 and its events were poisoned.
package deadport

import "net"

// Port is a reserved loopback port.
type Port struct {
	addr string
	fd   int // the bound socket, -1 once handed to Listen or closed
	ln   net.Listener
}

// Addr is the port's address, "127.0.0.1:N".
func (p *Port) Addr() string { return p.addr }

// URL is "http://" + Addr() + path.
func (p *Port) URL(path string) string { return "http://" + p.addr + path }

// TB is the part of testing.TB that Held uses (so that the memhook
// binary, whose bench uses this package, does not link package testing).
type TB interface {
	Helper()
	Fatal(args ...any)
	Cleanup(func())
}

// Held is Reserve for a test: the port is released when the test ends,
// and a failure to reserve ends the test.
func Held(t TB) *Port {
	t.Helper()
	p, err := Reserve()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}
