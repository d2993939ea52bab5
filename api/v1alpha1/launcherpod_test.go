package v1alpha1

import (
	"encoding/json"
	"reflect"
	"testing"

	"k8s.io/utils/ptr"

	"github.com/slimvirt/slimvirt/api/launcherpod"
)

func TestLauncherInterfaces(t *testing.T) {
	tests := []struct {
		name string
		spec VirtualMachineInstanceSpec
		want []launcherpod.Interface
	}{
		{"none listed gets the default bridge", VirtualMachineInstanceSpec{},
			[]launcherpod.Interface{{Name: "default", Binding: launcherpod.BindingBridge}}},
		{"autoattach off", VirtualMachineInstanceSpec{Domain: DomainSpec{Devices: Devices{AutoattachPodInterface: ptr.To(false)}}},
			[]launcherpod.Interface{}},
		{"bridge with mac", VirtualMachineInstanceSpec{Domain: DomainSpec{Devices: Devices{Interfaces: []Interface{
			{Name: "net0", Bridge: &InterfaceBridge{}, MacAddress: "02:00:00:aa:bb:cc"}}}}},
			[]launcherpod.Interface{{Name: "net0", Binding: launcherpod.BindingBridge, MAC: "02:00:00:aa:bb:cc"}}},
		{"masquerade with cidr and ports", VirtualMachineInstanceSpec{
			Domain: DomainSpec{Devices: Devices{Interfaces: []Interface{{Name: "default", Masquerade: &InterfaceMasquerade{},
				Ports: []Port{{Port: 80}, {Protocol: "UDP", Port: 53}}}}}},
			Networks: []Network{{Name: "default", NetworkSource: NetworkSource{Pod: &PodNetwork{VMNetworkCIDR: "10.11.0.0/24"}}}}},
			[]launcherpod.Interface{{Name: "default", Binding: launcherpod.BindingMasquerade, VMNetworkCIDR: "10.11.0.0/24",
				Ports: []launcherpod.Port{{Protocol: "TCP", Port: 80}, {Protocol: "UDP", Port: 53}}}}},
		{"multiqueue virtio gets one queue per vCPU, e1000 none", VirtualMachineInstanceSpec{Domain: DomainSpec{
			CPU: &CPU{Cores: 2, Sockets: 2},
			Devices: Devices{NetworkInterfaceMultiQueue: ptr.To(true), Interfaces: []Interface{
				{Name: "a", Bridge: &InterfaceBridge{}}, {Name: "b", Model: "e1000", Bridge: &InterfaceBridge{}},
				{Name: "c", Model: "virtio", Bridge: &InterfaceBridge{}}}}}},
			[]launcherpod.Interface{{Name: "a", Binding: launcherpod.BindingBridge, Queues: 4}, {Name: "b", Binding: launcherpod.BindingBridge},
				{Name: "c", Binding: launcherpod.BindingBridge, Queues: 4}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := (&VirtualMachineInstance{Spec: tt.spec}).LauncherInterfaces()
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// TestGuestOSInfoFrom: the launcher's report and the VMI status spell the guest's OS alike, so
// what the node agent copies reads the same in both.
func TestGuestOSInfoFrom(t *testing.T) {
	if GuestOSInfoFrom(nil) != nil {
		t.Error("nil gave a guestOSInfo")
	}
	in := &launcherpod.GuestOSInfo{ID: "debian", Name: "Debian GNU/Linux", PrettyName: "Debian GNU/Linux 12 (bookworm)", Version: "12 (bookworm)",
		VersionID: "12", KernelRelease: "6.1.0-28-amd64", KernelVersion: "#1 SMP", Machine: "x86_64"}
	reported, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	status, err := json.Marshal(GuestOSInfoFrom(in))
	if err != nil {
		t.Fatal(err)
	}
	if string(reported) != string(status) {
		t.Errorf("launcher reports %s, status says %s", reported, status)
	}
}
