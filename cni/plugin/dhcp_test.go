package plugin_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	"github.com/slimvirt/slimvirt/cni/internal/nettest"

	"github.com/slimvirt/slimvirt/internal/testutil"
)

const dhclientConf = `option rfc3442-classless-static-routes code 121 = array of unsigned integer 8;
send host-name = "dhclient-vm";
request subnet-mask, routers, domain-name-servers, host-name, domain-name, domain-search,
  interface-mtu, rfc3442-classless-static-routes;
`

// The script dhclient runs records the lease (and applies the address, so the unicast renewal
// below has a source).
const dhclientScript = `#!/bin/sh
if [ "$reason" = BOUND ]; then
  ip addr add "$new_ip_address/$new_subnet_mask" dev "$interface"
  ip route add 169.254.75.10/32 dev "$interface"
fi
env | grep -E '^(reason|new_)' | sort > "$(dirname "$0")/lease.tmp"
mv "$(dirname "$0")/lease.tmp" "$(dirname "$0")/lease.$reason"
`

// TestDHClient: ISC dhclient (not only busybox) takes the lease on the bridge binding, and a
// unicast renewal to the server identifier is answered (KubeVirt issue 4678).
func TestDHClient(t *testing.T) {
	if _, err := os.Stat("/usr/sbin/dhclient"); err != nil {
		t.Skip("no /usr/sbin/dhclient (isc-dhcp-client)")
	}
	c := nettest.NewCluster(t)
	podNS := nettest.NewNS(t, "pod")
	// A node with strict reverse-path filtering hands it down to its pods.
	nettest.Run(t, podNS, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1", "net.ipv4.conf.default.rp_filter=1")
	iface := launcherpod.Interface{Name: "default", Binding: launcherpod.BindingBridge}
	pod := launcherPod(t, c.Key, "virt-launcher-dhclient", podNS, []launcherpod.Interface{iface})
	res, err := c.AddPod(t, nettest.Styles()[0], pod, true)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	podIP, podMAC := res.IPs[0].Address.IP.String(), res.Interfaces[*res.IPs[0].Interface].Mac
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	testutil.Must(t, os.WriteFile(resolv, []byte("nameserver 10.96.0.10\nsearch ns1.svc.cluster.local cluster.local\n"), 0o644))
	leased := make(chan string, 10)
	serveLauncher(t, podNS, iface, resolv, func(ip net.IP) { leased <- ip.String() })
	vm := attachVM(t, podNS, podMAC)

	dir := t.TempDir()
	script := filepath.Join(dir, "script")
	testutil.Must(t, os.WriteFile(script, []byte(dhclientScript), 0o755))
	testutil.Must(t, os.WriteFile(filepath.Join(dir, "dhclient.conf"), []byte(dhclientConf), 0o644))
	// dhclient in the foreground (-d) is our child: stopped by its PID once it has the lease.
	cmd := exec.Command("nsenter", "--net="+vm.Path(), "/usr/sbin/dhclient", "-1", "-d", "-v", "-sf", script,
		"-cf", filepath.Join(dir, "dhclient.conf"), "-lf", filepath.Join(dir, "leases"), "-pf", filepath.Join(dir, "pid"), "vm0")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() { once.Do(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }) }
	defer stop()
	for i := 0; i < 200; i++ {
		if _, err := os.Stat(filepath.Join(dir, "lease.BOUND")); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	lease, rerr := os.ReadFile(filepath.Join(dir, "lease.BOUND"))
	if rerr != nil {
		t.Fatalf("dhclient got no lease: %v\n%s", rerr, out.String())
	}
	env := map[string]string{}
	for _, l := range strings.Split(string(lease), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			env[k] = v
		}
	}
	want := map[string]string{
		"new_ip_address":             podIP,
		"new_subnet_mask":            "255.255.255.0",
		"new_routers":                c.Gateway,
		"new_interface_mtu":          fmt.Sprint(c.MTU),
		"new_domain_name_servers":    "10.96.0.10",
		"new_domain_search":          "ns1.svc.cluster.local. cluster.local.",
		"new_host_name":              "testvm",
		"new_domain_name":            "example.test",
		"new_dhcp_server_identifier": "169.254.75.10",
		// 169.254.75.10/32 on-link, then the default route via the gateway, last.
		"new_rfc3442_classless_static_routes": "32 169 254 75 10 0 0 0 0 0 10 99 0 1",
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("%s = %q, want %q", k, env[k], v)
		}
	}
	select {
	case ip := <-leased:
		if ip != podIP {
			t.Errorf("OnLease saw %s, want %s", ip, podIP)
		}
	default:
		t.Error("OnLease was not called")
	}

	stop() // it holds port 68
	ack, err := unicastRenew(vm, podIP, podMAC)
	if err != nil {
		t.Fatalf("unicast renewal: %v", err)
	}
	if ack.MessageType() != dhcpv4.MessageTypeAck || ack.YourIPAddr.String() != podIP {
		t.Errorf("renewal answered %s for %s, want an ACK for %s", ack.MessageType(), ack.YourIPAddr, podIP)
	}
}

