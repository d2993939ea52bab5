// Command slimvirt-node is the slimvirt node agent (nodeagent/agent): it installs the CNI
// plugin and keeps it chained, serves the kubelet device plugins for /dev/kvm, /dev/net/tun and
// the launchers' seed, reports each launcher's status to its VMI and serves per-VM metrics;
// `slimvirt-node uninstall-cni` takes the CNI plugin out again.
package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/slimvirt/slimvirt/nodeagent/agent"
)

func main() {
	args, uninstall := os.Args[1:], false
	if len(args) > 0 && args[0] == "uninstall-cni" {
		args, uninstall = args[1:], true
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	cfg := parseFlags(args)
	cfg.Logger = log
	a, err := agent.New(cfg)
	if err != nil {
		log.Error("invalid configuration", "err", err)
		os.Exit(2)
	}
	if uninstall {
		err = a.UninstallCNI()
	} else {
		err = runUntilSignal(a)
	}
	if err != nil {
		log.Error("node agent failed", "err", err)
		os.Exit(1)
	}
}

// runUntilSignal runs the agent until SIGTERM (the kubelet stopping the pod) or an interrupt.
func runUntilSignal(a *agent.Agent) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	return a.Run(ctx)
}
