//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	"github.com/slimvirt/slimvirt/csi/claim"
)

// withModules uninstalls the chart, installs the given modules alone (hack/local-install.sh's
// SLIMVIRT_MODULES), and puts the whole chart back when the test ends.
func withModules(t *testing.T, modules string) {
	t.Helper()
	helmRun(t, "uninstall", "slimvirt", "--namespace", "slimvirt", "--wait", "--timeout", "3m")
	t.Cleanup(func() { localInstall(t, "") })
	localInstall(t, modules)
	if out, err := kubectl(t, "-n", "slimvirt", "get", "deploy", "slimvirt-controller"); err == nil {
		t.Fatalf("the controller is installed with modules %q:\n%s", modules, out)
	}
}

// TestModuleCSIAlone installs the CSI driver by itself (no controller, no node agent) and
// serves a plain pod a disk.img volume: a PVC with the driver's import annotations (what a
// DataVolume would make) is filled from an http source, and a pod that is not a VM reads the
// image in it.
func TestModuleCSIAlone(t *testing.T) {
	storageNamespace(t)
	url, sum := guestServer(t)
	withModules(t, "csi")
	containers := mustKubectl(t, "-n", "slimvirt", "get", "ds", "slimvirt-node", "-o", "jsonpath={.spec.template.spec.containers[*].name}")
	if containers != "csi csi-provisioner csi-resizer csi-snapshotter" {
		t.Fatalf("node DaemonSet containers %q, want the CSI driver's only", containers)
	}
	applyYAML(t, fmt.Sprintf(`apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: plain-disk
  namespace: %s
  annotations:
    %s: http
    %s: "%s"
    %s: "sha256:%s"
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: slimvirt
  resources: {requests: {storage: 128Mi}}
`, storageNS, claim.AnnSource, claim.AnnEndpoint, url, claim.AnnChecksum, sum))
	// The class binds on first use: the plain pod is that use.
	out := runVolumePod(t, "reader", "plain-disk",
		`echo "size $(stat -c %s /vol/disk.img)"; echo "sig $(dd if=/vol/disk.img bs=1 skip=510 count=2 2>/dev/null | od -An -tx1 | tr -d ' \n')"`)
	if sig := field(t, out, "sig"); sig != "55aa" {
		t.Errorf("the pod's /vol/disk.img has no boot signature (%q): the import did not fill it", sig)
	}
	if size := field(t, out, "size"); size == "0" {
		t.Errorf("/vol/disk.img is empty")
	}
	phase := mustKubectl(t, "-n", storageNS, "get", "pvc", "plain-disk", "-o", "jsonpath={.metadata.annotations."+strings.ReplaceAll(claim.AnnPhase, ".", `\.`)+"}")
	if phase != string(claim.PhaseReady) {
		t.Errorf("PVC import phase %q, want %s", phase, claim.PhaseReady)
	}
}

// TestModuleCNIAlone installs the CNI plugin by itself (the node agent chains it; no
// controller, no CSI driver) and gives a tap to a consumer that is not slimvirt's controller:
// a pod whose interfaces annotation that consumer signed with the cluster's signing key, as
// the controller signs launcher pods. The pod's network namespace gets the masquerade binding
// (k6t-eth0 and tap0), which any VM runtime in the pod can open.
func TestModuleCNIAlone(t *testing.T) {
	ctx := context.Background()
	withModules(t, "cni")
	const ns, name = "default", "tap-consumer"
	secret := &corev1.Secret{}
	if err := cluster.client.Get(ctx, client.ObjectKey{Namespace: "slimvirt", Name: "slimvirt-signing-key"}, secret); err != nil {
		t.Fatalf("read the signing key: %v", err)
	}
	ifaces, err := json.Marshal([]launcherpod.Interface{{Name: "default", Binding: launcherpod.BindingMasquerade, TapOwner: ptr.To(0)}})
	if err != nil {
		t.Fatal(err)
	}
	// The signature binds the pod's UID, known once it exists: it waits behind a scheduling
	// gate until it is signed, as launcher pods do.
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.PodSpec{
			SchedulingGates: []corev1.PodSchedulingGate{{Name: "example.com/signed"}},
			Containers: []corev1.Container{{
				Name: "toolbox", Image: "slimvirt.io/toolbox:dev", ImagePullPolicy: corev1.PullIfNotPresent,
				Command: []string{"/bin/sh", "-c", "exec sleep 3600"},
			}},
		},
	}
	_ = cluster.client.Delete(ctx, pod, client.GracePeriodSeconds(0))
	eventually(t, time.Minute, "no old "+name, func() (bool, error) {
		err := cluster.client.Get(ctx, client.ObjectKeyFromObject(pod), &corev1.Pod{})
		return client.IgnoreNotFound(err) == nil && err != nil, err
	})
	if err := cluster.client.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cluster.client.Delete(context.Background(), pod, client.GracePeriodSeconds(0)) })
	sig := launcherpod.SignPod(secret.Data["key"], launcherpod.PodRef{Namespace: ns, Name: name, UID: string(pod.UID)}, string(ifaces))
	patch := client.MergeFrom(pod.DeepCopy())
	pod.Annotations = map[string]string{launcherpod.AnnotationInterfaces: string(ifaces), launcherpod.AnnotationSignature: sig}
	pod.Spec.SchedulingGates = nil
	if err := cluster.client.Patch(ctx, pod, patch); err != nil {
		t.Fatalf("sign the pod and lift its gate: %v", err)
	}
	eventually(t, 3*time.Minute, name+" running", func() (bool, error) {
		p := &corev1.Pod{}
		if err := cluster.client.Get(ctx, client.ObjectKeyFromObject(pod), p); err != nil {
			return false, err
		}
		return p.Status.Phase == corev1.PodRunning, fmt.Errorf("phase %s", p.Status.Phase)
	})
	links := mustKubectl(t, "-n", ns, "exec", name, "--", "ip", "link")
	for _, l := range []string{"k6t-eth0", "tap0"} {
		if !strings.Contains(links, l) {
			t.Errorf("the consumer's pod has no %s: the plugin gave it no tap:\n%s", l, links)
		}
	}
}
