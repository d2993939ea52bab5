//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	v1alpha1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// TestStorageEphemeral boots the guest from an ephemeral volume over an imported PVC, twice at
// once: each guest writes a token to its disk and reads it back through its own overlay. The
// PVC's disk.img is byte for byte what it was, and the VMI booted again finds no token: the
// writes went with the overlays.
func TestStorageEphemeral(t *testing.T) {
	storageNamespace(t)
	url, sum := guestServer(t)
	importDV(t, "golden", url, sum, true)
	waitDV(t, "golden", v1alpha1.DataVolumeSucceeded, 3*time.Minute)
	before := diskImgSum(t, "sum-before")

	token := fmt.Sprintf("eph%d", time.Now().UnixNano())
	// The guest's disk is the one of at least 64 MiB (the cloud-init ISO is small); the token
	// goes to its last sector, past the 64 MiB the guest's image fills. It is read back after
	// the page cache is dropped, so WROTE means the write reached the disk. The console echoes
	// the script, so the markers are built at run time.
	script := `#!/bin/sh
T=` + token + `
D=
for b in /sys/block/vd*; do [ "$(cat $b/size)" -ge 131072 ] && D=${b##*/}; done
S=$(( $(cat /sys/block/$D/size) - 1 ))
mark() { dd if=/dev/$D bs=512 skip=$S count=1 2>/dev/null | tr -d '\000'; }
if [ "$(mark)" = "$T" ]; then echo "FOUND""-$T"; exit 0; fi
printf %s "$T" | dd of=/dev/$D bs=512 seek=$S conv=notrunc 2>/dev/null
sync
echo 3 >/proc/sys/vm/drop_caches
if [ "$(mark)" = "$T" ]; then echo "WROTE""-$T"; else echo "UNWRITTEN""-$T"; fi
`
	ud := "cloudInitNoCloud:\n      userData: |\n" + indent(script, "        ")
	manifest := func(name string) string {
		return vmiYAML(name, "rootdisk=ephemeral: {persistentVolumeClaim: {claimName: golden}}", "cloudinitdisk="+ud)
	}
	wrote := func(name, log string) {
		t.Helper()
		if strings.Contains(log, "FOUND-"+token) || !strings.Contains(log, "WROTE-"+token) {
			t.Fatalf("%s: want the token written to a disk that did not hold it:\n%s", name, tail(log))
		}
	}

	wrote("eph-a", bootVMI(t, "eph-a", manifest("eph-a")))
	// A second VMI on the same PVC while the first runs: both mount it read-only.
	wrote("eph-b", bootVMI(t, "eph-b", manifest("eph-b")))
	for _, name := range []string{"eph-a", "eph-b"} {
		vmi, err := getVMI(t, storageNS, name)
		if err != nil {
			t.Fatal(err)
		}
		// The PVC is published writable so that kubelet gives it to the launcher's group; the
		// compute container's mount is read-only.
		vol := strings.TrimSpace(mustKubectl(t, "-n", storageNS, "get", "pod", vmi.Status.LauncherPod, "-o",
			`jsonpath={.spec.volumes[?(@.persistentVolumeClaim.claimName=="golden")].name}`))
		ro := mustKubectl(t, "-n", storageNS, "get", "pod", vmi.Status.LauncherPod, "-o",
			`jsonpath={.spec.containers[?(@.name=="compute")].volumeMounts[?(@.name=="`+vol+`")].readOnly}`)
		if vol == "" || strings.TrimSpace(ro) != "true" {
			t.Errorf("launcher pod %s: the compute container mounts PVC golden (volume %q) with readOnly %q, want true", vmi.Status.LauncherPod, vol, ro)
		}
	}
	// deleteVMI waits until no pod name contains the VMI's: neither name is part of the other.
	deleteVMI(t, "eph-a")
	deleteVMI(t, "eph-b")
	if after := diskImgSum(t, "sum-after"); after != before {
		t.Fatalf("the PVC's disk.img changed: md5 %s before, %s after", before, after)
	}

	wrote("eph-a again", bootVMI(t, "eph-a", manifest("eph-a")))
	deleteVMI(t, "eph-a")
	if after := diskImgSum(t, "sum-end"); after != before {
		t.Fatalf("the PVC's disk.img changed: md5 %s before, %s at the end", before, after)
	}
}

// diskImgSum is the md5 of PVC golden's disk.img, read by a pod named name.
func diskImgSum(t *testing.T, name string) string {
	t.Helper()
	out := runVolumePod(t, name, "golden", `echo "sum $(md5sum /vol/disk.img | cut -d' ' -f1)"`)
	return field(t, out, "sum")
}
