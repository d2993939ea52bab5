package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// VirtualMachineSnapshot is a point-in-time copy of a VirtualMachine: its spec and one CSI
// VolumeSnapshot per persistent disk, held in a VirtualMachineSnapshotContent. It has the
// shape of KubeVirt's snapshot.kubevirt.io/v1beta1 VirtualMachineSnapshot.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=vmsnapshot;vmsnapshots,categories=all;slimvirt
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="SourceKind",type=string,JSONPath=`.spec.source.kind`
// +kubebuilder:printcolumn:name="SourceName",type=string,JSONPath=`.spec.source.name`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="ReadyToUse",type=boolean,JSONPath=`.status.readyToUse`
// +kubebuilder:printcolumn:name="CreationTime",type=date,JSONPath=`.status.creationTime`
// +kubebuilder:printcolumn:name="Error",type=string,JSONPath=`.status.error.message`
type VirtualMachineSnapshot struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   VirtualMachineSnapshotSpec   `json:"spec"`
	Status VirtualMachineSnapshotStatus `json:"status,omitempty"`
}

// VirtualMachineSnapshotList is a list of VirtualMachineSnapshots.
//
// +kubebuilder:object:root=true
type VirtualMachineSnapshotList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VirtualMachineSnapshot `json:"items"`
}

// DeletionPolicy says what happens to a snapshot's content when the snapshot is deleted.
// +kubebuilder:validation:Enum=Delete;Retain
type DeletionPolicy string

const (
	// VirtualMachineSnapshotContentDelete deletes the content and its VolumeSnapshots with the
	// snapshot (the default).
	VirtualMachineSnapshotContentDelete DeletionPolicy = "Delete"
	// VirtualMachineSnapshotContentRetain keeps them.
	VirtualMachineSnapshotContentRetain DeletionPolicy = "Retain"
)

// VirtualMachineSnapshotSpec names the VM to snapshot.
//
// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec is immutable"
type VirtualMachineSnapshotSpec struct {
	// Source is the VirtualMachine (apiGroup slimvirt.io) of the snapshot's namespace.
	Source SnapshotSourceReference `json:"source"`
	// DeletionPolicy is Delete (the default) or Retain.
	// +optional
	DeletionPolicy *DeletionPolicy `json:"deletionPolicy,omitempty"`
	// FailureDeadline is how long the snapshot may take before it fails; none when unset or 0.
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s')",message="failureDeadline must not be negative"
	FailureDeadline *metav1.Duration `json:"failureDeadline,omitempty"`
}

