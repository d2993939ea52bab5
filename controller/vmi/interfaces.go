package vmi

import (
	"encoding/json"
	"fmt"

	"k8s.io/utils/ptr"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// launcherInterfaces is what the CNI plugin needs to know of the VMI's NICs; the launcher
// computes the same list with the same function. The taps belong to the launcher's uid, so
// QEMU can open them without privileges.
func launcherInterfaces(vmi *v1.VirtualMachineInstance) []launcherpod.Interface {
	ifaces := vmi.LauncherInterfaces()
	for i := range ifaces {
		ifaces[i].TapOwner = ptr.To(launcherpod.LauncherUID)
	}
	return ifaces
}

// interfacesAnnotation returns the interfaces annotation value of a VMI's launcher pod. It is
// signed only once the pod exists (releasePatch), since the signature names the pod's UID.
func interfacesAnnotation(vmi *v1.VirtualMachineInstance) (string, error) {
	raw, err := json.Marshal(launcherInterfaces(vmi))
	if err != nil {
		return "", fmt.Errorf("encode interfaces of vmi %s: %w", vmi.Name, err)
	}
	return string(raw), nil
}
