package plugin_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	"github.com/slimvirt/slimvirt/cni/internal/nettest"
	"github.com/slimvirt/slimvirt/cni/vmnet"

	"github.com/slimvirt/slimvirt/internal/testutil"
)

func TestMain(m *testing.M) { os.Exit(nettest.Main(m)) }

// launcherPod returns a pod whose interfaces annotation is signed with key for its namespace,
// name and UID, as the controller signs it.
func launcherPod(t *testing.T, key []byte, name string, netns ns.NetNS, ifaces []launcherpod.Interface) nettest.Pod {
	t.Helper()
	value := string(nettest.MustJSON(ifaces))
	uid := "uid-" + name
	return nettest.Pod{
		Namespace: "default", Name: name, UID: uid, ContainerID: "c-" + name, Netns: netns,
		Annotations: map[string]string{
			launcherpod.AnnotationInterfaces: value,
			launcherpod.AnnotationSignature:  launcherpod.SignPod(key, launcherpod.PodRef{Namespace: "default", Name: name, UID: uid}, value),
		},
	}
}

type linkInfo struct {
	Type, MAC, Master string
	MTU               int
	Addrs             []string
	Routes            []string
}

// links lists the links of netns by name.
func links(t *testing.T, netns ns.NetNS) map[string]linkInfo {
	t.Helper()
	out := map[string]linkInfo{}
	err := netns.Do(func(ns.NetNS) error {
		ls, err := netlink.LinkList()
		if err != nil {
			return err
		}
		names := map[int]string{}
		for _, l := range ls {
			names[l.Attrs().Index] = l.Attrs().Name
		}
		for _, l := range ls {
			li := linkInfo{Type: l.Type(), MAC: l.Attrs().HardwareAddr.String(), MTU: l.Attrs().MTU, Master: names[l.Attrs().MasterIndex]}
			addrs, _ := netlink.AddrList(l, netlink.FAMILY_V4)
			for _, a := range addrs {
				li.Addrs = append(li.Addrs, a.IPNet.String())
			}
			routes, _ := netlink.RouteList(l, netlink.FAMILY_V4)
			for _, r := range routes {
				li.Routes = append(li.Routes, fmt.Sprintf("%v via %v", r.Dst, r.Gw))
			}
			out[l.Attrs().Name] = li
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func readSysctl(t *testing.T, netns ns.NetNS, name string) string {
	t.Helper()
	var v []byte
	_ = netns.Do(func(ns.NetNS) error {
		var err error
		v, err = os.ReadFile("/proc/sys/" + name)
		return err
	})
	return strings.TrimSpace(string(v))
}

// attachVM plugs a veth into the pod's bridge in place of the tap; its other end, in a new
// netns, plays the VM with mac.
func attachVM(t *testing.T, pod ns.NetNS, mac string) ns.NetNS {
	t.Helper()
	vm := nettest.NewNS(t, "vm")
	nettest.Run(t, pod, "ip", "link", "add", "vmport", "type", "veth", "peer", "name", "vm0", "netns", vm.Path())
	nettest.Run(t, pod, "ip", "link", "set", "vmport", "master", "k6t-eth0", "up")
	nettest.Run(t, vm, "ip", "link", "set", "vm0", "address", mac, "up")
	return vm
}

// serveVMNet runs Discover + Serve in the pod netns until stop is called or the test ends.
func serveVMNet(t *testing.T, pod ns.NetNS, iface launcherpod.Interface, resolv string) (plan *vmnet.Plan, stop func()) {
	t.Helper()
	return serveVMNetWith(t, pod, iface, resolv, nil)
}

func serveVMNetWith(t *testing.T, pod ns.NetNS, iface launcherpod.Interface, resolv string, onLease func(net.IP)) (plan *vmnet.Plan, stop func()) {
	t.Helper()
	var srv *vmnet.Server
	err := pod.Do(func(ns.NetNS) error {
		var err error
		if plan, err = vmnet.DiscoverWith(iface, "eth0", resolv); err != nil {
			return err
		}
		srv, err = vmnet.NewServer(plan, vmnet.ServeOptions{Hostname: "testvm", Domain: "example.test", OnLease: onLease})
		return err
	})
	if err != nil {
		t.Fatalf("discover/serve: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serve: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return plan, stop
}

// dhcpLease takes a lease in the VM netns with insomniacslk's client.
func dhcpLease(t *testing.T, vm ns.NetNS) *dhcpv4.DHCPv4 {
	t.Helper()
	var client *nclient4.Client
	err := vm.Do(func(ns.NetNS) error {
		var err error
		client, err = nclient4.New("vm0", nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(5))
		return err
	})
	if err != nil {
		t.Fatalf("dhcp client: %v", err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	lease, err := client.Request(ctx, dhcpv4.WithRequestedOptions(dhcpv4.OptionInterfaceMTU, dhcpv4.OptionClasslessStaticRoute,
		dhcpv4.OptionDNSDomainSearchList, dhcpv4.OptionHostName, dhcpv4.OptionDomainName))
	if err != nil {
		t.Fatalf("dhcp request: %v", err)
	}
	return lease.ACK
}

// applyLease configures the VM netns as a DHCP client would.
func applyLease(t *testing.T, vm ns.NetNS, ack *dhcpv4.DHCPv4) {
	t.Helper()
	ones, _ := ack.SubnetMask().Size()
	nettest.Run(t, vm, "ip", "addr", "add", fmt.Sprintf("%s/%d", ack.YourIPAddr, ones), "dev", "vm0")
	for _, r := range ack.ClasslessStaticRoute() {
		args := []string{"route", "add", r.Dest.String()}
		if r.Router.IsUnspecified() {
			args = append(args, "dev", "vm0")
		} else {
			args = append(args, "via", r.Router.String(), "dev", "vm0")
		}
		nettest.Run(t, vm, "ip", args...)
	}
}

// serveHTTP serves "hello from <who>" on port 80 in netns until the test ends.
func serveHTTP(t *testing.T, netns ns.NetNS, who string) {
	t.Helper()
	var l net.Listener
	if err := netns.Do(func(ns.NetNS) error {
		var err error
		l, err = net.Listen("tcp4", ":80")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "hello from %s", who)
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
}

// fetch GETs url from netns.
func fetch(netns ns.NetNS, url string) (string, error) {
	return nettest.Fetch(netns, url)
}

func ipOf(t *testing.T, netns ns.NetNS, ifName string) string {
	t.Helper()
	li, ok := links(t, netns)[ifName]
	if !ok || len(li.Addrs) == 0 {
		t.Fatalf("%s has no address in %s", ifName, netns.Path())
	}
	return strings.Split(li.Addrs[0], "/")[0]
}

func TestBridgeBinding(t *testing.T) {
	c := nettest.NewCluster(t)
	chain := nettest.NewChain(t, c.Host, c.PluginDir, nettest.Conflist(c.BridgeEntry(), c.Ours()))
	podNS := nettest.NewNS(t, "pod")
	peerNS := nettest.NewNS(t, "peer")
	iface := launcherpod.Interface{Name: "default", Binding: launcherpod.BindingBridge}
	pod := launcherPod(t, c.Key, "virt-launcher-a", podNS, []launcherpod.Interface{iface})
	peer := nettest.Pod{Namespace: "default", Name: "peer", ContainerID: "c-peer", Netns: peerNS}

	if _, err := chain.Add(peer); err != nil {
		t.Fatalf("ADD peer: %v", err)
	}
	res, err := chain.Add(pod)
	if err != nil {
		t.Fatalf("ADD launcher pod: %v", err)
	}
	podIP := res.IPs[0].Address.IP.String()
	origMAC := res.Interfaces[*res.IPs[0].Interface].Mac
	if name := res.Interfaces[*res.IPs[0].Interface].Name; name != "eth0" {
		t.Errorf("result puts the pod IP on %q, want eth0", name)
	}

	after := links(t, podNS)
	eth0, nic, br, tap := after["eth0"], after["eth0-nic"], after["k6t-eth0"], after["tap0"]
	_, hasPeer := after["eth0-twin"]
	if ok := eth0.Type == "dummy" || eth0.Type == "veth" && hasPeer; !ok || eth0.MAC != origMAC || eth0.MTU != c.MTU || len(eth0.Addrs) != 1 || !strings.HasPrefix(eth0.Addrs[0], podIP+"/") {
		t.Errorf("eth0 = %+v, want a dummy with mac %s, mtu %d and %s", eth0, origMAC, c.MTU, podIP)
	}
	if nic.Type != "veth" || nic.Master != "k6t-eth0" || nic.MAC == origMAC || len(nic.Addrs) != 0 {
		t.Errorf("eth0-nic = %+v, want the pod veth on k6t-eth0 with a new mac and no address", nic)
	}
	if br.Type != "bridge" || len(br.Addrs) != 1 || br.Addrs[0] != "169.254.75.10/32" {
		t.Errorf("k6t-eth0 = %+v, want a bridge with 169.254.75.10/32", br)
	}
	if tap.Type != "tuntap" || tap.Master != "k6t-eth0" || tap.MTU != c.MTU {
		t.Errorf("tap0 = %+v, want a tap on k6t-eth0 with mtu %d", tap, c.MTU)
	}
	if got := readSysctl(t, podNS, "net/ipv4/conf/all/arp_ignore"); got != "1" {
		t.Errorf("arp_ignore = %s, want 1", got)
	}
	if !strings.Contains(strings.Join(eth0.Routes, ";"), "0.0.0.0/0 via "+c.Gateway) {
		t.Errorf("eth0 routes %v lack the default route via %s", eth0.Routes, c.Gateway)
	}

	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	testutil.Must(t, os.WriteFile(resolv, []byte("search default.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"), 0o644))
	plan, stopServe := serveVMNet(t, podNS, iface, resolv)
	if plan.GuestIP.IP.String() != podIP || plan.GuestMAC.String() != origMAC || plan.MTU != c.MTU || !plan.Gateway.Equal(net.ParseIP(c.Gateway)) {
		t.Errorf("plan = %+v, want guest %s/%s, mtu %d, gateway %s", plan, podIP, origMAC, c.MTU, c.Gateway)
	}

	vmNS := attachVM(t, podNS, origMAC)
	ack := dhcpLease(t, vmNS)
	if ack.YourIPAddr.String() != podIP {
		t.Errorf("lease %s, want the pod IP %s", ack.YourIPAddr, podIP)
	}
	if ones, _ := ack.SubnetMask().Size(); ones != 24 {
		t.Errorf("netmask /%d, want /24", ones)
	}
	if mtu, err := dhcpv4.GetUint16(dhcpv4.OptionInterfaceMTU, ack.Options); err != nil || int(mtu) != c.MTU {
		t.Errorf("mtu option %d (%v), want %d", mtu, err, c.MTU)
	}
	if r := ack.Router(); len(r) != 1 || r[0].String() != c.Gateway {
		t.Errorf("router %v, want %s", r, c.Gateway)
	}
	if d := ack.DNS(); len(d) != 1 || d[0].String() != "10.96.0.10" {
		t.Errorf("dns %v, want 10.96.0.10", d)
	}
	if s := ack.DomainSearch(); s == nil || strings.Join(s.Labels, ",") != "default.svc.cluster.local,svc.cluster.local" {
		t.Errorf("search %v", s)
	}
	if ack.HostName() != "testvm" || ack.DomainName() != "example.test" {
		t.Errorf("hostname %q domain %q", ack.HostName(), ack.DomainName())
	}
	routes := ack.ClasslessStaticRoute()
	if len(routes) == 0 || routes[len(routes)-1].Dest.String() != "0.0.0.0/0" || routes[len(routes)-1].Router.String() != c.Gateway {
		t.Errorf("classless routes %v, want the default route via %s last", routes, c.Gateway)
	}
	if ack.ServerIdentifier().String() != "169.254.75.10" {
		t.Errorf("server identifier %s", ack.ServerIdentifier())
	}

	applyLease(t, vmNS, ack)
	serveHTTP(t, vmNS, "vm")
	serveHTTP(t, peerNS, "peer")
	if out, err := fetch(peerNS, "http://"+podIP+"/"); err != nil || out != "hello from vm" {
		t.Errorf("peer -> vm: %q, %v", out, err)
	}
	if out, err := fetch(vmNS, "http://"+ipOf(t, peerNS, "eth0")+"/"); err != nil || out != "hello from peer" {
		t.Errorf("vm -> peer: %q, %v", out, err)
	}

	stopServe()
	nettest.Run(t, podNS, "ip", "link", "del", "vmport")
	// Our DEL alone restores the pod NIC as the cluster CNI made it.
	ours := chain.WithList(t, nettest.Conflist(c.Ours()))
	if err := ours.Del(pod); err != nil {
		t.Fatalf("DEL (slimvirt only): %v", err)
	}
	restored := links(t, podNS)
	if got := restored["eth0"]; got.Type != "veth" || got.MAC != origMAC || len(got.Addrs) != 1 || !strings.HasPrefix(got.Addrs[0], podIP+"/") ||
		!strings.Contains(strings.Join(got.Routes, ";"), "0.0.0.0/0 via "+c.Gateway) {
		t.Errorf("after DEL eth0 = %+v, want the veth with %s, %s and the default route", got, origMAC, podIP)
	}
	for _, gone := range []string{"k6t-eth0", "tap0", "eth0-nic", "eth0-twin"} {
		if _, ok := restored[gone]; ok {
			t.Errorf("after DEL %s is still there", gone)
		}
	}
	if got := readSysctl(t, podNS, "net/ipv4/conf/all/arp_ignore"); got != "0" {
		t.Errorf("after DEL arp_ignore = %s, want 0 again", got)
	}
	if err := ours.Del(pod); err != nil {
		t.Errorf("second DEL: %v", err)
	}
	if err := chain.Del(pod); err != nil {
		t.Errorf("DEL of the whole chain: %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(c.StateDir, "attachments", "svtest")); len(entries) != 0 {
		t.Errorf("state files left: %v", entries)
	}
}
