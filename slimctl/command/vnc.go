package command

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/slimvirt/slimvirt/slimctl/launcherexec"
)

func vncCmd(e *env) *cobra.Command {
	var port int
	var address string
	var proxyOnly bool
	cmd := &cobra.Command{
		Use:   "vnc VMI",
		Short: "Open a local port that carries a VMI's VNC display (and start a viewer)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ns, err := e.clients()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			pod, err := c.LauncherPod(ctx, ns, args[0])
			if err != nil {
				return err
			}
			ln, err := net.Listen("tcp", net.JoinHostPort(address, strconv.Itoa(port)))
			if err != nil {
				return fmt.Errorf("listen for VNC clients: %w", err)
			}
			defer ln.Close()
			addr := ln.Addr().(*net.TCPAddr)
			fmt.Fprintf(e.stdout, "VNC for %s on %s (port %d); Ctrl-C to stop\n", args[0], addr, addr.Port)
			if !proxyOnly {
				startViewer(e, addr)
			}
			// Closing the listener ends Accept below; the deferred Close then has nothing to do.
			go func() { <-ctx.Done(); _ = ln.Close() }()
			for {
				conn, err := ln.Accept()
				if err != nil {
					if ctx.Err() != nil {
						return nil
					}
					return fmt.Errorf("accept VNC client: %w", err)
				}
				go serveVNC(ctx, e, c, ns, pod, conn)
			}
		},
	}
	cmd.Flags().IntVar(&port, "port", 0, "local port (0 picks a free one)")
	cmd.Flags().StringVar(&address, "address", "127.0.0.1", "local address to listen on")
	cmd.Flags().BoolVar(&proxyOnly, "proxy-only", false, "only open the port; do not start a viewer")
	return cmd
}

func serveVNC(ctx context.Context, e *env, c *launcherexec.Client, ns, pod string, conn net.Conn) {
	defer conn.Close()
	if err := c.Exec(ctx, ns, pod, []string{"vnc"}, launcherexec.Streams{Stdin: conn, Stdout: conn, Stderr: e.stderr}); err != nil {
		fmt.Fprintf(e.stderr, "vnc connection from %s: %v\n", conn.RemoteAddr(), err)
	}
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
