//go:build unix

package deadport

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
)

// Reserve binds a socket to a free loopback port without listening on it:
// connections are refused, and no other socket can bind the port (ours has
// no SO_REUSEADDR) until Listen or Close.
func Reserve() (*Port, error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		return nil, fmt.Errorf("deadport: socket: %w", err)
	}
	syscall.CloseOnExec(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		_ = syscall.Close(fd)
		return nil, fmt.Errorf("deadport: bind: %w", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		_ = syscall.Close(fd)
		return nil, fmt.Errorf("deadport: getsockname: %w", err)
	}
	in, ok := sa.(*syscall.SockaddrInet4)
	if !ok {
		_ = syscall.Close(fd)
		return nil, fmt.Errorf("deadport: bound to %T", sa)
	}
	return &Port{addr: fmt.Sprintf("127.0.0.1:%d", in.Port), fd: fd}, nil
}

// Listen starts listening on the port (once): from then on connections are
// accepted by the listener returned.
func (p *Port) Listen() (net.Listener, error) {
	if p.fd < 0 {
		return nil, errors.New("deadport: already listening or closed")
	}
	if err := syscall.Listen(p.fd, syscall.SOMAXCONN); err != nil {
		return nil, fmt.Errorf("deadport: listen on %s: %w", p.addr, err)
	}
	f := os.NewFile(uintptr(p.fd), "deadport "+p.addr)
	p.fd = -1
	defer f.Close() // the listener holds its own copy
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("deadport: listen on %s: %w", p.addr, err)
	}
	return ln, nil
}

// Close releases the port if Listen has not taken it.
func (p *Port) Close() error {
	if p.fd < 0 {
		return nil
	}
	fd := p.fd
	p.fd = -1
	return syscall.Close(fd)
}
