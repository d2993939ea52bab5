package launcherpod

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

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

// MaxInterfacesAnnotation bounds the interfaces annotation the CNI plugin parses. The largest
// the controller writes (one masquerade interface with 128 ports) is under 8 KiB.
const MaxInterfacesAnnotation = 64 << 10

// ParseInterfaces reads an AnnotationInterfaces value: one JSON list of Interface, bounded in
// size, with no field this package does not know and nothing after the list. It checks the
// form only; what the values may be is for the user of the list to check.
func ParseInterfaces(value string) ([]Interface, error) {
	if len(value) > MaxInterfacesAnnotation {
		return nil, fmt.Errorf("parse annotation %s: %d bytes, at most %d", AnnotationInterfaces, len(value), MaxInterfacesAnnotation)
	}
	d := json.NewDecoder(bytes.NewReader([]byte(value)))
	d.DisallowUnknownFields()
	var out []Interface
	if err := d.Decode(&out); err != nil {
		return nil, fmt.Errorf("parse annotation %s: %w", AnnotationInterfaces, err)
	}
	if out == nil {
		return nil, fmt.Errorf("parse annotation %s: not a list", AnnotationInterfaces)
	}
	if _, err := d.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("parse annotation %s: data after the list", AnnotationInterfaces)
	}
	return out, nil
}
