// Package vmnet is phase 2 of the slimvirt network binding, run by the launcher inside the
// pod's netns as an ordinary process: Discover reads what the CNI plugin left there, Serve runs
// the VM's one-lease DHCP server. It needs CAP_NET_BIND_SERVICE (port 67) and nothing else: the
// gateway ARP answers are the kernel's, set up by the plugin (cni/binding).
package vmnet

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strings"

	"github.com/containernetworking/plugins/pkg/netlinksafe"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	"github.com/slimvirt/slimvirt/cni/binding"
	"github.com/slimvirt/slimvirt/cni/netconf"
)

// PodInterface is the pod interface the plugin binds (the runtime's CNI_IFNAME).
const PodInterface = "eth0"

// DefaultResolvConf is where the pod's DNS settings are.
const DefaultResolvConf = "/etc/resolv.conf"

// Plan is everything the launcher needs to give the VM its network.
type Plan struct {
	Binding    launcherpod.Binding
	BridgeName string
	TapName    string
	GuestMAC   net.HardwareAddr
	// GuestIP is the address (and mask) the DHCP lease hands out.
	GuestIP *net.IPNet
	// Gateway is the router (option 3); nil when the pod has no gateway.
	Gateway net.IP
	MTU     int
	// Routes go to the guest as option 121, default route last.
	Routes []Route
	DNS    []net.IP
	Search []string
	// ServerIP is the DHCP server identifier, an address of the bridge.
	ServerIP  net.IP
	ServerMAC net.HardwareAddr
}

// Route is one classless route; a nil Gateway means on-link.
type Route struct {
	Dst     *net.IPNet
	Gateway net.IP
}

// Discover reads the binding the plugin left in the current netns, with DNS from the pod's
// /etc/resolv.conf.
func Discover(iface launcherpod.Interface) (*Plan, error) {
	return DiscoverWith(iface, PodInterface, DefaultResolvConf)
}

// DiscoverWith is Discover for pod interface ifName and DNS settings from resolvConf (a
// debugging session on a node reads the pod's file from the host).
func DiscoverWith(iface launcherpod.Interface, ifName, resolvConf string) (*Plan, error) {
	brName := binding.BridgeName(ifName)
	br, err := netlinksafe.LinkByName(brName)
	if err != nil {
		return nil, fmt.Errorf("find bridge %s (did the slimvirt CNI plugin run?): %w", brName, err)
	}
	rec, err := binding.DecodeRecord(br.Attrs().Alias)
	if err != nil {
		return nil, fmt.Errorf("read binding of %s: %w", brName, err)
	}
	if iface.Binding != "" && iface.Binding != rec.Binding {
		return nil, fmt.Errorf("interface %q wants binding %s, the pod has %s", iface.Name, iface.Binding, rec.Binding)
	}
	p := &Plan{Binding: rec.Binding, BridgeName: brName, TapName: binding.TapName, ServerMAC: br.Attrs().HardwareAddr}
	p.GuestMAC, _ = net.ParseMAC(rec.GuestMAC)
	if iface.MAC != "" {
		want, err := netconf.GuestMAC(iface.MAC)
		if err != nil {
			return nil, err
		}
		if want.String() != p.GuestMAC.String() {
			return nil, fmt.Errorf("interface %q wants mac %s, the plugin set up %s", iface.Name, want, p.GuestMAC)
		}
	}
	switch rec.Binding {
	case launcherpod.BindingMasquerade:
		err = p.discoverMasquerade(ifName, rec)
	default:
		err = p.discoverBridge(ifName)
	}
	if err != nil {
		return nil, err
	}
	p.DNS, p.Search, err = ParseResolvConf(resolvConf)
	if err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Plan) discoverMasquerade(ifName string, rec binding.Record) error {
	vmnet, err := netconf.VMNetwork(rec.VMNetwork)
	if err != nil {
		return err
	}
	pod, err := netlinksafe.LinkByName(ifName)
	if err != nil {
		return fmt.Errorf("find pod interface %s: %w", ifName, err)
	}
	p.MTU = pod.Attrs().MTU
	p.GuestIP = &net.IPNet{IP: vmnet.Guest, Mask: vmnet.Network.Mask}
	p.Gateway = vmnet.Gateway
	p.ServerIP = vmnet.Gateway
	p.Routes = []Route{{Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, Gateway: vmnet.Gateway}}
	return nil
}

func (p *Plan) discoverBridge(ifName string) error {
	twin, err := netlinksafe.LinkByName(ifName)
	if err != nil {
		return fmt.Errorf("find pod interface %s: %w", ifName, err)
	}
	snap, err := binding.TakeSnapshot(twin)
	if err != nil {
		return err
	}
	p.MTU = snap.MTU
	if p.GuestIP, err = snap.IPv4(); err != nil {
		return err
	}
	p.ServerIP = net.ParseIP(binding.ServerIP).To4()
	for _, r := range snap.Routes {
		_, dst, err := net.ParseCIDR(r.Dst)
		if err != nil {
			continue
		}
		rt := Route{Dst: dst}
		if r.Gw != "" {
			rt.Gateway = net.ParseIP(r.Gw).To4()
			// Option 3 is the default route's next hop, else the first gateway seen.
			if ones, _ := dst.Mask.Size(); ones == 0 || p.Gateway == nil {
				p.Gateway = rt.Gateway
			}
		}
		p.Routes = append(p.Routes, rt)
	}
	// The server identifier must be reachable for unicast renewals (KubeVirt issue 4678): an
	// on-link route to it (its ARP is answered like the pinned gateways', binding.GatewayARP).
	p.Routes = append(p.Routes, Route{Dst: &net.IPNet{IP: p.ServerIP, Mask: net.CIDRMask(32, 32)}})
	sortRoutes(p.Routes)
	return nil
}

// sortRoutes puts on-link routes first (a gateway route needs them) and the default route last
// (some clients drop a default route that comes before the others: KubeVirt issue 1434).
func sortRoutes(rs []Route) {
	rank := func(r Route) int {
		ones, _ := r.Dst.Mask.Size()
		switch {
		case ones == 0:
			return 2
		case r.Gateway != nil:
			return 1
		}
		return 0
	}
	sort.SliceStable(rs, func(i, j int) bool { return rank(rs[i]) < rank(rs[j]) })
}

// ParseResolvConf returns the IPv4 nameservers and the search domains of a resolv.conf. A
// missing file gives none.
func ParseResolvConf(path string) (dns []net.IP, search []string, err error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		switch fields[0] {
		case "nameserver":
			if ip := net.ParseIP(fields[1]).To4(); ip != nil {
				dns = append(dns, ip)
			}
		case "search", "domain":
			search = fields[1:]
		}
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", path, err)
	}
	return dns, search, nil
}
