//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	v1alpha1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// TestHostilePodSecurityBaseline: a tenant's namespace enforces the baseline Pod Security
// level, so the tenant (edit role) cannot make a privileged pod, and still runs VMs: a VMI of
// about 200 KiB (inline cloud-init user data, over Linux's 128 KiB for one environment string)
// with a containerDisk and a NIC reaches Running, its launcher pod admitted at baseline with
// no hostPath volume.
func TestHostilePodSecurityBaseline(t *testing.T) {
	const ns, name = "hostile-pod", "baseline-vmi"
	tn := newTenant(t, ns, "baseline")
	ctx := context.Background()

	// The tenant cannot make a privileged pod, nor one with a hostPath, in its namespace.
	for _, tc := range []struct {
		what   string
		mutate func(*corev1.Pod)
		want   string
	}{
		{"privileged", func(p *corev1.Pod) {
			p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: ptr.To(true)}
		}, "privileged"},
		{"hostpath", func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "root", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}}}
		}, "hostPath volumes"},
	} {
		pod := &corev1.Pod{}
		pod.Namespace, pod.Name = ns, "tenant-"+tc.what
		pod.Spec.Containers = []corev1.Container{{Name: "c", Image: "slimvirt.io/toolbox:dev", ImagePullPolicy: corev1.PullIfNotPresent, Command: []string{"sleep", "60"}}}
		tc.mutate(pod)
		err := tn.client.Create(ctx, pod)
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "violates PodSecurity") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("tenant's %s pod: err = %v, want refused by PodSecurity baseline (%s)", tc.what, err, tc.want)
		}
	}

	raw, err := os.ReadFile(filepath.Join("..", "examples", "vmi-linux.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	vmi := &v1alpha1.VirtualMachineInstance{}
	if err := yaml.UnmarshalStrict(raw, vmi); err != nil {
		t.Fatalf("parse examples/vmi-linux.yaml: %v", err)
	}
	vmi.Namespace, vmi.Name = ns, name
	var padded bool
	for _, v := range vmi.Spec.Volumes {
		if ci := v.CloudInitNoCloud; ci != nil {
			ci.UserData += "\n# " + strings.Repeat("x", 200<<10) + "\n"
			padded = true
		}
	}
	if !padded {
		t.Fatal("examples/vmi-linux.yaml has no cloudInitNoCloud volume to make large")
	}
	// Created, not applied: kubectl apply would copy the 200 KiB into an annotation of the VMI.
	if err := tn.client.Create(ctx, vmi); err != nil {
		t.Fatalf("tenant creates the VMI: %v", err)
	}
	t.Cleanup(func() { _ = tn.client.Delete(context.Background(), vmi) })

	eventually(t, 6*time.Minute, "VMI "+name+" Running in a baseline namespace", func() (bool, error) {
		got := &v1alpha1.VirtualMachineInstance{}
		if err := tn.client.Get(ctx, client.ObjectKeyFromObject(vmi), got); err != nil {
			return false, err
		}
		if got.Status.Phase.IsFinal() {
			t.Fatalf("VMI ended in phase %s: %s %s", got.Status.Phase, got.Status.Reason, got.Status.Message)
		}
		vmi = got
		return got.Status.Phase == v1alpha1.Running, fmt.Errorf("phase %s, conditions %+v", got.Status.Phase, got.Status.Conditions)
	})
	pod := &corev1.Pod{}
	if err := tn.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: vmi.Status.LauncherPod}, pod); err != nil {
		t.Fatal(err)
	}
	for _, v := range pod.Spec.Volumes {
		if v.HostPath != nil {
			t.Errorf("launcher pod has hostPath volume %s (%s)", v.Name, v.HostPath.Path)
		}
	}
	if n := len(pod.Annotations[launcherpod.AnnotationVMI]); n < 200<<10 {
		t.Errorf("the launcher pod's VMI is %d bytes, want the whole 200 KiB VMI", n)
	}
}
