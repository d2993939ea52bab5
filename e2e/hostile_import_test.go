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
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

const hostileImportNS = "e2e-hostile-import"

// hostileDV writes, as the tenant, an http DataVolume that binds without a consumer.
func hostileDV(t *testing.T, tn *tenant, name, url string) {
	t.Helper()
	tn.apply(t, fmt.Sprintf(`apiVersion: slimvirt.io/v1alpha1
kind: DataVolume
metadata:
  name: %s
  namespace: %s
  annotations: {cdi.kubevirt.io/storage.bind.immediate.requested: "true"}
spec:
  source: {http: {url: %q}}
  storage: {resources: {requests: {storage: 64Mi}}}
`, name, tn.ns, url))
}

// waitDVFailed waits for a DataVolume of the tenant's namespace to fail and returns the
// message the user sees on it; success fails the test.
func waitDVFailed(t *testing.T, ns, name string, timeout time.Duration) string {
	t.Helper()
	dv := &v1alpha1.DataVolume{}
	eventually(t, timeout, "DataVolume "+name+" Failed", func() (bool, error) {
		if err := cluster.client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, dv); err != nil {
			return false, err
		}
		if dv.Status.Phase == v1alpha1.DataVolumeSucceeded {
			t.Fatalf("DataVolume %s succeeded: the hostile import went through", name)
		}
		return dv.Status.Phase == v1alpha1.DataVolumeFailed, fmt.Errorf("phase %q", dv.Status.Phase)
	})
	var msgs []string
	for _, c := range dv.Status.Conditions {
		if c.Message != "" {
			msgs = append(msgs, c.Message)
		}
	}
	return strings.Join(msgs, "; ")
}

// poolHolds says which disk.img files of the node's pools contain marker.
func poolHolds(t *testing.T, marker string) []string {
	t.Helper()
	pools := filepath.Join(readClusterEnv("/var/lib/slimvirt-cluster/cluster.env")["STATE_DIR"], "slimvirt", "pools")
	out, err := exec.Command("grep", "-rlF", "--include=disk.img", marker, pools).CombinedOutput()
	if err != nil && len(out) == 0 {
		return nil // grep exits 1 when nothing matches
	}
	if err != nil && !strings.Contains(string(out), "/") {
		t.Fatalf("grep %s: %v: %s", pools, err, out)
	}
	return strings.Fields(string(out))
}

// TestHostileImportDataFile: a tenant imports qcow2 images whose headers name a file of the
// node (written by the test, with a secret marker, where the CSI driver can see it) as an
// external data file or as a backing file. Each DataVolume fails with a reason the tenant can
// read, and no volume holds a byte of the file.
func TestHostileImportDataFile(t *testing.T) {
	tn := newTenant(t, hostileImportNS, "")
	ce := readClusterEnv("/var/lib/slimvirt-cluster/cluster.env")
	// hack/local-install.sh mounts STATE_DIR/slimvirt into the CSI container at the same path.
	nodeDir := filepath.Join(ce["STATE_DIR"], "slimvirt")
	nonce := make([]byte, 8)
	rand.Read(nonce)
	marker := "SLIMVIRT-NODE-SECRET-" + hex.EncodeToString(nonce)
	secret := filepath.Join(nodeDir, "e2e-hostile-secret")
	t.Cleanup(func() { os.Remove(secret) })

	dir := t.TempDir()
	for _, img := range []struct{ name, opts string }{
		{"datafile.qcow2", "-o data_file=" + secret + ",data_file_raw=on"},
		{"backing.qcow2", "-u -b json:{\"driver\":\"raw\",\"file\":{\"driver\":\"file\",\"filename\":\"" + secret + "\"}} -F raw"},
	} {
		args := append(append([]string{"create", "-f", "qcow2"}, strings.Fields(img.opts)...), filepath.Join(dir, img.name), "1M")
		if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img %v: %v: %s", args, err, out)
		}
	}
	// qemu-img create emptied the data file: the node's secret goes in afterwards.
	if err := os.WriteFile(secret, bytes.Repeat([]byte(marker+"\n"), (1<<20)/(len(marker)+1)), 0o600); err != nil {
		t.Fatal(err)
	}
	url := serveImages(t, dir)

	hostileDV(t, tn, "datafile", url+"/datafile.qcow2")
	hostileDV(t, tn, "backing", url+"/backing.qcow2")
	for _, tc := range []struct{ dv, want string }{
		{"datafile", "external data file"},
		{"backing", "backing file"},
	} {
		msg := waitDVFailed(t, tn.ns, tc.dv, 4*time.Minute)
		t.Logf("DataVolume %s: %s", tc.dv, msg)
		if !strings.Contains(msg, "import refused") || !strings.Contains(msg, tc.want) {
			t.Fatalf("DataVolume %s failed with %q, want an import refusal saying %q", tc.dv, msg, tc.want)
		}
	}
	if held := poolHolds(t, marker); len(held) > 0 {
		t.Fatalf("volumes hold the node file: %v", held)
	}
}

