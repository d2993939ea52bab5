package vmi

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	psaapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
	"k8s.io/utils/ptr"

	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// podSecurity runs the API server's own Pod Security checks on a pod at the latest version of
// level, and returns why it is refused ("" when admitted).
func podSecurity(t *testing.T, pod *corev1.Pod, level psaapi.Level) string {
	t.Helper()
	ev, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var refused []string
	for _, r := range ev.EvaluatePod(psaapi.LevelVersion{Level: level, Version: psaapi.LatestVersion()}, &pod.ObjectMeta, &pod.Spec) {
		if !r.Allowed {
			refused = append(refused, r.ForbiddenReason+": "+r.ForbiddenDetail)
		}
	}
	return strings.Join(refused, "; ")
}

// TestPodSecurityBaseline: a tenant's namespace can enforce the baseline Pod Security level
// and still run VMs: launcher pods with containerDisks, PVCs, cloud-init and a NIC are
// admitted (no hostPath, no capability beyond baseline's, no privilege). A hostDisk is a node
// file and stays a hostPath: baseline refuses exactly that.
func TestPodSecurityBaseline(t *testing.T) {
	vmi := baseVMI()
	vmi.Spec.Domain.Devices.Interfaces = []v1.Interface{{Name: "default", Masquerade: &v1.InterfaceMasquerade{}}}
	vmi.Spec.Networks = []v1.Network{{Name: "default", NetworkSource: v1.NetworkSource{Pod: &v1.PodNetwork{}}}}
	vmi.Spec.Domain.Firmware = &v1.Firmware{KernelBoot: &v1.KernelBoot{Container: &v1.KernelBootContainer{Image: "k:1", KernelPath: "/vmlinuz"}}}
	vmi.Spec.Volumes = []v1.Volume{
		{Name: "root", VolumeSource: v1.VolumeSource{ContainerDisk: &v1.ContainerDiskSource{Image: "img:1"}}},
		{Name: "fs", VolumeSource: v1.VolumeSource{PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: "claim-fs"}}},
		{Name: "blk", VolumeSource: v1.VolumeSource{DataVolume: &v1.DataVolumeSource{Name: "dv-blk"}}},
		{Name: "scratch", VolumeSource: v1.VolumeSource{EmptyDisk: &v1.EmptyDiskSource{Capacity: resource.MustParse("1Gi")}}},
		{Name: "ci", VolumeSource: v1.VolumeSource{CloudInitNoCloud: &v1.CloudInitNoCloudSource{UserData: "#cloud-config\n",
			NetworkDataSecretRef: &corev1.LocalObjectReference{Name: "nd"}}}},
		{Name: "cd", VolumeSource: v1.VolumeSource{CloudInitConfigDrive: &v1.CloudInitConfigDriveSource{UserDataSecretRef: &corev1.LocalObjectReference{Name: "ud"}}}},
	}
	facts := VolumeFacts{Block: map[string]bool{"blk": true}, ClaimName: map[string]string{"fs": "claim-fs", "blk": "dv-blk"}}
	for _, emulation := range []bool{false, true} {
		cfg := testConfig()
		cfg.AllowEmulation = emulation
		pod, err := BuildPod(cfg, vmi, "virt-launcher-vm1-abcde", facts)
		if err != nil {
			t.Fatal(err)
		}
		if why := podSecurity(t, pod, psaapi.LevelBaseline); why != "" {
			t.Errorf("launcher pod (emulation %v) refused at baseline: %s", emulation, why)
		}
	}

	vmi.Spec.Volumes = append(vmi.Spec.Volumes, v1.Volume{Name: "host", VolumeSource: v1.VolumeSource{HostDisk: &v1.HostDisk{
		Path: "/data/a.img", Type: v1.HostDiskExistsOrCreate, Capacity: ptr.To(resource.MustParse("1Gi"))}}})
	pod, err := BuildPod(testConfig(), vmi, "virt-launcher-vm1-abcde", facts)
	if err != nil {
		t.Fatal(err)
	}
	why := podSecurity(t, pod, psaapi.LevelBaseline)
	if !strings.Contains(why, "hostPath volumes") || strings.Count(why, ": ") != 1 {
		t.Errorf("a hostDisk VMI's pod at baseline: refused for %q, want the hostPath volumes only", why)
	}
}
