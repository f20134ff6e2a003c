//go:build !unix

package deadport

import (
	"errors"
	"net"
)

// Reserve finds a free loopback port. Without the unix socket calls the
// port is not held: another process may take it before Listen.
func Reserve() (*Port, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		return nil, err
	}
	return &Port{addr: addr, fd: 0}, nil
}

// Listen starts listening on the port (once).
func (p *Port) Listen() (net.Listener, error) {
	if p.fd < 0 {
		return nil, errors.New("deadport: already listening or closed")
	}
	p.fd = -1
	return net.Listen("tcp", p.addr)
}

// Close releases the port if Listen has not taken it.
func (p *Port) Close() error {
	p.fd = -1
	return nil
}
