package vmsnapshot

import (
	"fmt"
	"sort"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	storagev1 "k8s.io/api/storage/v1"

	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// Volume is a volume of the VM that the snapshot copies: its name and its PVC.
type Volume struct {
	Name  string
	Claim string
}

// Volumes splits a VM's volumes into those backed by a PVC (persistentVolumeClaim and
// dataVolume volumes, in the spec's order) and those that cannot be snapshotted (containerDisk,
// emptyDisk, hostDisk, cloud-init), which KubeVirt lists as excluded.
func Volumes(spec *v1.VirtualMachineSpec) (included []Volume, excluded []string) {
	for _, vol := range spec.Template.Spec.Volumes {
		switch {
		case vol.PersistentVolumeClaim != nil:
			included = append(included, Volume{Name: vol.Name, Claim: vol.PersistentVolumeClaim.ClaimName})
		case vol.DataVolume != nil:
			included = append(included, Volume{Name: vol.Name, Claim: vol.DataVolume.Name})
		default:
			excluded = append(excluded, vol.Name)
		}
	}
	return included, excluded
}

// ClassFor picks the VolumeSnapshotClass for a StorageClass's provisioner: of the classes of
// that driver, the one annotated as default, else the first by name. The error says what is
// missing.
func ClassFor(sc *storagev1.StorageClass, classes []snapv1.VolumeSnapshotClass) (string, error) {
	var names []string
	for _, c := range classes {
		if c.Driver != sc.Provisioner {
			continue
		}
		if c.Annotations[defaultClassAnnotation] == "true" {
			return c.Name, nil
		}
		names = append(names, c.Name)
	}
	if len(names) == 0 {
		return "", fmt.Errorf("no VolumeSnapshotClass for driver %s (the provisioner of StorageClass %s)", sc.Provisioner, sc.Name)
	}
	sort.Strings(names)
	return names[0], nil
}

// defaultClassAnnotation marks the default VolumeSnapshotClass of a driver.
const defaultClassAnnotation = "snapshot.storage.kubernetes.io/is-default-class"

// ContentName is the content of a snapshot, named after its UID as KubeVirt does.
func ContentName(s *v1.VirtualMachineSnapshot) string {
	return "vmsnapshot-content-" + string(s.UID)
}

// VolumeSnapshotName is the VolumeSnapshot of a volume, named as KubeVirt does.
func VolumeSnapshotName(s *v1.VirtualMachineSnapshot, volume string) string {
	return "vmsnapshot-" + string(s.UID) + "-volume-" + volume
}

// Captured is the VM as the content keeps it.
func Captured(vm *v1.VirtualMachine) *v1.SnapshotVirtualMachine {
	return &v1.SnapshotVirtualMachine{
		ObjectMeta: v1.SnapshotObjectMeta{Name: vm.Name, Namespace: vm.Namespace, UID: vm.UID, Generation: vm.Generation,
			Labels: vm.Labels, Annotations: withoutLastApplied(vm.Annotations)},
		Spec: *vm.Spec.DeepCopy(),
	}
}

// withoutLastApplied drops kubectl's copy of the whole object, which would double the content.
func withoutLastApplied(in map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range in {
		if k != "kubectl.kubernetes.io/last-applied-configuration" {
			out[k] = v
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
