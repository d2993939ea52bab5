package launcher

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/slimvirt/slimvirt/runtime/control"
)

// Command runs the launcher binary's client subcommands and returns the exit code:
// "probe" (the readiness probe: 0 only while Running) and "ctl CMD" (a control command).
func Command(cfg Config, args []string) int {
	switch {
	case len(args) == 1 && args[0] == "probe":
		if err := Probe(cfg.StatusFile); err != nil {
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
	}
	fmt.Fprintln(os.Stderr, "usage: slimvirt-launcher [flags] | probe | ctl pause|unpause|reboot|reset|shutdown|status")
	return 2
}
