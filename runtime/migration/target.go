package migration

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"
)

// TargetConfig is the target pod's end of the channel.
type TargetConfig struct {
	// Identity is the target's credential; the source pins its Pin.
	Identity *Identity
	// SourcePin is the pin of the source's Identity: the only client accepted.
	SourcePin string
	// Listener is the TCP port on the pod IP (Listen).
	Listener net.Listener
	// LibvirtSocket is the target libvirtd's own socket.
	LibvirtSocket string
	// Sockets are where the target's QEMU listens for the memory and disk streams.
	Sockets Sockets
	// MaxConns and HandshakeTimeout default to DefaultMaxConns and DefaultHandshakeTimeout.
	MaxConns         int
	HandshakeTimeout time.Duration
	Log              *slog.Logger
}

// Target serves the channel on the target: it accepts the source's connections, each an
// authenticated stream, and connects each to the local socket of its stream.
type Target struct {
	cfg   TargetConfig
	tls   *tls.Config
	local map[Stream]string
	conns conns
}

// NewTarget validates cfg.
func NewTarget(cfg TargetConfig) (*Target, error) {
	if cfg.Identity == nil || cfg.Listener == nil {
		return nil, errors.New("a migration target needs an identity and a listener")
	}
	if err := ValidatePin(cfg.SourcePin); err != nil {
		return nil, fmt.Errorf("source pin: %w", err)
	}
	if cfg.LibvirtSocket == "" || cfg.Sockets.Dir == "" {
		return nil, errors.New("a migration target needs libvirtd's socket and the sockets directory")
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	cfg.HandshakeTimeout, cfg.Log = endDefaults(cfg.HandshakeTimeout, cfg.Log)
	conf := cfg.Identity.tlsConfig()
	conf.ClientAuth = tls.RequireAnyClientCert
	conf.NextProtos = alpnAll()
	checkPeer := verifyPeer(cfg.SourcePin, time.Now)
	conf.VerifyConnection = func(cs tls.ConnectionState) error {
		if err := checkPeer(cs); err != nil {
			return err
		}
		if _, ok := streamOfALPN(cs.NegotiatedProtocol); !ok {
			return fmt.Errorf("unknown migration stream %.64q", cs.NegotiatedProtocol)
		}
		return nil
	}
	return &Target{
		cfg: cfg,
		tls: conf,
		local: map[Stream]string{
			StreamLibvirt: cfg.LibvirtSocket,
			StreamMemory:  cfg.Sockets.Memory(),
			StreamDisks:   cfg.Sockets.Disks(),
		},
	}, nil
}

// Addr is where the target listens.
func (t *Target) Addr() net.Addr { return t.cfg.Listener.Addr() }

// Serve accepts connections until ctx ends, then closes the listener and every connection.
func (t *Target) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() {
		_ = t.cfg.Listener.Close()
		t.conns.closeAll()
	})
	defer stop()
	for {
		c, err := t.cfg.Listener.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accept migration connections: %w", err)
		}
		if !t.conns.add(c, t.cfg.MaxConns) {
			t.cfg.Log.Warn("refused a migration connection: too many open", "remote", c.RemoteAddr(), "max", t.cfg.MaxConns)
			continue
		}
		go t.serveConn(ctx, c)
	}
}

// serveConn authenticates one connection, then splices it to its stream's local socket.
// Nothing reaches libvirt or QEMU before the handshake proved the source's key.
func (t *Target) serveConn(ctx context.Context, raw net.Conn) {
	defer t.conns.remove(raw)
	log := t.cfg.Log.With("remote", raw.RemoteAddr())
	tuneTCP(raw)
	tc := tls.Server(raw, t.tls)
	hctx, cancel := context.WithTimeout(ctx, t.cfg.HandshakeTimeout)
	err := tc.HandshakeContext(hctx)
	cancel()
	if err != nil {
		log.Warn("refused a migration connection", "err", err)
		return
	}
	stream, _ := streamOfALPN(tc.ConnectionState().NegotiatedProtocol)
	log = log.With("stream", stream)
	var d net.Dialer
	local, err := d.DialContext(ctx, "unix", t.local[stream])
	if err != nil {
		log.Warn("migration stream has no local end", "err", err)
		return
	}
	begin := time.Now()
	log.Info("migration stream open")
	logSpliced(log, splice(ctx, local, tc), time.Since(begin))
}
