package plugin_test

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	"github.com/slimvirt/slimvirt/cni/internal/nettest"
)

const bootTimeout = 90 * time.Second

// serveEcho serves "hello from <who> to <remote ip>" on port 80 in netns.
func serveEcho(t *testing.T, netns ns.NetNS, who string, port int) {
	t.Helper()
	var l net.Listener
	if err := netns.Do(func(ns.NetNS) error {
		var err error
		l, err = net.Listen("tcp4", fmt.Sprintf(":%d", port))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		fmt.Fprintf(w, "hello from %s to %s\n", who, host)
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
}

// guestGet fetches url from the guest (busybox nc; the guest's shell is on its serial port).
func guestGet(g *nettest.Guest, host string) (string, error) {
	return g.Shell(fmt.Sprintf(`printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 5 %s 80 | tail -n 1`, host), 30*time.Second)
}

// TestGuestBridge boots the test guest on the bridge binding in each cluster network style and
// checks what a user sees: the lease is the pod IP with the pod's MTU and routes, a peer pod
// reaches the guest's web server and the guest reaches the peer (on a VPC-style network through
// the pinned gateway, whose ARP the kernel answers: the launcher side has no CAP_NET_RAW).
func TestGuestBridge(t *testing.T) {
	for _, style := range nettest.Styles() {
		t.Run(style.Name, func(t *testing.T) {
			// Two guests at a time: QEMU TCG keeps one core busy while a guest boots.
			t.Parallel()
			c := nettest.NewCluster(t)
			podNS, peerNS := nettest.NewNS(t, "pod"), nettest.NewNS(t, "peer")
			iface := launcherpod.Interface{Name: "default", Binding: launcherpod.BindingBridge}
			pod := launcherPod(t, c.Key, "virt-launcher-"+style.Name, podNS, []launcherpod.Interface{iface})
			peer := nettest.Pod{Namespace: "default", Name: "peer", ContainerID: "c-peer", Netns: peerNS}
			if _, err := c.AddPod(t, style, peer, false); err != nil {
				t.Fatalf("ADD peer: %v", err)
			}
			res, err := c.AddPod(t, style, pod, true)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			podIP, podMAC := res.IPs[0].Address.IP.String(), res.Interfaces[*res.IPs[0].Interface].Mac
			peerIP := nettest.PodIP(t, peerNS, "eth0")
			// The launcher side runs as in its pod: no CAP_NET_RAW, no packet socket.
			serveLauncher(t, podNS, iface, "/nonexistent", nil)

			g := nettest.BootGuest(t, podNS, podMAC)
			up, err := g.Up(bootTimeout)
			if err != nil {
				t.Fatal(err)
			}
			if up.IP != podIP || up.MAC != podMAC {
				t.Errorf("guest up with %s/%s, want the pod's %s/%s", up.IP, up.MAC, podIP, podMAC)
			}
			if out, err := g.Shell("cat /sys/class/net/eth0/mtu", 20*time.Second); err != nil || strings.TrimSpace(out) != fmt.Sprint(c.MTU) {
				t.Errorf("guest mtu %q (%v), want %d", out, err, c.MTU)
			}
			wantGW := c.Gateway
			if style.Name != "bridge" {
				wantGW = nettest.LinkGateway
			}
			if out, err := g.Shell("ip route show default", 20*time.Second); err != nil || !strings.Contains(out, "via "+wantGW) {
				t.Errorf("guest default route %q (%v), want via %s", out, err, wantGW)
			}

			serveEcho(t, peerNS, "peer", 80)
			if out, err := nettest.Fetch(peerNS, "http://"+podIP+"/"); err != nil || !strings.HasPrefix(out, "slimvirt guest") {
				t.Errorf("peer -> guest: %q, %v", out, err)
			}
			if out, err := guestGet(g, peerIP); err != nil || strings.TrimSpace(out) != "hello from peer to "+podIP {
				t.Errorf("guest -> peer: %q, %v", out, err)
			}
			if style.Name == "bridge" {
				checkSpoofing(t, g, peerIP, podIP, c.Gateway)
			}
			if style.Name == "vpc" {
				// The control: without the plugin's gateway ARP rules nobody answers for
				// 169.254.1.1 and a bridged VM on a VPC-style network reaches nothing.
				nettest.Run(t, podNS, "nft", "delete", "table", "netdev", "slimvirt")
				if _, err := g.Shell("ip neigh flush dev eth0", 20*time.Second); err != nil {
					t.Fatal(err)
				}
				if out, err := guestGet(g, peerIP); strings.Contains(out, "hello from peer") {
					t.Errorf("guest reached the peer without the gateway ARP rules: %q, %v", out, err)
				}
			}
		})
	}
}

// TestGuestMasquerade boots the guest behind NAT: it leases the private address, the allowed
// port reaches it through the pod IP (also from the pod's own localhost), another port stays the
// pod's, and the guest reaches a peer as the pod IP.
func TestGuestMasquerade(t *testing.T) {
	for _, style := range nettest.Styles() {
		t.Run(style.Name, func(t *testing.T) {
			t.Parallel()
			guestMasquerade(t, style)
		})
	}
}

func guestMasquerade(t *testing.T, style nettest.Style) {
	c := nettest.NewCluster(t)
	podNS, peerNS := nettest.NewNS(t, "pod"), nettest.NewNS(t, "peer")
	iface := launcherpod.Interface{Name: "default", Binding: launcherpod.BindingMasquerade,
		Ports: []launcherpod.Port{{Protocol: "TCP", Port: 80}}}
	pod := launcherPod(t, c.Key, "virt-launcher-masq-"+style.Name, podNS, []launcherpod.Interface{iface})
	peer := nettest.Pod{Namespace: "default", Name: "peer", ContainerID: "c-peer", Netns: peerNS}
	if _, err := c.AddPod(t, style, peer, false); err != nil {
		t.Fatalf("ADD peer: %v", err)
	}
	if _, err := c.AddPod(t, style, pod, true); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	podIP, peerIP := nettest.PodIP(t, podNS, "eth0"), nettest.PodIP(t, peerNS, "eth0")
	plan, _ := serveLauncher(t, podNS, iface, "/nonexistent", nil)
	if plan.GuestIP.String() != "10.0.2.2/24" || plan.Gateway.String() != "10.0.2.1" || plan.MTU != c.MTU {
		t.Errorf("plan %+v, want 10.0.2.2/24 via 10.0.2.1, mtu %d", plan, c.MTU)
	}

	g := nettest.BootGuest(t, podNS, plan.GuestMAC.String())
	up, err := g.Up(bootTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if up.IP != "10.0.2.2" || up.MAC != plan.GuestMAC.String() {
		t.Errorf("guest up with %s/%s, want 10.0.2.2/%s", up.IP, up.MAC, plan.GuestMAC)
	}
	if out, err := g.Shell("cat /sys/class/net/eth0/mtu", 20*time.Second); err != nil || strings.TrimSpace(out) != fmt.Sprint(c.MTU) {
		t.Errorf("guest mtu %q (%v), want %d", out, err, c.MTU)
	}

	serveEcho(t, podNS, "pod", 8080)
	serveEcho(t, peerNS, "peer", 80)
	checks := []struct {
		name, from, url, want string
	}{
		{"allowed port reaches the guest", "peer", "http://" + podIP + "/", "slimvirt guest"},
		{"other port stays the pod's", "peer", "http://" + podIP + ":8080/", "hello from pod to " + peerIP},
		{"pod localhost reaches the guest", "pod", "http://127.0.0.1/", "slimvirt guest"},
	}
	for _, ck := range checks {
		from := peerNS
		if ck.from == "pod" {
			from = podNS
		}
		if out, err := nettest.Fetch(from, ck.url); err != nil || !strings.HasPrefix(out, ck.want) {
			t.Errorf("%s: %q, %v; want %q", ck.name, out, err, ck.want)
		}
	}
	if out, err := guestGet(g, peerIP); err != nil || strings.TrimSpace(out) != "hello from peer to "+podIP {
		t.Errorf("guest -> peer: %q, %v; want it masqueraded as %s", out, err, podIP)
	}
}

// TestMasqueradeAllPorts: with no port listed every port goes to the VM (here a veth standing
// in for it), none stays the pod's.
func TestMasqueradeAllPorts(t *testing.T) {
	c := nettest.NewCluster(t)
	style := nettest.Styles()[0]
	podNS, peerNS := nettest.NewNS(t, "pod"), nettest.NewNS(t, "peer")
	iface := launcherpod.Interface{Name: "default", Binding: launcherpod.BindingMasquerade, VMNetworkCIDR: "10.11.12.0/30"}
	pod := launcherPod(t, c.Key, "virt-launcher-all", podNS, []launcherpod.Interface{iface})
	peer := nettest.Pod{Namespace: "default", Name: "peer", ContainerID: "c-peer", Netns: peerNS}
	if _, err := c.AddPod(t, style, peer, false); err != nil {
		t.Fatalf("ADD peer: %v", err)
	}
	if _, err := c.AddPod(t, style, pod, true); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	plan, _ := serveLauncher(t, podNS, iface, "/nonexistent", nil)
	vm := attachVM(t, podNS, plan.GuestMAC.String())
	ack := dhcpLease(t, vm)
	if ack.YourIPAddr.String() != "10.11.12.2" {
		t.Fatalf("lease %s, want 10.11.12.2", ack.YourIPAddr)
	}
	applyLease(t, vm, ack)
	serveEcho(t, podNS, "pod", 8080)
	serveEcho(t, vm, "vm", 8080)
	podIP, peerIP := nettest.PodIP(t, podNS, "eth0"), nettest.PodIP(t, peerNS, "eth0")
	if out, err := nettest.Fetch(peerNS, "http://"+podIP+":8080/"); err != nil || strings.TrimSpace(out) != "hello from vm to "+peerIP {
		t.Errorf("peer -> pod:8080 = %q, %v; want the VM", out, err)
	}
}

// checkSpoofing: a guest that takes another IP or MAC is cut off; back to its own, it is not.
func checkSpoofing(t *testing.T, g *nettest.Guest, peerIP, podIP, gateway string) {
	t.Helper()
	ip := net.ParseIP(podIP).To4()
	other := net.IPv4(ip[0], ip[1], ip[2], ip[3]+100).String()
	readdress := func(addr string) string {
		return fmt.Sprintf("ip -4 addr flush dev eth0; ip addr add %s/24 dev eth0; ip route replace default via %s dev eth0; ip neigh flush dev eth0", addr, gateway)
	}
	steps := []struct {
		name, setup string
		reach       bool
	}{
		{"another IP", readdress(other), false},
		{"own IP again", readdress(podIP), true},
		{"another MAC", "ip link set eth0 address 02:aa:bb:cc:dd:ee; " + readdress(podIP), false},
	}
	for _, st := range steps {
		if _, err := g.Shell(st.setup, 20*time.Second); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		out, _ := g.Shell(fmt.Sprintf(`printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 %s 80 | tail -n 1`, peerIP), 30*time.Second)
		if got := strings.Contains(out, "hello from peer"); got != st.reach {
			t.Errorf("guest with %s reaches the peer: %v (%q), want %v", st.name, got, out, st.reach)
		}
	}
}
