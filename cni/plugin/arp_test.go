package plugin_test

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	"github.com/slimvirt/slimvirt/cni/internal/nettest"
)

// TestGatewayARP on a VPC-style pod: the guest's ARP for the pinned gateway and for the DHCP
// server identifier is answered on the tap with the right MAC, by the kernel (the launcher side
// runs without CAP_NET_RAW); nothing else is, and no other MAC's ARP is.
func TestGatewayARP(t *testing.T) {
	c := nettest.NewCluster(t)
	vpc := nettest.Styles()[2]
	podNS := nettest.NewNS(t, "pod")
	iface := launcherpod.Interface{Name: "default", Binding: launcherpod.BindingBridge}
	pod := launcherPod(t, c.Key, "virt-launcher-arp", podNS, []launcherpod.Interface{iface})
	res, err := c.AddPod(t, vpc, pod, true)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	podIP, podMAC := net.ParseIP(res.IPs[0].Address.IP.String()).To4(), res.Interfaces[*res.IPs[0].Interface].Mac
	guestMAC, _ := net.ParseMAC(podMAC)
	plan, _ := serveLauncher(t, podNS, iface, "/nonexistent", nil)
	var hostVethMAC string
	for _, i := range res.Interfaces {
		if i.Sandbox == "" {
			hostVethMAC = i.Mac
		}
	}
	tap := nettest.OpenTap(t, podNS)
	stranger := net.HardwareAddr{2, 0x11, 0x22, 0x33, 0x44, 0x55}

	tests := []struct {
		name string
		from net.HardwareAddr
		ip   string
		want string // MAC of the answer, "" for none
	}{
		{"pinned gateway", guestMAC, nettest.LinkGateway, hostVethMAC},
		{"server identifier", guestMAC, "169.254.75.10", plan.ServerMAC.String()},
		{"an address nobody pinned", guestMAC, "10.99.0.77", ""},
		{"pinned gateway asked by another MAC", stranger, nettest.LinkGateway, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := net.ParseIP(tt.ip).To4()
			var got nettest.ARPReply
			var frame []byte
			// Three tries a second apart, as a guest's ARP does: a tap just opened drops what
			// it is sent until the kernel has seen its carrier come up.
			for try := 0; try < 3 && frame == nil; try++ {
				if err := tap.Send(nettest.ARPRequest(tt.from, podIP, target)); err != nil {
					t.Fatal(err)
				}
				frame = tap.Receive(time.Second, func(b []byte) bool {
					r, ok := nettest.ParseARPReply(b)
					if ok && r.SenderIP.Equal(target) {
						got = r
					}
					return ok && r.SenderIP.Equal(target)
				})
			}
			if tt.want == "" {
				if frame != nil {
					t.Errorf("who-has %s from %s answered by %s, want no answer", tt.ip, tt.from, got.SenderMAC)
				}
				return
			}
			if frame == nil {
				out, _ := nettest.Exec(podNS, "nft", "list", "ruleset")
				t.Fatalf("who-has %s from the guest: no answer, want %s; rules:\n%s", tt.ip, tt.want, out)
			}
			if got.SenderMAC.String() != tt.want || got.EtherSrc.String() != tt.want ||
				!bytes.Equal(got.EtherDst, guestMAC) || !bytes.Equal(got.TargetMAC, guestMAC) || !got.TargetIP.Equal(podIP) {
				t.Errorf("answer %+v, want %s is-at %s, to %s/%s", got, tt.ip, tt.want, guestMAC, podIP)
			}
		})
	}
}
