package launcherpod

import (
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// DefaultInterfaceName is KubeVirt's name for the interface added when a VMI lists none.
const DefaultInterfaceName = "default"

// InterfacesFor is what the CNI plugin and the launcher need to know of a VMI's NICs. A VMI
// that lists no interface gets one bridge interface on the pod network, as KubeVirt does,
// unless autoattachPodInterface is false.
func InterfacesFor(vmi *v1.VirtualMachineInstance) []Interface {
	spec := vmi.Spec
	if len(spec.Domain.Devices.Interfaces) == 0 {
		if a := spec.Domain.Devices.AutoattachPodInterface; a != nil && !*a {
			return []Interface{}
		}
		return []Interface{{Name: DefaultInterfaceName, Binding: BindingBridge}}
	}
	queues := 0
	if mq := spec.Domain.Devices.NetworkInterfaceMultiQueue; mq != nil && *mq && spec.Domain.CPU.VCPUs() > 1 {
		queues = spec.Domain.CPU.VCPUs()
	}
	out := make([]Interface, 0, len(spec.Domain.Devices.Interfaces))
	for _, iface := range spec.Domain.Devices.Interfaces {
		li := Interface{Name: iface.Name, Binding: BindingBridge, MAC: iface.MacAddress}
		if iface.Model == "" || iface.Model == "virtio" {
			li.Queues = queues
		}
		if iface.Masquerade != nil {
			li.Binding = BindingMasquerade
			for _, n := range spec.Networks {
				if n.Name == iface.Name && n.Pod != nil {
					li.VMNetworkCIDR = n.Pod.VMNetworkCIDR
				}
			}
			for _, p := range iface.Ports {
				proto := p.Protocol
				if proto == "" {
					proto = "TCP"
				}
				li.Ports = append(li.Ports, Port{Protocol: proto, Port: p.Port})
			}
		}
		out = append(out, li)
	}
	return out
}

// FirstInterfaceName names the interface whose address the VMI's status reports.
func FirstInterfaceName(vmi *v1.VirtualMachineInstance) string {
	if ifs := vmi.Spec.Domain.Devices.Interfaces; len(ifs) > 0 {
		return ifs[0].Name
	}
	return DefaultInterfaceName
}
