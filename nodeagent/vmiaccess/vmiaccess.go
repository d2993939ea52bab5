// Package vmiaccess is the node agent's VMI access endpoint: the aggregated API server
// (subresources.slimvirt.io) proxies a user's console, vnc, pause, unpause, softreboot and
// guestosinfo requests to the agent of the VMI's node, which connects them to the VMI's
// launcher through its run directory (nodeagent/launcherwatch). HTTPS with mutual TLS: only
// the aggregated server's client certificate is served; see api/subresources for the paths.
package vmiaccess

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/slimvirt/slimvirt/nodeagent/launcherwatch"
)

// Launchers lists the launchers on this node that may be asked anything
// (launcherwatch.Watcher.List).
type Launchers interface {
	List() []launcherwatch.Launcher
}

// Config is what the endpoint is told.
type Config struct {
	// Addr is the address to listen on, subresources.DefaultNodePort's by default.
	Addr string
	// CertDir holds the mounted Secret subresources.NodeAccessSecret: CertFile, KeyFile and
	// ClientCAFile. They are read again when they change.
	CertDir string
	// Node is this node's name, for messages.
	Node      string
	Launchers Launchers
	Log       *slog.Logger
}

// Server is a configured endpoint.
type Server struct {
	cfg   Config
	certs *certs
}

// New checks cfg and loads the certificates: it fails when they are missing or do not load.
func New(cfg Config) (*Server, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Launchers == nil {
		return nil, errors.New("vmiaccess: no launchers to serve")
	}
	if cfg.CertDir == "" {
		return nil, errors.New("no certificate directory (--access-cert-dir)")
	}
	c, err := newCerts(cfg.CertDir, cfg.Log)
	if err != nil {
		return nil, fmt.Errorf("load certificates from %s: %w", cfg.CertDir, err)
	}
	return &Server{cfg: cfg, certs: c}, nil
}

// Run listens on Addr and serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.cfg.Addr, err)
	}
	return s.Serve(ctx, ln)
}

// Serve serves on ln until ctx ends; it closes ln, and the streams in progress end too.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler: Handler(s.cfg.Launchers, s.cfg.Node, s.cfg.Log),
		// Also bounds the TLS handshake.
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		// Streams outlive ServeHTTP's caller only through their request's context, which is
		// this one's: they end when ctx does.
		BaseContext: func(net.Listener) context.Context { return ctx },
		// No HTTP/2: websockets here are HTTP/1.1 upgrades.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		ErrorLog:     slog.NewLogLogger(s.cfg.Log.Handler(), slog.LevelDebug),
	}
	tlsLn := tls.NewListener(ln, &tls.Config{MinVersion: tls.VersionTLS13, GetConfigForClient: s.certs.config})
	stop := context.AfterFunc(ctx, func() { _ = srv.Close() })
	defer stop()
	s.cfg.Log.Info("serving VMI access", "addr", ln.Addr().String())
	if err := srv.Serve(tlsLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve VMI access on %s: %w", ln.Addr(), err)
	}
	return nil
}
