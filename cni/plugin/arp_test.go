package plugin_test

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/mdlayher/arp"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	"github.com/slimvirt/slimvirt/cni/internal/nettest"
)

// resolve asks for ip from the "VM" netns and returns the MAC that answered, or "" after a
// timeout.
func resolve(t *testing.T, vm ns.NetNS, ip string) string {
	t.Helper()
	var c *arp.Client
	err := vm.Do(func(ns.NetNS) error {
		ifi, err := net.InterfaceByName("vm0")
		if err != nil {
			return err
		}
		c, err = arp.Dial(ifi)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(1500 * time.Millisecond))
	mac, err := c.Resolve(netip.MustParseAddr(ip))
	if err != nil {
		return ""
	}
	return mac.String()
}

// TestARPResponder on a VPC-style pod: the guest's ARP for the pinned gateway and for the DHCP
// server identifier is answered with the right MAC; nothing else is, and nobody else's ARP is.
func TestARPResponder(t *testing.T) {
	c := nettest.NewCluster(t)
	vpc := nettest.Styles()[2]
	podNS := nettest.NewNS(t, "pod")
	iface := launcherpod.Interface{Name: "default", Binding: launcherpod.BindingBridge}
	pod := launcherPod(t, c.Key, "virt-launcher-arp", podNS, []launcherpod.Interface{iface})
	res, err := c.AddPod(t, vpc, pod, true)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	podIP, podMAC := res.IPs[0].Address.IP.String(), res.Interfaces[*res.IPs[0].Interface].Mac
	plan, _ := serveVMNet(t, podNS, iface, "/nonexistent")
	var hostVethMAC string
	for _, i := range res.Interfaces {
		if i.Sandbox == "" {
			hostVethMAC = i.Mac
		}
	}
	guest := attachVM(t, podNS, podMAC)
	nettest.Run(t, guest, "ip", "addr", "add", podIP+"/32", "dev", "vm0")

	stranger := nettest.NewNS(t, "vm")
	nettest.Run(t, podNS, "ip", "link", "add", "strport", "type", "veth", "peer", "name", "vm0", "netns", stranger.Path())
	nettest.Run(t, podNS, "ip", "link", "set", "strport", "master", "k6t-eth0", "up")
	nettest.Run(t, stranger, "ip", "link", "set", "vm0", "address", "02:11:22:33:44:55", "up")
	nettest.Run(t, stranger, "ip", "addr", "add", "10.99.0.200/32", "dev", "vm0")

	tests := []struct {
		name, from, ip, want string
	}{
		{"pinned gateway", "guest", nettest.LinkGateway, hostVethMAC},
		{"server identifier", "guest", "169.254.75.10", plan.ServerMAC.String()},
		{"an address nobody pinned", "guest", "10.99.0.77", ""},
		{"pinned gateway asked by another MAC", "stranger", nettest.LinkGateway, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			from := guest
			if tt.from == "stranger" {
				from = stranger
			}
			if got := resolve(t, from, tt.ip); got != tt.want {
				t.Errorf("who-has %s from the %s: %q, want %q", tt.ip, tt.from, got, tt.want)
			}
		})
	}
}
