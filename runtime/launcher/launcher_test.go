package launcher_test

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

const bootTimeout = 90 * time.Second

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func testVMI(name string, grace int64, disks []v1.Disk, vols []v1.Volume) *v1.VirtualMachineInstance {
	return &v1.VirtualMachineInstance{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "test", UID: "0f0e0d0c-0000-4000-8000-000000000001"},
		Spec: v1.VirtualMachineInstanceSpec{
			Domain: v1.DomainSpec{
				Memory: &v1.Memory{Guest: ptr.To(resource.MustParse("256Mi"))},
				Devices: v1.Devices{
					AutoattachPodInterface: ptr.To(false),
					Disks:                  disks,
				},
			},
			Volumes:                       vols,
			TerminationGracePeriodSeconds: &grace,
		},
	}
}

// typeOnConsole attaches to the launcher's console socket like an interactive client and types a line.
func typeOnConsole(t *testing.T, r *run, line string, readBack bool) {
	t.Helper()
	c, err := net.Dial("unix", filepath.Join(r.dir, "console.sock"))
	if err != nil {
		t.Fatalf("attach to the console: %v", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(line + "\n")); err != nil {
		t.Fatal(err)
	}
	if !readBack {
		return
	}
	// The client also receives the output: read something back.
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 256)
	if _, err := c.Read(buf); err != nil {
		t.Fatalf("no console output on the client socket: %v", err)
	}
}

