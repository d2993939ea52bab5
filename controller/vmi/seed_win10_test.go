package vmi

import (
	"os"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// TestSeedWindowsVMPodRendered renders the launcher pod of the seed guide's Windows VM (it
// cannot boot without KVM and a Windows ISO, but its pod must be what KubeVirt users expect).
func TestSeedWindowsVMPodRendered(t *testing.T) {
	raw, err := os.ReadFile("../../examples/vm-windows.yaml")
	if err != nil {
		t.Fatal(err)
	}
	vm := &v1.VirtualMachine{}
	if err := yaml.UnmarshalStrict(raw, vm); err != nil {
		t.Fatalf("decode examples/vm-windows.yaml: %v", err)
	}
	vmi := &v1.VirtualMachineInstance{Spec: vm.Spec.Template.Spec}
	vmi.Name, vmi.Namespace, vmi.UID = vm.Name, "default", "uid-win"
	vmi.Labels = vm.Spec.Template.ObjectMeta.Labels
	cfg := testConfig()
	cfg.AllowHostDisk = true
	pod, err := BuildPod(cfg, vmi, "virt-launcher-win10-abcde", VolumeFacts{ClaimName: map[string]string{"cdromiso": "win10-iso"}})
	if err != nil {
		t.Fatal(err)
	}
	if pod.Labels["kubevirt.io/domain"] != "win10" {
		t.Errorf("pod labels %v lack kubevirt.io/domain=win10 (Services select VMs by it)", pod.Labels)
	}
	var compute *corev1.Container
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == launcherpod.ComputeContainer {
			compute = &pod.Spec.Containers[i]
		}
	}
	if compute == nil {
		t.Fatal("no compute container")
	}
	want := resource.MustParse("16G")
	want.Add(cfg.MemoryOverhead)
	if got := compute.Resources.Requests[corev1.ResourceMemory]; got.Cmp(want) != 0 {
		t.Errorf("memory request %s, want 16G + overhead = %s", got.String(), want.String())
	}
	var claim, hostPath, cdInit bool
	for _, v := range pod.Spec.Volumes {
		if v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName == "win10-iso" {
			claim = true
		}
		if v.HostPath != nil && v.HostPath.Path == "/data/disk.img" && v.HostPath.Type != nil && *v.HostPath.Type == corev1.HostPathFileOrCreate {
			hostPath = true
		}
	}
	for _, c := range pod.Spec.Containers {
		if c.Image == "kubevirt/virtio-container-disk" && strings.Contains(strings.Join(c.Command, " "), launcherpod.ContainerDiskDir+"/virtiocontainerdisk") {
			cdInit = true
		}
	}
	if !claim || !hostPath || !cdInit {
		t.Errorf("pod volumes: PVC win10-iso %v, hostPath /data/disk.img FileOrCreate %v, virtio containerDisk copy %v", claim, hostPath, cdInit)
	}
	if got := pod.Annotations[launcherpod.AnnotationInterfaces]; !strings.Contains(got, `"binding":"masquerade"`) {
		t.Errorf("interfaces annotation %s: want the masquerade binding", got)
	}
}
