// Package testcni is the local cluster's stand-in for the cluster CNIs whose gateway handling
// slimvirt has to cope with: point-to-point veths where the pod's only gateway is the link-local
// 169.254.1.1. Mode "calico" answers the pod's ARP for it by proxy ARP on the node-side veth (as
// Calico does); mode "vpc" pins it with a permanent neighbour entry inside the pod and the node
// does not answer (as the AWS VPC CNI does). Mode "record" is a chained pass-through that logs
// what the runtime hands a plugin (config, runtimeConfig, pod annotations) to a file.
package testcni

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/utils/sysctl"
	"github.com/vishvananda/netlink"
)

// Modes of the plugin.
const (
	ModeCalico = "calico"
	ModeVPC    = "vpc"
	ModeRecord = "record"
)

// GatewayIP is the pod's only gateway in the point-to-point modes.
const GatewayIP = "169.254.1.1"

func gatewayIP() net.IP { return net.ParseIP(GatewayIP).To4() }

// calicoHostMAC is the MAC Calico gives every node-side veth.
const calicoHostMAC = "ee:ee:ee:ee:ee:ee"

// NetConf is the plugin's entry in the conflist.
type NetConf struct {
	types.NetConf
	Mode string `json:"mode"`
	// File receives one JSON line per call in record mode.
	File string `json:"file,omitempty"`
	MTU  int    `json:"mtu,omitempty"`
}

// ParseConfig reads and validates the plugin's config.
func ParseConfig(stdin []byte) (*NetConf, error) {
	conf := &NetConf{}
	if err := json.Unmarshal(stdin, conf); err != nil {
		return nil, fmt.Errorf("parse network config: %w", err)
	}
	switch conf.Mode {
	case ModeCalico, ModeVPC:
		if conf.IPAM.Type == "" {
			return nil, fmt.Errorf("mode %s needs an ipam section", conf.Mode)
		}
	case ModeRecord:
		if conf.File == "" {
			return nil, errors.New("mode record needs a file")
		}
	default:
		return nil, fmt.Errorf("mode %q: want calico, vpc or record", conf.Mode)
	}
	if conf.MTU == 0 {
		conf.MTU = 1500
	}
	return conf, nil
}

// HostVethName is the node-side veth's name for a container interface: a fixed prefix per
// mode and a hash, at most 15 characters like every Linux interface name.
func HostVethName(mode, containerID, ifName string) string {
	sum := sha256.Sum256([]byte(containerID + "/" + ifName))
	prefix := "cali"
	if mode == ModeVPC {
		prefix = "eni"
	}
	return prefix + hex.EncodeToString(sum[:])[:11]
}

// Add creates the point-to-point link (or records the call) and prints the result.
func Add(args *skel.CmdArgs) error {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	if conf.Mode == ModeRecord {
		return record(conf, "ADD", args)
	}
	r, err := invoke.DelegateAdd(context.TODO(), conf.IPAM.Type, args.StdinData, nil)
	if err != nil {
		return fmt.Errorf("ipam %s add: %w", conf.IPAM.Type, err)
	}
	ok := false
	defer func() {
		if !ok {
			_ = invoke.DelegateDel(context.TODO(), conf.IPAM.Type, args.StdinData, nil)
		}
	}()
	res, err := current.NewResultFromResult(r)
	if err != nil {
		return fmt.Errorf("convert ipam result: %w", err)
	}
	if len(res.IPs) != 1 || res.IPs[0].Address.IP.To4() == nil {
		return fmt.Errorf("ipam %s gave %d addresses, want one IPv4", conf.IPAM.Type, len(res.IPs))
	}
	podIP := net.IPNet{IP: res.IPs[0].Address.IP.To4(), Mask: net.CIDRMask(32, 32)}

	netns, err := ns.GetNS(args.Netns)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", args.Netns, err)
	}
	defer netns.Close()
	hostNS, err := ns.GetCurrentNS()
	if err != nil {
		return fmt.Errorf("open the node's netns: %w", err)
	}
	defer hostNS.Close()

	hostName := HostVethName(conf.Mode, args.ContainerID, args.IfName)
	var hostIf, contIf net.Interface
	err = netns.Do(func(ns.NetNS) error {
		var err error
		contIf, err = makeVeth(args.IfName, hostName, conf.MTU, hostNS)
		return err
	})
	if err != nil {
		return fmt.Errorf("create veth %s/%s: %w", hostName, args.IfName, err)
	}
	defer func() {
		if !ok {
			_ = delLink(hostName)
		}
	}()
	if hostIf, err = setupHostSide(conf.Mode, hostName, podIP); err != nil {
		return err
	}
	err = netns.Do(func(ns.NetNS) error { return setupPodSide(conf.Mode, args.IfName, podIP, hostIf.HardwareAddr) })
	if err != nil {
		return err
	}

	res.Interfaces = []*current.Interface{
		{Name: hostIf.Name, Mac: hostIf.HardwareAddr.String()},
		{Name: contIf.Name, Mac: contIf.HardwareAddr.String(), Sandbox: args.Netns},
	}
	res.IPs[0].Interface = current.Int(1)
	res.IPs[0].Address = podIP
	res.IPs[0].Gateway = gatewayIP()
	res.Routes = []*types.Route{{Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, GW: gatewayIP()}}
	ok = true
	return types.PrintResult(res, conf.CNIVersion)
}