// A containerDisk (through its overlay), an emptyDisk and a NoCloud ISO: the guest boots from
// the copy, sees the empty disk at its size, prints and runs the user data, takes the hostname
// from meta-data; pause and unpause work; SIGTERM powers it off through ACPI. The launcher
// runs as an unprivileged user without any capability and without virtlogd.
func TestContainerDiskCloudInitPauseShutdown(t *testing.T) {
	needGuest(t)
	r := newRun(t)
	r.nonRoot = true
	// The copier runs next to the launcher, as in the pod, and starts after it here: the
	// launcher waits for the copy.
	cdDir := filepath.Join(r.path(launcherpod.ContainerDiskDir), "root")
	if err := os.MkdirAll(cdDir, 0o755); err != nil {
		t.Fatal(err)
	}
	vmi := testVMI("cdisk", 60,
		[]v1.Disk{
			{Name: "root", Disk: &v1.DiskTarget{Bus: "virtio"}},
			{Name: "scratch", Disk: &v1.DiskTarget{Bus: "virtio"}},
			{Name: "cloudinit", Disk: &v1.DiskTarget{Bus: "virtio"}},
			{Name: "data", Disk: &v1.DiskTarget{Bus: "virtio"}},
		},
		[]v1.Volume{
			{Name: "root", VolumeSource: v1.VolumeSource{ContainerDisk: &v1.ContainerDiskSource{Image: "guest"}}},
			{Name: "scratch", VolumeSource: v1.VolumeSource{EmptyDisk: &v1.EmptyDiskSource{Capacity: resource.MustParse("1Gi")}}},
			{Name: "cloudinit", VolumeSource: v1.VolumeSource{CloudInitNoCloud: &v1.CloudInitNoCloudSource{
				UserData: "#!/bin/sh\necho hello-from-user-data-$((40+2))\n",
			}}},
			{Name: "data", VolumeSource: v1.VolumeSource{PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: "data-pvc"}}},
		})
	vmi.Spec.Hostname = "ci-host"
	// A virtio NIC on a tap owned by the launcher's user (as the CNI plugin makes it): the
	// unprivileged QEMU opens it, the guest gets the spec's MAC and the tap's MTU.
	vmi.Spec.Domain.Devices.AutoattachPodInterface = nil
	vmi.Spec.Domain.Devices.Interfaces = []v1.Interface{{Name: "default", MacAddress: "02:AA:bb:cc:dd:ee", Bridge: &v1.InterfaceBridge{}}}
	vmi.Spec.Networks = []v1.Network{{Name: "default", NetworkSource: v1.NetworkSource{Pod: &v1.PodNetwork{}}}}
	r.args = []string{"--tap=tap0"}
	// An empty 64 MiB filesystem PVC: the launcher creates disk.img at 64 MiB less the reserve,
	// rounded down to whole MiB: 63 MiB.
	if err := os.MkdirAll(filepath.Join(r.path(launcherpod.PVCDir), "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	r.start(vmi, "EMPTY_PVC=data", "TAP=tap0")
	copier := startCopier(t, filepath.Join(bins.guest, "disk.qcow2"), cdDir, time.Second)

	r.waitLine("SLIMVIRT-USERDATA-BEGIN", bootTimeout)
	if l := r.log(); !strings.Contains(l, `msg="waiting for the disk out of the containerDisk image"`) || !strings.Contains(l, "volume=root") {
		t.Error("the launcher did not say it waited for the containerDisk copy")
	}
	r.waitLine("echo hello-from-user-data-$((40+2))", 10*time.Second)
	r.waitLine("SLIMVIRT-USERDATA-END", 10*time.Second)
	r.waitLine("hello-from-user-data-42", 10*time.Second)
	up := r.waitLine("SLIMVIRT-GUEST-UP", 30*time.Second)
	if !strings.Contains(up, "hostname=ci-host") || !strings.Contains(up, "ip=none") || !strings.Contains(up, "mac=02:aa:bb:cc:dd:ee") {
		t.Errorf("guest up line %q: want hostname=ci-host ip=none mac=02:aa:bb:cc:dd:ee", up)
	}
	if st := r.status(); st.GuestMAC != "02:aa:bb:cc:dd:ee" {
		t.Errorf("status guest MAC %q", st.GuestMAC)
	}
	st := r.status()
	if st.Phase != launcherpod.PhaseRunning || st.Accelerator != "tcg" {
		t.Errorf("status %+v, want Running on tcg", st)
	}
	if out, err := r.launcherCmd("probe"); err != nil {
		t.Errorf("probe failed while running: %v: %s", err, out)
	}
	names := map[string]bool{}
	for _, p := range r.processes() {
		names[p.name] = true
		if p.uid != "107" || p.capEff != "0000000000000000" {
			t.Errorf("process %s runs as uid %s with capabilities %s, want uid 107 and none", p.name, p.uid, p.capEff)
		}
	}
	if !names["libvirtd"] || names["virtlogd"] || len(names) != 3 {
		t.Errorf("processes %v: want the launcher, libvirtd and QEMU, and no virtlogd", keys(names))
	}
	// VNC is QEMU's RFB server on the pod's socket.
	if c, err := net.Dial("unix", filepath.Join(r.dir, "vnc")); err != nil {
		t.Errorf("connect to VNC: %v", err)
	} else {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		hello := make([]byte, 12)
		if _, err := io.ReadFull(c, hello); err != nil || !strings.HasPrefix(string(hello), "RFB ") {
			t.Errorf("VNC greeting %q, %v", hello, err)
		}
		_ = c.Close()
	}
	// The overlay takes the writes; the copied disk stays as it was.
	if _, err := os.Stat(r.path(launcherpod.EmptyDiskDir + "/root.qcow2")); err != nil {
		t.Errorf("no containerDisk overlay: %v", err)
	}
	// The emptyDisk is 1 GiB (2097152 sectors) in the guest.
	typeOnConsole(t, r, "echo vdb-sectors-$(cat /sys/block/vdb/size) vdd-sectors-$(cat /sys/block/vdd/size) mtu-$(cat /sys/class/net/eth0/mtu)", true)
	r.waitLine("vdb-sectors-2097152 vdd-sectors-129024 mtu-1400", 20*time.Second)

	if out, err := r.launcherCmd("ctl", "pause"); err != nil {
		t.Fatalf("pause: %v: %s", err, out)
	}
	r.waitPhase(launcherpod.PhasePaused, 10*time.Second)
	if _, err := r.launcherCmd("probe"); err == nil {
		t.Error("probe succeeded while paused")
	}
	typeOnConsole(t, r, "echo after-pause-$((1+1))", false)
	time.Sleep(2 * time.Second)
	for _, l := range r.consoleLines() {
		if strings.Contains(l, "after-pause-2") {
			t.Fatal("a paused guest ran a command")
		}
	}
	if out, err := r.launcherCmd("ctl", "unpause"); err != nil {
		t.Fatalf("unpause: %v: %s", err, out)
	}
	r.waitPhase(launcherpod.PhaseRunning, 10*time.Second)
	r.waitLine("after-pause-2", 20*time.Second)
	// Freeze and thaw through libvirt and the guest's agent; a second freeze while frozen is
	// refused, and a freeze nobody thaws ends by itself after its unfreeze timeout.
	if out, err := r.launcherCmd("ctl", "freeze 60"); err != nil {
		t.Errorf("freeze: %v: %q", err, out)
	}
	r.waitLine("SLIMVIRT-GUEST-FROZEN", 20*time.Second)
	if out, err := r.launcherCmd("ctl", "freeze 60"); err == nil {
		t.Errorf("a second freeze while frozen succeeded: %q", out)
	}
	if out, err := r.launcherCmd("ctl", "unfreeze"); err != nil {
		t.Errorf("unfreeze: %v: %q", err, out)
	}
	r.waitLine("SLIMVIRT-GUEST-THAWED", 20*time.Second)
	frozeAt := time.Now()
	if out, err := r.launcherCmd("ctl", "freeze 2"); err != nil {
		t.Errorf("freeze for 2 s: %v: %q", err, out)
	}
	for thawed := 0; thawed < 2; {
		if time.Since(frozeAt) > 30*time.Second {
			t.Fatal("a freeze with a 2 s unfreeze timeout was never thawed")
		}
		time.Sleep(100 * time.Millisecond)
		thawed = 0
		for _, l := range r.consoleLines() {
			if strings.Contains(l, "SLIMVIRT-GUEST-THAWED") {
				thawed++
			}
		}
	}
	if took := time.Since(frozeAt); took < 2*time.Second {
		t.Errorf("a 2 s unfreeze timeout thawed after %s", took)
	}
	if out, err := r.launcherCmd("ctl", "freeze 100000"); err == nil || !strings.Contains(out, "is not a number of seconds from 1 to 600") {
		t.Errorf("freeze with an unbounded timeout: %v: %q", err, out)
	}
	typeOnConsole(t, r, "echo after-freeze-$((2+2))", false)
	r.waitLine("after-freeze-4", 20*time.Second)

	log, err := os.ReadFile(filepath.Join(r.dir, "console.log"))
	if err != nil || !strings.Contains(string(log), "SLIMVIRT-GUEST-UP") {
		t.Errorf("console log lacks the guest's output (err %v)", err)
	}

	start := time.Now()
	r.signal(syscall.SIGTERM)
	r.waitLine("SLIMVIRT-GUEST-POWEROFF", 30*time.Second)
	if code := r.waitExit(30 * time.Second); code != launcherpod.ExitGuestShutdown {
		t.Errorf("exit code %d, want %d", code, launcherpod.ExitGuestShutdown)
	}
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("shutdown took %s", took)
	}
	if st := r.status(); st.Phase != launcherpod.PhaseShutdown || st.Reason != "the guest powered off" {
		t.Errorf("final status %+v", st)
	}
	// The copier stayed (a pod with an exited container is not Ready) and ends on SIGTERM.
	copier.stop(t)
}

