// Command slimvirt-vmnet runs the launcher's side of the VM network (the DHCP server; gateway
// ARP is answered by the plugin's nftables rules) against a pod's netns, for debugging a node by
// hand:
//
//	slimvirt-vmnet --netns /var/run/netns/cni-1234 --resolv-conf /run/.../resolv.conf
package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	"github.com/slimvirt/slimvirt/cni/vmnet"
)

func main() {
	var netns, ifName, resolv, binding string
	var opts vmnet.ServeOptions
	flag.StringVar(&netns, "netns", "", "path of the pod's network namespace (required)")
	flag.StringVar(&ifName, "interface", vmnet.PodInterface, "pod interface the plugin bound")
	flag.StringVar(&resolv, "resolv-conf", vmnet.DefaultResolvConf, "resolv.conf to take DNS servers and search domains from")
	flag.StringVar(&binding, "binding", "", "expected binding (bridge or masquerade); empty accepts what is there")
	flag.StringVar(&opts.Hostname, "hostname", "", "hostname for the guest (option 12)")
	flag.StringVar(&opts.Domain, "domain", "", "domain name for the guest (option 15)")
	flag.Parse()

	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts.Logger = log
	if netns == "" {
		log.Error("--netns is required")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	iface := launcherpod.Interface{Name: "default", Binding: launcherpod.Binding(binding)}
	err := vmnet.ServeNetns(ctx, netns, iface, ifName, resolv, opts)
	stop()
	if err != nil {
		log.Error("vm network failed", "err", err)
		os.Exit(1)
	}
}
