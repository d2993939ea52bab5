package vmi

import (
	"strings"
	"testing"

	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

func TestMACProblem(t *testing.T) {
	bridge := func(mac string) v1.Interface {
		return v1.Interface{Name: "default", Bridge: &v1.InterfaceBridge{}, MacAddress: mac}
	}
	masquerade := func(mac string) v1.Interface {
		return v1.Interface{Name: "default", Masquerade: &v1.InterfaceMasquerade{}, MacAddress: mac}
	}
	tests := []struct {
		name  string
		iface v1.Interface
		allow bool
		want  string // "" = no problem
	}{
		{"no mac", bridge(""), false, ""},
		{"locally administered", bridge("02:16:3e:12:34:56"), false, ""},
		{"qemu's range is locally administered", bridge("52:54:00:12:34:56"), false, ""},
		{"vendor mac", bridge("00:16:3e:12:34:56"), false, "macAddress 00:16:3e:12:34:56 is not locally administered"},
		{"vendor mac suggests the local one", bridge("00:16:3e:12:34:56"), false, "such as 02:16:3e:12:34:56"},
		{"vendor mac, allowed", bridge("00:16:3e:12:34:56"), true, ""},
		{"multicast, even allowed", bridge("03:00:00:00:00:01"), true, "multicast"},
		{"vendor mac on masquerade stays in the pod", masquerade("00:16:3e:12:34:56"), false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vmi := &v1.VirtualMachineInstance{Spec: v1.VirtualMachineInstanceSpec{Domain: v1.DomainSpec{Devices: v1.Devices{Interfaces: []v1.Interface{tt.iface}}}}}
			p := macProblem(vmi, tt.allow)
			if tt.want == "" {
				if p != nil {
					t.Fatalf("problem %+v, want none", p)
				}
				return
			}
			if p == nil || p.Reason != ReasonMACAddressRefused || !strings.Contains(p.Message, tt.want) {
				t.Fatalf("problem %+v, want %s with %q", p, ReasonMACAddressRefused, tt.want)
			}
		})
	}
}
