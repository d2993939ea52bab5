package v1alpha1

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/ptr"
)

func TestGuestMemory(t *testing.T) {
	tests := []struct {
		name   string
		spec   DomainSpec
		want   string
		wantOK bool
	}{
		{"neither", DomainSpec{}, "0", false},
		{"limit only does not count", DomainSpec{Resources: ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")}}}, "0", false},
		{"request", DomainSpec{Resources: ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi")}}}, "512Mi", true},
		{"guest wins over the request", DomainSpec{Memory: &Memory{Guest: ptr.To(resource.MustParse("2Gi"))},
			Resources: ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi")}}}, "2Gi", true},
		{"memory without guest falls back to the request", DomainSpec{Memory: &Memory{},
			Resources: ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1G")}}}, "1G", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := tt.spec.GuestMemory()
			if ok != tt.wantOK || got.Cmp(resource.MustParse(tt.want)) != 0 {
				t.Errorf("GuestMemory() = %s, %v; want %s, %v", got.String(), ok, tt.want, tt.wantOK)
			}
		})
	}
}
