package launcher

import (
	"context"
	"net"
	"time"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	"github.com/slimvirt/slimvirt/runtime/domain"
	"github.com/slimvirt/slimvirt/runtime/podnic"
)

// NIC is a tap prepared for one VMI interface.
type NIC = domain.NIC

// Network is the guest's NIC binding as the launcher needs it. Prepare returns the NICs
// (taps made by the CNI plugin, the guest MAC and MTU) before the domain starts; Serve runs
// the guest-facing services (DHCP) while the guest lives and reports the leased IP.
type Network interface {
	Prepare(ctx context.Context) ([]NIC, error)
	Serve(ctx context.Context, onLease func(ip net.IP)) error
}

// prepareNetwork chooses the binding of a VMI that wants the pod network and prepares its NICs.
func (l *Launcher) prepareNetwork(ctx context.Context) ([]NIC, error) {
	if !l.vmi.WantsPodNetwork() {
		return nil, nil
	}
	l.network = l.cfg.Network
	if l.network == nil {
		b, err := podnic.For(l.vmi)
		if err != nil {
			return nil, setupFailed("set up the pod network binding: %v", err)
		}
		if b != nil {
			l.network = b
		}
	}
	if l.network == nil {
		return nil, setupFailed("the VMI has a pod network interface but the launcher has no network binding")
	}
	step := time.Now()
	nics, err := l.network.Prepare(ctx)
	if err != nil {
		return nil, setupFailed("prepare the pod network: %v", err)
	}
	l.completeNICs(nics)
	if len(nics) > 0 {
		_ = l.status.update(func(s *launcherpod.Status) { s.GuestMAC = nics[0].MAC })
	}
	l.log.Info("pod network ready", "nics", len(nics), "took", time.Since(step).Round(time.Millisecond))
	return nics, nil
}

// completeNICs fills in from the spec what a binding left out: a binding that does not know
// the VMI's interface names (a tap) serves them in order; the spec's model and MAC apply.
func (l *Launcher) completeNICs(nics []NIC) {
	for i := range nics {
		if nics[i].Name == "" {
			nics[i].Name = l.vmi.InterfaceName(i)
		}
		spec, ok := l.vmi.FindInterface(nics[i].Name)
		if !ok {
			continue
		}
		if nics[i].Model == "" {
			nics[i].Model = spec.NICModel()
		}
		if mac := spec.GuestMAC(); mac != "" {
			nics[i].MAC = mac
		}
	}
}
