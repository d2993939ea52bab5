package migration

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"
)

// SourceConfig is the source pod's end of the channel.
type SourceConfig struct {
	// Identity is the source's credential; the target pins its Pin.
	Identity *Identity
	// TargetPin is the pin of the target's Identity: the only server accepted.
	TargetPin string
	// TargetAddr is the target's port (pod IP and port).
	TargetAddr string
	// Dial connects to TargetAddr; nil is Dial.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// Sockets are where the source's libvirtd and QEMU connect.
	Sockets          Sockets
	HandshakeTimeout time.Duration
	Log              *slog.Logger
}

// Source serves the channel on the source: every connection libvirtd or QEMU opens to one of
// its sockets becomes one authenticated TLS connection to the target.
type Source struct {
	cfg       SourceConfig
	tls       *tls.Config
	listeners map[Stream]net.Listener
	conns     conns

	mu sync.Mutex
	// failed is the first stream that failed, and how.
	failed error
}

// ListenSource validates cfg and creates the sockets, so that a migration can be started as
// soon as it returns; Serve serves them.
func ListenSource(cfg SourceConfig) (*Source, error) {
	if cfg.Identity == nil || cfg.TargetAddr == "" || cfg.Sockets.Dir == "" {
		return nil, errors.New("a migration source needs an identity, the target's address and the sockets directory")
	}
	if err := ValidatePin(cfg.TargetPin); err != nil {
		return nil, fmt.Errorf("target pin: %w", err)
	}
	if cfg.Dial == nil {
		cfg.Dial = Dial
	}
	cfg.HandshakeTimeout, cfg.Log = endDefaults(cfg.HandshakeTimeout, cfg.Log)
	conf := cfg.Identity.tlsConfig()
	conf.ServerName = serverName
	// The chain is not verified against any CA: the pin below is the check, and a stricter one.
	conf.InsecureSkipVerify = true
	conf.VerifyConnection = verifyPeer(cfg.TargetPin, time.Now)
	s := &Source{cfg: cfg, tls: conf, listeners: map[Stream]net.Listener{}}
	if err := os.MkdirAll(cfg.Sockets.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", cfg.Sockets.Dir, err)
	}
	paths := map[Stream]string{StreamLibvirt: cfg.Sockets.Libvirt(), StreamMemory: cfg.Sockets.Memory(), StreamDisks: cfg.Sockets.Disks()}
	for _, stream := range Streams {
		path := paths[stream]
		_ = os.Remove(path)
		ln, err := net.Listen("unix", path)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("listen on %s: %w", path, err)
		}
		if err := os.Chmod(path, 0o600); err != nil {
			_ = ln.Close()
			s.Close()
			return nil, fmt.Errorf("restrict %s: %w", path, err)
		}
		s.listeners[stream] = ln
	}
	return s, nil
}

// Err is how the first stream that failed failed, nil while none has.
func (s *Source) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed
}

func (s *Source) fail(stream Stream, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed == nil {
		s.failed = fmt.Errorf("the %s stream: %w", stream, err)
	}
}

// Close closes the sockets and every connection; Serve returns.
func (s *Source) Close() {
	for _, ln := range s.listeners {
		_ = ln.Close()
	}
	s.conns.closeAll()
}

// Serve forwards connections until ctx ends or Close, then closes everything.
func (s *Source) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, s.Close)
	defer stop()
	var wg sync.WaitGroup
	errs := make(chan error, len(s.listeners))
	for stream, ln := range s.listeners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					if !errors.Is(err, net.ErrClosed) {
						errs <- fmt.Errorf("accept on the %s socket: %w", stream, err)
						s.Close()
					}
					return
				}
				if s.conns.add(c, 0) {
					go s.forward(ctx, stream, c)
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// forward carries one local connection to the target.
func (s *Source) forward(ctx context.Context, stream Stream, local net.Conn) {
	defer s.conns.remove(local)
	log := s.cfg.Log.With("stream", stream)
	remote, err := s.connect(ctx, stream)
	if err != nil {
		s.fail(stream, err)
		log.Warn("migration stream refused", "err", err)
		return
	}
	if !s.conns.add(remote, 0) {
		return
	}
	defer s.conns.remove(remote)
	begin := time.Now()
	log.Info("migration stream open", "target", s.cfg.TargetAddr)
	sp := splice(ctx, local, remote)
	if sp.err != nil {
		s.fail(stream, sp.err)
	}
	logSpliced(log, sp, time.Since(begin))
}

// connect opens one authenticated stream to the target.
func (s *Source) connect(ctx context.Context, stream Stream) (*tls.Conn, error) {
	hctx, cancel := context.WithTimeout(ctx, s.cfg.HandshakeTimeout)
	defer cancel()
	raw, err := s.cfg.Dial(hctx, s.cfg.TargetAddr)
	if err != nil {
		return nil, fmt.Errorf("connect to the migration target %s: %w", s.cfg.TargetAddr, err)
	}
	tuneTCP(raw)
	conf := s.tls.Clone()
	conf.NextProtos = []string{stream.alpn()}
	tc := tls.Client(raw, conf)
	if err := tc.HandshakeContext(hctx); err != nil {
		_ = raw.Close()
		return nil, fmt.Errorf("authenticate the migration target %s: %w", s.cfg.TargetAddr, err)
	}
	if tc.ConnectionState().NegotiatedProtocol != stream.alpn() {
		_ = tc.Close()
		return nil, fmt.Errorf("the migration target %s did not accept the %s stream", s.cfg.TargetAddr, stream)
	}
	return tc, nil
}
