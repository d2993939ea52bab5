package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// VirtualMachineRestore puts a stopped VirtualMachine back to a snapshot: new PVCs made from
// the snapshot's VolumeSnapshots, and the VM's spec as it was captured, using them. It has the
// shape of KubeVirt's snapshot.kubevirt.io/v1beta1 VirtualMachineRestore.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=vmrestore;vmrestores,categories=all;slimvirt
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="TargetKind",type=string,JSONPath=`.spec.target.kind`
// +kubebuilder:printcolumn:name="TargetName",type=string,JSONPath=`.spec.target.name`
// +kubebuilder:printcolumn:name="Complete",type=boolean,JSONPath=`.status.complete`
// +kubebuilder:printcolumn:name="RestoreTime",type=date,JSONPath=`.status.restoreTime`
// +kubebuilder:printcolumn:name="Error",type=string,JSONPath=`.status.conditions[?(@.type=="Failure")].message`
type VirtualMachineRestore struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   VirtualMachineRestoreSpec   `json:"spec"`
	Status VirtualMachineRestoreStatus `json:"status,omitempty"`
}

// VirtualMachineRestoreList is a list of VirtualMachineRestores.
//
// +kubebuilder:object:root=true
type VirtualMachineRestoreList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VirtualMachineRestore `json:"items"`
}

// VirtualMachineRestoreSpec names the VM and the snapshot.
//
// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec is immutable"
type VirtualMachineRestoreSpec struct {
	// Target is the VirtualMachine (apiGroup slimvirt.io) of the restore's namespace; it must
	// be the snapshot's source and stopped.
	Target SnapshotSourceReference `json:"target"`
	// VirtualMachineSnapshotName is the snapshot of the restore's namespace to restore.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	VirtualMachineSnapshotName string `json:"virtualMachineSnapshotName"`
}

// VolumeRestore is one volume and the PVC restored for it.
type VolumeRestore struct {
	VolumeName string `json:"volumeName"`
	// PersistentVolumeClaimName is the new PVC.
	PersistentVolumeClaimName string `json:"persistentVolumeClaim"`
	VolumeSnapshotName        string `json:"volumeSnapshotName"`
	// DataVolumeName is the DataVolume the volume used before, if it used one.
	// +optional
	DataVolumeName *string `json:"dataVolumeName,omitempty"`
}

// VirtualMachineRestoreStatus is what the controller did.
type VirtualMachineRestoreStatus struct {
	// +optional
	Restores []VolumeRestore `json:"restores,omitempty"`
	// +optional
	// +nullable
	RestoreTime *metav1.Time `json:"restoreTime,omitempty"`
	// DeletedDataVolumes are the DataVolumes the VM used before; the restore deletes them.
	// +optional
	DeletedDataVolumes []string `json:"deletedDataVolumes,omitempty"`
	// +optional
	Complete *bool `json:"complete,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []SnapshotCondition `json:"conditions,omitempty"`
}

func init() {
	register(&VirtualMachineRestore{}, &VirtualMachineRestoreList{})
}
