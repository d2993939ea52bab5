//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// fsVolumeSize is the claim of TestStorageFilesystemVolume: 64 MiB.
const fsVolumeSize = 64 << 20

// TestStorageFilesystemVolume: a filesystem PVC behaves like a filesystem for any pod, as
// Kubernetes' storage suite expects. A pod's files, directories, links and FIFOs (not only
// disk.img) are in a clone of the PVC with their modes, and the kubelet's volume stats (the
// driver's NodeGetVolumeStats) count what the pod wrote against the claim's size. (The size
// limit itself needs project quotas on the pool, which this machine's kernel cannot mount: it is
// shown by the driver's tests in the guest kernel, make test-guest-kernel.)
func TestStorageFilesystemVolume(t *testing.T) {
	storageNamespace(t)
	applyYAML(t, fmt.Sprintf(`apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: src, namespace: %s}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: slimvirt
  resources: {requests: {storage: 64Mi}}
`, storageNS))
	out := runVolumePod(t, "writer", "src", `set -e
mkdir -p /vol/www/deep/er
echo "slimvirt-index-marker" > /vol/www/index.html
dd if=/dev/urandom of=/vol/www/deep/er/data bs=64k count=16 2>/dev/null
ln -s ../www/index.html /vol/www/link
mkfifo /vol/www/fifo
chmod 0640 /vol/www/index.html
echo "sum $(md5sum /vol/www/deep/er/data | cut -d' ' -f1)"
sync`)
	t.Logf("writer:\n%s", out)
	sum := field(t, out, "sum")

	applyYAML(t, fmt.Sprintf(`apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: clone, namespace: %s}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: slimvirt
  dataSource: {kind: PersistentVolumeClaim, name: src}
  resources: {requests: {storage: 64Mi}}
`, storageNS))
	out = runVolumePod(t, "reader", "clone", `cat /vol/www/index.html
echo "sum $(md5sum /vol/www/deep/er/data | cut -d' ' -f1)"
echo "link $(readlink /vol/www/link)"
echo "mode $(stat -c %a /vol/www/index.html)"
echo "fifo $(stat -c %F /vol/www/fifo)"
echo "disk $(stat -c %s /vol/disk.img)"`)
	t.Logf("reader of the clone:\n%s", out)
	for _, want := range []string{"slimvirt-index-marker", "sum " + sum, "link ../www/index.html", "mode 640", "fifo fifo", fmt.Sprintf("disk %d", fsVolumeSize)} {
		if !strings.Contains(out, want) {
			t.Errorf("the clone lacks %q", want)
		}
	}
	volumeStatsShowSize(t)
}

// volumeStatsShowSize keeps a pod on the clone and waits for the kubelet's summary (from the
// driver's NodeGetVolumeStats) to give the volume the claim's capacity and the data it holds.
func volumeStatsShowSize(t *testing.T) {
	t.Helper()
	applyYAML(t, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: holder, namespace: %s}
spec:
  containers:
    - name: holder
      image: slimvirt.io/toolbox:dev
      imagePullPolicy: IfNotPresent
      command: [/bin/sh, -c, 'sleep 3600']
      volumeMounts: [{name: vol, mountPath: /vol}]
  volumes:
    - {name: vol, persistentVolumeClaim: {claimName: clone}}
`, storageNS))
	node := readClusterEnv("/var/lib/slimvirt-cluster/cluster.env")["NODE_NAME"]
	eventually(t, 4*time.Minute, "the kubelet's stats for the clone", func() (bool, error) {
		raw, err := kubectl(t, "get", "--raw", "/api/v1/nodes/"+node+"/proxy/stats/summary")
		if err != nil {
			return false, fmt.Errorf("stats summary: %w", err)
		}
		var sum struct {
			Pods []struct {
				PodRef struct{ Name, Namespace string }
				Volume []struct {
					Name                                     string
					CapacityBytes, UsedBytes, AvailableBytes int64
					Inodes, InodesUsed                       int64
				}
			}
		}
		if err := json.Unmarshal([]byte(raw), &sum); err != nil {
			return false, fmt.Errorf("decode stats summary: %w", err)
		}
		for _, p := range sum.Pods {
			if p.PodRef.Namespace != storageNS || p.PodRef.Name != "holder" {
				continue
			}
			for _, v := range p.Volume {
				if v.Name != "vol" {
					continue
				}
				t.Logf("kubelet stats: capacity %d used %d available %d inodes %d used %d", v.CapacityBytes, v.UsedBytes, v.AvailableBytes, v.Inodes, v.InodesUsed)
				if v.CapacityBytes < fsVolumeSize || v.CapacityBytes > fsVolumeSize*11/10 {
					return false, fmt.Errorf("capacity %d, the claim is %d", v.CapacityBytes, fsVolumeSize)
				}
				if v.UsedBytes < 1<<20 || v.InodesUsed < 5 {
					return false, fmt.Errorf("used %d bytes and %d inodes; the pod's 1 MiB file and 7 entries are not counted", v.UsedBytes, v.InodesUsed)
				}
				return true, nil
			}
		}
		return false, fmt.Errorf("no stats yet for volume vol of pod holder")
	})
}

// runVolumePod runs a toolbox pod with PVC claim at /vol to completion and returns its logs.
func runVolumePod(t *testing.T, name, claim, script string) string {
	t.Helper()
	applyYAML(t, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: %s}
spec:
  restartPolicy: Never
  containers:
    - name: sh
      image: slimvirt.io/toolbox:dev
      imagePullPolicy: IfNotPresent
      command: [/bin/sh, -c, %q]
      volumeMounts: [{name: vol, mountPath: /vol}]
  volumes:
    - {name: vol, persistentVolumeClaim: {claimName: %s}}
`, name, storageNS, script, claim))
	eventually(t, 4*time.Minute, "pod "+name+" to finish", func() (bool, error) {
		phase, err := kubectl(t, "-n", storageNS, "get", "pod", name, "-o", "jsonpath={.status.phase}")
		return phase == "Succeeded" || phase == "Failed", err
	})
	out := mustKubectl(t, "-n", storageNS, "logs", name)
	mustKubectl(t, "-n", storageNS, "delete", "pod", name, "--wait=true")
	return out
}

// field returns the word after "key " on the line that starts with it.
func field(t *testing.T, out, key string) string {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(l, key+" "); ok {
			return strings.TrimSpace(rest)
		}
	}
	t.Fatalf("no %q line in:\n%s", key, out)
	return ""
}
