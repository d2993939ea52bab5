// Command slimvirt-registry is the local cluster's image registry (package registry):
// `slimvirt-registry serve` serves it, `slimvirt-registry push TAR NAME...` puts an image in.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/slimvirt/slimvirt/cluster/registry"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, log, os.Args[1:])
	cancel()
	if err != nil {
		log.Error("slimvirt-registry failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger, args []string) error {
	if len(args) == 0 {
		return errors.New("usage: slimvirt-registry serve|push [flags]")
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:5000", "address of the registry (loopback of the node's namespace)")
	switch args[0] {
	case "serve":
		dir := fs.String("dir", "", "directory of the blobs")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		s, err := registry.New(registry.Config{Addr: *addr, Dir: *dir, Log: log})
		if err != nil {
			return err
		}
		return s.Run(ctx)
	case "push":
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if fs.NArg() < 2 {
			return fmt.Errorf("usage: slimvirt-registry push [-addr A] TAR NAME [NAME]")
		}
		return registry.Push(ctx, *addr, fs.Arg(0), fs.Args()[1:])
	}
	return fmt.Errorf("unknown command %q: want serve or push", args[0])
}
