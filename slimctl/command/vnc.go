package command

import (
	"context"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strconv"
	"sync"

	"github.com/spf13/cobra"

	"github.com/slimvirt/slimvirt/api/subresources"
)

func vncCmd(e *env) *cobra.Command {
	var port int
	var address string
	var proxyOnly, web bool
	cmd := &cobra.Command{
		Use:   "vnc VMI",
		Short: "Open a local port that carries a VMI's VNC display (and start a viewer)",
		Long: `Open a local port that carries a VMI's VNC display and start remote-viewer or
vncviewer if one is installed. Each connection to the port opens its own stream.
With --web, serve the console and VNC display to a browser on --address:--port
instead and print the page's URL.

Needs the verb get on virtualmachineinstances/vnc (and, with --web,
virtualmachineinstances/console) in the API group ` + subresources.Group + `.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ns, err := e.clients()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			addr := net.JoinHostPort(address, strconv.Itoa(port))
			if web {
				return e.serveWeb(ctx, c, ns, args[0], addr)
			}
			dial := func() (io.ReadWriteCloser, error) {
				return c.Sub.Dial(ctx, subresources.VMIs, ns, args[0], subresources.VNC)
			}
			return e.serveVNC(ctx, args[0], addr, dial, !proxyOnly)
		},
	}
	cmd.Flags().IntVar(&port, "port", 0, "local port (0 picks a free one)")
	cmd.Flags().StringVar(&address, "address", "127.0.0.1", "local address to listen on")
	cmd.Flags().BoolVar(&proxyOnly, "proxy-only", false, "only open the port; do not start a viewer")
	cmd.Flags().BoolVar(&web, "web", false, "serve the console and VNC to a browser and print its URL")
	return cmd
}

// serveVNC listens on addr and joins each accepted connection to a stream of its own until ctx
// ends. The first stream is opened before listening, so a refusal (RBAC, no such VMI) is
// reported at once; it serves the first viewer.
func (e *env) serveVNC(ctx context.Context, vmi, addr string, dial func() (io.ReadWriteCloser, error), viewer bool) error {
	first, err := dial()
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		_ = first.Close() // the listen error is the one to report
		return fmt.Errorf("listen for VNC clients: %w", err)
	}
	tcp := ln.Addr().(*net.TCPAddr)
	fmt.Fprintf(e.stdout, "VNC for %s on %s (port %d); Ctrl-C to stop\n", vmi, tcp, tcp.Port)
	if viewer {
		startViewer(e, tcp)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	// Closing the listener ends Accept below.
	go func() { <-ctx.Done(); _ = ln.Close() }()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if first != nil {
				_ = first.Close() // never used
			}
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accept VNC client: %w", err)
		}
		stream := first
		first = nil
		wg.Add(1)
		go func() {
			defer wg.Done()
			if stream == nil {
				var derr error
				if stream, derr = dial(); derr != nil {
					fmt.Fprintf(e.stderr, "VNC connection from %s: %v\n", conn.RemoteAddr(), derr)
					_ = conn.Close() // the viewer sees the refusal as a closed connection
					return
				}
			}
			splice(ctx, conn, stream)
		}()
	}
}

// splice copies both ways until either side ends or ctx ends, then closes both.
func splice(ctx context.Context, a, b io.ReadWriteCloser) {
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(a, b); done <- struct{}{} }() // an end either way ends the session
	go func() { _, _ = io.Copy(b, a); done <- struct{}{} }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	_ = a.Close() // closing is how the session ends; errors here say nothing new
	_ = b.Close()
	<-done
}

// startViewer starts the first VNC viewer found on PATH, if any.
func startViewer(e *env, addr *net.TCPAddr) {
	for _, v := range []struct{ bin, arg string }{
		{"remote-viewer", fmt.Sprintf("vnc://%s:%d", addr.IP, addr.Port)},
		{"vncviewer", fmt.Sprintf("%s::%d", addr.IP, addr.Port)},
	} {
		if path, err := exec.LookPath(v.bin); err == nil {
			if err := exec.Command(path, v.arg).Start(); err == nil {
				return
			}
		}
	}
	fmt.Fprintln(e.stdout, "No VNC viewer found (remote-viewer, vncviewer); connect one to the port above.")
}
