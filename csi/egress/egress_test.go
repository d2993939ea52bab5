package egress

import (
	"net"
	"net/netip"
	"strings"
	"testing"
)

// TestCheck: the built-in rules, the node's addresses and the admin lists.
func TestCheck(t *testing.T) {
	node := func() ([]net.Addr, error) {
		_, n, _ := net.ParseCIDR("10.0.0.0/24")
		n.IP = net.ParseIP("10.0.0.5")
		return []net.Addr{n, &net.IPNet{IP: net.ParseIP("2001:db8::5"), Mask: net.CIDRMask(64, 128)}}, nil
	}
	cidrs := func(s string) []netip.Prefix {
		l, err := ParseCIDRs(s)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	tests := []struct {
		addr, allow, deny, want string // want: empty means allowed
	}{
		{"93.184.216.34", "", "", ""},
		{"127.0.0.1", "", "", "loopback"},
		{"127.8.9.10", "", "", "loopback"},
		{"::1", "", "", "loopback"},
		{"::ffff:127.0.0.1", "", "", "127.0.0.1 is a loopback"},
		{"169.254.169.254", "", "", "link-local"},
		{"fe80::1", "", "", "link-local"},
		{"0.0.0.0", "", "", "unspecified"},
		{"0.1.2.3", "", "", "unspecified"},
		{"::", "", "", "unspecified"},
		{"224.0.0.1", "", "", "link-local"},
		{"239.1.2.3", "", "", "multicast"},
		{"ff02::1", "", "", "link-local"},
		{"255.255.255.255", "", "", "broadcast"},
		{"10.0.0.255", "", "", "broadcast address of a network of the node"},
		{"10.0.0.5", "", "", "an address of the node"},
		{"2001:db8::5", "", "", "an address of the node"},
		{"10.0.0.6", "", "", ""},
		{"127.0.0.1", "127.0.0.0/8", "", ""},
		{"10.0.0.5", "10.0.0.5", "", ""},
		{"10.96.0.1", "", "10.96.0.0/12", "10.96.0.0/12, which the cluster admin denies"},
		{"127.0.0.1", "127.0.0.0/8", "127.0.0.1/32", "denies"},
	}
	for _, tt := range tests {
		t.Run(tt.addr+" allow "+tt.allow+" deny "+tt.deny, func(t *testing.T) {
			p := Policy{Allow: cidrs(tt.allow), Deny: cidrs(tt.deny), Interfaces: node}
			err := p.Check(netip.MustParseAddr(tt.addr))
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			r, ok := AsRefused(err)
			if !ok || !r.Permanent() || !strings.HasPrefix(err.Error(), "import refused: ") || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want a refusal saying %q", err, tt.want)
			}
		})
	}
}

func TestParseCIDRs(t *testing.T) {
	got, err := ParseCIDRs(" 10.0.0.0/8, 192.168.1.7 ,fd00::/8,")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.0/8", "192.168.1.7/32", "fd00::/8"}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for i := range want {
		if got[i].String() != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	if _, err := ParseCIDRs("10.0.0.0/33"); err == nil {
		t.Fatal("bad CIDR accepted")
	}
}
