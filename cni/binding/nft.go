package binding

import (
	"fmt"
	"net"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/slimvirt/slimvirt/api/launcherpod"
)

// The plugin owns one table per family in the pod netns, all named NFTableName: "bridge" for
// anti-spoofing, "ip" for what the VM may reach of the pod itself and for masquerade NAT,
// "netdev" for the gateway ARP answers on the tap. Deleting the tables undoes all its rules.

func ifname(name string) []byte {
	b := make([]byte, 16)
	copy(b, name)
	return b
}

func matchIIF(name string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(name)},
	}
}

func matchOIF(name string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(name)},
	}
}

func matchProto(etherType uint16) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(etherType)},
	}
}

// loadNotIn loads len bytes at offset of base and goes on only if they equal none of values.
func loadNotIn(base expr.PayloadBase, offset, length uint32, values ...[]byte) []expr.Any {
	e := []expr.Any{&expr.Payload{DestRegister: 1, Base: base, Offset: offset, Len: length}}
	for _, v := range values {
		e = append(e, &expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: v})
	}
	return e
}

func concat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func drop() []expr.Any { return []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}} }

func matchEtherType(etherType uint16) []expr.Any {
	return match(expr.PayloadBaseLLHeader, 12, binaryutil.BigEndian.PutUint16(etherType))
}

// udpPorts matches an IPv4 UDP datagram from port sport to port dport (0: any). A fragment
// other than the first has no UDP header and matches nothing.
func udpPorts(sport, dport uint16) []expr.Any {
	e := match(expr.PayloadBaseNetworkHeader, 9, []byte{unix.IPPROTO_UDP})
	if sport != 0 {
		e = append(e, match(expr.PayloadBaseTransportHeader, 0, binaryutil.BigEndian.PutUint16(sport))...)
	}
	if dport != 0 {
		e = append(e, match(expr.PayloadBaseTransportHeader, 2, binaryutil.BigEndian.PutUint16(dport))...)
	}
	return e
}

// spoofCheckRules let the VM's tap send only from the VM's MAC and IP, as the bridge plugin's
// macspoofchk does for MACs, and only untagged IPv4 and ARP: the ether type is read from the
// frame (a VLAN tag the kernel moved out of the frame is read back), so an 802.1Q or 802.1ad
// frame never reaches the address checks nor leaves the pod. Source 0.0.0.0 is for a client
// without an address: only DHCP to the server (broadcast or serverIP), and ARP probes.
func spoofCheckRules(guestMAC net.HardwareAddr, guestIP net.IP) [][]expr.Any {
	ip := guestIP.To4()
	zero := net.IPv4zero.To4()
	tap := matchIIF(TapName)
	etherType := []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 12, Len: 2}}
	return [][]expr.Any{
		concat(tap, loadNotIn(expr.PayloadBaseLLHeader, 6, 6, guestMAC), drop()),
		// Only IPv4 and ARP: the binding carries nothing else, so nothing else can be spoofed.
		concat(tap, etherType, []expr.Any{
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.BigEndian.PutUint16(unix.ETH_P_IP)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.BigEndian.PutUint16(unix.ETH_P_ARP)},
		}, drop()),
		concat(tap, matchEtherType(unix.ETH_P_IP), loadNotIn(expr.PayloadBaseNetworkHeader, 12, 4, ip, zero), drop()),
		concat(tap, matchEtherType(unix.ETH_P_IP), match(expr.PayloadBaseNetworkHeader, 12, zero),
			[]expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: unspecifiedChain}}),
		concat(tap, matchEtherType(unix.ETH_P_ARP), loadNotIn(expr.PayloadBaseNetworkHeader, 8, 6, guestMAC), drop()),
		concat(tap, matchEtherType(unix.ETH_P_ARP), loadNotIn(expr.PayloadBaseNetworkHeader, 14, 4, ip, zero), drop()),
	}
}

// unspecifiedChain holds what a VM may send from 0.0.0.0.
const unspecifiedChain = "unspecified"

func unspecifiedRules(serverIP net.IP) [][]expr.Any {
	dhcp := udpPorts(68, 67)
	ret := []expr.Any{&expr.Verdict{Kind: expr.VerdictReturn}}
	return [][]expr.Any{
		concat(dhcp, match(expr.PayloadBaseNetworkHeader, 16, net.IPv4bcast.To4()), ret),
		concat(dhcp, match(expr.PayloadBaseNetworkHeader, 16, serverIP.To4()), ret),
		drop(),
	}
}

