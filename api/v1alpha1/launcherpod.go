package v1alpha1

import "github.com/slimvirt/slimvirt/api/launcherpod"

// LauncherInterfaces is what the CNI plugin and the launcher need to know of the VMI's NICs
// (the controller writes it into launcherpod.AnnotationInterfaces, the launcher computes it
// again from the VMI). A VMI that lists no interface gets one bridge interface on the pod
// network, as KubeVirt does, unless autoattachPodInterface is false.
func (vmi *VirtualMachineInstance) LauncherInterfaces() []launcherpod.Interface {
	spec := &vmi.Spec
	if !vmi.WantsPodNetwork() {
		return []launcherpod.Interface{}
	}
	if len(spec.Domain.Devices.Interfaces) == 0 {
		return []launcherpod.Interface{{Name: DefaultInterfaceName, Binding: launcherpod.BindingBridge}}
	}
	out := make([]launcherpod.Interface, 0, len(spec.Domain.Devices.Interfaces))
	for _, iface := range spec.Domain.Devices.Interfaces {
		li := launcherpod.Interface{Name: iface.Name, Binding: launcherpod.BindingBridge, MAC: iface.MacAddress}
		if iface.NICModel() == "virtio" {
			li.Queues = spec.Domain.NICQueues()
		}
		if iface.Masquerade != nil {
			li.Binding = launcherpod.BindingMasquerade
			li.VMNetworkCIDR = spec.vmNetworkCIDR(iface.Name)
			for _, p := range iface.Ports {
				proto := p.Protocol
				if proto == "" {
					proto = "TCP"
				}
				li.Ports = append(li.Ports, launcherpod.Port{Protocol: proto, Port: p.Port})
			}
		}
		out = append(out, li)
	}
	return out
}

// vmNetworkCIDR is the masquerade network the pod network named name asks for, "" for the
// default.
func (s *VirtualMachineInstanceSpec) vmNetworkCIDR(name string) string {
	cidr := ""
	for _, n := range s.Networks {
		if n.Name == name && n.Pod != nil {
			cidr = n.Pod.VMNetworkCIDR
		}
	}
	return cidr
}

// GuestOSInfoFrom is the status's guestOSInfo for what the launcher reported of the guest
// (launcherpod.Status.GuestOS); nil for nil.
func GuestOSInfoFrom(in *launcherpod.GuestOSInfo) *GuestOSInfo {
	if in == nil {
		return nil
	}
	out := GuestOSInfo(*in)
	return &out
}
