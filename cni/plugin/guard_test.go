package plugin_test

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	"github.com/slimvirt/slimvirt/cni/internal/nettest"
)

// TestSpoofCheck sends from the VM's side of the tap what no guest socket would and looks at
// what reaches the cluster network (the host side of the pod's veth): only untagged frames from
// the VM's own address leave; source 0.0.0.0 is for DHCP only, and the lease still works.
func TestSpoofCheck(t *testing.T) {
	c := nettest.NewCluster(t)
	podNS := nettest.NewNS(t, "pod")
	iface := launcherpod.Interface{Name: "default", Binding: launcherpod.BindingBridge}
	pod := launcherPod(t, c.Key, "virt-launcher-spoof", podNS, []launcherpod.Interface{iface})
	res, err := c.AddPod(t, nettest.Styles()[0], pod, true)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	podIP, podMAC := res.IPs[0].Address.IP.To4(), res.Interfaces[*res.IPs[0].Interface].Mac
	var hostVeth string
	for _, i := range res.Interfaces {
		if i.Sandbox == "" && i.Name != "svbr0" {
			hostVeth = i.Name
		}
	}
	// The "VM" sits on a veth named tap0 in place of the tap, so the tap's rules apply to it.
	vm := nettest.NewNS(t, "vm")
	nettest.Run(t, podNS, "ip", "link", "del", "tap0")
	nettest.Run(t, podNS, "ip", "link", "add", "tap0", "type", "veth", "peer", "name", "vm0", "netns", vm.Path())
	nettest.Run(t, podNS, "ip", "link", "set", "tap0", "master", "k6t-eth0", "up")
	nettest.Run(t, vm, "ip", "link", "set", "vm0", "address", podMAC, "up")
	wire := nettest.Sniff(t, c.Host, hostVeth)

	guestMAC, _ := net.ParseMAC(podMAC)
	other := net.IPv4(podIP[0], podIP[1], podIP[2], podIP[3]+100)
	dot1q, dot1ad := [2]uint16{0x8100, 100}, [2]uint16{0x88a8, 200}
	tests := []struct {
		name    string
		src     net.IP
		sport   uint16
		tags    [][2]uint16
		leaves  bool
		comment string
	}{
		{"own address", podIP, 4000, nil, true, "the control"},
		{"source 0.0.0.0, not DHCP", net.IPv4zero, 68, nil, false, "0.0.0.0 is for DHCP to the server only"},
		{"802.1Q tag, own address", podIP, 4000, [][2]uint16{dot1q}, false, "a tagged frame would hop onto a VLAN of the node"},
		{"802.1Q tag, another address", other, 4000, [][2]uint16{dot1q}, false, "a tag must not hide a spoofed address"},
		{"802.1ad and 802.1Q tags, another address", other, 4000, [][2]uint16{dot1ad, dot1q}, false, "nor two tags"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			marker := []byte(fmt.Sprintf("slimvirt-spoof-%d-%d", i, time.Now().UnixNano()))
			frame := nettest.UDPFrame{Src: guestMAC, Dst: net.HardwareAddr{2, 0, 0, 0, 0x99, 0x99},
				SrcIP: tt.src, DstIP: net.ParseIP(c.Gateway), SrcPort: tt.sport, DstPort: 9999, Tags: tt.tags, Payload: marker}
			nettest.SendFrame(t, vm, "vm0", frame.Bytes())
			if got := wire.Saw(marker, time.Second); got != tt.leaves {
				t.Errorf("frame left the pod: %v, want %v (%s)", got, tt.leaves, tt.comment)
			}
		})
	}

	serveLauncher(t, podNS, iface, "/nonexistent", nil)
	if ack := dhcpLease(t, vm); !ack.YourIPAddr.Equal(podIP) {
		t.Errorf("lease %s, want %s: DHCP from 0.0.0.0 must still work", ack.YourIPAddr, podIP)
	}
}

// TestPodGuard: the VM reaches none of the pod's own sockets, neither its 127.0.0.1 (the
// masquerade binding's route_localnet) nor its addresses; the pod's port forwarding to the VM,
// DHCP and a ping to the gateway still work.
func TestPodGuard(t *testing.T) {
	for _, binding := range []launcherpod.Binding{launcherpod.BindingMasquerade, launcherpod.BindingBridge} {
		t.Run(string(binding), func(t *testing.T) { podGuard(t, binding) })
	}
}

