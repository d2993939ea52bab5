//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// TestHostileVolumeDiskImgLink: a tenant with only the edit role mounts its own filesystem PVC
// in a pod and replaces disk.img with a symlink to a node file the CSI driver can see. A clone
// of that PVC must fail with the reason and hold no byte of the node file; an expansion of it
// must be refused and leave the node file as it was.
func TestHostileVolumeDiskImgLink(t *testing.T) {
	stateDir := readClusterEnv("/var/lib/slimvirt-cluster/cluster.env")["STATE_DIR"]
	if stateDir == "" {
		t.Fatal("no local cluster state dir: the node file is put on the node by the test")
	}
	// The node's slimvirt state dir is mounted into the CSI container at the same path, on the
	// pool's filesystem: a file there is one the driver, root on the node, can reach.
	slimvirtDir := filepath.Join(stateDir, "slimvirt")
	tok := make([]byte, 8)
	rand.Read(tok)
	marker := "SLIMVIRT-NODE-FILE-" + hex.EncodeToString(tok)
	nodeFile := filepath.Join(slimvirtDir, "e2e-hostile-node-file")
	content := bytes.Repeat([]byte(marker+"\n"), (1<<20)/(len(marker)+1))
	if err := os.WriteFile(nodeFile, content, 0o600); err != nil {
		t.Fatalf("put the node file: %v", err)
	}
	t.Cleanup(func() { os.Remove(nodeFile) })
	nodeFileIntact := func(when string) {
		t.Helper()
		got, err := os.ReadFile(nodeFile)
		if err != nil || !bytes.Equal(got, content) {
			t.Fatalf("%s: the node file changed: %d bytes (was %d), %v", when, len(got), len(content), err)
		}
	}

	const ns = "hostile-volume"
	tn := newTenant(t, ns, "baseline")
	tn.apply(t, fmt.Sprintf(`apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: victim, namespace: %[1]s}
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
      command: [/bin/sh, -c, 'rm /vol/disk.img && ln -s %[2]s /vol/disk.img && ls -l /vol']
      volumeMounts: [{name: vol, mountPath: /vol}]
  volumes:
    - {name: vol, persistentVolumeClaim: {claimName: victim}}
`, ns, nodeFile))
	ctx := context.Background()
	eventually(t, 3*time.Minute, "the tenant's pod to replace disk.img", func() (bool, error) {
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
	out, _ := tn.kubectl("-n", ns, "logs", "plant")
	t.Logf("inside the tenant's volume:\n%s", out)
	if _, err := tn.kubectl("-n", ns, "delete", "pod", "plant", "--wait=true"); err != nil {
		t.Fatalf("delete the tenant's pod: %v", err)
	}

	t.Run("clone", func(t *testing.T) {
		tn.apply(t, fmt.Sprintf(`apiVersion: slimvirt.io/v1alpha1
kind: DataVolume
metadata: {name: stolen, namespace: %[1]s}
spec:
  source: {pvc: {name: victim, namespace: %[1]s}}
  storage: {}
`, ns))
		dv := &v1alpha1.DataVolume{}
		eventually(t, 3*time.Minute, "the clone DataVolume to end", func() (bool, error) {
			if err := tn.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "stolen"}, dv); err != nil {
				return false, err
			}
			return dv.Status.Phase == v1alpha1.DataVolumeFailed || dv.Status.Phase == v1alpha1.DataVolumeSucceeded,
				fmt.Errorf("phase %q", dv.Status.Phase)
		})
		var running v1alpha1.DataVolumeCondition
		for _, c := range dv.Status.Conditions {
			if c.Type == v1alpha1.DataVolumeRunning {
				running = c
			}
		}
		t.Logf("the tenant sees DataVolume stolen %s: %s: %s", dv.Status.Phase, running.Reason, running.Message)
		if dv.Status.Phase != v1alpha1.DataVolumeFailed || !strings.Contains(running.Message, "disk.img is not a regular file") || !strings.Contains(running.Message, "refusing to clone") {
			t.Errorf("clone of a volume whose disk.img is a symlink: %s %q; want Failed, refusing to clone", dv.Status.Phase, running.Message)
		}
		// The clone's own disk.img, read on the node: not one byte of the node file.
		pvc := &corev1.PersistentVolumeClaim{}
		if err := cluster.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "stolen"}, pvc); err != nil {
			t.Fatal(err)
		}
		if pvc.Spec.VolumeName != "" {
			pv := &corev1.PersistentVolume{}
			if err := cluster.client.Get(ctx, client.ObjectKey{Name: pvc.Spec.VolumeName}, pv); err != nil {
				t.Fatal(err)
			}
			disk := filepath.Join(slimvirtDir, "pools", "default", pv.Spec.CSI.VolumeHandle, "disk.img")
			got, err := os.ReadFile(disk)
			if err != nil {
				t.Fatalf("read the clone's disk on the node: %v", err)
			}
			if bytes.Contains(got, []byte(marker)) {
				t.Errorf("the clone %s holds the node file's bytes", disk)
			}
		}
		nodeFileIntact("after the clone")
	})

	t.Run("expand", func(t *testing.T) {
		if out, err := tn.kubectl("-n", ns, "patch", "pvc", "victim", "--type=merge", "-p", `{"spec":{"resources":{"requests":{"storage":"128Mi"}}}}`); err != nil {
			t.Fatalf("the tenant cannot ask for an expansion: %v %s", err, out)
		}
		var seen string
		eventually(t, 3*time.Minute, "the expansion to be refused", func() (bool, error) {
			pvc := &corev1.PersistentVolumeClaim{}
			if err := tn.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "victim"}, pvc); err != nil {
				return false, err
			}
			for _, c := range pvc.Status.Conditions {
				if strings.Contains(c.Message, "refusing to expand") {
					seen = fmt.Sprintf("PVC condition %s: %s", c.Type, c.Message)
					return true, nil
				}
			}
			events, _ := tn.kubectl("-n", ns, "get", "events", "--field-selector", "involvedObject.name=victim",
				"-o", `jsonpath={range .items[*]}{.reason}: {.message}{"\n"}{end}`)
			for _, l := range strings.Split(events, "\n") {
				if strings.Contains(l, "refusing to expand") {
					seen = "PVC event " + l
					return true, nil
				}
			}
			if got := pvc.Status.Capacity[corev1.ResourceStorage]; got.Cmp(resource.MustParse("128Mi")) >= 0 {
				t.Fatalf("the PVC was expanded to %s", got.String())
			}
			return false, fmt.Errorf("conditions %v", pvc.Status.Conditions)
		})
		t.Logf("the tenant sees: %s", seen)
		nodeFileIntact("after the expansion")
	})
}