// A raw disk.img in a filesystem PVC and a ConfigDrive on a SATA CD-ROM; soft reboot and hard
// reset; a guest that ignores the power button is destroyed when the grace period is over. The launcher runs as root
// (libvirt's system daemon, QEMU as root) with virtlogd.
func TestPVCConfigDriveForcedDestroy(t *testing.T) {
	needGuest(t)
	r := newRun(t)
	r.args = []string{"--virtlogd=/usr/sbin/virtlogd"}
	copyDisk(t, filepath.Join(bins.guest, "disk.raw"), filepath.Join(r.path(launcherpod.PVCDir), "rootdisk"))
	const grace = 4
	vmi := testVMI("pvc", grace,
		[]v1.Disk{
			{Name: "rootdisk", Disk: &v1.DiskTarget{Bus: "sata"}, BootOrder: ptr.To(uint(1))},
			{Name: "configdrive", CDRom: &v1.CDRomTarget{Bus: "sata"}},
		},
		[]v1.Volume{
			{Name: "rootdisk", VolumeSource: v1.VolumeSource{PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: "root-pvc"}}},
			{Name: "configdrive", VolumeSource: v1.VolumeSource{CloudInitConfigDrive: &v1.CloudInitConfigDriveSource{
				// "#!/bin/sh\necho configdrive-$((6*7))\n"
				UserDataBase64: "IyEvYmluL3NoCmVjaG8gY29uZmlnZHJpdmUtJCgoNio3KSkK",
			}}},
		})
	r.start(vmi)

	r.waitLine("SLIMVIRT-GUEST-UP", bootTimeout)
	// The guest looks for its seed once at boot, and a SATA CD-ROM can attach after that on a
	// busy machine; so read the ConfigDrive from the shell: that is what is under test here.
	typeOnConsole(t, r, `mkdir -p /m; for i in 1 2 3 4 5 6 7 8 9 10; do mount -t iso9660 -o ro /dev/sr0 /m 2>/dev/null && break; sleep 1; done; sh /m/openstack/latest/user_data; echo meta-$(grep -o 'hostname":"[a-z]*' /m/openstack/latest/meta_data.json)`, true)
	r.waitLine("configdrive-42", 20*time.Second)
	r.waitLine(`meta-hostname":"pvc`, 5*time.Second)
	// Soft reboot: the guest powers off on the ACPI button and libvirt starts it again.
	if out, err := r.launcherCmd("ctl", "reboot"); err != nil {
		t.Fatalf("reboot: %v: %s", err, out)
	}
	r.waitLine("SLIMVIRT-GUEST-POWEROFF", 30*time.Second)
	r.waitCount("SLIMVIRT-GUEST-UP", 2, bootTimeout)
	r.waitPhase(launcherpod.PhaseRunning, 5*time.Second)
	// Hard reset: the machine starts over at once, without a poweroff.
	if out, err := r.launcherCmd("ctl", "reset"); err != nil {
		t.Fatalf("reset: %v: %s", err, out)
	}
	r.waitCount("SLIMVIRT-GUEST-UP", 3, bootTimeout)
	r.waitCount("SLIMVIRT-GUEST-POWEROFF", 1, time.Second)
	r.waitPhase(launcherpod.PhaseRunning, 5*time.Second)

	typeOnConsole(t, r, "kill $(pidof acpid); echo acpid-gone-$((1+1))", true)
	r.waitLine("acpid-gone-2", 20*time.Second)

	start := time.Now()
	r.signal(syscall.SIGTERM)
	code := r.waitExit(60 * time.Second)
	took := time.Since(start)
	if code != launcherpod.ExitGuestShutdown {
		t.Errorf("exit code %d, want %d", code, launcherpod.ExitGuestShutdown)
	}
	if took < grace*time.Second || took > (grace+15)*time.Second {
		t.Errorf("destroyed after %s, want just after the %ds grace period", took, grace)
	}
	if msg := r.terminationMessage(); !strings.Contains(msg, "grace period") {
		t.Errorf("termination message %q does not mention the grace period", msg)
	}
	n := 0
	for _, l := range r.consoleLines() {
		if strings.Contains(l, "SLIMVIRT-GUEST-POWEROFF") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d poweroffs, want the soft reboot's only: the guest had no power button handler at SIGTERM", n)
	}
}

