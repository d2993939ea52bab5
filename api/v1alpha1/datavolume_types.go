package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DataVolume is a PVC together with the content to fill it with: an image fetched over HTTP,
// an upload, a clone of another PVC, or a blank disk. It has the shape of CDI's
// cdi.kubevirt.io/v1beta1 DataVolume for the fields slimvirt supports. Its PVC has the
// DataVolume's name and is filled on the node that owns the volume by slimvirt-csi.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=dv;dvs,categories=all;slimvirt
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`,description="The phase the data volume is in"
// +kubebuilder:printcolumn:name="Progress",type=string,JSONPath=`.status.progress`,description="Transfer progress in percentage if known, N/A otherwise"
// +kubebuilder:printcolumn:name="Restarts",type=integer,JSONPath=`.status.restartCount`,description="The number of times the transfer has been restarted."
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type DataVolume struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   DataVolumeSpec   `json:"spec"`
	Status DataVolumeStatus `json:"status,omitempty"`
}

// DataVolumeList is a list of DataVolumes.
//
// +kubebuilder:object:root=true
type DataVolumeList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []DataVolume `json:"items"`
}

// DataVolumeSpec is the content and the claim to create. Exactly one of Storage and PVC is set.
//
// +kubebuilder:validation:XValidation:rule="has(self.storage) != has(self.pvc)",message="set exactly one of spec.storage and spec.pvc"
// +kubebuilder:validation:XValidation:rule="has(self.source.pvc) || has(self.source.snapshot) || (has(self.storage) && has(self.storage.resources) && has(self.storage.resources.requests) && 'storage' in self.storage.resources.requests) || (has(self.pvc) && has(self.pvc.resources) && has(self.pvc.resources.requests) && 'storage' in self.pvc.resources.requests)",message="resources.requests.storage is required unless the source is a pvc or a snapshot"
// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec is immutable"
// +kubebuilder:validation:XValidation:rule="!has(self.storage) || !has(self.storage.resources) || !has(self.storage.resources.requests) || self.storage.resources.requests.all(k, isQuantity(string(self.storage.resources.requests[k])))",message="spec.storage.resources.requests must be quantities, such as 10Gi (see ResourceRequirements)"
// +kubebuilder:validation:XValidation:rule="!has(self.pvc) || !has(self.pvc.resources) || !has(self.pvc.resources.requests) || self.pvc.resources.requests.all(k, isQuantity(string(self.pvc.resources.requests[k])))",message="spec.pvc.resources.requests must be quantities, such as 10Gi (see ResourceRequirements)"
type DataVolumeSpec struct {
	// Source is where the content comes from.
	Source DataVolumeSourceSpec `json:"source"`
	// Storage is the claim to create; unset fields are defaulted (ReadWriteOnce, Filesystem,
	// the default StorageClass).
	// +optional
	Storage *StorageSpec `json:"storage,omitempty"`
	// PVC is the claim to create, as in CDI's spec.pvc.
	// +optional
	PVC *StorageSpec `json:"pvc,omitempty"`
	// ContentType must be kubevirt (a disk image that becomes disk.img); archive is not supported.
	// +optional
	// +kubebuilder:validation:Enum=kubevirt
	ContentType string `json:"contentType,omitempty"`
}

// DataVolumeSourceSpec is CDI's DataVolumeSource: exactly one kind of source.
//
// +kubebuilder:validation:XValidation:rule="[has(self.http), has(self.registry), has(self.upload), has(self.pvc), has(self.blank), has(self.snapshot)].filter(x, x).size() == 1",message="set exactly one of http, registry, upload, pvc, snapshot and blank"
type DataVolumeSourceSpec struct {
	// +optional
	HTTP *DataVolumeSourceHTTP `json:"http,omitempty"`
	// +optional
	Registry *DataVolumeSourceRegistry `json:"registry,omitempty"`
	// +optional
	Upload *DataVolumeSourceUpload `json:"upload,omitempty"`
	// +optional
	PVC *DataVolumeSourcePVC `json:"pvc,omitempty"`
	// +optional
	Blank *DataVolumeBlankImage `json:"blank,omitempty"`
	// +optional
	Snapshot *DataVolumeSourceSnapshot `json:"snapshot,omitempty"`
}

// DataVolumeSourceHTTP imports a disk image (raw or qcow2, optionally .gz or .xz compressed)
// from an http(s) URL.
type DataVolumeSourceHTTP struct {
	// URL of the image; only http and https.
	// +kubebuilder:validation:Pattern=`^https?://[^/]+`
	// +kubebuilder:validation:MaxLength=4096
	URL string `json:"url"`
	// SecretRef names a Secret in the DataVolume's namespace with basic-auth credentials
	// (accessKeyId/secretKey, as in CDI, or username/password).
	// +optional
	SecretRef string `json:"secretRef,omitempty"`
	// CertConfigMap names a ConfigMap in the DataVolume's namespace holding the CA
	// certificates (PEM) the server's certificate must chain to.
	// +optional
	CertConfigMap string `json:"certConfigMap,omitempty"`
	// Checksum of the file as served, algorithm:hex (md5, sha1, sha256, sha512); the volume is
	// marked ready only when it matches.
	// +optional
	// +kubebuilder:validation:Pattern=`^(md5:[0-9a-fA-F]{32}|sha1:[0-9a-fA-F]{40}|sha256:[0-9a-fA-F]{64}|sha512:[0-9a-fA-F]{128})$`
	Checksum string `json:"checksum,omitempty"`
}