// SnapshotSourceReference is a TypedLocalObjectReference (corev1's fields), bounded.
type SnapshotSourceReference struct {
	// +optional
	// +kubebuilder:validation:MaxLength=253
	APIGroup *string `json:"apiGroup,omitempty"`
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Kind string `json:"kind"`
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`
}

// VirtualMachineSnapshotPhase is where a snapshot stands; the values are KubeVirt's.
type VirtualMachineSnapshotPhase string

// The snapshot phases.
const (
	SnapshotPhaseUnset VirtualMachineSnapshotPhase = ""
	SnapshotInProgress VirtualMachineSnapshotPhase = "InProgress"
	SnapshotSucceeded  VirtualMachineSnapshotPhase = "Succeeded"
	SnapshotFailed     VirtualMachineSnapshotPhase = "Failed"
)

// Indication is a fact about how the snapshot was taken; the values are KubeVirt's.
type Indication string

const (
	// IndicationOnline says the VM was running.
	IndicationOnline Indication = "Online"
	// IndicationGuestAgent says the guest's filesystems were frozen through its agent.
	IndicationGuestAgent Indication = "GuestAgent"
	// IndicationNoGuestAgent says there was no agent to freeze them; the copy is crash-consistent.
	IndicationNoGuestAgent Indication = "NoGuestAgent"
)

// SnapshotConditionType names a snapshot or restore condition; the values are KubeVirt's.
type SnapshotConditionType string

// The snapshot and restore conditions.
const (
	ConditionProgressing SnapshotConditionType = "Progressing"
	ConditionReady       SnapshotConditionType = "Ready"
	ConditionFailure     SnapshotConditionType = "Failure"
)

// SnapshotCondition is one condition of a snapshot or a restore.
type SnapshotCondition struct {
	Type   SnapshotConditionType  `json:"type"`
	Status corev1.ConditionStatus `json:"status"`
	// +optional
	LastProbeTime metav1.Time `json:"lastProbeTime,omitempty"`
	// +optional
	LastTransitionTime metav1.Time `json:"lastTransitionTime,omitempty"`
	// +optional
	Reason string `json:"reason,omitempty"`
	// +optional
	Message string `json:"message,omitempty"`
}

// SnapshotError is the last error, with when it was seen.
type SnapshotError struct {
	// +optional
	Time *metav1.Time `json:"time,omitempty"`
	// +optional
	Message *string `json:"message,omitempty"`
}

// SnapshotVolumesLists says which of the VM's volumes the snapshot holds.
type SnapshotVolumesLists struct {
	// IncludedVolumes have a VolumeSnapshot.
	// +optional
	IncludedVolumes []string `json:"includedVolumes,omitempty"`
	// ExcludedVolumes cannot be snapshotted (containerDisk, emptyDisk, cloudInit, hostDisk);
	// a restore leaves them as the captured spec has them.
	// +optional
	ExcludedVolumes []string `json:"excludedVolumes,omitempty"`
}

// VirtualMachineSnapshotStatus is what the controller did.
type VirtualMachineSnapshotStatus struct {
	// SourceUID is the VM's UID when the snapshot was taken.
	// +optional
	SourceUID *types.UID `json:"sourceUID,omitempty"`
	// VirtualMachineSnapshotContentName is the content holding the copy.
	// +optional
	VirtualMachineSnapshotContentName *string `json:"virtualMachineSnapshotContentName,omitempty"`
	// CreationTime is when the copy was complete.
	// +optional
	// +nullable
	CreationTime *metav1.Time `json:"creationTime,omitempty"`
	// +optional
	Phase VirtualMachineSnapshotPhase `json:"phase,omitempty"`
	// ReadyToUse is true once every VolumeSnapshot is ready: the snapshot can be restored.
	// +optional
	ReadyToUse *bool `json:"readyToUse,omitempty"`
	// +optional
	Error *SnapshotError `json:"error,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []SnapshotCondition `json:"conditions,omitempty"`
	// +optional
	// +listType=set
	Indications []Indication `json:"indications,omitempty"`
	// +optional
	SnapshotVolumes *SnapshotVolumesLists `json:"snapshotVolumes,omitempty"`
}

// VirtualMachineSnapshotContent holds a snapshot's copy: the VM as it was and the
// VolumeSnapshots of its disks. The controller makes it; it is read-only for users.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=vmsnapshotcontent;vmsnapshotcontents,categories=all;slimvirt
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="ReadyToUse",type=boolean,JSONPath=`.status.readyToUse`
// +kubebuilder:printcolumn:name="CreationTime",type=date,JSONPath=`.status.creationTime`
// +kubebuilder:printcolumn:name="Error",type=string,JSONPath=`.status.error.message`
type VirtualMachineSnapshotContent struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   VirtualMachineSnapshotContentSpec   `json:"spec"`
	Status VirtualMachineSnapshotContentStatus `json:"status,omitempty"`
}

// VirtualMachineSnapshotContentList is a list of VirtualMachineSnapshotContents.
//
// +kubebuilder:object:root=true
type VirtualMachineSnapshotContentList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VirtualMachineSnapshotContent `json:"items"`
}

// VirtualMachineSnapshotContentSpec is the copy. Only the controller writes it (users may
// read contents, not write them), so it carries no immutability rule, whose cost over a whole
// VM spec the API server would refuse.
type VirtualMachineSnapshotContentSpec struct {
	// VirtualMachineSnapshotName is the snapshot this content belongs to.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	VirtualMachineSnapshotName *string               `json:"virtualMachineSnapshotName,omitempty"`
	Source                     SnapshotContentSource `json:"source"`
	// VolumeBackups are the VM's persistent disks, one VolumeSnapshot each.
	// +optional
	// +kubebuilder:validation:MaxItems=256
	VolumeBackups []VolumeBackup `json:"volumeBackups,omitempty"`
}

