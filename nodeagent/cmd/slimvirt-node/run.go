package main

import (
	"context"
	"sync"

	"github.com/slimvirt/slimvirt/cni/install"
	"github.com/slimvirt/slimvirt/nodeagent/deviceplugin"
)

// run keeps the CNI plugin installed and the device plugins served until ctx ends. The device
// plugins retry their own failures, so only the installer's error ends the agent; the device
// plugins then stop too, removing their sockets.
func run(ctx context.Context, in *install.Installer, plugins *deviceplugin.Plugins) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { plugins.Run(ctx) })
	err := in.Run(ctx)
	cancel()
	wg.Wait()
	return err
}
