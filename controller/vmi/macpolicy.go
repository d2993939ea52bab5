package vmi

import (
	"fmt"
	"net"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// ReasonMACAddressRefused is why a VMI whose macAddress the cluster does not allow gets no pod.
const ReasonMACAddressRefused = "MACAddressRefused"

// macProblem says why a VMI's chosen MACs are refused, or nil. On the bridge binding the guest's
// frames leave the pod with its MAC as their source, so a tenant-chosen MAC equal to another
// pod's would take that pod's inbound frames on a bridge-style cluster CNI. Unless the cluster's
// admin allows custom MACs, only locally administered ones are used; the CNI plugin on the node
// also refuses, whatever the flag, a MAC that another party there already uses, which the
// controller cannot see. A masqueraded guest's MAC never leaves the pod.
func macProblem(vmi *v1.VirtualMachineInstance, allowCustomMACs bool) *Problem {
	for _, iface := range vmi.LauncherInterfaces() {
		if iface.Binding != launcherpod.BindingBridge || iface.MAC == "" {
			continue
		}
		mac, err := net.ParseMAC(iface.MAC)
		if err != nil || len(mac) != 6 {
			return &Problem{ReasonMACAddressRefused, fmt.Sprintf("interface %s: macAddress %q is not a 48-bit MAC", iface.Name, iface.MAC)}
		}
		if mac[0]&1 == 1 {
			return &Problem{ReasonMACAddressRefused, fmt.Sprintf("interface %s: macAddress %s is a multicast address; a VM interface needs a unicast MAC", iface.Name, mac)}
		}
		if mac[0]&2 == 0 && !allowCustomMACs {
			suggest := append(net.HardwareAddr{mac[0] | 2}, mac[1:]...)
			return &Problem{ReasonMACAddressRefused, fmt.Sprintf("interface %s: macAddress %s is not locally administered (the 0x02 bit of its first byte is clear) "+
				"and this cluster does not allow custom MACs (the controller's --allow-custom-macs): on the bridge binding a MAC another pod has would take its traffic; "+
				"use a locally administered MAC such as %s, or none", iface.Name, mac, suggest)}
		}
	}
	return nil
}
