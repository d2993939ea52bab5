package vmnet

import (
	"context"
	"fmt"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/slimvirt/slimvirt/api/launcherpod"
)

// ServeNetns runs Discover and Serve against the netns at path from outside it: the sockets are
// opened inside the netns and served from any thread. It is how a node is debugged by hand.
func ServeNetns(ctx context.Context, path string, iface launcherpod.Interface, ifName, resolvConf string, opts ServeOptions) error {
	var srv *Server
	err := ns.WithNetNSPath(path, func(ns.NetNS) error {
		plan, err := DiscoverWith(iface, ifName, resolvConf)
		if err != nil {
			return err
		}
		if opts.Logger != nil {
			opts.Logger.Info("discovered vm network", "binding", plan.Binding, "guestMAC", plan.GuestMAC.String(),
				"guestIP", plan.GuestIP.String(), "gateway", fmt.Sprint(plan.Gateway), "mtu", plan.MTU,
				"routes", fmt.Sprint(plan.Routes), "dns", fmt.Sprint(plan.DNS))
		}
		srv, err = NewServer(plan, opts)
		return err
	})
	if err != nil {
		return fmt.Errorf("serve vm network in %s: %w", path, err)
	}
	return srv.Run(ctx)
}