// SnapshotContentSource is what was snapshotted.
type SnapshotContentSource struct {
	// +optional
	VirtualMachine *SnapshotVirtualMachine `json:"virtualMachine,omitempty"`
}

// SnapshotVirtualMachine is a VirtualMachine as it was captured: its metadata and spec.
type SnapshotVirtualMachine struct {
	// +optional
	ObjectMeta SnapshotObjectMeta `json:"metadata,omitempty"`
	// Spec is kept without the VM's schema, as KubeVirt keeps it: the VM's validation rules
	// were checked when the VM was written, and repeating them here would exceed the API
	// server's budget for one object's rules.
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Type=object
	Spec VirtualMachineSpec `json:"spec"`
}

// SnapshotObjectMeta is the part of a VM's metadata a snapshot keeps.
type SnapshotObjectMeta struct {
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Namespace string `json:"namespace,omitempty"`
	// +optional
	UID types.UID `json:"uid,omitempty"`
	// +optional
	Generation int64 `json:"generation,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxProperties=64
	Labels map[string]string `json:"labels,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxProperties=64
	Annotations map[string]string `json:"annotations,omitempty"`
}

// VolumeBackup is one persistent disk of the VM and its VolumeSnapshot.
type VolumeBackup struct {
	// VolumeName is the volume's name in the VM's spec.
	// +kubebuilder:validation:MaxLength=63
	VolumeName string `json:"volumeName"`
	// PersistentVolumeClaim is the claim as it was: its name, labels and spec (size, class,
	// access and volume modes), from which a restore makes a new one.
	PersistentVolumeClaim SnapshotPersistentVolumeClaim `json:"persistentVolumeClaim"`
	// VolumeSnapshotName is the VolumeSnapshot of the claim, in the same namespace.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	VolumeSnapshotName *string `json:"volumeSnapshotName,omitempty"`
}

// SnapshotPersistentVolumeClaim is a PVC's metadata (name, labels, annotations) and spec.
type SnapshotPersistentVolumeClaim struct {
	// +optional
	ObjectMeta SnapshotObjectMeta `json:"metadata,omitempty"`
	// +optional
	Spec SnapshotPVCSpec `json:"spec,omitempty"`
}

// SnapshotPVCSpec is the part of a PersistentVolumeClaimSpec a restore needs.
type SnapshotPVCSpec struct {
	// +optional
	// +kubebuilder:validation:MaxItems=4
	AccessModes []corev1.PersistentVolumeAccessMode `json:"accessModes,omitempty"`
	// +optional
	Resources SnapshotPVCResources `json:"resources,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxLength=253
	StorageClassName *string `json:"storageClassName,omitempty"`
	// +optional
	VolumeMode *corev1.PersistentVolumeMode `json:"volumeMode,omitempty"`
}

// SnapshotPVCResources is the captured claim's requests.
type SnapshotPVCResources struct {
	// +optional
	// +kubebuilder:validation:MaxProperties=12
	Requests corev1.ResourceList `json:"requests,omitempty"`
}

// VirtualMachineSnapshotContentStatus says whether the copy is usable.
type VirtualMachineSnapshotContentStatus struct {
	// +optional
	// +nullable
	CreationTime *metav1.Time `json:"creationTime,omitempty"`
	// +optional
	ReadyToUse *bool `json:"readyToUse,omitempty"`
	// +optional
	Error *SnapshotError `json:"error,omitempty"`
	// +optional
	VolumeSnapshotStatus []VolumeSnapshotStatus `json:"volumeSnapshotStatus,omitempty"`
}

// VolumeSnapshotStatus mirrors one VolumeSnapshot's status.
type VolumeSnapshotStatus struct {
	VolumeSnapshotName string `json:"volumeSnapshotName"`
	// +optional
	// +nullable
	CreationTime *metav1.Time `json:"creationTime,omitempty"`
	// +optional
	ReadyToUse *bool `json:"readyToUse,omitempty"`
	// +optional
	RestoreSize *resource.Quantity `json:"restoreSize,omitempty"`
	// +optional
	Error *SnapshotError `json:"error,omitempty"`
}

func init() {
	register(&VirtualMachineSnapshot{}, &VirtualMachineSnapshotList{},
		&VirtualMachineSnapshotContent{}, &VirtualMachineSnapshotContentList{})
}
