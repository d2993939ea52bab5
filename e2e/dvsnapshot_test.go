//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	v1alpha1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// TestStorageDataVolumeFromSnapshot takes a CSI VolumeSnapshot of a volume a pod wrote, changes
// the volume afterwards, and makes a DataVolume with a `snapshot` source (CDI's shape): the new
// volume holds what the volume held at the snapshot, not what it holds now.
func TestStorageDataVolumeFromSnapshot(t *testing.T) {
	storageNamespace(t)
	blankDV(t, "origin", "64Mi")
	token := fmt.Sprintf("snap%d", time.Now().UnixNano())
	write := func(name, what string) {
		t.Helper()
		out := runVolumePod(t, name, "origin", `printf %s `+what+` | dd of=/vol/disk.img conv=notrunc 2>/dev/null && sync && echo "wrote ok"`)
		if field(t, out, "wrote") != "ok" {
			t.Fatalf("pod %s did not write the volume:\n%s", name, out)
		}
	}
	write("write-before", token)
	applyYAML(t, fmt.Sprintf(`apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata: {name: origin-snap, namespace: %s}
spec:
  volumeSnapshotClassName: slimvirt
  source: {persistentVolumeClaimName: origin}
`, storageNS))
	eventually(t, 2*time.Minute, "VolumeSnapshot origin-snap ready", func() (bool, error) {
		out, err := kubectl(t, "-n", storageNS, "get", "volumesnapshot", "origin-snap", "-o", "jsonpath={.status.readyToUse}")
		return strings.TrimSpace(out) == "true", fmt.Errorf("readyToUse %q: %w", out, err)
	})
	write("write-after", "overwritten-after-the-snapshot")
	applyYAML(t, fmt.Sprintf(`apiVersion: slimvirt.io/v1alpha1
kind: DataVolume
metadata: {name: from-snap, namespace: %s}
spec:
  source: {snapshot: {namespace: %s, name: origin-snap}}
  storage: {}
`, storageNS, storageNS))
	out := runVolumePod(t, "read-snap", "from-snap", `echo "head $(head -c `+fmt.Sprint(len(token))+` /vol/disk.img)"`)
	if got := field(t, out, "head"); got != token {
		t.Errorf("the DataVolume made from the snapshot starts with %q, want the snapshot's %q", got, token)
	}
	waitDV(t, "from-snap", v1alpha1.DataVolumeSucceeded, 2*time.Minute)
}
