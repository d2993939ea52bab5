// Command slimvirt-nsforward serves a TCP address of another network namespace on a local
// address (the local cluster's apiserver on 127.0.0.1:6443); see package nsforward.
package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/slimvirt/slimvirt/cluster/nsforward"
)

func main() {
	var cfg nsforward.Config
	flag.StringVar(&cfg.Listen, "listen", "127.0.0.1:6443", "address to listen on (this namespace)")
	flag.StringVar(&cfg.NetNS, "netns", "/var/run/netns/slimvirt-node", "target network namespace")
	flag.StringVar(&cfg.Target, "target", "10.88.0.1:6443", "address to connect to inside -netns")
	flag.Parse()
	cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	f, err := nsforward.New(cfg)
	if err != nil {
		cfg.Log.Error("invalid configuration", "err", err)
		os.Exit(2)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err = f.Run(ctx)
	cancel()
	if err != nil {
		cfg.Log.Error("forwarder stopped", "err", err)
		os.Exit(1)
	}
}
