package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// VirtualMachineInstanceReplicaSet keeps a number of identical VMIs running, as a ReplicaSet
// keeps pods. It has a scale subresource, so `kubectl scale vmirs` and a HorizontalPodAutoscaler
// work.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=vmirs;vmirss,categories=all;slimvirt
// +kubebuilder:subresource:status
// +kubebuilder:subresource:scale:specpath=.spec.replicas,statuspath=.status.replicas,selectorpath=.status.labelSelector
// +kubebuilder:printcolumn:name="Desired",type=integer,JSONPath=`.spec.replicas`
// +kubebuilder:printcolumn:name="Current",type=integer,JSONPath=`.status.replicas`
// +kubebuilder:printcolumn:name="Ready",type=integer,JSONPath=`.status.readyReplicas`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="self.metadata.name.size() <= 57 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="metadata.name must be a DNS label of at most 57 characters: its VMIs are named after it with 6 characters added"
type VirtualMachineInstanceReplicaSet struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   VirtualMachineInstanceReplicaSetSpec   `json:"spec"`
	Status VirtualMachineInstanceReplicaSetStatus `json:"status,omitempty"`
}

// VirtualMachineInstanceReplicaSetList is a list of VirtualMachineInstanceReplicaSets.
//
// +kubebuilder:object:root=true
type VirtualMachineInstanceReplicaSetList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VirtualMachineInstanceReplicaSet `json:"items"`
}

// VirtualMachineInstanceReplicaSetSpec is how many VMIs of which template.
//
// +kubebuilder:validation:XValidation:rule="has(self.selector.matchLabels) && self.selector.matchLabels.size() > 0 || has(self.selector.matchExpressions) && self.selector.matchExpressions.size() > 0",message="spec.selector must not be empty: it would select every VMI in the namespace"
// +kubebuilder:validation:XValidation:rule="!has(self.selector.matchLabels) || self.selector.matchLabels.all(k, has(self.template.metadata.labels) && k in self.template.metadata.labels && self.template.metadata.labels[k] == self.selector.matchLabels[k])",message="spec.template.metadata.labels must match spec.selector.matchLabels"
type VirtualMachineInstanceReplicaSetSpec struct {
	// Replicas is the number of VMIs wanted.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000
	Replicas *int32 `json:"replicas,omitempty"`
	// Selector finds the VMIs the replica set owns; the template's labels must match it.
	Selector *LabelSelector `json:"selector"`
	// Template is the VMI to make.
	Template VirtualMachineInstanceTemplateSpec `json:"template"`
	// Paused stops the replica set from making or deleting VMIs.
	// +optional
	Paused bool `json:"paused,omitempty"`
}

// VirtualMachineInstanceReplicaSetConditionType names a replica set condition.
type VirtualMachineInstanceReplicaSetConditionType string

const (
	// ReplicaSetReplicaFailure is true when VMIs cannot be made or deleted.
	ReplicaSetReplicaFailure VirtualMachineInstanceReplicaSetConditionType = "ReplicaFailure"
	// ReplicaSetPaused is true while spec.paused is.
	ReplicaSetPaused VirtualMachineInstanceReplicaSetConditionType = "ReplicaPaused"
)

// VirtualMachineInstanceReplicaSetCondition is one condition of a replica set.
type VirtualMachineInstanceReplicaSetCondition struct {
	Type   VirtualMachineInstanceReplicaSetConditionType `json:"type"`
	Status corev1.ConditionStatus                        `json:"status"`
	// +optional
	LastProbeTime metav1.Time `json:"lastProbeTime,omitempty"`
	// +optional
	LastTransitionTime metav1.Time `json:"lastTransitionTime,omitempty"`
	// +optional
	Reason string `json:"reason,omitempty"`
	// +optional
	Message string `json:"message,omitempty"`
}

// VirtualMachineInstanceReplicaSetStatus counts the replica set's VMIs.
type VirtualMachineInstanceReplicaSetStatus struct {
	// Replicas is the number of VMIs that are not final.
	// +optional
	Replicas int32 `json:"replicas,omitempty"`
	// ReadyReplicas is the number of ready VMIs.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas,omitempty"`
	// LabelSelector is the selector as a string, for the scale subresource (HPA).
	// +optional
	LabelSelector string `json:"labelSelector,omitempty"`
	// +optional
	Conditions []VirtualMachineInstanceReplicaSetCondition `json:"conditions,omitempty"`
	// ObservedGeneration is the generation the status was computed for.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// LabelSelector is metav1.LabelSelector with bounds, so the schema's CEL rules can afford to
// compare it with the template's labels. It converts to metav1.LabelSelector with a cast.
type LabelSelector struct {
	// +optional
	// +kubebuilder:validation:MaxProperties=16
	MatchLabels map[string]string `json:"matchLabels,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxItems=16
	MatchExpressions []metav1.LabelSelectorRequirement `json:"matchExpressions,omitempty"`
}

func init() {
	register(&VirtualMachineInstanceReplicaSet{}, &VirtualMachineInstanceReplicaSetList{})
}
