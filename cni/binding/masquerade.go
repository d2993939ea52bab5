package binding

import (
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	"github.com/slimvirt/slimvirt/cni/netconf"
)

// SetupMasquerade puts the VM on a private network behind the pod's IP: bridge k6t-<ifName>
// holding the gateway, the tap on it, NAT rules. The pod NIC is not touched.
func SetupMasquerade(ifName string, iface netconf.VMInterface, persist Persist) (_ *Attachment, err error) {
	link, err := netlinksafe.LinkByName(ifName)
	if err != nil {
		return nil, fmt.Errorf("find pod interface %s: %w", ifName, err)
	}
	vmnet, err := netconf.VMNetwork(iface.VMNetworkCIDR)
	if err != nil {
		return nil, err
	}
	var guestMAC net.HardwareAddr
	if iface.MAC != "" {
		guestMAC, err = netconf.GuestMAC(iface.MAC)
	} else {
		guestMAC, err = randomMAC()
	}
	if err != nil {
		return nil, err
	}
	att := &Attachment{
		Binding: launcherpod.BindingMasquerade, IfName: ifName, GuestMAC: guestMAC.String(),
		GuestIP: vmnet.Guest.String(), VMNetwork: vmnet.Network.String(), Ports: iface.Ports,
	}
	if att.Sysctls, err = readSysctls(ipForward); err != nil {
		return nil, err
	}
	if err := persist(att); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			if terr := Teardown(att); terr != nil {
				err = fmt.Errorf("%w (and rolling back: %w)", err, errors.Join(ErrRollback, terr))
			}
		}
	}()
	alias, err := Record{Binding: launcherpod.BindingMasquerade, GuestMAC: att.GuestMAC, VMNetwork: att.VMNetwork}.Encode()
	if err != nil {
		return nil, err
	}
	brMAC, _ := net.ParseMAC(MasqueradeBridgeMAC)
	mtu := link.Attrs().MTU
	br, err := addBridge(BridgeName(ifName), brMAC, mtu, alias)
	if err != nil {
		return nil, err
	}
	gwAddr := &netlink.Addr{IPNet: &net.IPNet{IP: vmnet.Gateway, Mask: vmnet.Network.Mask}}
	if err := netlink.AddrAdd(br, gwAddr); err != nil {
		return nil, fmt.Errorf("add %s to bridge %s: %w", gwAddr.IPNet, br.Attrs().Name, err)
	}
	if err := addTap(br, mtu, iface.TapOwner, iface.Queues); err != nil {
		return nil, err
	}
	for name, value := range map[string]string{
		ipForward: "1",
		// The pod's own connections to localhost are DNATed to the VM and leave on the bridge;
		// addPodGuard keeps the guest from using it the other way.
		"net/ipv4/conf/" + br.Attrs().Name + "/route_localnet": "1",
	} {
		if err := writeSysctl(name, value); err != nil {
			return nil, err
		}
	}
	if err := addMasqueradeNAT(ifName, br.Attrs().Name, vmnet.Gateway, vmnet.Guest, iface.Ports); err != nil {
		return nil, err
	}
	if err := addSpoofCheck(att, vmnet.Gateway); err != nil {
		return nil, err
	}
	if err := addPodGuard(br.Attrs().Name, vmnet.Gateway); err != nil {
		return nil, err
	}
	return att, nil
}
