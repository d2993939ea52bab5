package binding

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strings"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	"github.com/slimvirt/slimvirt/cni/netconf"
)

// Attachment is what the plugin did to one pod interface; it is kept in the state file so that
// DEL and GC can undo it even when the netns has changed since.
type Attachment struct {
	Binding  launcherpod.Binding `json:"binding"`
	IfName   string              `json:"ifName"`
	GuestMAC string              `json:"guestMAC"`
	// GuestIP is the only source address the VM may use (anti-spoofing).
	GuestIP string `json:"guestIP"`
	// Snapshot is the pod NIC before the bridge binding rewired it.
	Snapshot *Snapshot `json:"snapshot,omitempty"`
	// VMNetwork is the masquerade network.
	VMNetwork string             `json:"vmNetwork,omitempty"`
	Ports     []launcherpod.Port `json:"ports,omitempty"`
	// Sysctls holds the values the netns-wide sysctls had before ADD changed them.
	Sysctls map[string]string `json:"sysctls,omitempty"`
}

// Persist saves an attachment before anything is changed, so that even a plugin killed in the
// middle of ADD leaves DEL what it needs to restore the pod.
type Persist func(*Attachment) error

// SetupBridge applies the bridge binding to pod interface ifName. On failure it undoes what it
// did, so the netns is as the cluster CNI left it.
func SetupBridge(ifName string, iface netconf.VMInterface, persist Persist) (_ *Attachment, err error) {
	link, err := netlinksafe.LinkByName(ifName)
	if err != nil {
		return nil, fmt.Errorf("find pod interface %s: %w", ifName, err)
	}
	snap, err := TakeSnapshot(link)
	if err != nil {
		return nil, err
	}
	ip4, err := snap.IPv4()
	if err != nil {
		return nil, err
	}
	guestMAC := snap.MAC
	if iface.MAC != "" {
		mac, err := netconf.GuestMAC(iface.MAC)
		if err != nil {
			return nil, err
		}
		guestMAC = mac.String()
	}
	att := &Attachment{Binding: launcherpod.BindingBridge, IfName: ifName, GuestMAC: guestMAC, GuestIP: ip4.IP.String(), Snapshot: snap}
	if att.Sysctls, err = readSysctls(arpIgnore, rpFilter); err != nil {
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

	portMAC, err := randomMAC()
	if err != nil {
		return nil, err
	}
	alias, err := Record{Binding: launcherpod.BindingBridge, GuestMAC: guestMAC}.Encode()
	if err != nil {
		return nil, err
	}
	br, err := addBridge(BridgeName(ifName), portMAC, snap.MTU, alias)
	if err != nil {
		return nil, err
	}
	serverAddr := &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP(ServerIP), Mask: net.CIDRMask(32, 32)}}
	if err := netlink.AddrAdd(br, serverAddr); err != nil {
		return nil, fmt.Errorf("add %s to bridge %s: %w", ServerIP, br.Attrs().Name, err)
	}
	if err := addTap(br, snap.MTU, iface.TapOwner, iface.Queues); err != nil {
		return nil, err
	}
	if err := moveNIC(link, br, portMAC, snap); err != nil {
		return nil, err
	}
	twinLink, err := addTwin(ifName, snap)
	if err != nil {
		return nil, err
	}
	if err := snap.Apply(twinLink); err != nil {
		return nil, err
	}
	if err := bridgeSysctls(br.Attrs().Name); err != nil {
		return nil, err
	}
	if err := guardBridge(att, br.Attrs().Name, portMAC); err != nil {
		return nil, err
	}
	return att, nil
}

// bridgeSysctls sets what the rewired pod needs of the kernel once its IP sits on the twin.
func bridgeSysctls(bridge string) error {
	// The pod IP now sits on the dummy; without arp_ignore the pod kernel would answer ARP for
	// it on the bridge, in competition with the VM.
	if err := writeSysctl(arpIgnore, "1"); err != nil {
		return err
	}
	// The guest's source address is the pod IP, local on the twin: the kernel drops such
	// packets (martian source) unless accept_local is on, and strict reverse-path filtering
	// (inherited from the node, where it is often on) drops them too. Unicast DHCP renewals to
	// the server identifier need both off (KubeVirt issue 4678). The effective rp_filter is the
	// larger of "all" and the device's, hence both; the guest's own traffic is bridged, not
	// routed, so no filtering of it is lost.
	for _, kv := range [][2]string{
		{"net/ipv4/conf/" + bridge + "/accept_local", "1"},
		{"net/ipv4/conf/" + bridge + "/rp_filter", "0"},
		{rpFilter, "0"},
	} {
		if err := writeSysctl(kv[0], kv[1]); err != nil {
			return err
		}
	}
	return nil
}

