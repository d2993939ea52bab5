package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// VirtualMachine keeps a VirtualMachineInstance running, stopped, or run once, according to
// its run strategy; it outlives its VMIs, as a Deployment outlives pods.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=vm;vms,categories=all;slimvirt
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.printableStatus`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:validation:XValidation:rule="self.metadata.name.size() <= 63 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="metadata.name must be a DNS label (at most 63 lowercase letters, digits and '-'): its VirtualMachineInstance gets the same name"
type VirtualMachine struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   VirtualMachineSpec   `json:"spec"`
	Status VirtualMachineStatus `json:"status,omitempty"`
}

// VirtualMachineList is a list of VirtualMachines.
//
// +kubebuilder:object:root=true
type VirtualMachineList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VirtualMachine `json:"items"`
}

// VirtualMachineRunStrategy says when the VM's VMI should run.
// +kubebuilder:validation:Enum=Always;RerunOnFailure;Manual;Halted;Once
type VirtualMachineRunStrategy string

const (
	// RunStrategyAlways keeps a VMI running: it is made again whenever it ends.
	RunStrategyAlways VirtualMachineRunStrategy = "Always"
	// RunStrategyRerunOnFailure makes the VMI again when it fails, not when the guest shuts down.
	RunStrategyRerunOnFailure VirtualMachineRunStrategy = "RerunOnFailure"
	// RunStrategyManual runs the VMI only on start requests and stops it on stop requests.
	RunStrategyManual VirtualMachineRunStrategy = "Manual"
	// RunStrategyHalted keeps the VM stopped.
	RunStrategyHalted VirtualMachineRunStrategy = "Halted"
	// RunStrategyOnce runs the VMI once; when it ends the strategy becomes Halted.
	RunStrategyOnce VirtualMachineRunStrategy = "Once"
)

// VirtualMachineSpec is what the VM runs and when.
//
// +kubebuilder:validation:XValidation:rule="!(has(self.running) && has(self.runStrategy))",message="spec.running and spec.runStrategy are mutually exclusive: set only spec.runStrategy (spec.running is deprecated)"
// +kubebuilder:validation:XValidation:rule="!has(self.dataVolumeTemplates) || self.dataVolumeTemplates.all(d, self.dataVolumeTemplates.filter(e, e.metadata.name == d.metadata.name).size() == 1)",message="dataVolumeTemplates names must be unique"
type VirtualMachineSpec struct {
	// Running is the deprecated on/off switch: true is runStrategy Always, false Halted.
	// +optional
	Running *bool `json:"running,omitempty"`
	// RunStrategy says when the VMI runs; Halted when neither it nor running is set.
	// +optional
	RunStrategy *VirtualMachineRunStrategy `json:"runStrategy,omitempty"`
	// Template is the VMI the VM runs.
	Template VirtualMachineInstanceTemplateSpec `json:"template"`
	// DataVolumeTemplates are DataVolumes made with the VM (owned by it) for its volumes.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	DataVolumeTemplates []DataVolumeTemplateSpec `json:"dataVolumeTemplates,omitempty"`
}

// TemplateObjectMeta is the metadata a template gives what it makes: labels and annotations.
// creationTimestamp is accepted (generated KubeVirt manifests carry `creationTimestamp: null`)
// and ignored; any other field is refused.
type TemplateObjectMeta struct {
	// Name is used by dataVolumeTemplates; a VMI template's name is ignored (the VMI is named
	// after its VM or replica set).
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxProperties=64
	Labels map[string]string `json:"labels,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxProperties=64
	Annotations map[string]string `json:"annotations,omitempty"`
	// +optional
	// +nullable
	CreationTimestamp *metav1.Time `json:"creationTimestamp,omitempty"`
}

// VirtualMachineInstanceTemplateSpec is a VMI to make: its labels, annotations and spec.
type VirtualMachineInstanceTemplateSpec struct {
	// +optional
	ObjectMeta TemplateObjectMeta         `json:"metadata,omitempty"`
	Spec       VirtualMachineInstanceSpec `json:"spec"`
}

// DataVolumeTemplateSpec is a DataVolume a VM makes for itself, named by metadata.name.
type DataVolumeTemplateSpec struct {
	// +kubebuilder:validation:XValidation:rule="has(self.name) && self.name.size() > 0",message="a dataVolumeTemplate needs metadata.name"
	// +kubebuilder:validation:XValidation:rule="!has(self.name) || !format.dns1123Subdomain().validate(self.name).hasValue()",message="a dataVolumeTemplate's metadata.name must be a DNS subdomain (lowercase letters, digits, '-' and '.'): it names the DataVolume and its PVC"
	ObjectMeta TemplateObjectMeta     `json:"metadata"`
	Spec       DataVolumeTemplateData `json:"spec"`
}

