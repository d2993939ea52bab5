// Command launchernet is the launcher's side of the VM network as the tests run it: Discover and
// Serve in the netns it was started in, with the capabilities it was given (nettest starts it as
// the launcher's uid with CAP_NET_BIND_SERVICE only). Each lease is printed as "lease <ip>".
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	"github.com/slimvirt/slimvirt/cni/vmnet"
)

func main() {
	var resolv, binding string
	var opts vmnet.ServeOptions
	flag.StringVar(&resolv, "resolv-conf", "/nonexistent", "resolv.conf for DNS")
	flag.StringVar(&binding, "binding", "", "expected binding")
	flag.StringVar(&opts.Hostname, "hostname", "", "guest hostname")
	flag.StringVar(&opts.Domain, "domain", "", "guest domain")
	flag.Parse()
	opts.Logger = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	opts.OnLease = func(ip net.IP) { fmt.Printf("lease %s\n", ip) }
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	err := run(ctx, launcherpod.Binding(binding), resolv, opts)
	stop()
	if err != nil {
		opts.Logger.Error("vm network failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, binding launcherpod.Binding, resolv string, opts vmnet.ServeOptions) error {
	plan, err := vmnet.DiscoverWith(launcherpod.Interface{Name: "default", Binding: binding}, vmnet.PodInterface, resolv)
	if err != nil {
		return err
	}
	return vmnet.Serve(ctx, plan, opts)
}