// DataVolumeSourceRegistry imports the disk of a containerDisk image (the one file under /disk/,
// raw or qcow2, optionally .gz or .xz compressed), as CDI's registry source with pullMethod
// node: the node that holds the volume pulls the image with its own credentials and mirrors.
type DataVolumeSourceRegistry struct {
	// URL of the image: docker://<image reference>, e.g.
	// docker://quay.io/containerdisks/fedora:41 or docker://kubevirt/cirros-container-disk-demo.
	// +kubebuilder:validation:Pattern=`^docker://[a-z0-9]`
	// +kubebuilder:validation:MaxLength=1024
	URL string `json:"url"`
	// PullMethod may only be node (the default): the node's container runtime pulls the image.
	// CDI's pod pull, with secretRef and certConfigMap, is not supported.
	// +optional
	// +kubebuilder:validation:Enum=node
	PullMethod string `json:"pullMethod,omitempty"`
}

// DataVolumeSourceUpload waits for the content to be uploaded (slimctl image-upload).
type DataVolumeSourceUpload struct{}

// DataVolumeSourcePVC clones another PVC of the same namespace, on the node that holds it.
type DataVolumeSourcePVC struct {
	// Namespace of the source; it must be the DataVolume's own.
	// +optional
	Namespace string `json:"namespace,omitempty"`
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
}

// DataVolumeSourceSnapshot restores a CSI VolumeSnapshot (snapshot.storage.k8s.io/v1) of the
// same namespace: the PVC is made with the snapshot as its dataSource. Without a size, the
// snapshot's restoreSize is taken.
type DataVolumeSourceSnapshot struct {
	// Namespace of the snapshot; it must be the DataVolume's own.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Namespace string `json:"namespace,omitempty"`
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// DataVolumeBlankImage makes an empty disk.
type DataVolumeBlankImage struct{}

// StorageSpec is the subset of a PersistentVolumeClaimSpec a DataVolume may set.
type StorageSpec struct {
	// +optional
	// +kubebuilder:validation:items:Enum=ReadWriteOnce;ReadOnlyMany;ReadWriteMany;ReadWriteOncePod
	AccessModes []corev1.PersistentVolumeAccessMode `json:"accessModes,omitempty"`
	// Resources.Requests[storage] is the disk size; disk.img is exactly this size.
	// +optional
	Resources StorageResources `json:"resources,omitempty"`
	// +optional
	StorageClassName *string `json:"storageClassName,omitempty"`
	// +optional
	// +kubebuilder:validation:Enum=Filesystem;Block
	VolumeMode *corev1.PersistentVolumeMode `json:"volumeMode,omitempty"`
}

// StorageResources holds the requested size, which a PVC needs to be more than 0.
//
// +kubebuilder:validation:XValidation:rule="!has(self.requests) || !('storage' in self.requests) || (type(self.requests['storage']) in [int] ? self.requests['storage'] > 0 : quantity(self.requests['storage']).isGreaterThan(quantity('0')))",fieldPath=".requests.storage",message="resources.requests.storage must be greater than 0"
type StorageResources struct {
	// +optional
	// +kubebuilder:validation:MaxProperties=12
	Requests corev1.ResourceList `json:"requests,omitempty"`
}

// DataVolumePhase is where a DataVolume stands; the values are CDI's.
type DataVolumePhase string

// The DataVolume phases.
const (
	DataVolumePhaseUnset           DataVolumePhase = ""
	DataVolumePending              DataVolumePhase = "Pending"
	DataVolumePVCBound             DataVolumePhase = "PVCBound"
	DataVolumeWaitForFirstConsumer DataVolumePhase = "WaitForFirstConsumer"
	DataVolumeImportScheduled      DataVolumePhase = "ImportScheduled"
	DataVolumeImportInProgress     DataVolumePhase = "ImportInProgress"
	DataVolumeCloneScheduled       DataVolumePhase = "CloneScheduled"
	DataVolumeCloneInProgress      DataVolumePhase = "CloneInProgress"
	DataVolumeUploadScheduled      DataVolumePhase = "UploadScheduled"
	DataVolumeUploadReady          DataVolumePhase = "UploadReady"
	DataVolumeSucceeded            DataVolumePhase = "Succeeded"
	DataVolumeFailed               DataVolumePhase = "Failed"
)

// DataVolumeConditionType is a kind of condition; the values are CDI's.
type DataVolumeConditionType string

const (
	// DataVolumeReady is True when the content is complete and the PVC may be used.
	DataVolumeReady DataVolumeConditionType = "Ready"
	// DataVolumeBound is True when the PVC is bound.
	DataVolumeBound DataVolumeConditionType = "Bound"
	// DataVolumeRunning is True while the content is being transferred.
	DataVolumeRunning DataVolumeConditionType = "Running"
)

// DataVolumeStatus is what the reconciler observed.
type DataVolumeStatus struct {
	// ClaimName is the PVC that holds the content (the DataVolume's name).
	// +optional
	ClaimName string `json:"claimName,omitempty"`
	// +optional
	Phase DataVolumePhase `json:"phase,omitempty"`
	// Progress is the transfer progress, "NN.NN%", or "N/A".
	// +optional
	Progress string `json:"progress,omitempty"`
	// RestartCount counts how often the transfer started over.
	// +optional
	RestartCount int32 `json:"restartCount,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []DataVolumeCondition `json:"conditions,omitempty"`
}

// DataVolumeCondition is one condition, in CDI's shape.
type DataVolumeCondition struct {
	Type   DataVolumeConditionType `json:"type"`
	Status corev1.ConditionStatus  `json:"status"`
	// +optional
	LastProbeTime metav1.Time `json:"lastProbeTime,omitempty"`
	// +optional
	LastTransitionTime metav1.Time `json:"lastTransitionTime,omitempty"`
	// +optional
	Reason string `json:"reason,omitempty"`
	// +optional
	Message string `json:"message,omitempty"`
}

func init() {
	register(&DataVolume{}, &DataVolumeList{})
}