// makeVeth creates the pair from inside the pod's netns, moves the peer to the node's, and
// sets both up. It returns the pod side.
func makeVeth(podName, hostName string, mtu int, hostNS ns.NetNS) (net.Interface, error) {
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: podName, MTU: mtu},
		PeerName:      hostName,
		PeerNamespace: netlink.NsFd(int(hostNS.Fd())),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return net.Interface{}, fmt.Errorf("add veth %s: %w", podName, err)
	}
	link, err := netlinksafe.LinkByName(podName)
	if err != nil {
		return net.Interface{}, fmt.Errorf("find %s: %w", podName, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return net.Interface{}, fmt.Errorf("set %s up: %w", podName, err)
	}
	err = hostNS.Do(func(ns.NetNS) error {
		host, err := netlinksafe.LinkByName(hostName)
		if err != nil {
			return fmt.Errorf("find %s: %w", hostName, err)
		}
		return netlink.LinkSetUp(host)
	})
	if err != nil {
		return net.Interface{}, fmt.Errorf("set host veth up: %w", err)
	}
	return net.Interface{Name: podName, Index: link.Attrs().Index, HardwareAddr: link.Attrs().HardwareAddr}, nil
}

// delLink deletes a link in the current netns; a missing link is success.
func delLink(name string) error {
	link, err := netlinksafe.LinkByName(name)
	if err != nil {
		var missing netlink.LinkNotFoundError
		if errors.As(err, &missing) {
			return nil
		}
		return fmt.Errorf("find %s: %w", name, err)
	}
	if err := netlink.LinkDel(link); err != nil {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// setupHostSide routes the pod's /32 to its veth and sets proxy ARP as the mode wants.
func setupHostSide(mode, hostName string, podIP net.IPNet) (net.Interface, error) {
	link, err := netlinksafe.LinkByName(hostName)
	if err != nil {
		return net.Interface{}, fmt.Errorf("find host veth %s: %w", hostName, err)
	}
	if mode == ModeCalico {
		mac, _ := net.ParseMAC(calicoHostMAC)
		if err := netlink.LinkSetHardwareAddr(link, mac); err != nil {
			return net.Interface{}, fmt.Errorf("set mac of %s: %w", hostName, err)
		}
	}
	proxyARP := "0"
	if mode == ModeCalico {
		proxyARP = "1"
	}
	for key, val := range map[string]string{
		"net/ipv4/conf/" + hostName + "/proxy_arp":    proxyARP,
		"net/ipv4/neigh/" + hostName + "/proxy_delay": "0",
		"net/ipv4/conf/" + hostName + "/forwarding":   "1",
	} {
		if _, err := sysctl.Sysctl(key, val); err != nil {
			return net.Interface{}, fmt.Errorf("set %s=%s: %w", key, val, err)
		}
	}
	route := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: &podIP, Scope: netlink.SCOPE_LINK}
	if err := netlink.RouteReplace(route); err != nil {
		return net.Interface{}, fmt.Errorf("route %s via %s: %w", podIP.String(), hostName, err)
	}
	if link, err = netlinksafe.LinkByName(hostName); err != nil {
		return net.Interface{}, fmt.Errorf("find host veth %s: %w", hostName, err)
	}
	return net.Interface{Name: hostName, Index: link.Attrs().Index, HardwareAddr: link.Attrs().HardwareAddr}, nil
}

// setupPodSide gives the pod its /32, the link-local gateway and, in vpc mode, the gateway's
// permanent neighbour entry (the node will not answer ARP for it).
func setupPodSide(mode, ifName string, podIP net.IPNet, hostMAC net.HardwareAddr) error {
	link, err := netlinksafe.LinkByName(ifName)
	if err != nil {
		return fmt.Errorf("find %s: %w", ifName, err)
	}
	if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: &podIP}); err != nil {
		return fmt.Errorf("add %s to %s: %w", podIP.String(), ifName, err)
	}
	gw := &net.IPNet{IP: gatewayIP(), Mask: net.CIDRMask(32, 32)}
	if err := netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: gw, Scope: netlink.SCOPE_LINK}); err != nil {
		return fmt.Errorf("route %s dev %s: %w", gatewayIP(), ifName, err)
	}
	if err := netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: gatewayIP()}); err != nil {
		return fmt.Errorf("default route via %s: %w", gatewayIP(), err)
	}
	if mode == ModeVPC {
		neigh := &netlink.Neigh{LinkIndex: link.Attrs().Index, IP: gatewayIP(), HardwareAddr: hostMAC,
			State: netlink.NUD_PERMANENT, Family: netlink.FAMILY_V4}
		if err := netlink.NeighSet(neigh); err != nil {
			return fmt.Errorf("pin %s to %s on %s: %w", gatewayIP(), hostMAC, ifName, err)
		}
	}
	return nil
}

