package vmnet

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/slimvirt/slimvirt/internal/testutil"
)

func cidr(s string) *net.IPNet {
	ip, n, _ := net.ParseCIDR(s)
	n.IP = ip.To4()
	return n
}

func TestSortRoutes(t *testing.T) {
	routes := []Route{
		{Dst: cidr("0.0.0.0/0"), Gateway: net.ParseIP("169.254.1.1").To4()},
		{Dst: cidr("10.96.0.0/12"), Gateway: net.ParseIP("169.254.1.1").To4()},
		{Dst: cidr("169.254.1.1/32")},
	}
	sortRoutes(routes)
	var got []string
	for _, r := range routes {
		got = append(got, r.Dst.String())
	}
	if want := "169.254.1.1/32,10.96.0.0/12,0.0.0.0/0"; strings.Join(got, ",") != want {
		t.Errorf("order %v, want %s (on-link first, default last)", got, want)
	}
}

func TestParseResolvConf(t *testing.T) {
	p := filepath.Join(t.TempDir(), "resolv.conf")
	testutil.Must(t, os.WriteFile(p, []byte("# comment\nnameserver 10.96.0.10\nnameserver fd00::10\nsearch a.svc.cluster.local svc.cluster.local\noptions ndots:5\n"), 0o644))
	dns, search, err := ParseResolvConf(p)
	if err != nil || len(dns) != 1 || dns[0].String() != "10.96.0.10" || strings.Join(search, " ") != "a.svc.cluster.local svc.cluster.local" {
		t.Errorf("ParseResolvConf = %v %v %v", dns, search, err)
	}
	if dns, search, err := ParseResolvConf(filepath.Join(t.TempDir(), "missing")); err != nil || dns != nil || search != nil {
		t.Errorf("missing file: %v %v %v", dns, search, err)
	}
}

func testPlan() *Plan {
	return &Plan{
		BridgeName: "k6t-eth0", GuestMAC: net.HardwareAddr{0x0a, 0x58, 0x0a, 0, 0, 5},
		GuestIP: cidr("10.244.1.5/32"), Gateway: net.ParseIP("169.254.1.1").To4(), MTU: 8951,
		Routes: []Route{{Dst: cidr("169.254.1.1/32")}, {Dst: cidr("169.254.75.10/32")},
			{Dst: cidr("0.0.0.0/0"), Gateway: net.ParseIP("169.254.1.1").To4()}},
		DNS: []net.IP{net.ParseIP("10.96.0.10").To4()}, Search: []string{"default.svc.cluster.local"},
		ServerIP: net.ParseIP("169.254.75.10").To4(), ServerMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1},
	}
}

func TestLeaseOptions(t *testing.T) {
	s := &Server{plan: testPlan(), opts: ServeOptions{Hostname: "vm1", Domain: "default.svc.cluster.local"}}
	req, _ := dhcpv4.NewDiscovery(s.plan.GuestMAC)
	offer, err := s.lease(req, dhcpv4.MessageTypeOffer)
	if err != nil {
		t.Fatal(err)
	}
	mtu, _ := dhcpv4.GetUint16(dhcpv4.OptionInterfaceMTU, offer.Options)
	routes := offer.ClasslessStaticRoute()
	checks := []struct {
		name      string
		got, want string
	}{
		{"type", offer.MessageType().String(), "OFFER"},
		{"yiaddr", offer.YourIPAddr.String(), "10.244.1.5"},
		{"mask", net.IP(offer.SubnetMask()).String(), "255.255.255.255"},
		{"router", offer.Router()[0].String(), "169.254.1.1"},
		{"dns", offer.DNS()[0].String(), "10.96.0.10"},
		{"hostname", offer.HostName(), "vm1"},
		{"domain", offer.DomainName(), "default.svc.cluster.local"},
		{"search", strings.Join(offer.DomainSearch().Labels, ","), "default.svc.cluster.local"},
		{"mtu", fmt.Sprint(mtu), "8951"},
		{"server id", offer.ServerIdentifier().String(), "169.254.75.10"},
		{"lease", offer.IPAddressLeaseTime(0).String(), LeaseTime.String()},
		{"last route", routes[len(routes)-1].String(), "route to 0.0.0.0/0 via 169.254.1.1"},
		{"first route", routes[0].String(), "route to 169.254.1.1/32 via 0.0.0.0"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}
}

// fakeConn records what the handler sends.
type fakeConn struct {
	net.PacketConn
	sent []*dhcpv4.DHCPv4
}

func (f *fakeConn) WriteTo(b []byte, _ net.Addr) (int, error) {
	m, err := dhcpv4.FromBytes(b)
	if err != nil {
		return 0, err
	}
	f.sent = append(f.sent, m)
	return len(b), nil
}

func TestHandleDHCP(t *testing.T) {
	p := testPlan()
	other := net.HardwareAddr{2, 9, 9, 9, 9, 9}
	request := func(mac net.HardwareAddr, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
		m, _ := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithHwAddr(mac), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest)}, mods...)...)
		return m
	}
	discover, _ := dhcpv4.NewDiscovery(p.GuestMAC)
	strangerDiscover, _ := dhcpv4.NewDiscovery(other)
	tests := []struct {
		name string
		in   *dhcpv4.DHCPv4
		want string // reply type, "" for none
	}{
		{"discover", discover, "OFFER"},
		{"another client", strangerDiscover, ""},
		{"request for the lease", request(p.GuestMAC, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(p.GuestIP.IP))), "ACK"},
		{"renewal (ciaddr)", request(p.GuestMAC, dhcpv4.WithClientIP(p.GuestIP.IP)), "ACK"},
		{"request for another address", request(p.GuestMAC, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("10.1.1.1")))), "NAK"},
		{"request to another server", request(p.GuestMAC, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(p.GuestIP.IP)),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.ParseIP("10.0.0.1")))), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var leased []net.IP
			s := &Server{plan: p, log: slog.New(slog.DiscardHandler), opts: ServeOptions{OnLease: func(ip net.IP) { leased = append(leased, ip) }}}
			conn := &fakeConn{}
			s.handleDHCP(conn, &net.UDPAddr{IP: net.IPv4bcast, Port: 68}, tt.in)
			got := ""
			if len(conn.sent) == 1 {
				got = conn.sent[0].MessageType().String()
			}
			if got != tt.want {
				t.Fatalf("reply %q, want %q", got, tt.want)
			}
			if wantLease := tt.want == "ACK"; (len(leased) == 1) != wantLease {
				t.Errorf("OnLease calls %v, want one: %v", leased, wantLease)
			}
		})
	}
}
