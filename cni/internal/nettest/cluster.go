package nettest

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// Style is a simulated cluster network: the reference plugin that gives pods their IP, and the
// extra steps that turn its result into what a given CNI leaves in a pod.
type Style struct {
	Name string
	// Entry is the reference plugin's conflist entry.
	Entry func(c *Cluster) string
	// Shape rewires a pod after the reference plugin and before ours (nil: nothing to do).
	Shape func(t testing.TB, c *Cluster, pod ns.NetNS, res *current.Result) *current.Result
}

// LinkGateway is the gateway of Calico and of VPC CNIs.
const LinkGateway = "169.254.1.1"

// Styles are the three networks the module is tested on.
func Styles() []Style {
	return []Style{
		{Name: "bridge", Entry: (*Cluster).BridgeEntry},
		{Name: "calico", Entry: (*Cluster).PTPEntry, Shape: func(t testing.TB, c *Cluster, pod ns.NetNS, res *current.Result) *current.Result {
			return shapeLinkGateway(t, c, pod, res, false)
		}},
		{Name: "vpc", Entry: (*Cluster).PTPEntry, Shape: func(t testing.TB, c *Cluster, pod ns.NetNS, res *current.Result) *current.Result {
			return shapeLinkGateway(t, c, pod, res, true)
		}},
	}
}

// shapeLinkGateway gives the pod a /32 address behind 169.254.1.1. Calico-style: the host veth
// answers for it by proxy ARP. VPC-style: a permanent neighbour in the pod pins it to the host
// veth's MAC and the host answers nothing.
func shapeLinkGateway(t testing.TB, c *Cluster, pod ns.NetNS, res *current.Result, pinned bool) *current.Result {
	t.Helper()
	var hostVeth *current.Interface
	for _, i := range res.Interfaces {
		if i.Sandbox == "" {
			hostVeth = i
		}
	}
	if hostVeth == nil {
		t.Fatalf("no host interface in %+v", res)
	}
	ip := res.IPs[0].Address.IP.String()
	Run(t, pod, "ip", "-4", "route", "flush", "dev", "eth0")
	Run(t, pod, "ip", "-4", "addr", "flush", "dev", "eth0")
	Run(t, pod, "ip", "addr", "add", ip+"/32", "dev", "eth0")
	Run(t, pod, "ip", "route", "add", LinkGateway, "dev", "eth0", "scope", "link")
	Run(t, pod, "ip", "route", "add", "default", "via", LinkGateway, "dev", "eth0")
	if pinned {
		Run(t, pod, "ip", "neigh", "replace", LinkGateway, "lladdr", hostVeth.Mac, "dev", "eth0", "nud", "permanent")
	} else {
		Run(t, c.Host, "sysctl", "-qw", "net.ipv4.conf."+hostVeth.Name+".proxy_arp=1", "net.ipv4.neigh."+hostVeth.Name+".proxy_delay=0")
		// Proxy ARP answers only for an address the host routes elsewhere (Calico's node has a
		// default route; this host has none).
		Run(t, c.Host, "ip", "route", "replace", LinkGateway+"/32", "dev", "lo")
	}
	out := *res
	out.IPs = []*current.IPConfig{{Interface: res.IPs[0].Interface, Address: netIPNet(ip + "/32"), Gateway: parseIP(LinkGateway)}}
	return &out
}

// AddPod wires pod with the style's reference plugin, shapes it, then runs our plugin chained on
// that result (when ours is set). It returns our result (or the shaped one).
func (c *Cluster) AddPod(t testing.TB, style Style, p Pod, ours bool) (*current.Result, error) {
	t.Helper()
	chain := NewChain(t, c.Host, c.PluginDir, Conflist(style.Entry(c)))
	res, err := chain.Add(p)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		if ours {
			_, _ = c.runOurs(p, "DEL", res)
		}
		_ = chain.Del(p)
	})
	if style.Shape != nil {
		res = style.Shape(t, c, p.Netns, res)
	}
	if !ours {
		return res, nil
	}
	out, err := c.runOurs(p, "ADD", res)
	if err != nil {
		return nil, err
	}
	r := &current.Result{}
	if err := json.Unmarshal(out, r); err != nil {
		return nil, fmt.Errorf("parse our result: %w: %s", err, out)
	}
	return r, nil
}

// AddOurs runs our ADD alone for p with prev as prevResult.
func (c *Cluster) AddOurs(p Pod, prev *current.Result) (*current.Result, error) {
	out, err := c.runOurs(p, "ADD", prev)
	if err != nil {
		return nil, err
	}
	r := &current.Result{}
	if err := json.Unmarshal(out, r); err != nil {
		return nil, fmt.Errorf("parse our result: %w: %s", err, out)
	}
	return r, nil
}

// DelOurs runs our DEL for p with prev as prevResult.
func (c *Cluster) DelOurs(p Pod, prev *current.Result) error {
	_, err := c.runOurs(p, "DEL", prev)
	return err
}

// CheckOurs runs our CHECK for p with prev as prevResult.
func (c *Cluster) CheckOurs(p Pod, prev *current.Result) error {
	_, err := c.runOurs(p, "CHECK", prev)
	return err
}

func (c *Cluster) runOurs(p Pod, command string, prev *current.Result) ([]byte, error) {
	conf := map[string]any{}
	_ = json.Unmarshal([]byte(c.Ours()), &conf)
	conf["cniVersion"] = "1.1.0"
	conf["name"] = "svtest"
	conf["prevResult"] = prev
	conf["runtimeConfig"] = map[string]any{"io.kubernetes.cri.pod-annotations": p.Annotations}
	var args []string
	for _, kv := range p.RuntimeConf().Args {
		args = append(args, kv[0]+"="+kv[1])
	}
	netns := ""
	if p.Netns != nil {
		netns = p.Netns.Path()
	}
	var out []byte
	var err error
	runErr := c.Host.Do(func(ns.NetNS) error {
		out, err = ExecPlugin(c.PluginDir, "slimvirt", command, netns, p.ContainerID, strings.Join(args, ";"), MustJSON(conf))
		return nil
	})
	if runErr != nil {
		return nil, runErr
	}
	return out, err
}

// PodIP is the IPv4 address of ifName in netns.
func PodIP(t testing.TB, netns ns.NetNS, ifName string) string {
	t.Helper()
	var ip string
	err := netns.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(ifName)
		if err != nil {
			return err
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			return fmt.Errorf("list addresses of %s: %w", ifName, err)
		}
		if len(addrs) == 0 {
			return fmt.Errorf("no address on %s", ifName)
		}
		ip = addrs[0].IP.String()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return ip
}

func netIPNet(s string) (n net.IPNet) {
	ip, ipn, _ := net.ParseCIDR(s)
	ipn.IP = ip
	return *ipn
}

func parseIP(s string) net.IP { return net.ParseIP(s) }
