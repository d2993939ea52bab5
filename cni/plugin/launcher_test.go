package plugin_test

import (
	"net"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	"github.com/slimvirt/slimvirt/cni/internal/nettest"
	"github.com/slimvirt/slimvirt/cni/vmnet"
)

// serveLauncher runs the launcher side of the VM network in the pod as the launcher runs it
// (uid 107, CAP_NET_BIND_SERVICE only, so no packet socket) and returns the plan it serves.
func serveLauncher(t *testing.T, pod ns.NetNS, iface launcherpod.Interface, resolv string, onLease func(net.IP)) (*vmnet.Plan, *nettest.Launcher) {
	t.Helper()
	var plan *vmnet.Plan
	if err := pod.Do(func(ns.NetNS) error {
		var err error
		plan, err = vmnet.DiscoverWith(iface, "eth0", resolv)
		return err
	}); err != nil {
		t.Fatalf("discover: %v", err)
	}
	if resolv == "/nonexistent" {
		resolv = ""
	}
	l := nettest.ServeAsLauncher(t, pod, nettest.LauncherNet{Binding: iface.Binding, ResolvConf: resolv,
		Hostname: "testvm", Domain: "example.test", OnLease: onLease})
	return plan, l
}
