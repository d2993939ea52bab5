package migration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Defaults of the channel.
const (
	// DefaultHandshakeTimeout bounds a peer's TLS handshake: a connection that does not
	// authenticate in time is dropped.
	DefaultHandshakeTimeout = 10 * time.Second
	// DefaultMaxConns bounds the connections a target serves at once: a migration needs one
	// libvirt, one memory and one NBD connection (libvirt's NBD client opens one per disk).
	DefaultMaxConns = 16
	// userTimeout ends a TCP connection whose data stays unacknowledged that long, and the
	// keepalive one whose peer is silent about as long, so a cut channel fails the migration
	// in bounded time rather than when libvirt's keepalive gives up.
	userTimeout = 15 * time.Second
)

var keepAlive = net.KeepAliveConfig{Enable: true, Idle: 5 * time.Second, Interval: 2 * time.Second, Count: 4}

// Listen opens the target's TCP port; call it in the pod's network namespace.
func Listen(ctx context.Context, addr string) (net.Listener, error) {
	lc := net.ListenConfig{KeepAliveConfig: keepAlive}
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for the migration on %s: %w", addr, err)
	}
	return ln, nil
}

// Dial connects to the target's port.
func Dial(ctx context.Context, addr string) (net.Conn, error) {
	d := net.Dialer{KeepAliveConfig: keepAlive, Timeout: DefaultHandshakeTimeout}
	return d.DialContext(ctx, "tcp", addr)
}

// endDefaults fills what both ends leave unset.
func endDefaults(handshake time.Duration, log *slog.Logger) (time.Duration, *slog.Logger) {
	if handshake <= 0 {
		handshake = DefaultHandshakeTimeout
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return handshake, log
}

// tuneTCP sets the user timeout of a TCP connection (and keepalive, for accepted ones).
func tuneTCP(c net.Conn) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return
	}
	_ = tc.SetKeepAliveConfig(keepAlive)
	if raw, err := tc.SyscallConn(); err == nil {
		_ = raw.Control(func(fd uintptr) {
			_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(userTimeout.Milliseconds()))
		})
	}
}

// conns tracks the open connections of one end, so that closing the end closes them all.
type conns struct {
	mu     sync.Mutex
	open   map[net.Conn]struct{}
	closed bool
}

// add records c, or closes it and says false when the end is closed or holds max connections
// (max 0: no bound).
func (s *conns) add(c net.Conn, max int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || (max > 0 && len(s.open) >= max) {
		_ = c.Close()
		return false
	}
	if s.open == nil {
		s.open = map[net.Conn]struct{}{}
	}
	s.open[c] = struct{}{}
	return true
}

func (s *conns) remove(c net.Conn) {
	s.mu.Lock()
	delete(s.open, c)
	s.mu.Unlock()
	_ = c.Close()
}

func (s *conns) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for c := range s.open {
		_ = c.Close()
	}
}

// spliced is what went through one spliced pair of connections.
type spliced struct {
	up, down int64
	err      error
}

// splice copies between the local socket and the channel until both directions ended or ctx
// ends. A direction that reaches end of file half-closes its destination, so a peer that
// finished sending still gets the other side's reply; one that fails ends both.
func splice(ctx context.Context, local, remote net.Conn) spliced {
	type result struct {
		up  bool
		n   int64
		err error
	}
	done := make(chan result, 2)
	cp := func(dst, src net.Conn, up bool) {
		n, err := io.Copy(dst, src)
		if err == nil {
			if cw, ok := dst.(interface{ CloseWrite() error }); ok {
				err = cw.CloseWrite()
			}
		}
		done <- result{up, n, err}
	}
	go cp(remote, local, true)
	go cp(local, remote, false)
	var s spliced
	stop := func() { _ = local.Close(); _ = remote.Close() }
	for range 2 {
		select {
		case r := <-done:
			if r.up {
				s.up = r.n
			} else {
				s.down = r.n
			}
			if r.err != nil && s.err == nil {
				s.err = r.err
				stop()
			}
		case <-ctx.Done():
			stop()
			r := <-done
			if r.up {
				s.up = r.n
			} else {
				s.down = r.n
			}
			if s.err == nil {
				s.err = ctx.Err()
			}
		}
	}
	stop()
	if errors.Is(s.err, net.ErrClosed) {
		s.err = nil
	}
	return s
}

// logSpliced logs how a stream ended; log names the stream.
func logSpliced(log *slog.Logger, s spliced, took time.Duration) {
	if s.err != nil {
		log.Warn("migration stream ended", "sent", s.up, "received", s.down, "took", took.Round(time.Millisecond), "err", s.err)
		return
	}
	log.Info("migration stream ended", "sent", s.up, "received", s.down, "took", took.Round(time.Millisecond))
}