// guardBridge keeps the guest to its own addresses (anti-spoofing) and away from the pod's own
// services, and has the pod answer the guest's ARP for the gateway.
func guardBridge(att *Attachment, bridge string, portMAC net.HardwareAddr) error {
	serverIP := net.ParseIP(ServerIP)
	if err := addSpoofCheck(att, serverIP); err != nil {
		return err
	}
	if err := addPodGuard(bridge, serverIP); err != nil {
		return err
	}
	guestHW, err := net.ParseMAC(att.GuestMAC)
	if err != nil {
		return fmt.Errorf("parse guest mac %s: %w", att.GuestMAC, err)
	}
	return addGatewayARP(guestHW, GatewayARP(att.Snapshot, portMAC))
}

// addTwin makes the link that keeps the pod's identity: a dummy with the original MAC and MTU.
// Kernels built without the dummy driver get a veth pair instead, its peer (TwinPeerName) up
// and without addresses, which holds the same data and is as inert.
func addTwin(ifName string, snap *Snapshot) (netlink.Link, error) {
	mac, _ := net.ParseMAC(snap.MAC)
	attrs := netlink.LinkAttrs{Name: ifName, MTU: snap.MTU, HardwareAddr: mac}
	err := netlink.LinkAdd(&netlink.Dummy{LinkAttrs: attrs})
	if errors.Is(err, unix.EOPNOTSUPP) {
		err = netlink.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: TwinPeerName(ifName)})
		if err == nil {
			peer, perr := netlinksafe.LinkByName(TwinPeerName(ifName))
			if perr == nil {
				perr = netlink.LinkSetUp(peer)
			}
			if perr != nil {
				return nil, fmt.Errorf("set twin peer %s up: %w", TwinPeerName(ifName), perr)
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("add twin %s: %w", ifName, err)
	}
	link, err := netlinksafe.LinkByName(ifName)
	if err != nil {
		return nil, fmt.Errorf("find twin %s: %w", ifName, err)
	}
	// A dummy is NOARP; neighbour entries are kept as PERMANENT only on an ARP device.
	if err := netlink.LinkSetARPOn(link); err != nil {
		return nil, fmt.Errorf("set arp on for twin %s: %w", ifName, err)
	}
	return link, nil
}

// isTwin says whether link is the twin addTwin made (not the cluster CNI's own interface).
func isTwin(link netlink.Link) bool {
	if link.Type() == "dummy" {
		return true
	}
	if link.Type() != "veth" {
		return false
	}
	peer, err := netlinksafe.LinkByName(TwinPeerName(link.Attrs().Name))
	if err != nil {
		return false
	}
	idx, err := netlink.VethPeerIndex(&netlink.Veth{LinkAttrs: *link.Attrs()})
	return err == nil && idx == peer.Attrs().Index
}

func addBridge(name string, mac net.HardwareAddr, mtu int, alias string) (netlink.Link, error) {
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu, HardwareAddr: mac}}
	if err := netlink.LinkAdd(br); err != nil {
		return nil, fmt.Errorf("add bridge %s: %w", name, err)
	}
	link, err := netlinksafe.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("find bridge %s: %w", name, err)
	}
	if err := netlink.LinkSetAlias(link, alias); err != nil {
		return nil, fmt.Errorf("set alias of bridge %s: %w", name, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("set bridge %s up: %w", name, err)
	}
	return link, nil
}

