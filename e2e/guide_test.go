//go:build e2e

package e2e

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"testing"
	"time"

	"libvirt.org/go/libvirtxml"

	v1alpha1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// TestGuideWindowsVM applies the user guide's Windows VM as written (examples/vm-windows.yaml:
// only apiVersion differs) and starts it: no Windows boots here, but a real launcher defines
// it in libvirt, and the live domain has what the manifest asks for: the installer ISO from
// PVC win10-iso and the virtio drivers from kubevirt/virtio-container-disk (pulled from the
// cluster's registry) as SATA CD-ROMs with the manifest's boot order, the hostDisk
// /data/disk.img (made, 50Gi) on virtio, 4 cores, 16G and an e1000 NIC behind masquerade.
func TestGuideWindowsVM(t *testing.T) {
	storageNamespace(t)
	// The guide's hostDisk lives in /data, which the local cluster allows (hack/local-install.sh);
	// kubelet makes the directory on the node, which here is this machine: remove what was made.
	_, statErr := os.Stat("/data")
	madeData := errors.Is(statErr, fs.ErrNotExist)
	t.Cleanup(func() {
		_, _ = kubectl(t, "-n", storageNS, "delete", "vm", "win10", "--ignore-not-found", "--wait=true", "--timeout=120s")
		_ = os.Remove("/data/disk.img")
		if madeData {
			_ = os.Remove("/data")
		}
	})
	url, sum := guestServer(t)
	importDV(t, "win10-iso", url, sum, true)
	waitDV(t, "win10-iso", v1alpha1.DataVolumeSucceeded, 3*time.Minute)

	mustKubectl(t, "-n", storageNS, "apply", "-f", "../examples/vm-windows.yaml")
	mustKubectl(t, "-n", storageNS, "patch", "vm", "win10", "--type=merge", "-p", `{"spec":{"running":true}}`)
	var pod string
	eventually(t, 6*time.Minute, "VMI win10 Running", func() (bool, error) {
		vmi, err := getVMI(t, storageNS, "win10")
		if err != nil {
			return false, err
		}
		if vmi.Status.Phase.IsFinal() {
			t.Fatalf("VMI win10 ended in phase %s: %s: %s", vmi.Status.Phase, vmi.Status.Reason, vmi.Status.Message)
		}
		pod = vmi.Status.LauncherPod
		return vmi.Status.Phase == v1alpha1.Running && pod != "", nil
	})
	xml := liveDomainXML(t, pod, storageNS+"_win10")
	var dom libvirtxml.Domain
	if err := dom.Unmarshal(xml); err != nil {
		t.Fatalf("parse the live domain XML: %v\n%s", err, xml)
	}

	type disk struct{ device, bus, source string }
	var disks []disk
	boot := map[string]uint{}
	for _, d := range dom.Devices.Disks {
		src := ""
		if d.Source != nil && d.Source.File != nil {
			src = d.Source.File.File
		}
		disks = append(disks, disk{d.Device, d.Target.Bus, src})
		if d.Boot != nil {
			boot[d.Target.Bus+":"+d.Device] += d.Boot.Order
		}
	}
	// Each disk's source is named for its volume.
	for _, w := range []disk{{"cdrom", "sata", "cdromiso"}, {"disk", "virtio", "harddrive"}, {"cdrom", "sata", "virtiocontainerdisk"}} {
		found := false
		for _, d := range disks {
			found = found || d.device == w.device && d.bus == w.bus && strings.Contains(d.source, w.source)
		}
		if !found {
			t.Errorf("no %s on %s from volume %s in the live domain: %+v", w.device, w.bus, w.source, disks)
		}
	}
	if boot["sata:cdrom"] != 1 || boot["virtio:disk"] != 2 {
		t.Errorf("boot orders %v, want the ISO CD-ROM 1 and the harddrive 2", boot)
	}
	if n := len(dom.Devices.Interfaces); n != 1 || dom.Devices.Interfaces[0].Model == nil || dom.Devices.Interfaces[0].Model.Type != "e1000" {
		t.Errorf("interfaces %+v, want one e1000", dom.Devices.Interfaces)
	}
	if dom.VCPU == nil || dom.VCPU.Value != 4 || dom.CPU == nil || dom.CPU.Topology == nil || dom.CPU.Topology.Cores != 4 {
		t.Errorf("vCPUs %+v, topology %+v, want 4 cores", dom.VCPU, dom.CPU)
	}
	// 16G is 16e9 bytes; libvirt keeps whole KiB (15625216 KiB here).
	if dom.Memory == nil || dom.Memory.Value*unitBytes(dom.Memory.Unit) < 15_990_000_000 {
		t.Errorf("memory %+v, want the manifest's 16G", dom.Memory)
	}
	if dom.OS == nil || dom.OS.Type == nil || !strings.HasPrefix(dom.OS.Type.Machine, "pc-q35") && dom.OS.Type.Machine != "q35" {
		t.Errorf("machine %+v, want q35", dom.OS)
	}
	st, err := os.Stat("/data/disk.img")
	if err != nil || st.Size() != 50<<30 {
		t.Errorf("the hostDisk /data/disk.img: %v, size %d, want 50Gi made by DiskOrCreate", err, sizeOf(st))
	}

	// The guide's Service selects the VM by kubevirt.io/domain: win10: its endpoint is the
	// launcher pod, ready, on the RDP port (no Windows answers behind it here).
	mustKubectl(t, "-n", storageNS, "apply", "-f", "../examples/service-win10.yaml")
	podIP := strings.TrimSpace(mustKubectl(t, "-n", storageNS, "get", "pod", pod, "-o", "jsonpath={.status.podIP}"))
	eventually(t, time.Minute, "Service win10-rdp's endpoint is the launcher pod", func() (bool, error) {
		out, err := kubectl(t, "-n", storageNS, "get", "endpointslices", "-l", "kubernetes.io/service-name=win10-rdp",
			"-o", `jsonpath={range .items[*].endpoints[*]}{.addresses[0]} {.conditions.ready} {.targetRef.name};{end}{range .items[*].ports[*]}{.port};{end}`)
		return err == nil && strings.Contains(out, podIP+" true "+pod+";") && strings.Contains(out, "3389;"), fmt.Errorf("endpoints %q, want %s (%s) on 3389", out, podIP, pod)
	})
}

// liveDomainXML reads the running domain's XML from the launcher's own libvirtd.
func liveDomainXML(t *testing.T, pod, name string) string {
	t.Helper()
	var out string
	var err error
	for _, mode := range []string{"session", "system"} {
		out, err = kubectl(t, "-n", storageNS, "exec", pod, "-c", "compute", "--", "virsh", "-c",
			"qemu:///"+mode+"?socket=/var/run/libvirt/libvirt-sock", "dumpxml", name)
		if err == nil {
			return out
		}
	}
	t.Fatalf("virsh dumpxml %s in %s: %v\n%s", name, pod, err, out)
	return ""
}

func unitBytes(unit string) uint {
	switch unit {
	case "b", "bytes":
		return 1
	case "KiB", "k", "":
		return 1 << 10
	case "MiB", "M":
		return 1 << 20
	case "GiB", "G":
		return 1 << 30
	}
	return 1 << 10
}

func sizeOf(st os.FileInfo) int64 {
	if st == nil {
		return -1
	}
	return st.Size()
}