// Bad input ends the launcher with ExitSetupFailed and a termination message naming the
// volume and the reason, before any guest starts.
func TestSetupFailures(t *testing.T) {
	needGuest(t)
	pvcDisk := []v1.Disk{{Name: "data", Disk: &v1.DiskTarget{}}}
	pvcVol := []v1.Volume{{Name: "data", VolumeSource: v1.VolumeSource{PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: "data-pvc"}}}}
	cdDisk := []v1.Disk{{Name: "root", Disk: &v1.DiskTarget{}}}
	cdVol := []v1.Volume{{Name: "root", VolumeSource: v1.VolumeSource{ContainerDisk: &v1.ContainerDiskSource{Image: "empty"}}}}
	tests := []struct {
		name    string
		vmi     *v1.VirtualMachineInstance
		setup   func(r *run)
		env     []string
		nonRoot bool
		want    []string
	}{
		{
			name: "PVC not mounted",
			vmi:  testVMI("nopvc", 5, pvcDisk, pvcVol),
			want: []string{"volume data", "not mounted"},
		},
		{
			name: "disk.img larger than its PVC",
			vmi:  testVMI("bigimg", 5, pvcDisk, pvcVol),
			setup: func(r *run) {
				if err := os.MkdirAll(filepath.Join(r.path(launcherpod.PVCDir), "data"), 0o755); err != nil {
					t.Fatal(err)
				}
			},
			env:  []string{"SMALL_PVC=data"},
			want: []string{"volume data", "larger than its PVC"},
		},
		{
			name:    "disk.img the unprivileged launcher cannot write",
			vmi:     testVMI("rootimg", 5, pvcDisk, pvcVol),
			nonRoot: true,
			setup: func(r *run) {
				dir := filepath.Join(r.path(launcherpod.PVCDir), "data")
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, "disk.img"), make([]byte, 1<<20), 0o644); err != nil {
					t.Fatal(err)
				}
			},
			want: []string{"volume data", "uid 107 cannot read and write"},
		},
		{
			name: "containerDisk image without a disk",
			vmi:  testVMI("nodisk", 5, cdDisk, cdVol),
			setup: func(r *run) {
				// The copier, pointed at a path the image does not have, reports why and exits.
				dst := filepath.Join(r.path(launcherpod.ContainerDiskDir), "root")
				out, err := exec.Command(bins.diskcopy, "copy", "--src", filepath.Join(r.root, "no-such-disk"), "--dst", dst, "--stay").CombinedOutput()
				if err == nil {
					t.Fatalf("the copier succeeded without a disk: %s", out)
				}
			},
			want: []string{"volume root", "the copy out of the image failed", "no-such-disk does not exist in the image"},
		},
		{
			name: "no KVM and emulation not allowed",
			vmi:  testVMI("nokvm", 5, nil, nil),
			env:  []string{launcherpod.EnvAllowEmulation + "=false"},
			want: []string{"no KVM and emulation not allowed"},
		},
		{
			name: "pod interface without a network binding",
			vmi: func() *v1.VirtualMachineInstance {
				v := testVMI("nonet", 5, nil, nil)
				v.Spec.Domain.Devices.AutoattachPodInterface = nil
				return v
			}(),
			want: []string{"network"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRun(t)
			r.nonRoot = tc.nonRoot
			if tc.setup != nil {
				tc.setup(r)
			}
			r.start(tc.vmi, tc.env...)
			if code := r.waitExit(30 * time.Second); code != launcherpod.ExitSetupFailed {
				t.Errorf("exit code %d, want %d", code, launcherpod.ExitSetupFailed)
			}
			msg := r.terminationMessage()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("termination message %q lacks %q", msg, w)
				}
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("termination message %q is not one line", msg)
			}
			if st := r.status(); st.Phase != launcherpod.PhaseCrashed {
				t.Errorf("status phase %q, want Crashed", st.Phase)
			}
		})
	}
}