// unicastRenew sends a RENEWING-state REQUEST (ciaddr set, no server identifier) by unicast to
// the server identifier, as a client does at T1.
func unicastRenew(vm ns.NetNS, ip, mac string) (*dhcpv4.DHCPv4, error) {
	var conn *net.UDPConn
	err := vm.Do(func(ns.NetNS) error {
		var err error
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ip), Port: dhcpv4.ClientPort})
		return err
	})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	hw, _ := net.ParseMAC(mac)
	req, err := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithHwAddr(hw),
		dhcpv4.WithClientIP(net.ParseIP(ip)))
	if err != nil {
		return nil, err
	}
	if _, err := conn.WriteTo(req.ToBytes(), &net.UDPAddr{IP: net.ParseIP("169.254.75.10"), Port: dhcpv4.ServerPort}); err != nil {
		return nil, err
	}
	if err := conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return nil, err
	}
	buf := make([]byte, 1500)
	n, _, err := conn.ReadFrom(buf)
	if err != nil {
		return nil, err
	}
	return dhcpv4.FromBytes(buf[:n])
}

// TestDHCPIsolation: a DHCP server on the cluster network (a rogue pod on the same segment)
// cannot answer the VM, and the VM's requests do not reach it.
func TestDHCPIsolation(t *testing.T) {
	c := nettest.NewCluster(t)
	podNS := nettest.NewNS(t, "pod")
	iface := launcherpod.Interface{Name: "default", Binding: launcherpod.BindingBridge}
	pod := launcherPod(t, c.Key, "virt-launcher-rogue", podNS, []launcherpod.Interface{iface})
	res, err := c.AddPod(t, nettest.Styles()[0], pod, true)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	podIP, podMAC := res.IPs[0].Address.IP.String(), res.Interfaces[*res.IPs[0].Interface].Mac

	// The "VM" sits on a veth named tap0 in place of the tap, so the tap's rules apply to it.
	vm := nettest.NewNS(t, "vm")
	nettest.Run(t, podNS, "ip", "link", "del", "tap0")
	nettest.Run(t, podNS, "ip", "link", "add", "tap0", "type", "veth", "peer", "name", "vm0", "netns", vm.Path())
	nettest.Run(t, podNS, "ip", "link", "set", "tap0", "master", "k6t-eth0", "up")
	nettest.Run(t, vm, "ip", "link", "set", "vm0", "address", podMAC, "up")

	var rogue *server4.Server
	seen := make(chan struct{}, 10)
	err = c.Host.Do(func(ns.NetNS) error {
		var err error
		rogue, err = server4.NewServer("svbr0", &net.UDPAddr{Port: dhcpv4.ServerPort}, func(conn net.PacketConn, peer net.Addr, m *dhcpv4.DHCPv4) {
			seen <- struct{}{}
			offer, _ := dhcpv4.NewReplyFromRequest(m, dhcpv4.WithMessageType(dhcpv4.MessageTypeOffer),
				dhcpv4.WithYourIP(net.ParseIP("10.99.0.250")), dhcpv4.WithServerIP(net.ParseIP(c.Gateway)),
				dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.ParseIP(c.Gateway))),
				dhcpv4.WithOption(dhcpv4.OptSubnetMask(net.CIDRMask(24, 32))))
			_, _ = conn.WriteTo(offer.ToBytes(), peer)
		})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = rogue.Serve() }()
	defer rogue.Close()

	var client *nclient4.Client
	if err := vm.Do(func(ns.NetNS) error {
		var err error
		client, err = nclient4.New("vm0", nclient4.WithTimeout(time.Second), nclient4.WithRetry(2))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if offer, err := client.DiscoverOffer(context.Background()); err == nil {
		t.Errorf("the VM got an offer from the cluster network: %s", offer.Summary())
	}
	select {
	case <-seen:
		t.Error("the VM's DISCOVER reached the cluster network")
	default:
	}

	serveLauncher(t, podNS, iface, "/nonexistent", nil)
	ack := dhcpLease(t, vm)
	if ack.YourIPAddr.String() != podIP || ack.ServerIdentifier().String() != "169.254.75.10" {
		t.Errorf("lease %s from %s, want %s from 169.254.75.10", ack.YourIPAddr, ack.ServerIdentifier(), podIP)
	}
}
