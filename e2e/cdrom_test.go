//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"testing"
)

// TestStorageCDROMWithoutImage: a CD-ROM over a blank PVC (the CSI driver's new disk.img, all
// holes) fails the VMI with a message that says so, instead of showing the guest an empty disc.
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
	if vmi.Status.Reason != "SetupFailed" || !strings.Contains(vmi.Status.Message, "PVC no-iso holds no image for its CD-ROM: its disk.img is blank") {
		t.Errorf("failed VMI: reason %q, message %q; want SetupFailed saying the PVC holds no image", vmi.Status.Reason, vmi.Status.Message)
	}
}
