//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// TestHostileVolumeTreeLinks: a tenant with only the edit role plants symlinks in its own
// filesystem PVC, beside a good disk.img: to a node file the CSI driver (root on the node) can
// see, to the node's root directory, and one inside a subdirectory. A clone of that PVC (which
// copies the whole tree) must succeed with the links copied as links, their text unchanged, and
// no byte of the node file anywhere in the clone's directory on the node.
func TestHostileVolumeTreeLinks(t *testing.T) {
	stateDir := readClusterEnv("/var/lib/slimvirt-cluster/cluster.env")["STATE_DIR"]
	if stateDir == "" {
		t.Fatal("no local cluster state dir: the node file is put on the node by the test")
	}
	slimvirtDir := filepath.Join(stateDir, "slimvirt")
	tok := make([]byte, 8)
	rand.Read(tok)
	marker := "SLIMVIRT-TREE-NODE-FILE-" + hex.EncodeToString(tok)
	nodeFile := filepath.Join(slimvirtDir, "e2e-hostile-tree-node-file")
	content := bytes.Repeat([]byte(marker+"\n"), 4096)
	if err := os.WriteFile(nodeFile, content, 0o600); err != nil {
		t.Fatalf("put the node file: %v", err)
	}
	t.Cleanup(func() { os.Remove(nodeFile) })

	const ns = "hostile-tree"
	tn := newTenant(t, ns, "baseline")
	links := map[string]string{"secret": nodeFile, "root": "/", "d/deep": nodeFile}
	tn.apply(t, fmt.Sprintf(`apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: links, namespace: %[1]s}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: slimvirt
  resources: {requests: {storage: 64Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: plant, namespace: %[1]s}
spec:
  restartPolicy: Never
  containers:
    - name: plant
      image: slimvirt.io/toolbox:dev
      imagePullPolicy: IfNotPresent
      command: [/bin/sh, -c, 'set -e; mkdir /vol/d; ln -s %[2]s /vol/secret; ln -s / /vol/root; ln -s %[2]s /vol/d/deep; ls -lR /vol']
      volumeMounts: [{name: vol, mountPath: /vol}]
  volumes:
    - {name: vol, persistentVolumeClaim: {claimName: links}}
`, ns, nodeFile))
	ctx := context.Background()
	eventually(t, 3*time.Minute, "the tenant's pod to plant the links", func() (bool, error) {
		p := &corev1.Pod{}
		if err := tn.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "plant"}, p); err != nil {
			return false, err
		}
		if p.Status.Phase == corev1.PodFailed {
			out, _ := tn.kubectl("-n", ns, "logs", "plant")
			t.Fatalf("the tenant's pod failed: %s", out)
		}
		return p.Status.Phase == corev1.PodSucceeded, fmt.Errorf("pod %s", p.Status.Phase)
	})
	if _, err := tn.kubectl("-n", ns, "delete", "pod", "plant", "--wait=true"); err != nil {
		t.Fatalf("delete the tenant's pod: %v", err)
	}

	tn.apply(t, fmt.Sprintf(`apiVersion: slimvirt.io/v1alpha1
kind: DataVolume
metadata: {name: copied, namespace: %[1]s}
spec:
  source: {pvc: {name: links, namespace: %[1]s}}
  storage: {}
`, ns))
	dv := &v1alpha1.DataVolume{}
	eventually(t, 3*time.Minute, "the clone DataVolume to end", func() (bool, error) {
		if err := tn.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "copied"}, dv); err != nil {
			return false, err
		}
		return dv.Status.Phase == v1alpha1.DataVolumeFailed || dv.Status.Phase == v1alpha1.DataVolumeSucceeded,
			fmt.Errorf("phase %q", dv.Status.Phase)
	})
	if dv.Status.Phase != v1alpha1.DataVolumeSucceeded {
		t.Fatalf("the clone of a volume with symlinks beside a good disk.img is %s: %v", dv.Status.Phase, dv.Status.Conditions)
	}
	pvc := &corev1.PersistentVolumeClaim{}
	if err := cluster.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "copied"}, pvc); err != nil {
		t.Fatal(err)
	}
	pv := &corev1.PersistentVolume{}
	if err := cluster.client.Get(ctx, client.ObjectKey{Name: pvc.Spec.VolumeName}, pv); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(slimvirtDir, "pools", "default", pv.Spec.CSI.VolumeHandle)
	for name, target := range links {
		got, err := os.Readlink(filepath.Join(dir, name))
		if err != nil || got != target {
			t.Errorf("the clone's %s: link to %q (%v), want a link to %q", name, got, err, target)
		}
	}
	// grep -r does not follow symlinks: it reads what the clone really holds.
	if out, err := exec.Command("grep", "-rlF", marker, dir).CombinedOutput(); err == nil || len(out) > 0 {
		t.Errorf("the clone's directory %s holds the node file's bytes: %s (%v)", dir, out, err)
	}
	if got, err := os.ReadFile(nodeFile); err != nil || !bytes.Equal(got, content) {
		t.Fatalf("the node file changed: %d bytes, %v", len(got), err)
	}
}
