package v1alpha1

import (
	"testing"

	"k8s.io/utils/ptr"
)

func TestWantsPodNetwork(t *testing.T) {
	tests := []struct {
		name   string
		ifaces []Interface
		auto   *bool
		want   bool
	}{
		{name: "no interface listed: one added", want: true},
		{name: "no interface listed, autoattach true", auto: ptr.To(true), want: true},
		{name: "no interface listed, autoattach false", auto: ptr.To(false), want: false},
		{name: "an interface listed", ifaces: []Interface{{Name: "net0"}}, want: true},
		{name: "an interface listed wins over autoattach false", ifaces: []Interface{{Name: "net0"}}, auto: ptr.To(false), want: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			vmi := &VirtualMachineInstance{}
			vmi.Spec.Domain.Devices.Interfaces = tc.ifaces
			vmi.Spec.Domain.Devices.AutoattachPodInterface = tc.auto
			if got := vmi.WantsPodNetwork(); got != tc.want {
				t.Errorf("WantsPodNetwork() = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestInterfaceNames(t *testing.T) {
	vmi := &VirtualMachineInstance{}
	if got := vmi.InterfaceName(0); got != DefaultInterfaceName {
		t.Errorf("no interface listed: InterfaceName(0) = %q, want %q", got, DefaultInterfaceName)
	}
	vmi.Spec.Domain.Devices.Interfaces = []Interface{{Name: "net0", Model: "e1000"}, {Name: "net1"}}
	for i, want := range []string{"net0", "net1", DefaultInterfaceName} {
		if got := vmi.InterfaceName(i); got != want {
			t.Errorf("InterfaceName(%d) = %q, want %q", i, got, want)
		}
	}
	if got, ok := vmi.FindInterface("net0"); !ok || got.Model != "e1000" {
		t.Errorf("FindInterface(net0) = %+v, %v", got, ok)
	}
	if _, ok := vmi.FindInterface("nope"); ok {
		t.Error("FindInterface found an interface the VMI does not list")
	}
}

func TestGuestHostname(t *testing.T) {
	vmi := &VirtualMachineInstance{}
	vmi.Name = "vm1"
	if got := vmi.GuestHostname(); got != "vm1" {
		t.Errorf("GuestHostname() = %q, want the VMI's name", got)
	}
	vmi.Spec.Hostname = "web"
	if got := vmi.GuestHostname(); got != "web" {
		t.Errorf("GuestHostname() = %q, want spec.hostname", got)
	}
}

func TestNICModel(t *testing.T) {
	for model, want := range map[string]string{"": "virtio", "virtio": "virtio", "e1000": "e1000", "rtl8139": "rtl8139"} {
		i := Interface{Model: model}
		if got := i.NICModel(); got != want {
			t.Errorf("NICModel() of model %q = %q, want %q", model, got, want)
		}
	}
}

func TestGuestMAC(t *testing.T) {
	for mac, want := range map[string]string{
		"":                  "",
		"02:00:00:aa:bb:cc": "02:00:00:aa:bb:cc",
		"02:00:00:AA:BB:CC": "02:00:00:aa:bb:cc",
		"02-00-00-Aa-bB-cc": "02:00:00:aa:bb:cc",
	} {
		i := Interface{MacAddress: mac}
		if got := i.GuestMAC(); got != want {
			t.Errorf("GuestMAC() of %q = %q, want %q", mac, got, want)
		}
	}
}
