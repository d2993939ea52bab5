package integration

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// TestLargeVMI: a VMI of about 200 KiB (inline cloud-init user data) gets a launcher pod the
// API server accepts, with the whole VMI in its annotation and no environment string near
// Linux's 128 KiB limit for one.
func TestLargeVMI(t *testing.T) {
	needController(t)
	ns := newNamespace(t)
	vmi := loadExampleVMI(t, ns)
	userData := "#cloud-config\nwrite_files:\n- path: /etc/big\n  content: " + strings.Repeat("x", 200<<10) + "\n"
	vmi.Spec.Volumes[2].CloudInitNoCloud = &v1.CloudInitNoCloudSource{UserData: userData}
	if err := env.c.Create(context.Background(), vmi); err != nil {
		t.Fatal(err)
	}
	pod := launcherPod(t, ns, vmi.Name)
	var passed v1.VirtualMachineInstance
	if err := json.Unmarshal([]byte(pod.Annotations[launcherpod.AnnotationVMI]), &passed); err != nil {
		t.Fatalf("annotation %s: %v", launcherpod.AnnotationVMI, err)
	}
	if got := passed.Spec.Volumes[2].CloudInitNoCloud; got == nil || got.UserData != userData {
		t.Error("the pod's VMI lacks the user data")
	}
	for _, c := range pod.Spec.Containers {
		for _, e := range c.Env {
			if len(e.Name)+len(e.Value) > 4096 {
				t.Errorf("container %s: environment variable %s is %d bytes", c.Name, e.Name, len(e.Value))
			}
		}
	}
}