// Del removes the veth pair and the address lease; "already gone" is success.
func Del(args *skel.CmdArgs) error {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	if conf.Mode == ModeRecord {
		return record(conf, "DEL", args)
	}
	if err := invoke.DelegateDel(context.TODO(), conf.IPAM.Type, args.StdinData, nil); err != nil {
		return fmt.Errorf("ipam %s del: %w", conf.IPAM.Type, err)
	}
	// Deleting one end of a veth deletes both; try the node side first, it is always there.
	if err := delLink(HostVethName(conf.Mode, args.ContainerID, args.IfName)); err != nil {
		return fmt.Errorf("delete host veth: %w", err)
	}
	if args.Netns == "" {
		return nil
	}
	err = ns.WithNetNSPath(args.Netns, func(ns.NetNS) error { return delLink(args.IfName) })
	var gone ns.NSPathNotExistErr
	if err != nil && !errors.As(err, &gone) {
		return fmt.Errorf("delete %s in %s: %w", args.IfName, args.Netns, err)
	}
	return nil
}

// Check verifies that the pod's interface still has its address and gateway route.
func Check(args *skel.CmdArgs) error {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	if conf.Mode == ModeRecord {
		return record(conf, "CHECK", args)
	}
	if err := version.ParsePrevResult(&conf.NetConf); err != nil {
		return fmt.Errorf("parse prevResult: %w", err)
	}
	if conf.PrevResult == nil {
		return errors.New("check needs a prevResult")
	}
	res, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return fmt.Errorf("convert prevResult: %w", err)
	}
	return ns.WithNetNSPath(args.Netns, func(ns.NetNS) error {
		link, err := netlinksafe.LinkByName(args.IfName)
		if err != nil {
			return fmt.Errorf("find %s: %w", args.IfName, err)
		}
		addrs, err := netlinksafe.AddrList(link, netlink.FAMILY_V4)
		if err != nil {
			return fmt.Errorf("list addresses of %s: %w", args.IfName, err)
		}
		for _, want := range res.IPs {
			found := false
			for _, a := range addrs {
				found = found || a.IPNet.String() == want.Address.String()
			}
			if !found {
				return fmt.Errorf("%s lost address %s", args.IfName, want.Address.String())
			}
		}
		return nil
	})
}

// record appends the call to conf.File and passes the previous result on unchanged.
func record(conf *NetConf, cmd string, args *skel.CmdArgs) error {
	line, err := json.Marshal(map[string]any{
		"command": cmd, "containerID": args.ContainerID, "netns": args.Netns,
		"ifName": args.IfName, "config": json.RawMessage(args.StdinData),
	})
	if err != nil {
		return fmt.Errorf("encode record: %w", err)
	}
	f, err := os.OpenFile(conf.File, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("open %s: %w", conf.File, err)
	}
	if _, err := f.Write(append(line, '\n')); err != nil {
		_ = f.Close() // the write error is the one to report
		return fmt.Errorf("write %s: %w", conf.File, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", conf.File, err)
	}
	if cmd != "ADD" {
		return nil
	}
	if err := version.ParsePrevResult(&conf.NetConf); err != nil {
		return fmt.Errorf("parse prevResult: %w", err)
	}
	if conf.PrevResult == nil {
		return errors.New("record mode is chained: it needs a prevResult")
	}
	return types.PrintResult(conf.PrevResult, conf.CNIVersion)
}