// kernelBoot on the pc (i440fx) machine with two vCPUs and no graphics: the kernel and initrd
// copied into the pod by slimvirt-diskcopy --as boot the guest. Then QEMU is killed.
func TestKernelBootPCMachine(t *testing.T) {
	needGuest(t)
	r := newRun(t)
	r.nonRoot = true
	kb := filepath.Join(r.dir, "kernel-boot")
	for _, f := range []struct{ src, as string }{{"vmlinuz", "kernel"}, {"initrd.gz", "initrd"}} {
		if out, err := exec.Command(bins.diskcopy, "copy", "--src", filepath.Join(bins.guest, f.src), "--dst", kb, "--as", f.as).CombinedOutput(); err != nil {
			t.Fatalf("diskcopy --as %s: %v: %s", f.as, err, out)
		}
	}
	vmi := testVMI("kboot", 30, nil, nil)
	vmi.Spec.Domain.Machine = &v1.Machine{Type: "pc"}
	vmi.Spec.Domain.CPU = &v1.CPU{Sockets: 1, Cores: 2, Threads: 1}
	vmi.Spec.Domain.Devices.AutoattachGraphicsDevice = ptr.To(false)
	vmi.Spec.Domain.Firmware = &v1.Firmware{KernelBoot: &v1.KernelBoot{
		KernelArgs: "console=ttyS0,115200 panic=-1",
		Container:  &v1.KernelBootContainer{Image: "guest", KernelPath: "/boot/vmlinuz", InitrdPath: "/boot/initrd.gz"},
	}}
	r.start(vmi)
	r.waitLine("SLIMVIRT-GUEST-UP", bootTimeout)
	typeOnConsole(t, r, "echo cpus-$(grep -c ^processor /proc/cpuinfo) vga-$(cat /sys/bus/pci/devices/*/class | grep -c ^0x0300)", true)
	r.waitLine("cpus-2 vga-0", 20*time.Second)
	if _, err := os.Stat(filepath.Join(r.dir, "vnc")); err == nil {
		t.Error("a VNC socket exists although autoattachGraphicsDevice is false")
	}
	// QEMU dies under the guest: the launcher ends with ExitGuestCrashed and says why.
	killed := false
	for _, p := range r.processes() {
		if strings.HasPrefix(p.name, "qemu") {
			killed = syscall.Kill(p.pid, syscall.SIGKILL) == nil
		}
	}
	if !killed {
		t.Fatal("no QEMU process to kill")
	}
	if code := r.waitExit(30 * time.Second); code != launcherpod.ExitGuestCrashed {
		t.Errorf("exit code %d, want %d", code, launcherpod.ExitGuestCrashed)
	}
	if msg := r.terminationMessage(); !strings.Contains(msg, "QEMU stopped unexpectedly") {
		t.Errorf("termination message %q", msg)
	}
	if st := r.status(); st.Phase != launcherpod.PhaseCrashed {
		t.Errorf("status %+v, want Crashed", st)
	}
}