// DataVolumeTemplateData is DataVolumeSpec inside a VM: the same fields and rules except the
// immutability rule, which the API server cannot evaluate inside a list. It converts to
// DataVolumeSpec with a cast, so a field added to one and not the other breaks the build.
//
// +kubebuilder:validation:XValidation:rule="has(self.storage) != has(self.pvc)",message="set exactly one of spec.storage and spec.pvc"
// +kubebuilder:validation:XValidation:rule="has(self.source.pvc) || has(self.source.snapshot) || (has(self.storage) && has(self.storage.resources) && has(self.storage.resources.requests) && 'storage' in self.storage.resources.requests) || (has(self.pvc) && has(self.pvc.resources) && has(self.pvc.resources.requests) && 'storage' in self.pvc.resources.requests)",message="resources.requests.storage is required unless the source is a pvc or a snapshot"
type DataVolumeTemplateData struct {
	Source DataVolumeSourceSpec `json:"source"`
	// +optional
	Storage *StorageSpec `json:"storage,omitempty"`
	// +optional
	PVC *StorageSpec `json:"pvc,omitempty"`
	// +optional
	// +kubebuilder:validation:Enum=kubevirt
	ContentType string `json:"contentType,omitempty"`
}

// DataVolumeSpec returns the template's spec as a DataVolume's.
func (d DataVolumeTemplateData) DataVolumeSpec() DataVolumeSpec { return DataVolumeSpec(d) }

// VirtualMachinePrintableStatus is a one-word state for people (kubectl get vm).
type VirtualMachinePrintableStatus string

// The printable statuses.
const (
	PrintableStopped            VirtualMachinePrintableStatus = "Stopped"
	PrintableProvisioning       VirtualMachinePrintableStatus = "Provisioning"
	PrintableStarting           VirtualMachinePrintableStatus = "Starting"
	PrintableRunning            VirtualMachinePrintableStatus = "Running"
	PrintablePaused             VirtualMachinePrintableStatus = "Paused"
	PrintableStopping           VirtualMachinePrintableStatus = "Stopping"
	PrintableTerminating        VirtualMachinePrintableStatus = "Terminating"
	PrintableCrashLoopBackOff   VirtualMachinePrintableStatus = "CrashLoopBackOff"
	PrintableUnknown            VirtualMachinePrintableStatus = "Unknown"
	PrintableErrorUnschedulable VirtualMachinePrintableStatus = "ErrorUnschedulable"
	PrintableErrImagePull       VirtualMachinePrintableStatus = "ErrImagePull"
	PrintableImagePullBackOff   VirtualMachinePrintableStatus = "ImagePullBackOff"
	PrintableErrorPvcNotFound   VirtualMachinePrintableStatus = "ErrorPvcNotFound"
	PrintableDataVolumeError    VirtualMachinePrintableStatus = "DataVolumeError"
)

// VirtualMachineConditionType names a VM condition.
type VirtualMachineConditionType string

const (
	// VMReady mirrors the VMI's Ready condition.
	VMReady VirtualMachineConditionType = "Ready"
	// VMFailure is true when the controller cannot make or delete the VMI.
	VMFailure VirtualMachineConditionType = "Failure"
	// VMRestartRequired is true when the template changed since the VMI was made: the change
	// applies at the next restart.
	VMRestartRequired VirtualMachineConditionType = "RestartRequired"
)

// VirtualMachineCondition is one condition of a VM.
type VirtualMachineCondition struct {
	Type   VirtualMachineConditionType `json:"type"`
	Status corev1.ConditionStatus      `json:"status"`
	// +optional
	LastProbeTime metav1.Time `json:"lastProbeTime,omitempty"`
	// +optional
	LastTransitionTime metav1.Time `json:"lastTransitionTime,omitempty"`
	// +optional
	Reason string `json:"reason,omitempty"`
	// +optional
	Message string `json:"message,omitempty"`
}

// VirtualMachineStartFailure tracks VMIs that keep failing, for the crash-loop back-off.
type VirtualMachineStartFailure struct {
	// ConsecutiveFailCount is how many VMIs failed in a row.
	// +optional
	ConsecutiveFailCount int `json:"consecutiveFailCount,omitempty"`
	// LastFailedVMIUID is the last failed VMI, so one failure is counted once.
	// +optional
	LastFailedVMIUID types.UID `json:"lastFailedVMIUID,omitempty"`
	// RetryAfterTimestamp is when the next VMI may be made.
	// +optional
	RetryAfterTimestamp *metav1.Time `json:"retryAfterTimestamp,omitempty"`
}

// VirtualMachineStatus is what the VM is doing.
type VirtualMachineStatus struct {
	// Created is true while the VM's VMI exists.
	// +optional
	Created bool `json:"created,omitempty"`
	// Ready is true while the VM's VMI is ready.
	// +optional
	Ready bool `json:"ready,omitempty"`
	// +optional
	PrintableStatus VirtualMachinePrintableStatus `json:"printableStatus,omitempty"`
	// RunStrategy is the strategy in force (spec.running translated).
	// +optional
	RunStrategy VirtualMachineRunStrategy `json:"runStrategy,omitempty"`
	// +optional
	Conditions []VirtualMachineCondition `json:"conditions,omitempty"`
	// +optional
	StartFailure *VirtualMachineStartFailure `json:"startFailure,omitempty"`
	// ObservedGeneration is the generation the status was computed for.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// EffectiveRunStrategy is the run strategy in force: runStrategy, else running translated,
// else Halted.
func (vm *VirtualMachine) EffectiveRunStrategy() VirtualMachineRunStrategy {
	switch {
	case vm.Spec.RunStrategy != nil:
		return *vm.Spec.RunStrategy
	case vm.Spec.Running != nil && *vm.Spec.Running:
		return RunStrategyAlways
	}
	return RunStrategyHalted
}

func init() {
	register(&VirtualMachine{}, &VirtualMachineList{})
}
