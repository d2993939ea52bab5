package plugin

import (
	"fmt"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	"github.com/slimvirt/slimvirt/cni/netconf"
)

// podRef reads the pod's namespace, name and UID from CNI_ARGS (containerd and CRI-O set all
// three).
func podRef(cniArgs string) (launcherpod.PodRef, error) {
	k := netconf.K8sArgs{}
	if err := types.LoadArgs(cniArgs, &k); err != nil {
		return launcherpod.PodRef{}, fmt.Errorf("parse CNI_ARGS: %w", err)
	}
	return launcherpod.PodRef{Namespace: string(k.K8S_POD_NAMESPACE), Name: string(k.K8S_POD_NAME), UID: string(k.K8S_POD_UID)}, nil
}

// trustedInterfaces returns the VM interfaces of a launcher pod, or nil when the pod's
// annotation does not verify for exactly this pod object (namespace, name and UID): a forged
// annotation, or one copied from a deleted launcher pod onto a new pod of the same name, leaves
// the pod an ordinary pod, passed through untouched, as it would be without slimvirt. A verified
// annotation that does not parse or validate is an error: the controller wrote it wrong.
func trustedInterfaces(key []byte, pod launcherpod.PodRef, annotations map[string]string) ([]netconf.VMInterface, error) {
	value := annotations[launcherpod.AnnotationInterfaces]
	if err := launcherpod.VerifyPod(key, pod, value, annotations[launcherpod.AnnotationSignature]); err != nil {
		return nil, nil
	}
	parsed, err := launcherpod.ParseInterfaces(value)
	if err != nil {
		return nil, err
	}
	ifaces := make([]netconf.VMInterface, len(parsed))
	for i := range parsed {
		ifaces[i] = netconf.VMInterface{Interface: parsed[i]}
	}
	if err := netconf.Validate(ifaces); err != nil {
		return nil, fmt.Errorf("validate annotation %s: %w", launcherpod.AnnotationInterfaces, err)
	}
	return ifaces, nil
}