// EFI (OVMF from Debian's ovmf package) with its variable store copied into the pod, as an
// unprivileged user: OVMF finds no EFI boot loader on the syslinux disk and starts its shell,
// from which the kernel's EFI stub boots the guest.
func TestEFIBoot(t *testing.T) {
	needGuest(t)
	r := newRun(t)
	r.nonRoot = true
	copyDisk(t, filepath.Join(bins.guest, "disk.qcow2"), filepath.Join(r.path(launcherpod.ContainerDiskDir), "root"))
	vmi := testVMI("efi", 30,
		[]v1.Disk{{Name: "root", Disk: &v1.DiskTarget{Bus: "virtio"}}},
		[]v1.Volume{{Name: "root", VolumeSource: v1.VolumeSource{ContainerDisk: &v1.ContainerDiskSource{Image: "guest"}}}})
	vmi.Spec.Domain.Firmware = &v1.Firmware{Bootloader: &v1.Bootloader{EFI: &v1.EFI{SecureBoot: ptr.To(false)}}}
	r.start(vmi)
	r.waitLine("Shell>", bootTimeout)
	if _, err := os.Stat(r.path(launcherpod.EmptyDiskDir + "/test_efi_VARS.fd")); err != nil {
		t.Errorf("no NVRAM copy: %v", err)
	}
	c, err := net.Dial("unix", filepath.Join(r.dir, "console.sock"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte(`fs0:\vmlinuz initrd=\initrd.gz console=ttyS0 panic=-1` + "\r")); err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
	r.waitLine("SLIMVIRT-GUEST-UP", bootTimeout)
	r.signal(syscall.SIGTERM)
	r.waitLine("SLIMVIRT-GUEST-POWEROFF", 30*time.Second)
	if code := r.waitExit(30 * time.Second); code != launcherpod.ExitGuestShutdown {
		t.Errorf("exit code %d", code)
	}
}

// A block PVC: the device node at /dev/slimvirt/<volume> (here a loop device over a copy of the
// guest's disk) becomes a type="block" disk the guest boots from.
func TestBlockPVC(t *testing.T) {
	needGuest(t)
	img := filepath.Join(bins.dir, "block.img")
	copyDisk(t, filepath.Join(bins.guest, "disk.raw"), bins.dir)
	if err := os.Rename(filepath.Join(bins.dir, "disk.img"), img); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "-f", "--show", img).Output()
	if err != nil {
		t.Fatalf("losetup: %v", err)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		_ = exec.Command("losetup", "-d", loop).Run()
		_ = os.Remove(img)
	})
	var st unix.Stat_t
	if err := unix.Stat(loop, &st); err != nil {
		t.Fatal(err)
	}
	r := newRun(t)
	vmi := testVMI("block", 30,
		[]v1.Disk{{Name: "root", Disk: &v1.DiskTarget{Bus: "virtio"}}},
		[]v1.Volume{{Name: "root", VolumeSource: v1.VolumeSource{PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: "block-pvc"}}}})
	r.start(vmi, fmt.Sprintf("BLOCK=root:%d:%d", unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev))))
	r.waitLine("SLIMVIRT-GUEST-UP", bootTimeout)
	typeOnConsole(t, r, "echo blk-$(cat /sys/block/vda/size)", true)
	r.waitLine("blk-131072", 20*time.Second)
	r.signal(syscall.SIGTERM)
	r.waitLine("SLIMVIRT-GUEST-POWEROFF", 30*time.Second)
	if code := r.waitExit(30 * time.Second); code != launcherpod.ExitGuestShutdown {
		t.Errorf("exit code %d", code)
	}
}