// addTap makes the VM's tap, multi-queue when the VM uses more than one queue: libvirt and
// QEMU open a tap with IFF_MULTI_QUEUE exactly then, and the kernel refuses a mismatch.
func addTap(br netlink.Link, mtu int, owner *int, queues int) error {
	tap := &netlink.Tuntap{
		LinkAttrs: netlink.LinkAttrs{Name: TapName},
		Mode:      netlink.TUNTAP_MODE_TAP,
		Flags:     netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR | netlink.TUNTAP_ONE_QUEUE,
	}
	if queues > 1 {
		tap.Flags = netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR | netlink.TUNTAP_MULTI_QUEUE
	}
	if owner != nil {
		tap.Owner = uint32(*owner)
		tap.Group = uint32(*owner)
	}
	if err := netlink.LinkAdd(tap); err != nil {
		return fmt.Errorf("add tap %s: %w", TapName, err)
	}
	link, err := netlinksafe.LinkByName(TapName)
	if err != nil {
		return fmt.Errorf("find tap %s: %w", TapName, err)
	}
	if err := netlink.LinkSetMTU(link, mtu); err != nil {
		return fmt.Errorf("set mtu of tap %s: %w", TapName, err)
	}
	if err := netlink.LinkSetMaster(link, br); err != nil {
		return fmt.Errorf("attach tap %s to %s: %w", TapName, br.Attrs().Name, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("set tap %s up: %w", TapName, err)
	}
	return nil
}

// moveNIC turns the pod NIC into a bridge port: no addresses, a new MAC (the VM takes the old
// one), the name eth0-nic, learning off (the bridge must not learn the VM's MAC on it).
func moveNIC(link netlink.Link, br netlink.Link, mac net.HardwareAddr, snap *Snapshot) error {
	name := link.Attrs().Name
	nicName := NICName(name)
	if err := netlink.LinkSetDown(link); err != nil {
		return fmt.Errorf("set %s down: %w", name, err)
	}
	addrs, err := netlinksafe.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", name, err)
	}
	for _, a := range addrs {
		if err := netlink.AddrDel(link, &a); err != nil {
			return fmt.Errorf("remove address %s from %s: %w", a.IPNet, name, err)
		}
	}
	for _, n := range snap.Neighbors {
		_ = netlink.NeighDel(&netlink.Neigh{LinkIndex: link.Attrs().Index, Family: netlink.FAMILY_V4, IP: net.ParseIP(n.IP)})
	}
	if err := netlink.LinkSetName(link, nicName); err != nil {
		return fmt.Errorf("rename %s to %s: %w", name, nicName, err)
	}
	if err := netlink.LinkSetHardwareAddr(link, mac); err != nil {
		return fmt.Errorf("set mac of %s: %w", nicName, err)
	}
	if err := netlink.LinkSetMaster(link, br); err != nil {
		return fmt.Errorf("attach %s to %s: %w", nicName, br.Attrs().Name, err)
	}
	if err := netlink.LinkSetLearning(link, false); err != nil {
		return fmt.Errorf("turn learning off on %s: %w", nicName, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", nicName, err)
	}
	return nil
}

func isNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, os.ErrNotExist)
}

// randomMAC needs uniqueness, not secrecy: math/rand/v2 (ChaCha8, seeded by the runtime) is
// enough and spares every plugin run crypto/rand's start-up self-tests.
func randomMAC() (net.HardwareAddr, error) {
	mac := make(net.HardwareAddr, 6)
	for i := range mac {
		mac[i] = byte(rand.Uint32())
	}
	mac[0] = (mac[0] | 0x02) &^ 0x01 // locally administered, unicast
	return mac, nil
}

const (
	arpIgnore = "net/ipv4/conf/all/arp_ignore"
	rpFilter  = "net/ipv4/conf/all/rp_filter"
	ipForward = "net/ipv4/ip_forward"
)

func readSysctls(names ...string) (map[string]string, error) {
	out := map[string]string{}
	for _, n := range names {
		b, err := os.ReadFile("/proc/sys/" + n)
		if err != nil {
			return nil, fmt.Errorf("read sysctl %s: %w", n, err)
		}
		out[n] = strings.TrimSpace(string(b))
	}
	return out, nil
}

// writeSysctl writes a sysctl of the current thread's netns (/proc/sys/net follows the thread).
func writeSysctl(name, value string) error {
	if err := os.WriteFile("/proc/sys/"+name, []byte(value), 0o644); err != nil {
		return fmt.Errorf("set sysctl %s=%s: %w", name, value, err)
	}
	return nil
}
