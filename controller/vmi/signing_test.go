package vmi

import (
	"encoding/json"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

func TestReleasePatch(t *testing.T) {
	key := []byte("k")
	vmi := &v1.VirtualMachineInstance{ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: "ns"}}
	vmi.Spec.Domain.Resources.Requests = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")}
	pod, err := BuildPod(PodConfig{SigningKey: key}, vmi, "virt-launcher-a-x", VolumeFacts{})
	if err != nil {
		t.Fatal(err)
	}
	pod.Spec.SchedulingGates = []corev1.PodSchedulingGate{{Name: "example.com/other"}}
	HoldForSignature(pod)
	HoldForSignature(pod)
	if _, ok := pod.Annotations[launcherpod.AnnotationSignature]; ok {
		t.Error("a held pod keeps a signature made before it had a UID")
	}
	if want := []corev1.PodSchedulingGate{{Name: "example.com/other"}, {Name: SchedulingGateSigned}}; !reflect.DeepEqual(pod.Spec.SchedulingGates, want) {
		t.Errorf("gates %v, want %v", pod.Spec.SchedulingGates, want)
	}
	if !awaitsSignature(pod) {
		t.Error("a held pod does not await its signature")
	}
	pod.UID = "uid-1"
	// A tenant edited the annotation of its pod while it waited.
	pod.Annotations[launcherpod.AnnotationInterfaces] = `[{"name":"default","binding":"masquerade"}]`
	raw, err := releasePatch(key, vmi, pod)
	if err != nil {
		t.Fatal(err)
	}
	var patch struct {
		Metadata struct {
			UID         string            `json:"uid"`
			Annotations map[string]string `json:"annotations"`
		} `json:"metadata"`
		Spec struct {
			SchedulingGates []corev1.PodSchedulingGate `json:"schedulingGates"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(raw, &patch); err != nil {
		t.Fatal(err)
	}
	value := patch.Metadata.Annotations[launcherpod.AnnotationInterfaces]
	want, _ := interfacesAnnotation(vmi)
	if value != want {
		t.Errorf("patch signs %s, want the VMI's interfaces %s", value, want)
	}
	self := launcherpod.PodRef{Namespace: "ns", Name: pod.Name, UID: "uid-1"}
	if err := launcherpod.VerifyPod(key, self, value, patch.Metadata.Annotations[launcherpod.AnnotationSignature]); err != nil {
		t.Errorf("patch signature: %v", err)
	}
	if patch.Metadata.UID != "uid-1" {
		t.Errorf("patch uid %q, want the pod's (so it cannot land on a pod made again)", patch.Metadata.UID)
	}
	if want := []corev1.PodSchedulingGate{{Name: "example.com/other"}}; !reflect.DeepEqual(patch.Spec.SchedulingGates, want) {
		t.Errorf("patch gates %v, want %v", patch.Spec.SchedulingGates, want)
	}
}
