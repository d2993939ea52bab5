// Package nsforward carries TCP connections accepted in the caller's network namespace to an
// address inside another network namespace. The local cluster uses it to serve its apiserver,
// which lives in the node namespace, on 127.0.0.1 of the root namespace without giving the root
// namespace an interface, address or route.
package nsforward

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// Config says where to listen and where to forward to.
type Config struct {
	// Listen is the address to listen on in the caller's namespace, e.g. 127.0.0.1:6443.
	Listen string
	// NetNS is the path of the target network namespace, e.g. /var/run/netns/slimvirt-node.
	NetNS string
	// Target is the address dialed inside NetNS.
	Target string
	// DialTimeout bounds each dial inside NetNS (default 10s).
	DialTimeout time.Duration
	Log         *slog.Logger
}

// Forwarder forwards connections; see New.
type Forwarder struct {
	cfg Config
}

// New validates cfg.
func New(cfg Config) (*Forwarder, error) {
	if cfg.Listen == "" || cfg.NetNS == "" || cfg.Target == "" {
		return nil, errors.New("listen address, netns path and target address are required")
	}
	if _, _, err := net.SplitHostPort(cfg.Listen); err != nil {
		return nil, fmt.Errorf("listen address %q: %w", cfg.Listen, err)
	}
	if _, _, err := net.SplitHostPort(cfg.Target); err != nil {
		return nil, fmt.Errorf("target address %q: %w", cfg.Target, err)
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Forwarder{cfg: cfg}, nil
}

// Listen opens the listening socket in the caller's namespace.
func (f *Forwarder) Listen() (net.Listener, error) {
	ln, err := net.Listen("tcp", f.cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", f.cfg.Listen, err)
	}
	return ln, nil
}

// Run listens and serves until ctx ends.
func (f *Forwarder) Run(ctx context.Context) error {
	ln, err := f.Listen()
	if err != nil {
		return err
	}
	return f.Serve(ctx, ln)
}

// Serve forwards every connection accepted on ln until ctx ends; it closes ln.
func (f *Forwarder) Serve(ctx context.Context, ln net.Listener) error {
	target, err := ns.GetNS(f.cfg.NetNS)
	if err != nil {
		_ = ln.Close() // failing to open the netns is the error to report
		return fmt.Errorf("open netns %s: %w", f.cfg.NetNS, err)
	}
	defer target.Close()
	go func() {
		<-ctx.Done()
		_ = ln.Close() // only unblocks Accept; its error ends the accept loop
	}()
	f.cfg.Log.Info("forwarding", "listen", ln.Addr().String(), "netns", f.cfg.NetNS, "target", f.cfg.Target)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.forward(ctx, target, c)
		}()
	}
}

// forward dials the target inside the namespace and copies both ways until either side closes.
func (f *Forwarder) forward(ctx context.Context, target ns.NetNS, c net.Conn) {
	defer c.Close()
	up, err := f.dial(target)
	if err != nil {
		f.cfg.Log.Error("dial failed", "netns", f.cfg.NetNS, "target", f.cfg.Target, "err", err)
		return
	}
	defer up.Close()
	stop := context.AfterFunc(ctx, func() {
		// Closing both ends unblocks the copies; the connections are being dropped anyway.
		_ = c.Close()
		_ = up.Close()
	})
	defer stop()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		// Half-close so the other direction can finish (TLS close_notify, HTTP/1.0 bodies).
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	<-done
}

// dial creates the socket on a thread switched into the target namespace: the socket stays in
// that namespace for its life, whatever thread uses it later.
func (f *Forwarder) dial(target ns.NetNS) (net.Conn, error) {
	var conn net.Conn
	err := target.Do(func(ns.NetNS) error {
		var err error
		conn, err = net.DialTimeout("tcp", f.cfg.Target, f.cfg.DialTimeout)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s in %s: %w", f.cfg.Target, f.cfg.NetNS, err)
	}
	return conn, nil
}
