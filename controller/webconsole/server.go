// Package webconsole is slimvirt's in-cluster web console: a sign-in page where users paste
// their own Kubernetes bearer token (a service-account token or an OIDC id_token), a list of a
// namespace's VMIs, and each VMI's screen (noVNC) and serial console (xterm.js), the page of
// slimctl's local web console. The server holds no credentials of its own for what users do:
// every request to the kube-apiserver carries the user's token, so the cluster's RBAC decides
// what each user sees and opens. Streams go browser -> this server -> kube-apiserver ->
// slimvirt's aggregated API.
package webconsole

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"time"

	"k8s.io/client-go/rest"

	slimweb "github.com/slimvirt/slimvirt/slimctl/webconsole"
)

// Config says where the kube-apiserver is and where to listen.
type Config struct {
	// APIServer gives the kube-apiserver's address and CA; its credentials are never used:
	// each request is made with rest.AnonymousClientConfig(APIServer) and the user's token.
	APIServer *rest.Config
	// Addr is the address to listen on, for example ":8090" (DefaultAddr if empty).
	Addr string
	Log  *slog.Logger
}

// DefaultAddr is where the server listens unless Config.Addr says otherwise.
const DefaultAddr = ":8090"

// maxStreams bounds the websockets bridged at once, all users together.
const maxStreams = 256

// Server is the in-cluster web console; Start runs it.
type Server struct {
	cfg     Config
	api     *rest.Config // host and TLS trust only
	home    []byte
	files   fs.FS // the console page's files (slimctl's)
	own     fs.FS // the sign-in and list page's files
	streams chan struct{}
}

// New checks cfg and makes a server.
func New(cfg Config) (*Server, error) {
	if cfg.APIServer == nil || cfg.APIServer.Host == "" {
		return nil, errors.New("webconsole: the kube-apiserver's address is required")
	}
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		return nil, fmt.Errorf("parse listen address %q: %w", cfg.Addr, err)
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	files, err := slimweb.Files()
	if err != nil {
		return nil, fmt.Errorf("webconsole: %w", err)
	}
	own, err := fs.Sub(assets, "assets")
	if err != nil {
		return nil, fmt.Errorf("open assets: %w", err)
	}
	home, err := fs.ReadFile(own, "home.html")
	if err != nil {
		return nil, fmt.Errorf("read home page: %w", err)
	}
	return &Server{cfg: cfg, api: rest.AnonymousClientConfig(cfg.APIServer), home: home,
		files: files, own: own, streams: make(chan struct{}, maxStreams)}, nil
}

// NeedLeaderElection is false: every controller replica may serve the console.
func (s *Server) NeedLeaderElection() bool { return false }

// Start serves until ctx ends (a controller-runtime Runnable).
func (s *Server) Start(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.cfg.Addr, err)
	}
	return s.Serve(ctx, ln)
}

// Serve is Start on a listener the caller made; it closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		// A token may be 16 KiB, a third more as base64 in the subprotocol header.
		MaxHeaderBytes: 64 << 10,
		// Websockets end with ctx: their bridges close the streams then.
		BaseContext: func(net.Listener) context.Context { return ctx },
		ErrorLog:    slog.NewLogLogger(s.cfg.Log.Handler(), slog.LevelDebug),
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
		case <-done:
			return
		}
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx) // what is still open when the time is up is cut
	}()
	s.cfg.Log.Info("in-cluster web console serving", "address", ln.Addr().String())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve web console: %w", err)
	}
	<-ctx.Done()
	return nil
}
