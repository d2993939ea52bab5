// Package egress decides which addresses an import may connect to. The importer runs in the
// node's network namespace as root, so a URL a tenant writes (or any redirect it leads to, or
// a DNS name that resolves differently on the second lookup) could otherwise reach what only
// the node may reach: the kubelet on 127.0.0.1:10250, cloud metadata on 169.254.169.254, any
// service bound to the node's own addresses. The check runs at connect time, on the address
// actually dialled, through a net.Dialer Control hook.
package egress

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"time"
)

// Refused is a connection the policy does not allow. Retrying cannot help: the URL, or the
// redirect it leads to, must change.
type Refused struct {
	Addr   netip.Addr
	Reason string
}

func (e *Refused) Error() string { return fmt.Sprintf("import refused: %s %s", e.Addr, e.Reason) }

// Permanent tells the driver not to retry.
func (e *Refused) Permanent() bool { return true }

// Policy is the set of addresses an import may not connect to: the built-in rules (loopback,
// link-local, unspecified, multicast, broadcast, every address of the node's interfaces), an
// admin deny list that refuses more, and an admin allow list that re-permits addresses the
// built-in rules refuse (a lab whose image server runs on the node). The deny list wins over
// the allow list. The zero Policy applies the built-in rules only.
type Policy struct {
	Allow []netip.Prefix
	Deny  []netip.Prefix
	// Interfaces lists the node's addresses; nil means net.InterfaceAddrs. They are read at
	// every dial, so an address the node gains later is refused too.
	Interfaces func() ([]net.Addr, error)
}

// ParseCIDRs reads a comma separated list of CIDRs (a bare address is a /32 or /128).
func ParseCIDRs(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			a, aerr := netip.ParseAddr(f)
			if aerr != nil {
				return nil, fmt.Errorf("parse CIDR %q: %w", f, err)
			}
			p = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		}
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func contains(list []netip.Prefix, a netip.Addr) (netip.Prefix, bool) {
	for _, p := range list {
		if p.Contains(a) {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

var (
	thisNetwork = netip.MustParsePrefix("0.0.0.0/8")
	broadcast   = netip.MustParseAddr("255.255.255.255")
)

// Check says whether an import may connect to a.
func (p *Policy) Check(a netip.Addr) error {
	a = a.Unmap().WithZone("")
	if pr, ok := contains(p.Deny, a); ok {
		return &Refused{Addr: a, Reason: fmt.Sprintf("is in %s, which the cluster admin denies to imports", pr)}
	}
	if _, ok := contains(p.Allow, a); ok {
		return nil
	}
	switch {
	case !a.IsValid():
		return &Refused{Addr: a, Reason: "is not an address"}
	case a.IsLoopback():
		return &Refused{Addr: a, Reason: "is a loopback address of the node"}
	case a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast():
		return &Refused{Addr: a, Reason: "is a link-local address (the node's metadata and neighbours)"}
	case a.IsUnspecified() || thisNetwork.Contains(a):
		return &Refused{Addr: a, Reason: "is an unspecified address (it reaches the node itself)"}
	case a.IsMulticast():
		return &Refused{Addr: a, Reason: "is a multicast address"}
	case a == broadcast:
		return &Refused{Addr: a, Reason: "is the broadcast address"}
	}
	list := p.Interfaces
	if list == nil {
		list = net.InterfaceAddrs
	}
	addrs, err := list()
	if err != nil {
		return fmt.Errorf("list the node's addresses: %w", err)
	}
	for _, na := range addrs {
		ipn, ok := na.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(ipn.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if ip == a {
			return &Refused{Addr: a, Reason: "is an address of the node"}
		}
		if ones, bits := ipn.Mask.Size(); ip.Is4() && bits == 32 && ones < 31 && a == directedBroadcast(ip, ones) {
			return &Refused{Addr: a, Reason: "is the broadcast address of a network of the node"}
		}
	}
	return nil
}

func directedBroadcast(ip netip.Addr, ones int) netip.Addr {
	b := ip.As4()
	for i := ones; i < 32; i++ {
		b[i/8] |= 1 << (7 - i%8)
	}
	return netip.AddrFrom4(b)
}

// Control is a net.Dialer Control hook: it refuses the connection before it is made.
func (p *Policy) Control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("parse dial address %q: %w", address, err)
	}
	return p.Check(ap.Addr())
}

// Dialer returns a dialer that checks every address it connects to.
func (p *Policy) Dialer() *net.Dialer {
	return &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second, Control: p.Control}
}

// AsRefused finds a refusal in err's chain.
func AsRefused(err error) (*Refused, bool) {
	var r *Refused
	ok := errors.As(err, &r)
	return r, ok
}
