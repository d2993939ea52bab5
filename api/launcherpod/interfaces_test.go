package launcherpod

import (
	"reflect"
	"testing"

	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

func TestInterfacesFor(t *testing.T) {
	no := false
	tests := []struct {
		name string
		spec v1.VirtualMachineInstanceSpec
		want []Interface
	}{
		{"none listed gets the default bridge", v1.VirtualMachineInstanceSpec{}, []Interface{{Name: "default", Binding: BindingBridge}}},
		{"autoattach off", v1.VirtualMachineInstanceSpec{Domain: v1.DomainSpec{Devices: v1.Devices{AutoattachPodInterface: &no}}}, []Interface{}},
		{"bridge with mac", v1.VirtualMachineInstanceSpec{Domain: v1.DomainSpec{Devices: v1.Devices{Interfaces: []v1.Interface{
			{Name: "net0", Bridge: &v1.InterfaceBridge{}, MacAddress: "02:00:00:aa:bb:cc"}}}}},
			[]Interface{{Name: "net0", Binding: BindingBridge, MAC: "02:00:00:aa:bb:cc"}}},
		{"masquerade with cidr and ports", v1.VirtualMachineInstanceSpec{
			Domain: v1.DomainSpec{Devices: v1.Devices{Interfaces: []v1.Interface{{Name: "default", Masquerade: &v1.InterfaceMasquerade{},
				Ports: []v1.Port{{Port: 80}, {Protocol: "UDP", Port: 53}}}}}},
			Networks: []v1.Network{{Name: "default", NetworkSource: v1.NetworkSource{Pod: &v1.PodNetwork{VMNetworkCIDR: "10.11.0.0/24"}}}}},
			[]Interface{{Name: "default", Binding: BindingMasquerade, VMNetworkCIDR: "10.11.0.0/24",
				Ports: []Port{{Protocol: "TCP", Port: 80}, {Protocol: "UDP", Port: 53}}}}},
	}
	yes := true
	tests = append(tests, struct {
		name string
		spec v1.VirtualMachineInstanceSpec
		want []Interface
	}{"multiqueue virtio gets one queue per vCPU, e1000 none", v1.VirtualMachineInstanceSpec{Domain: v1.DomainSpec{
		CPU: &v1.CPU{Cores: 2, Sockets: 2},
		Devices: v1.Devices{NetworkInterfaceMultiQueue: &yes, Interfaces: []v1.Interface{
			{Name: "a", Bridge: &v1.InterfaceBridge{}}, {Name: "b", Model: "e1000", Bridge: &v1.InterfaceBridge{}}}}}},
		[]Interface{{Name: "a", Binding: BindingBridge, Queues: 4}, {Name: "b", Binding: BindingBridge}}})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := InterfacesFor(&v1.VirtualMachineInstance{Spec: tt.spec})
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}
