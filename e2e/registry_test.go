//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// TestStorageDataVolumeRegistry imports a containerDisk image's disk from the cluster's registry
// (CDI's registry source, pullMethod node): the node that holds the volume pulls the image and
// runs it as an importer pod, whose disk goes through the upload endpoint's checks. The guest
// boots from the DataVolume. Images that hold no disk, a qcow2 that reads a node file through
// its backing file, and an image no registry has fail the DataVolume (or hold it, for the
// missing image) with a message that says why, and leave no importer pod behind.
func TestStorageDataVolumeRegistry(t *testing.T) {
	storageNamespace(t)
	applyYAML(t, `apiVersion: slimvirt.io/v1alpha1
kind: DataVolume
metadata:
  name: registry-image-datavolume
  namespace: `+storageNS+`
spec:
  source:
    registry:
      url: "docker://kubevirt/fedora-cloud-container-disk-demo"
      pullMethod: node
  storage:
    resources:
      requests:
        storage: 1Gi
`)
	start := time.Now()
	bootVMI(t, "vm-registry", vmiYAML("vm-registry", "rootdisk=dataVolume: {name: registry-image-datavolume}"))
	dv := waitDV(t, "registry-image-datavolume", v1alpha1.DataVolumeSucceeded, time.Minute)
	t.Logf("registry import + boot %.1fs, progress %s", time.Since(start).Seconds(), dv.Status.Progress)
	waitNoImporter(t)

	pushImage(t, "e2e/nodisk:1", map[string]string{"etc/motd": "no disk here\n"})
	bad := filepath.Join(t.TempDir(), "bad.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-f", "qcow2", "-F", "raw", "-b", "/etc/shadow", bad, "64M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v\n%s", err, out)
	}
	badData, err := os.ReadFile(bad)
	if err != nil {
		t.Fatal(err)
	}
	pushImage(t, "e2e/backing:1", map[string]string{"disk/disk.qcow2": string(badData)})

	for _, c := range []struct{ name, image, want string }{
		{"reg-nodisk", "e2e/nodisk:1", "/disk does not exist in the image"},
		{"reg-backing", "e2e/backing:1", "backing file"},
	} {
		registryDV(t, c.name, c.image)
		dv := waitDV(t, c.name, v1alpha1.DataVolumeFailed, 4*time.Minute)
		if msg := dvMessages(dv); !strings.Contains(msg, c.want) {
			t.Errorf("DataVolume %s (image %s) failed with %q, want it to say %q", c.name, c.image, msg, c.want)
		}
	}
	waitNoImporter(t)

	registryDV(t, "reg-missing", "e2e/no-such-image:1")
	eventually(t, 3*time.Minute, "DataVolume reg-missing says the pull fails", func() (bool, error) {
		dv := &v1alpha1.DataVolume{}
		if err := cluster.client.Get(context.Background(), client.ObjectKey{Namespace: storageNS, Name: "reg-missing"}, dv); err != nil {
			return false, err
		}
		msg := dvMessages(dv)
		return dv.Status.Phase == v1alpha1.DataVolumeImportScheduled && strings.Contains(msg, "e2e/no-such-image:1") &&
			(strings.Contains(msg, "ErrImagePull") || strings.Contains(msg, "ImagePullBackOff")), fmt.Errorf("phase %s: %s", dv.Status.Phase, msg)
	})
	mustKubectl(t, "-n", storageNS, "delete", "dv", "reg-missing", "--wait=true")
	waitNoImporter(t)
}

// registryDV makes a registry DataVolume filled at once (no consumer needed).
func registryDV(t *testing.T, name, image string) {
	t.Helper()
	applyYAML(t, fmt.Sprintf(`apiVersion: slimvirt.io/v1alpha1
kind: DataVolume
metadata:
  name: %s
  namespace: %s
  annotations: {cdi.kubevirt.io/storage.bind.immediate.requested: "true"}
spec:
  source: {registry: {url: "docker://%s"}}
  storage: {resources: {requests: {storage: 256Mi}}}
`, name, storageNS, image))
}

func dvMessages(dv *v1alpha1.DataVolume) string {
	var msg []string
	for _, c := range dv.Status.Conditions {
		msg = append(msg, c.Reason+": "+c.Message)
	}
	return strings.Join(msg, "; ")
}

// waitNoImporter waits until slimvirt's namespace holds no registry importer pod.
func waitNoImporter(t *testing.T) {
	t.Helper()
	eventually(t, 2*time.Minute, "no importer pod left", func() (bool, error) {
		out, err := kubectl(t, "-n", "slimvirt", "get", "pods", "-l", "import.slimvirt.io/for", "-o", "name")
		return err == nil && strings.TrimSpace(out) == "", fmt.Errorf("importer pods %q: %w", out, err)
	})
}

// pushImage builds an image of files (path in the image: content, all 0444) and pushes it to
// the cluster's registry as docker.io/<name>.
func pushImage(t *testing.T, name string, files map[string]string) {
	t.Helper()
	root := t.TempDir()
	for p, data := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(data), 0o444); err != nil {
			t.Fatal(err)
		}
	}
	tar := filepath.Join(t.TempDir(), "image.tar")
	for _, cmd := range [][]string{
		{"go", "run", "../images/cmd/imagebuild", "-tag", name, "-o", tar, "-rootfs", root},
		{"bash", "../cluster/registry-seed.sh", tar + ":" + name},
	} {
		if out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", cmd, err, out)
		}
	}
}
