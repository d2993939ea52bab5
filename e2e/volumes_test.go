//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestStorageVolumeKinds boots one VMI with every kind of volume a KubeVirt user has: a
// containerDisk to boot, a filesystem PVC (disk.img made by the launcher), a block PVC, a
// hostDisk of type DiskOrCreate, an emptyDisk and a cloudInitConfigDrive whose script writes a
// token to each data disk, from a launcher that runs as uid 107 without privileges. A second
// VMI on the same volumes finds the token on the three persistent disks and a fresh emptyDisk.
func TestStorageVolumeKinds(t *testing.T) {
	storageNamespace(t)
	// hostDisks are allowed only below the chart's hostDiskDirs: by default <node.stateDir>/hostdisks,
	// which the local install puts at <STATE_DIR>/slimvirt. A directory below it must exist.
	stateDir := readClusterEnv("/var/lib/slimvirt-cluster/cluster.env")["STATE_DIR"]
	if stateDir == "" {
		t.Fatal("no local cluster state dir (hostDisk paths are on the node)")
	}
	hostDir := filepath.Join(stateDir, "slimvirt", "hostdisks", "e2e-kinds")
	_ = os.RemoveAll(hostDir)
	if err := os.MkdirAll(hostDir, 0o755); err != nil {
		t.Fatalf("make the hostDisk directory: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(hostDir) })
	applyYAML(t, fmt.Sprintf(`apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: fs, namespace: %[1]s}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: slimvirt
  resources: {requests: {storage: 64Mi}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: blk, namespace: %[1]s}
spec:
  accessModes: [ReadWriteOnce]
  volumeMode: Block
  storageClassName: slimvirt
  resources: {requests: {storage: 32Mi}}
`, storageNS))
	token := fmt.Sprintf("tok%d", time.Now().UnixNano())
	disks := []string{"vdb", "vdc", "vdd", "vde"}
	// The console echoes the script, so the markers are built at run time.
	script := `#!/bin/sh
T=` + token + `
for d in ` + strings.Join(disks, " ") + `; do
  got=$(dd if=/dev/$d bs=1 count=${#T} 2>/dev/null)
  if [ "$got" = "$T" ]; then echo "FOUND""-$d"; else printf %s "$T" | dd of=/dev/$d 2>/dev/null && sync && echo "WROTE""-$d"; fi
done
`
	manifest := vmiYAML("vm-kinds",
		"containerdisk=containerDisk: {image: slimvirt.io/guest:dev, imagePullPolicy: IfNotPresent}",
		"pvcdisk=persistentVolumeClaim: {claimName: fs}",
		"blockdisk=persistentVolumeClaim: {claimName: blk}",
		"hostdisk=hostDisk: {path: "+hostDir+"/disk.img, type: DiskOrCreate, capacity: 16Mi}",
		"scratch=emptyDisk: {capacity: 16Mi}",
		"configdrive=cloudInitConfigDrive:\n      userData: |\n"+indent(script, "        "))

	log := bootVMI(t, "vm-kinds", manifest)
	for _, d := range disks {
		if !strings.Contains(log, "WROTE-"+d) {
			t.Errorf("first boot: the guest could not write %s:\n%s", d, tail(log))
		}
	}
	if st, err := os.Stat(filepath.Join(hostDir, "disk.img")); err != nil || st.Size() == 0 {
		t.Errorf("hostDisk image not on the node: %v", err)
	}
	deleteVMI(t, "vm-kinds")
	log = bootVMI(t, "vm-kinds", manifest)
	for _, d := range disks[:3] {
		if !strings.Contains(log, "FOUND-"+d) {
			t.Errorf("second boot: the token is not on %s any more:\n%s", d, tail(log))
		}
	}
	if !strings.Contains(log, "WROTE-vde") {
		t.Errorf("second boot: the emptyDisk kept data from the first VMI:\n%s", tail(log))
	}
}
