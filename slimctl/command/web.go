package command

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"

	"github.com/slimvirt/slimvirt/api/subresources"
	"github.com/slimvirt/slimvirt/slimctl/webconsole"
)

// webConsoleConfig is what the web console needs: the VMI, a way to open its streams (kind is
// subresources.Console or subresources.VNC), where to listen ("" for 127.0.0.1 on a free
// port) and a logger.
type webConsoleConfig struct {
	Namespace, VMI string
	Dial           func(ctx context.Context, kind string) (io.ReadWriteCloser, error)
	Addr           string
	Log            *slog.Logger
}

// errNoWebConsole is the answer of --web in a slimctl built without the web console.
var errNoWebConsole = errors.New("web console not built in")

// serveWeb serves a VMI's console and VNC to a browser until ctx ends (Ctrl-C): it prints the
// page's URL, which carries a secret, and opens it with xdg-open when there is one.
func (e *env) serveWeb(ctx context.Context, c *clients, ns, vmi, addr string) error {
	if e.webConsole == nil {
		return errNoWebConsole
	}
	dial := func(ctx context.Context, kind string) (io.ReadWriteCloser, error) {
		if kind != subresources.Console && kind != subresources.VNC {
			return nil, fmt.Errorf("open %q of VMI %s/%s: only %s and %s are streams", kind, ns, vmi, subresources.Console, subresources.VNC)
		}
		return c.Sub.Dial(ctx, subresources.VMIs, ns, vmi, kind)
	}
	cfg := webConsoleConfig{Namespace: ns, VMI: vmi, Dial: dial, Addr: addr, Log: slog.New(slog.NewTextHandler(e.stderr, nil))}
	url, err := e.webConsole(ctx, cfg)
	if err != nil {
		return fmt.Errorf("start the web console of VMI %s/%s: %w", ns, vmi, err)
	}
	fmt.Fprintf(e.stdout, "Web console of %s: %s\nCtrl-C to stop\n", vmi, url)
	if e.openURL != nil {
		e.openURL(ctx, url)
	}
	<-ctx.Done()
	return nil
}

// xdgOpen opens url with xdg-open when there is one; the URL is printed either way.
func xdgOpen(ctx context.Context, url string) {
	path, err := exec.LookPath("xdg-open")
	if err != nil {
		return
	}
	open := exec.CommandContext(ctx, path, url)
	if err := open.Start(); err == nil {
		go func() { _ = open.Wait() }() // a browser that did not open is no failure
	}
}

// startWebConsole serves the embedded web console (slimctl/webconsole) for one VMI.
func startWebConsole(ctx context.Context, c webConsoleConfig) (string, error) {
	s, err := webconsole.New(webconsole.Config{Namespace: c.Namespace, VMI: c.VMI, Dial: c.Dial, Addr: c.Addr, Log: c.Log})
	if err != nil {
		return "", fmt.Errorf("configure the web console: %w", err)
	}
	url, err := s.Start(ctx)
	if err != nil {
		return "", fmt.Errorf("start the web console: %w", err)
	}
	return url, nil
}
