// Package podnic gives the launcher the guest NIC the CNI plugin built in the pod: it reads the
// binding from the pod's netns (cni/vmnet) and runs the guest's DHCP server while the guest
// lives. The gateway's ARP answers are the kernel's (rules the CNI plugin installs), so the
// launcher needs CAP_NET_BIND_SERVICE and no CAP_NET_RAW. Tap attaches a guest to a tap made
// by hand instead, for the launcher run on its own.
package podnic

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/cni/vmnet"
	"github.com/slimvirt/slimvirt/runtime/domain"
)

// For returns the pod NIC of a VMI, or nil when it has no interface.
func For(vmi *v1.VirtualMachineInstance) (*Binding, error) {
	ifaces := vmi.LauncherInterfaces()
	if len(ifaces) == 0 {
		return nil, nil
	}
	if len(ifaces) > 1 {
		return nil, fmt.Errorf("vmi %s has %d interfaces; only one pod network interface is supported", vmi.Name, len(ifaces))
	}
	model := ""
	if spec, ok := vmi.FindInterface(ifaces[0].Name); ok {
		model = spec.NICModel()
	}
	return &Binding{iface: ifaces[0], model: model, hostname: vmi.GuestHostname()}, nil
}

// Binding is the guest NIC of the pod network.
type Binding struct {
	iface    launcherpod.Interface
	model    string
	hostname string
	plan     *vmnet.Plan
}

// Prepare reads the binding the CNI plugin made.
func (n *Binding) Prepare(context.Context) ([]domain.NIC, error) {
	plan, err := vmnet.Discover(n.iface)
	if err != nil {
		return nil, fmt.Errorf("read the pod network binding of interface %s: %w", n.iface.Name, err)
	}
	n.plan = plan
	return []domain.NIC{{Name: n.iface.Name, Tap: plan.TapName, MAC: plan.GuestMAC.String(), MTU: plan.MTU, Model: n.model}}, nil
}

// Serve answers the guest's DHCP until ctx ends.
func (n *Binding) Serve(ctx context.Context, onLease func(net.IP)) error {
	if n.plan == nil {
		return fmt.Errorf("serve interface %s: the binding was not prepared", n.iface.Name)
	}
	return vmnet.Serve(ctx, n.plan, vmnet.ServeOptions{
		Hostname: n.hostname,
		Logger:   slog.Default().With("interface", n.iface.Name),
		OnLease:  onLease,
	})
}
