package launcher

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/slimvirt/slimvirt/runtime/control"
	"github.com/slimvirt/slimvirt/runtime/nodeseed"
)

// Command runs the launcher binary's client subcommands and returns the exit code:
// "probe" (0 only while the status file says Running), "ctl CMD" (a control command), and
// "console" and "vnc", which join stdin/stdout to the guest's console or VNC display (slimctl
// reaches them with the pod exec API), and "seed-node DIR" (as root) and "seed-caps DIR" (as
// the launcher's account), which put on a node what its launchers share.
func Command(cfg Config, args []string) int {
	switch {
	case len(args) == 1 && args[0] == "probe":
		if err := running(cfg.StatusFile); err != nil {
			fmt.Fprintln(os.Stderr, "not ready:", err)
			return 1
		}
		return 0
	case len(args) == 2 && args[0] == "ctl":
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := control.Call(ctx, cfg.ControlSocket, args[1])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if out != "" {
			fmt.Println(out)
		}
		return 0
	case len(args) == 2 && (args[0] == "seed-node" || args[0] == "seed-caps"):
		seed := nodeseed.SeedNode
		if args[0] == "seed-caps" {
			seed = nodeseed.ProbeCaps
		}
		scfg := nodeseed.Config{Libvirt: cfg.Libvirt, Diskcopy: cfg.Diskcopy, Log: cfg.Log}
		if err := seed(context.Background(), scfg, args[1]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return 0
	case len(args) == 1 && (args[0] == "console" || args[0] == "vnc"):
		path := cfg.ConsoleSocket
		if args[0] == "vnc" {
			path = cfg.VNCSocket
		}
		if err := pipeStdio(path, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return 0
	}
	fmt.Fprintln(os.Stderr, "usage: slimvirt-launcher [flags] | probe | console | vnc | seed-node DIR | seed-caps DIR | ctl pause|unpause|reboot|reset|shutdown|status|stats|guestinfo")
	return 2
}

// pipeStdio joins in and out to the unix socket at path until either side closes.
func pipeStdio(path string, in io.Reader, out io.Writer) error {
	conn, err := net.Dial("unix", path)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", path, err)
	}
	defer conn.Close()
	done := make(chan error, 2)
	go func() {
		_, err := io.Copy(conn, in)
		if uc, ok := conn.(*net.UnixConn); ok {
			_ = uc.CloseWrite()
		}
		done <- err
	}()
	go func() {
		_, err := io.Copy(out, conn)
		done <- err
	}()
	return <-done
}