// dhcpIsolationRules keep DHCP between the VM and its launcher: the VM's requests do not leak to
// the cluster network, and no DHCP server there (a rogue pod on the same segment) can answer it.
func dhcpIsolationRules(nic string) [][]expr.Any {
	return [][]expr.Any{
		concat(matchIIF(TapName), matchOIF(nic), matchProto(unix.ETH_P_IP), udpPorts(0, 67), drop()),
		concat(matchIIF(nic), matchOIF(TapName), matchProto(unix.ETH_P_IP), udpPorts(67, 0), drop()),
	}
}

// addSpoofCheck installs the bridge table; serverIP is the DHCP server a VM without an address
// may reach.
func addSpoofCheck(att *Attachment, serverIP net.IP) error {
	mac, err := net.ParseMAC(att.GuestMAC)
	if err != nil {
		return fmt.Errorf("parse guest mac %s: %w", att.GuestMAC, err)
	}
	ip := net.ParseIP(att.GuestIP)
	if ip == nil || ip.To4() == nil {
		return fmt.Errorf("guest ip %q is not IPv4", att.GuestIP)
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("open nftables: %w", err)
	}
	t := c.AddTable(&nftables.Table{Name: NFTableName, Family: nftables.TableFamilyBridge})
	ch := c.AddChain(&nftables.Chain{
		Name: "spoofcheck", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRef(-300),
	})
	unspec := c.AddChain(&nftables.Chain{Name: unspecifiedChain, Table: t})
	for _, r := range unspecifiedRules(serverIP) {
		c.AddRule(&nftables.Rule{Table: t, Chain: unspec, Exprs: r})
	}
	for _, r := range spoofCheckRules(mac, ip) {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: r})
	}
	if att.Binding == launcherpod.BindingBridge {
		fwd := c.AddChain(&nftables.Chain{
			Name: "dhcp", Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityRef(-300),
		})
		for _, r := range dhcpIsolationRules(NICName(att.IfName)) {
			c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: r})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("add anti-spoofing rules: %w", err)
	}
	return nil
}

// podGuardRules keep the VM away from the pod's own services: nothing from the bridge reaches
// 127.0.0.0/8 (the masquerade binding turns route_localnet on for the pod's localhost port
// forwarding, which would let the guest reach the launcher's loopback listeners), and of what
// the pod itself would take in from the bridge only the DHCP server, a ping to local (the
// guest's gateway or server identifier) and the replies to the pod's own connections pass.
func podGuardRules(bridge string, local net.IP) (prerouting, input [][]expr.Any) {
	br := matchIIF(bridge)
	accept := []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}
	prerouting = [][]expr.Any{
		concat(br, match(expr.PayloadBaseNetworkHeader, 16, []byte{127}), drop()),
	}
	input = [][]expr.Any{
		concat(br, []expr.Any{
			&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
				Xor:  binaryutil.NativeEndian.PutUint32(0)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
		}, accept),
		concat(br, udpPorts(68, 67), accept),
		concat(br, match(expr.PayloadBaseNetworkHeader, 9, []byte{unix.IPPROTO_ICMP}),
			match(expr.PayloadBaseNetworkHeader, 16, local.To4()),
			match(expr.PayloadBaseTransportHeader, 0, []byte{8}), accept),
		concat(br, drop()),
	}
	return prerouting, input
}

// addPodGuard installs podGuardRules in the ip table.
func addPodGuard(bridge string, local net.IP) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("open nftables: %w", err)
	}
	t := c.AddTable(&nftables.Table{Name: NFTableName, Family: nftables.TableFamilyIPv4})
	pre := c.AddChain(&nftables.Chain{Name: "guardprerouting", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw})
	in := c.AddChain(&nftables.Chain{Name: "guardinput", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter})
	preRules, inRules := podGuardRules(bridge, local)
	for _, r := range preRules {
		c.AddRule(&nftables.Rule{Table: t, Chain: pre, Exprs: r})
	}
	for _, r := range inRules {
		c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: r})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("add rules guarding the pod from the vm: %w", err)
	}
	return nil
}

