package v1alpha1

import "strings"

// DefaultInterfaceName is KubeVirt's name for the pod interface a VMI gets when it lists none.
const DefaultInterfaceName = "default"

// DefaultNICModel is the NIC model of an interface that names none.
const DefaultNICModel = "virtio"

// WantsPodNetwork says whether the VMI has a NIC on the pod network: each listed interface is
// one, and a VMI that lists none gets one unless autoattachPodInterface is false.
func (vmi *VirtualMachineInstance) WantsPodNetwork() bool {
	dev := vmi.Spec.Domain.Devices
	return len(dev.Interfaces) > 0 || dev.AutoattachPodInterface == nil || *dev.AutoattachPodInterface
}

// InterfaceName names the VMI's i-th pod NIC: the listed interface's name, else
// DefaultInterfaceName (the NIC added when none is listed).
func (vmi *VirtualMachineInstance) InterfaceName(i int) string {
	if ifs := vmi.Spec.Domain.Devices.Interfaces; i >= 0 && i < len(ifs) {
		return ifs[i].Name
	}
	return DefaultInterfaceName
}

// FindInterface returns the listed interface called name.
func (vmi *VirtualMachineInstance) FindInterface(name string) (Interface, bool) {
	for _, i := range vmi.Spec.Domain.Devices.Interfaces {
		if i.Name == name {
			return i, true
		}
	}
	return Interface{}, false
}

// GuestHostname is the name the guest is given (DHCP, cloud-init): spec.hostname, else the
// VMI's name.
func (vmi *VirtualMachineInstance) GuestHostname() string {
	if vmi.Spec.Hostname != "" {
		return vmi.Spec.Hostname
	}
	return vmi.Name
}

// NICModel is the interface's NIC model: DefaultNICModel when it names none.
func (i *Interface) NICModel() string {
	if i.Model == "" {
		return DefaultNICModel
	}
	return i.Model
}

// GuestMAC is the interface's macAddress as libvirt and the kernel print a MAC (lower case,
// colon-separated; the spec also allows upper case and '-'), or "" when unset.
func (i *Interface) GuestMAC() string {
	return strings.ReplaceAll(strings.ToLower(i.MacAddress), "-", ":")
}