func podGuard(t *testing.T, binding launcherpod.Binding) {
	c := nettest.NewCluster(t)
	podNS, peerNS := nettest.NewNS(t, "pod"), nettest.NewNS(t, "peer")
	iface := launcherpod.Interface{Name: "default", Binding: binding}
	if binding == launcherpod.BindingMasquerade {
		iface.Ports = []launcherpod.Port{{Protocol: "TCP", Port: 80}}
	}
	pod := launcherPod(t, c.Key, "virt-launcher-guard", podNS, []launcherpod.Interface{iface})
	peer := nettest.Pod{Namespace: "default", Name: "peer", ContainerID: "c-peer", Netns: peerNS}
	if _, err := c.AddPod(t, nettest.Styles()[0], peer, false); err != nil {
		t.Fatalf("ADD peer: %v", err)
	}
	if _, err := c.AddPod(t, nettest.Styles()[0], pod, true); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	podIP, peerIP := nettest.PodIP(t, podNS, "eth0"), nettest.PodIP(t, peerNS, "eth0")
	plan, _ := serveLauncher(t, podNS, iface, "/nonexistent", nil)
	vm := attachVM(t, podNS, plan.GuestMAC.String())
	ack := dhcpLease(t, vm)
	applyLease(t, vm, ack)
	bridgeMAC, _ := net.ParseMAC(links(t, podNS)["k6t-eth0"].MAC)

	loopback := nettest.ListenUDP(t, podNS, "127.0.0.1:9090")
	anyAddr := nettest.ListenUDP(t, podNS, "0.0.0.0:9091")
	targets := []struct {
		name string
		ip   string
		port uint16
	}{
		{"pod 127.0.0.1", "127.0.0.1", 9090},
		{"pod address", podIP, 9091},
		{"the guest's gateway or server identifier", plan.ServerIP.String(), 9091},
	}
	for i, tg := range targets {
		t.Run(tg.name, func(t *testing.T) {
			marker := []byte(fmt.Sprintf("slimvirt-guard-%d-%d", i, time.Now().UnixNano()))
			frame := nettest.UDPFrame{Src: plan.GuestMAC, Dst: bridgeMAC, SrcIP: ack.YourIPAddr, DstIP: net.ParseIP(tg.ip),
				SrcPort: 4000, DstPort: tg.port, Payload: marker}
			nettest.SendFrame(t, vm, "vm0", frame.Bytes())
			conn := anyAddr
			if tg.port == 9090 {
				conn = loopback
			}
			if nettest.Received(conn, marker, time.Second) {
				t.Errorf("a datagram from the guest to %s:%d reached the pod's socket", tg.ip, tg.port)
			}
		})
	}

	// In the bridge binding the pod's answers to the guest's address stay in the pod (it is the
	// pod's own address): only the masquerade gateway can be pinged.
	if binding != launcherpod.BindingMasquerade {
		return
	}
	if out, err := nettest.Exec(vm, "busybox", "ping", "-c", "1", "-W", "2", plan.ServerIP.String()); err != nil {
		t.Errorf("guest ping to %s: %v: %s", plan.ServerIP, err, out)
	}
	serveEcho(t, vm, "vm", 80)
	serveEcho(t, peerNS, "peer", 80)
	checks := []struct {
		name string
		from string
		url  string
		want string
	}{
		{"pod localhost reaches the guest", "pod", "http://127.0.0.1/", "hello from vm"},
		{"a peer reaches the guest through the pod IP", "peer", "http://" + podIP + "/", "hello from vm to " + peerIP},
		{"the guest reaches a peer as the pod", "vm", "http://" + peerIP + "/", "hello from peer to " + podIP},
	}
	for _, ck := range checks {
		from := map[string]ns.NetNS{"pod": podNS, "peer": peerNS, "vm": vm}[ck.from]
		out, err := nettest.Fetch(from, ck.url)
		if err != nil || !strings.HasPrefix(out, ck.want) {
			t.Errorf("%s: %q, %v; want %q", ck.name, out, err, ck.want)
		}
	}
}