func dnatTo(ip net.IP) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: ip.To4()},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1},
	}
}

func snatTo(ip net.IP) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: ip.To4()},
		&expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1},
	}
}

func matchPort(p launcherpod.Port) []expr.Any {
	proto := byte(unix.IPPROTO_TCP)
	if p.Protocol == "UDP" {
		proto = unix.IPPROTO_UDP
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(uint16(p.Port))},
	}
}

func matchAddr(offset uint32, ip net.IP) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ip.To4()},
	}
}

// addMasqueradeNAT writes KubeVirt's masquerade rules: inbound on the pod NIC DNATed to the VM
// (only the listed ports, all when none), the VM's traffic masqueraded out, and the pod's own
// localhost connections to those ports sent to the VM with the gateway as source.
func addMasqueradeNAT(podIf, bridge string, gw, vm net.IP, ports []launcherpod.Port) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("open nftables: %w", err)
	}
	t := c.AddTable(&nftables.Table{Name: NFTableName, Family: nftables.TableFamilyIPv4})
	pre := c.AddChain(&nftables.Chain{Name: "prerouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest})
	post := c.AddChain(&nftables.Chain{Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
	out := c.AddChain(&nftables.Chain{Name: "output", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest})
	preIn := c.AddChain(&nftables.Chain{Name: "PREINBOUND", Table: t})
	postIn := c.AddChain(&nftables.Chain{Name: "POSTINBOUND", Table: t})
	loopback := net.IPv4(127, 0, 0, 1)

	c.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: concat(matchAddr(12, vm), []expr.Any{&expr.Masq{}})})
	c.AddRule(&nftables.Rule{Table: t, Chain: pre, Exprs: concat(matchIIF(podIf), []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: preIn.Name}})})
	c.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: concat(matchOIF(bridge), []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: postIn.Name}})})
	c.AddRule(&nftables.Rule{Table: t, Chain: postIn, Exprs: concat(matchAddr(12, loopback), snatTo(gw))})
	if len(ports) == 0 {
		c.AddRule(&nftables.Rule{Table: t, Chain: preIn, Exprs: dnatTo(vm)})
		c.AddRule(&nftables.Rule{Table: t, Chain: out, Exprs: concat(matchAddr(16, loopback), dnatTo(vm))})
	}
	for _, p := range ports {
		c.AddRule(&nftables.Rule{Table: t, Chain: preIn, Exprs: concat(matchPort(p), dnatTo(vm))})
		c.AddRule(&nftables.Rule{Table: t, Chain: out, Exprs: concat(matchAddr(16, loopback), matchPort(p), dnatTo(vm))})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("add masquerade rules: %w", err)
	}
	return nil
}

// deleteTables removes the plugin's tables; absent tables are fine. The tables are freed after an
// RCU grace period, and closing the netlink socket waits for that: the caller calls closeTables
// once its other work is done.
func deleteTables() (closeTables func() error, err error) {
	c, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return func() error { return nil }, fmt.Errorf("open nftables: %w", err)
	}
	closeTables = func() error {
		if err := c.CloseLasting(); err != nil {
			return fmt.Errorf("close nftables: %w", err)
		}
		return nil
	}
	tables, err := c.ListTables()
	if err != nil {
		return closeTables, fmt.Errorf("list nftables tables: %w", err)
	}
	found := false
	for _, t := range tables {
		switch t.Family {
		case nftables.TableFamilyBridge, nftables.TableFamilyIPv4, nftables.TableFamilyNetdev:
			if t.Name == NFTableName {
				c.DelTable(t)
				found = true
			}
		}
	}
	if !found {
		return closeTables, nil
	}
	if err := c.Flush(); err != nil {
		return closeTables, fmt.Errorf("delete nftables tables: %w", err)
	}
	return closeTables, nil
}

// hasTable says whether the plugin's table of family exists (for CHECK).
func hasTable(fam nftables.TableFamily) (bool, error) {
	c, err := nftables.New()
	if err != nil {
		return false, fmt.Errorf("open nftables: %w", err)
	}
	tables, err := c.ListTablesOfFamily(fam)
	if err != nil {
		return false, fmt.Errorf("list nftables tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == NFTableName {
			return true, nil
		}
	}
	return false, nil
}
