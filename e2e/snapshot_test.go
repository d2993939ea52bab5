//go:build e2e

package e2e

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestVMSnapshotRestore takes a VirtualMachineSnapshot of a stopped VM whose data disk holds
// what its first boot wrote, lets a second boot overwrite it, and restores the snapshot: the
// third boot reads the first boot's data again, from a new PVC made from the CSI driver's
// VolumeSnapshot, and the VM points at that PVC.
func TestVMSnapshotRestore(t *testing.T) {
	storageNamespace(t)
	// Each boot prints what the data disk holds, then writes a token of its own (from the boot
	// ID). The console echoes the script, so the markers are built at run time.
	script := `#!/bin/sh
got=$(dd if=/dev/vdb bs=1 count=9 2>/dev/null | tr -d '\000')
echo "HAS""-$got-"
T=B$(cut -c1-8 /proc/sys/kernel/random/boot_id)
printf %s "$T" | dd of=/dev/vdb conv=notrunc 2>/dev/null
sync
echo "WROTE""-$T-"
`
	applyYAML(t, fmt.Sprintf(`apiVersion: slimvirt.io/v1alpha1
kind: VirtualMachine
metadata: {name: snapvm, namespace: %[1]s}
spec:
  runStrategy: Always
  dataVolumeTemplates:
  - metadata: {name: snapvm-data}
    spec:
      source: {blank: {}}
      storage: {resources: {requests: {storage: 64Mi}}}
  template:
    spec:
      terminationGracePeriodSeconds: 10
      domain:
        resources: {requests: {memory: 128Mi}}
        devices:
          disks:
          - {name: containerdisk, disk: {bus: virtio}, bootOrder: 1}
          - {name: datadisk, disk: {bus: virtio}}
          - {name: cloudinitdisk, disk: {bus: virtio}}
      volumes:
      - name: containerdisk
        containerDisk: {image: slimvirt.io/guest:dev, imagePullPolicy: IfNotPresent}
      - name: datadisk
        dataVolume: {name: snapvm-data}
      - name: cloudinitdisk
        cloudInitNoCloud:
          userData: |
%[2]s`, storageNS, indent(script, "            ")))
	t.Cleanup(func() {
		_, _ = kubectl(t, "-n", storageNS, "delete", "vmrestore,vmsnapshot,vm", "--all", "--wait=true", "--timeout=120s")
	})
	wrote := regexp.MustCompile(`WROTE-(B[0-9a-f]{8})-`)
	has := regexp.MustCompile(`HAS-(B[0-9a-f]{8})?-`)
	// boot waits for one boot of the VM and returns what its disk held and what it wrote.
	boot := func(what string) (held, token string) {
		t.Helper()
		var log string
		eventually(t, 6*time.Minute, what, func() (bool, error) {
			pod, err := kubectl(t, "-n", storageNS, "get", "vmi", "snapvm", "-o", "jsonpath={.status.launcherPod}")
			if err != nil || strings.TrimSpace(pod) == "" {
				return false, fmt.Errorf("no launcher pod yet: %w", err)
			}
			log, err = kubectl(t, "-n", storageNS, "logs", strings.TrimSpace(pod), "-c", "compute")
			return wrote.MatchString(log), err
		})
		h := has.FindStringSubmatch(log)
		if h == nil {
			t.Fatalf("%s: the guest did not say what its disk held:\n%s", what, tail(log))
		}
		return h[1], wrote.FindStringSubmatch(log)[1]
	}
	stop := func() {
		t.Helper()
		mustKubectl(t, "-n", storageNS, "patch", "vm", "snapvm", "--type=merge", "-p", `{"spec":{"runStrategy":"Halted"}}`)
		eventually(t, 3*time.Minute, "VM snapvm stopped", func() (bool, error) {
			out, err := kubectl(t, "-n", storageNS, "get", "vmi", "snapvm")
			return err != nil && strings.Contains(out, "NotFound"), nil
		})
	}
	start := func() {
		t.Helper()
		mustKubectl(t, "-n", storageNS, "patch", "vm", "snapvm", "--type=merge", "-p", `{"spec":{"runStrategy":"Always"}}`)
	}

	held, first := boot("the first boot")
	if held != "" {
		t.Fatalf("a blank DataVolume held %q", held)
	}
	// A snapshot of the running VM: the guest's filesystems are frozen through its agent for
	// the instant the VolumeSnapshots are made, and thawed right after.
	applyYAML(t, fmt.Sprintf(`apiVersion: slimvirt.io/v1alpha1
kind: VirtualMachineSnapshot
metadata: {name: online, namespace: %s}
spec:
  source: {apiGroup: slimvirt.io, kind: VirtualMachine, name: snapvm}
`, storageNS))
	eventually(t, 3*time.Minute, "snapshot online ready", func() (bool, error) {
		out, err := kubectl(t, "-n", storageNS, "get", "vmsnapshot", "online", "-o", "jsonpath={.status.phase} {.status.readyToUse} {.status.indications} {.status.error}")
		return strings.HasPrefix(strings.TrimSpace(out), "Succeeded true"), fmt.Errorf("%s: %w", out, err)
	})
	ind := mustKubectl(t, "-n", storageNS, "get", "vmsnapshot", "online", "-o", "jsonpath={.status.indications}")
	if !strings.Contains(ind, "Online") || !strings.Contains(ind, "GuestAgent") || strings.Contains(ind, "NoGuestAgent") {
		t.Errorf("the running VM's snapshot indications %s, want Online and GuestAgent", ind)
	}
	pod := strings.TrimSpace(mustKubectl(t, "-n", storageNS, "get", "vmi", "snapvm", "-o", "jsonpath={.status.launcherPod}"))
	console := mustKubectl(t, "-n", storageNS, "logs", pod, "-c", "compute")
	frozen, thawed := strings.Index(console, "SLIMVIRT-GUEST-FROZEN"), strings.LastIndex(console, "SLIMVIRT-GUEST-THAWED")
	if frozen < 0 || thawed < frozen {
		t.Errorf("the guest was not frozen, then thawed, for the online snapshot (frozen at %d, thawed at %d):\n%s", frozen, thawed, tail(console))
	}
	stop()
	taken := time.Now()
	applyYAML(t, fmt.Sprintf(`apiVersion: slimvirt.io/v1alpha1
kind: VirtualMachineSnapshot
metadata: {name: snap1, namespace: %s}
spec:
  source: {apiGroup: slimvirt.io, kind: VirtualMachine, name: snapvm}
`, storageNS))
	eventually(t, 3*time.Minute, "snapshot snap1 ready", func() (bool, error) {
		out, err := kubectl(t, "-n", storageNS, "get", "vmsnapshot", "snap1", "-o", "jsonpath={.status.phase} {.status.readyToUse} {.status.error}")
		return strings.TrimSpace(out) == "Succeeded true", fmt.Errorf("%s: %w", out, err)
	})
	t.Logf("snapshot of a stopped VM with a 64Mi data disk ready in %s", time.Since(taken).Round(100*time.Millisecond))
	out := mustKubectl(t, "-n", storageNS, "get", "vmsnapshot", "snap1")
	for _, col := range []string{"SOURCEKIND", "SOURCENAME", "PHASE", "READYTOUSE", "VirtualMachine", "snapvm", "Succeeded", "true"} {
		if !strings.Contains(out, col) {
			t.Errorf("kubectl get vmsnapshot does not show %s:\n%s", col, out)
		}
	}
	vs := strings.TrimSpace(mustKubectl(t, "-n", storageNS, "get", "volumesnapshot", "-o", "jsonpath={.items[*].status.readyToUse}"))
	if vs != "true true" {
		t.Errorf("VolumeSnapshots ready: %q, want two (one per VM snapshot), ready", vs)
	}

	start()
	held, second := boot("the second boot")
	if held != first || second == first {
		t.Fatalf("second boot: disk held %q (want the first boot's %q), wrote %q", held, first, second)
	}
	stop()
	applyYAML(t, fmt.Sprintf(`apiVersion: slimvirt.io/v1alpha1
kind: VirtualMachineRestore
metadata: {name: restore1, namespace: %s}
spec:
  target: {apiGroup: slimvirt.io, kind: VirtualMachine, name: snapvm}
  virtualMachineSnapshotName: snap1
`, storageNS))
	eventually(t, 3*time.Minute, "restore restore1 complete", func() (bool, error) {
		out, err := kubectl(t, "-n", storageNS, "get", "vmrestore", "restore1", "-o", "jsonpath={.status.complete}")
		return strings.TrimSpace(out) == "true", fmt.Errorf("complete=%q: %w", out, err)
	})
	claim := strings.TrimSpace(mustKubectl(t, "-n", storageNS, "get", "vm", "snapvm", "-o",
		`jsonpath={.spec.template.spec.volumes[?(@.name=="datadisk")].persistentVolumeClaim.claimName}`))
	if !strings.HasPrefix(claim, "restore-") {
		t.Fatalf("the restored VM's datadisk is on %q, want a restore-... PVC", claim)
	}
	start()
	held, third := boot("the boot after the restore")
	if held != first {
		t.Fatalf("after the restore the disk held %q, want the snapshot's %q (the second boot wrote %q)", held, first, second)
	}
	t.Logf("boots wrote %s, %s, %s; after the restore the disk held %s", first, second, third, held)
}
