package binding

import (
	"fmt"
	"net"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// ARPEntry is one address the pod answers the guest's ARP for, with MAC.
type ARPEntry struct {
	IP  net.IP
	MAC net.HardwareAddr
}

// GatewayARP lists the addresses the guest must be able to resolve that nobody on the wire
// answers for: the gateways the cluster CNI pinned with a permanent neighbour entry (VPC CNIs pin
// 169.254.1.1 and the host answers nothing) and the DHCP server identifier, held by the bridge.
func GatewayARP(snap *Snapshot, serverMAC net.HardwareAddr) []ARPEntry {
	pinned := map[string]net.HardwareAddr{}
	for _, n := range snap.Neighbors {
		if mac, err := net.ParseMAC(n.MAC); err == nil && len(mac) == 6 {
			pinned[n.IP] = mac
		}
	}
	var out []ARPEntry
	seen := map[string]bool{}
	for _, r := range snap.Routes {
		mac, ok := pinned[r.Gw]
		ip := net.ParseIP(r.Gw).To4()
		if !ok || ip == nil || seen[r.Gw] {
			continue
		}
		seen[r.Gw] = true
		out = append(out, ARPEntry{IP: ip, MAC: mac})
	}
	return append(out, ARPEntry{IP: net.ParseIP(ServerIP).To4(), MAC: serverMAC})
}

// ARP header offsets (Ethernet/IPv4, RFC 826) from the network header.
const (
	arpOffOp  = 6
	arpOffSHA = 8
	arpOffSPA = 14
	arpOffTHA = 18
	arpOffTPA = 24
)

func write(base expr.PayloadBase, offset uint32, data []byte) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: data},
		&expr.Payload{OperationType: expr.PayloadWrite, SourceRegister: 1, Base: base, Offset: offset, Len: uint32(len(data))},
	}
}

func match(base expr.PayloadBase, offset uint32, data []byte) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: base, Offset: offset, Len: uint32(len(data))},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data},
	}
}

// arpReplyRule turns the guest's ARP request for e.IP into the reply, in place, and sends it
// back out of the tap: the kernel answers, so the launcher needs no packet socket (CAP_NET_RAW).
// The reply goes to the address the request came from (the guest's, or 0.0.0.0 for a probe).
func arpReplyRule(guestMAC net.HardwareAddr, e ARPEntry, tapIndex int) []expr.Any {
	nh, ll := expr.PayloadBaseNetworkHeader, expr.PayloadBaseLLHeader
	return concat(
		match(ll, 12, binaryutil.BigEndian.PutUint16(unix.ETH_P_ARP)),
		// Ethernet, IPv4, 6-byte MACs, 4-byte addresses, a request.
		match(nh, 0, []byte{0, 1, 8, 0, 6, 4, 0, 1}),
		match(ll, 6, guestMAC),
		match(nh, arpOffSHA, guestMAC),
		match(nh, arpOffTPA, e.IP.To4()),
		[]expr.Any{&expr.Payload{DestRegister: 2, Base: nh, Offset: arpOffSPA, Len: 4}},
		write(ll, 0, guestMAC),
		write(ll, 6, e.MAC),
		write(nh, arpOffOp, binaryutil.BigEndian.PutUint16(2)),
		write(nh, arpOffSHA, e.MAC),
		write(nh, arpOffSPA, e.IP.To4()),
		write(nh, arpOffTHA, guestMAC),
		[]expr.Any{&expr.Payload{OperationType: expr.PayloadWrite, SourceRegister: 2, Base: nh, Offset: arpOffTPA, Len: 4}},
		// google/nftables has no "fwd": "dup to tap0" then drop is the same, one copy later.
		[]expr.Any{
			&expr.Immediate{Register: 1, Data: binaryutil.NativeEndian.PutUint32(uint32(tapIndex))},
			&expr.Dup{RegDev: 1, IsRegDevSet: true},
		},
		drop(),
	)
}

// addGatewayARP answers the guest's ARP for entries in the netdev table NFTableName, on the
// tap's ingress, before the frame reaches the bridge. The tap exists from ADD on (the plugin
// makes it persistent before QEMU opens it), so the hook can be bound to it now.
func addGatewayARP(guestMAC net.HardwareAddr, entries []ARPEntry) error {
	tap, err := netlinksafe.LinkByName(TapName)
	if err != nil {
		return fmt.Errorf("find tap %s: %w", TapName, err)
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("open nftables: %w", err)
	}
	t := c.AddTable(&nftables.Table{Name: NFTableName, Family: nftables.TableFamilyNetdev})
	ch := c.AddChain(&nftables.Chain{
		Name: "gatewayarp", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookIngress, Priority: nftables.ChainPriorityFilter, Device: TapName,
	})
	for _, e := range entries {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: arpReplyRule(guestMAC, e, tap.Attrs().Index)})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("add gateway arp rules on %s: %w", TapName, err)
	}
	return nil
}
