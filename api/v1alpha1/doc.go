// Package v1alpha1 holds the slimvirt.io/v1alpha1 API: KubeVirt-shaped virtual machine types.
//
// Field names and JSON tags follow kubevirt.io/v1 for every field slimvirt supports, so a
// KubeVirt manifest works after its apiVersion is changed. Fields slimvirt does not support are
// absent from the schema, and the API server refuses them (kubectl's strict field validation).
//
// +kubebuilder:object:generate=true
// +groupName=slimvirt.io
package v1alpha1
