package netconf

import (
	"strings"
	"testing"

	"github.com/slimvirt/slimvirt/api/launcherpod"
)

const testUID = "3f1c2e9a-0b7d-4c55-9d2e-6a1b8c0d4e7f"

func TestInterfaces(t *testing.T) {
	key := []byte("k")
	signed := func(ns, pod, value string) map[string]string {
		return map[string]string{
			launcherpod.AnnotationInterfaces: value,
			launcherpod.AnnotationSignature:  launcherpod.SignPod(key, launcherpod.PodRef{Namespace: ns, Name: pod, UID: testUID}, value),
		}
	}
	tests := []struct {
		name        string
		key         []byte
		annotations map[string]string
		want        int    // interfaces returned
		wantErr     string // "" = no error
	}{
		{"not a launcher pod", key, map[string]string{"a": "b"}, 0, ""},
		{"no key", nil, signed("ns", "p", `[{"name":"default","binding":"bridge"}]`), 0, ""},
		{"bridge", key, signed("ns", "p", `[{"name":"default","binding":"bridge","tapOwner":107}]`), 1, ""},
		{"masquerade with ports", key, signed("ns", "p", `[{"name":"default","binding":"masquerade","vmNetworkCIDR":"10.0.2.0/24","ports":[{"protocol":"TCP","port":80}]}]`), 1, ""},
		{"signed garbage", key, signed("ns", "p", `{`), 0, "parse annotation"},
		{"empty list", key, signed("ns", "p", `[]`), 0, "no interface"},
		{"two interfaces", key, signed("ns", "p", `[{"name":"a","binding":"bridge"},{"name":"b","binding":"bridge"}]`), 0, "at most 1"},
		{"ports on bridge", key, signed("ns", "p", `[{"name":"a","binding":"bridge","ports":[{"protocol":"TCP","port":80}]}]`), 0, "only for the masquerade"},
		{"cidr on bridge", key, signed("ns", "p", `[{"name":"a","binding":"bridge","vmNetworkCIDR":"10.0.2.0/24"}]`), 0, "only for the masquerade"},
		{"ipv6 cidr", key, signed("ns", "p", `[{"name":"a","binding":"masquerade","vmNetworkCIDR":"fd10::/120"}]`), 0, "not IPv4"},
		{"zero mac", key, signed("ns", "p", `[{"name":"a","binding":"bridge","mac":"00:00:00:00:00:00"}]`), 0, "zero"},
		{"long mac", key, signed("ns", "p", `[{"name":"a","binding":"bridge","mac":"00:00:00:00:00:00:00:01"}]`), 0, "48-bit"},
		{"uppercase name", key, signed("ns", "p", `[{"name":"Default","binding":"bridge"}]`), 0, "DNS label"},
		{"port zero", key, signed("ns", "p", `[{"name":"a","binding":"masquerade","ports":[{"protocol":"UDP","port":0}]}]`), 0, "out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Interfaces(tt.key, launcherpod.PodRef{Namespace: "ns", Name: "p", UID: testUID}, tt.annotations)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			if len(got) != tt.want {
				t.Errorf("%d interfaces, want %d", len(got), tt.want)
			}
		})
	}
}

func TestVMNetwork(t *testing.T) {
	tests := []struct{ cidr, gw, guest, err string }{
		{"", "10.0.2.1", "10.0.2.2", ""},
		{"10.0.2.0/24", "10.0.2.1", "10.0.2.2", ""},
		{"192.168.7.4/30", "192.168.7.5", "192.168.7.6", ""},
		{"172.16.0.0/12", "172.16.0.1", "172.16.0.2", ""},
		{"10.0.2.0/31", "", "", "prefix"},
		{"10.0.0.0/7", "", "", "prefix"},
		{"nonsense", "", "", "parse"},
	}
	for _, tt := range tests {
		t.Run(tt.cidr, func(t *testing.T) {
			n, err := VMNetwork(tt.cidr)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || n.Gateway.String() != tt.gw || n.Guest.String() != tt.guest {
				t.Fatalf("VMNetwork = %+v, %v; want %s, %s", n, err, tt.gw, tt.guest)
			}
		})
	}
}

func TestParse(t *testing.T) {
	tests := []struct{ stdin, parseErr, stateErr string }{
		{`{"type":"slimvirt","stateDir":"/var/lib/slimvirt"}`, "", ""},
		{`{"type":"slimvirt"}`, "", "stateDir is required"},
		{`{"type":"slimvirt","stateDir":"relative"}`, "", "not absolute"},
		{`{`, "parse", ""},
	}
	for _, tt := range tests {
		c, err := Parse([]byte(tt.stdin))
		if tt.parseErr == "" && err != nil || tt.parseErr != "" && (err == nil || !strings.Contains(err.Error(), tt.parseErr)) {
			t.Errorf("Parse(%s) = %v, want %q", tt.stdin, err, tt.parseErr)
		}
		if err != nil {
			continue
		}
		if err := c.CheckStateDir(); tt.stateErr == "" && err != nil || tt.stateErr != "" && (err == nil || !strings.Contains(err.Error(), tt.stateErr)) {
			t.Errorf("CheckStateDir(%s) = %v, want %q", tt.stdin, err, tt.stateErr)
		}
	}
}
