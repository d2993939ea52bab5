package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// GuestMemory is the RAM the guest sees: memory.guest, else resources.requests.memory; false
// when the spec sets neither. The launcher pod's memory request and the domain's memory both
// follow from it.
func (d *DomainSpec) GuestMemory() (resource.Quantity, bool) {
	if d.Memory != nil && d.Memory.Guest != nil {
		return *d.Memory.Guest, true
	}
	if q, ok := d.Resources.Requests[corev1.ResourceMemory]; ok {
		return q, true
	}
	return resource.Quantity{}, false
}
