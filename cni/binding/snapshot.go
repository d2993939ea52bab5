package binding

import (
	"errors"
	"fmt"
	"net"
	"sort"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Snapshot is the pod NIC as the cluster CNI left it: what the dummy twin copies and what DEL or
// a failed ADD restores. It is stored in the plugin's state file, so it is plain data.
type Snapshot struct {
	MAC       string     `json:"mac"`
	MTU       int        `json:"mtu"`
	Addrs     []string   `json:"addrs"`
	Routes    []Route    `json:"routes,omitempty"`
	Neighbors []Neighbor `json:"neighbors,omitempty"`
}

// Route is one route of the pod NIC in the main table.
type Route struct {
	Dst      string `json:"dst"` // CIDR; 0.0.0.0/0 for the default route
	Gw       string `json:"gw,omitempty"`
	Src      string `json:"src,omitempty"`
	Scope    uint8  `json:"scope"`
	Priority int    `json:"priority,omitempty"`
	OnLink   bool   `json:"onLink,omitempty"`
}

// Neighbor is a permanent neighbour entry (VPC-style CNIs pin their gateway this way).
type Neighbor struct {
	IP  string `json:"ip"`
	MAC string `json:"mac"`
}

// TakeSnapshot records link's MAC, MTU, IPv4 and global IPv6 addresses, its IPv4 routes in the
// main table (not the prefix routes the kernel makes from addresses) and its permanent IPv4
// neighbours.
func TakeSnapshot(link netlink.Link) (*Snapshot, error) {
	name := link.Attrs().Name
	s := &Snapshot{MAC: link.Attrs().HardwareAddr.String(), MTU: link.Attrs().MTU}
	addrs, err := netlinksafe.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list addresses of %s: %w", name, err)
	}
	for _, a := range addrs {
		if a.IP.To4() == nil && (a.Scope != unix.RT_SCOPE_UNIVERSE || a.IP.IsLinkLocalUnicast()) {
			continue
		}
		s.Addrs = append(s.Addrs, a.IPNet.String())
	}
	routes, err := netlinksafe.RouteListFiltered(netlink.FAMILY_V4,
		&netlink.Route{LinkIndex: link.Attrs().Index, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes of %s: %w", name, err)
	}
	for _, r := range routes {
		if r.Protocol == unix.RTPROT_KERNEL {
			continue
		}
		rt := Route{Dst: "0.0.0.0/0", Scope: uint8(r.Scope), Priority: r.Priority, OnLink: r.Flags&unix.RTNH_F_ONLINK != 0}
		if r.Dst != nil {
			rt.Dst = r.Dst.String()
		}
		if r.Gw != nil {
			rt.Gw = r.Gw.String()
		}
		if r.Src != nil {
			rt.Src = r.Src.String()
		}
		s.Routes = append(s.Routes, rt)
	}
	neighs, err := netlink.NeighList(link.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list neighbours of %s: %w", name, err)
	}
	for _, n := range neighs {
		if n.State&netlink.NUD_PERMANENT == 0 || n.IP == nil || len(n.HardwareAddr) == 0 {
			continue
		}
		s.Neighbors = append(s.Neighbors, Neighbor{IP: n.IP.String(), MAC: n.HardwareAddr.String()})
	}
	return s, nil
}

// Apply gives link the snapshot's addresses, routes and neighbours (MAC and MTU are set by the
// caller, which knows whether the link is new). Entries that already exist are kept.
func (s *Snapshot) Apply(link netlink.Link) error {
	name := link.Attrs().Name
	for _, a := range s.Addrs {
		addr, err := netlink.ParseAddr(a)
		if err != nil {
			return fmt.Errorf("parse address %s: %w", a, err)
		}
		if err := netlink.AddrAdd(link, addr); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add address %s to %s: %w", a, name, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	// Routes without a gateway first: a gateway route needs the link route to its gateway.
	routes := append([]Route(nil), s.Routes...)
	sort.SliceStable(routes, func(i, j int) bool { return routes[i].Gw == "" && routes[j].Gw != "" })
	for _, r := range routes {
		nr, err := r.netlink(link.Attrs().Index)
		if err != nil {
			return err
		}
		if err := netlink.RouteAdd(nr); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add route %s via %q to %s: %w", r.Dst, r.Gw, name, err)
		}
	}
	for _, n := range s.Neighbors {
		mac, err := net.ParseMAC(n.MAC)
		if err != nil {
			return fmt.Errorf("parse neighbour mac %s: %w", n.MAC, err)
		}
		err = netlink.NeighSet(&netlink.Neigh{
			LinkIndex: link.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
			IP: net.ParseIP(n.IP), HardwareAddr: mac,
		})
		if err != nil {
			return fmt.Errorf("add neighbour %s to %s: %w", n.IP, name, err)
		}
	}
	return nil
}

func (r Route) netlink(linkIndex int) (*netlink.Route, error) {
	_, dst, err := net.ParseCIDR(r.Dst)
	if err != nil {
		return nil, fmt.Errorf("parse route destination %s: %w", r.Dst, err)
	}
	nr := &netlink.Route{LinkIndex: linkIndex, Scope: netlink.Scope(r.Scope), Priority: r.Priority, Table: unix.RT_TABLE_MAIN}
	if ones, _ := dst.Mask.Size(); ones > 0 || !dst.IP.IsUnspecified() {
		nr.Dst = dst
	}
	if r.Gw != "" {
		nr.Gw = net.ParseIP(r.Gw)
	}
	if r.Src != "" {
		nr.Src = net.ParseIP(r.Src)
	}
	if r.OnLink {
		nr.Flags = unix.RTNH_F_ONLINK
	}
	return nr, nil
}

// IPv4 returns the first IPv4 address of the snapshot.
func (s *Snapshot) IPv4() (*net.IPNet, error) {
	for _, a := range s.Addrs {
		ip, n, err := net.ParseCIDR(a)
		if err == nil && ip.To4() != nil {
			n.IP = ip.To4()
			return n, nil
		}
	}
	return nil, errors.New("the pod interface has no IPv4 address")
}
