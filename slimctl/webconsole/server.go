// Package webconsole serves a VMI's screen (noVNC) and serial console (xterm.js) to a browser
// on this machine. The page and the libraries are embedded in slimctl; each of the page's two
// websockets is bridged to one stream that the caller's Dialer opens, normally a websocket of
// slimvirt's aggregated API. The server listens on loopback and answers only requests whose
// path carries a random secret, whose Host is the listen address and, for websockets, whose
// Origin is the page's own: another web page the user has open can neither guess the URL nor
// reach the server through a DNS name it controls.
package webconsole

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/slimvirt/slimvirt/api/subresources"
)

// Dialer opens one stream to the VMI: kind is subresources.Console (the serial console's bytes)
// or subresources.VNC (RFB). The server closes the stream when the browser's websocket ends.
type Dialer func(ctx context.Context, kind string) (io.ReadWriteCloser, error)

// Config says which VMI the page shows and how to reach it.
type Config struct {
	Namespace, VMI string
	Dial           Dialer
	// Addr is the address to listen on; default 127.0.0.1:0 (loopback, a free port). It must
	// name one address (an IP or localhost): the Host check needs to know what a browser sends.
	Addr string
	Log  *slog.Logger
}

// DefaultAddr is where the server listens unless Config.Addr says otherwise.
const DefaultAddr = "127.0.0.1:0"

// maxStreams bounds the websockets served at once (the page opens two; reconnects overlap).
const maxStreams = 16

// Server is one web console; Start runs it.
type Server struct {
	cfg     Config
	secret  string
	streams chan struct{}
	done    chan struct{}
	mu      sync.Mutex
	err     error
	started bool
}

// New checks cfg and makes a server with a fresh 128-bit secret.
func New(cfg Config) (*Server, error) {
	if cfg.VMI == "" || cfg.Namespace == "" {
		return nil, errors.New("webconsole: namespace and VMI are required")
	}
	if cfg.Dial == nil {
		return nil, errors.New("webconsole: a Dialer is required")
	}
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	host, _, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("parse listen address %q: %w", cfg.Addr, err)
	}
	if ip := net.ParseIP(host); (ip == nil && host != "localhost") || (ip != nil && ip.IsUnspecified()) {
		return nil, fmt.Errorf("webconsole: listen address %q must name one IP address or localhost", cfg.Addr)
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("make secret: %w", err)
	}
	return &Server{cfg: cfg, secret: hex.EncodeToString(b[:]), streams: make(chan struct{}, maxStreams),
		done: make(chan struct{})}, nil
}

// Start listens and serves in the background until ctx ends. It returns the page's URL, which
// carries the secret; append "#console" to open the console tab first.
func (s *Server) Start(ctx context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return "", errors.New("webconsole: already started")
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return "", fmt.Errorf("listen on %s: %w", s.cfg.Addr, err)
	}
	s.started = true
	addr := ln.Addr().String()
	h, err := newHandler(s.cfg, s.secret, addr, s.streams)
	if err != nil {
		_ = ln.Close()
		return "", err
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    16 << 10,
		// Requests, websockets included, end with ctx: bridges close their streams then.
		BaseContext: func(net.Listener) context.Context { return ctx },
		ErrorLog:    slog.NewLogLogger(s.cfg.Log.Handler(), slog.LevelDebug),
	}
	go func() {
		err := srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		s.mu.Lock()
		s.err = err
		s.mu.Unlock()
		close(s.done)
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	url := "http://" + addr + "/" + s.secret + "/"
	s.cfg.Log.Info("web console serving", "namespace", s.cfg.Namespace, "vmi", s.cfg.VMI, "address", addr)
	return url, nil
}

// Wait returns when the server has stopped serving (ctx ended, or the listener failed), with
// the listener's error if any.
func (s *Server) Wait() error {
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// streamKind is the stream a websocket path of the page carries, or "".
func streamKind(path string) string {
	switch path {
	case "ws/vnc":
		return subresources.VNC
	case "ws/console":
		return subresources.Console
	}
	return ""
}
