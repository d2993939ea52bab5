package vmi

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/runtime/vmifile"
)

// TestLargeVMIStartsLauncher: a VMI of 200 KiB (inline cloud-init user data) gets a launcher
// pod whose compute container can be started (Linux refuses an exec with one environment
// string over 128 KiB), and the launcher reads the VMI back from the pod's annotation as the
// kubelet writes it into the VMI file.
func TestLargeVMIStartsLauncher(t *testing.T) {
	vmi := baseVMI()
	userData := "#cloud-config\nwrite_files:\n- path: /etc/big\n  content: " + strings.Repeat("x", 200<<10) + "\n"
	vmi.Spec.Volumes = []v1.Volume{{Name: "ci", VolumeSource: v1.VolumeSource{CloudInitNoCloud: &v1.CloudInitNoCloudSource{UserData: userData}}}}
	pod := mustBuild(t, vmi, VolumeFacts{})
	compute := computeOf(t, pod)
	env := []string{"PATH=/usr/bin:/bin"}
	var sum string
	for _, e := range compute.Env {
		env = append(env, e.Name+"="+e.Value)
		if e.Name == launcherpod.EnvVMISHA256 {
			sum = e.Value
		}
	}
	cmd := exec.Command("true")
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("start the compute container's process with its environment: %v %s", err, out)
	}
	// The kubelet writes the annotation into the downward API volume's file.
	file := filepath.Join(t.TempDir(), launcherpod.VMIFileName)
	if err := os.WriteFile(file, []byte(pod.Annotations[launcherpod.AnnotationVMI]), 0o644); err != nil {
		t.Fatal(err)
	}
	raw, err := vmifile.Read(file, sum)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), `"name":"vm1"`) || len(raw) < 200<<10 {
		t.Errorf("the launcher read %d bytes", len(raw))
	}
	total := 0
	for k, v := range pod.Annotations {
		total += len(k) + len(v)
	}
	if total > 256<<10 {
		t.Errorf("the pod's annotations are %d bytes, more than the API server's 256 KiB", total)
	}

	// Past the bound, no pod: the API server would refuse its annotations.
	vmi.Spec.Volumes[0].CloudInitNoCloud.UserData = strings.Repeat("y", launcherpod.MaxVMISize)
	if _, err := BuildPod(testConfig(), vmi, "p", VolumeFacts{}); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Errorf("a VMI over the bound: err = %v", err)
	}
}
