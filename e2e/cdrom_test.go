//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"testing"
)

// TestStorageCDROMWithoutImage: a CD-ROM over a PVC that holds no disk.img fails the VMI with a
// message that says so, instead of booting with an empty image made for it; the PVC is left as
// it was.
func TestStorageCDROMWithoutImage(t *testing.T) {
	storageNamespace(t)
	applyYAML(t, fmt.Sprintf(`apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: no-iso, namespace: %[1]s}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: slimvirt
  resources: {requests: {storage: 64Mi}}
---
apiVersion: slimvirt.io/v1alpha1
kind: VirtualMachineInstance
metadata: {name: vm-cdrom, namespace: %[1]s}
spec:
  terminationGracePeriodSeconds: 10
  domain:
    resources: {requests: {memory: 128Mi}}
    devices:
      disks:
      - {name: root, disk: {bus: virtio}, bootOrder: 1}
      - {name: iso, cdrom: {bus: sata}}
      interfaces:
      - {name: default, bridge: {}}
  networks:
  - {name: default, pod: {}}
  volumes:
  - {name: root, containerDisk: {image: slimvirt.io/guest:dev, imagePullPolicy: IfNotPresent}}
  - {name: iso, persistentVolumeClaim: {claimName: no-iso}}
`, storageNS))
	t.Cleanup(func() { deleteVMI(t, "vm-cdrom") })
	vmi := waitStorageVMIFailed(t, "vm-cdrom")
	if vmi.Status.Reason != "SetupFailed" || !strings.Contains(vmi.Status.Message, "PVC no-iso holds no disk.img for its CD-ROM") {
		t.Errorf("failed VMI: reason %q, message %q; want SetupFailed saying the PVC holds no image", vmi.Status.Reason, vmi.Status.Message)
	}
	out := runVolumePod(t, "lister", "no-iso", "ls -A /vol; echo END")
	if strings.Contains(out, "disk.img") {
		t.Errorf("an image was made in the CD-ROM's PVC: %s", out)
	}
}