// TestHostileImportNodeNetwork: a tenant's import URLs that point at the node itself (the
// kubelet's port on loopback, the node's address) fail with the refusal as the reason, and so
// does a hand-written PVC whose import annotation points at the cloud metadata address.
func TestHostileImportNodeNetwork(t *testing.T) {
	tn := newTenant(t, hostileImportNS, "")
	ce := readClusterEnv("/var/lib/slimvirt-cluster/cluster.env")
	nodeIP, nodeName := ce["NODE_IP"], ce["NODE_NAME"]
	if nodeIP == "" || nodeName == "" {
		t.Fatal("cluster.env has no NODE_IP/NODE_NAME")
	}
	hostileDV(t, tn, "kubelet", "http://127.0.0.1:10250/")
	hostileDV(t, tn, "node-ip", "http://"+nodeIP+":10250/")
	// The tenant names the node itself, as the scheduler would, so the PVC binds without a pod.
	tn.apply(t, fmt.Sprintf(`apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: metadata
  namespace: %s
  annotations:
    import.slimvirt.io/source: http
    import.slimvirt.io/endpoint: http://169.254.169.254/latest/meta-data/
    volume.kubernetes.io/selected-node: %s
spec:
  storageClassName: slimvirt
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 64Mi}}
`, tn.ns, nodeName))

	for _, tc := range []struct{ dv, want string }{
		{"kubelet", "import refused: 127.0.0.1 is a loopback address of the node"},
		{"node-ip", "import refused: " + nodeIP + " is an address of the node"},
	} {
		msg := waitDVFailed(t, tn.ns, tc.dv, 4*time.Minute)
		t.Logf("DataVolume %s: %s", tc.dv, msg)
		if !strings.Contains(msg, tc.want) {
			t.Fatalf("DataVolume %s failed with %q, want %q", tc.dv, msg, tc.want)
		}
	}
	pvc := &corev1.PersistentVolumeClaim{}
	want := "import refused: 169.254.169.254 is a link-local address"
	eventually(t, 4*time.Minute, "PVC metadata Failed", func() (bool, error) {
		if err := tn.client.Get(context.Background(), client.ObjectKey{Namespace: tn.ns, Name: "metadata"}, pvc); err != nil {
			return false, err
		}
		phase, msg := pvc.Annotations["import.slimvirt.io/phase"], pvc.Annotations["import.slimvirt.io/message"]
		if phase == "Ready" {
			t.Fatal("the import from the metadata address succeeded")
		}
		return phase == "Failed", fmt.Errorf("phase %q message %q", phase, msg)
	})
	if msg := pvc.Annotations["import.slimvirt.io/message"]; !strings.Contains(msg, want) {
		t.Fatalf("PVC failed with %q, want %q", msg, want)
	}
	t.Logf("PVC metadata: %s", pvc.Annotations["import.slimvirt.io/message"])
}
