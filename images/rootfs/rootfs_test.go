package rootfs

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/slimvirt/slimvirt/images/guest"
)

// The tests read what `make images` built; make test-images sets these.
func dirs(t *testing.T) (images, rootfs, guestDir string) {
	t.Helper()
	images, rootfs, guestDir = os.Getenv("SLIMVIRT_IMAGES_DIR"), os.Getenv("SLIMVIRT_ROOTFS_DIR"), os.Getenv("SLIMVIRT_GUEST_DIR")
	if images == "" || rootfs == "" || guestDir == "" {
		t.Skip("SLIMVIRT_IMAGES_DIR, SLIMVIRT_ROOTFS_DIR and SLIMVIRT_GUEST_DIR are not set; run `make test-images`")
	}
	return images, rootfs, guestDir
}

type entry struct {
	mode     int64
	uid, gid int
	typ      byte
	link     string
}

// contents lists an image tarball's merged filesystem and returns its config.
func contents(t *testing.T, path, tag string) (map[string]entry, []string, string) {
	t.Helper()
	ref, err := name.NewTag(tag)
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(path, &ref)
	if err != nil {
		t.Fatalf("read %s as %s: %v", path, tag, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	rc := mutate.Extract(img)
	defer rc.Close()
	files := map[string]entry{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("read layers of %s: %v", path, err)
		}
		files["/"+strings.TrimSuffix(strings.TrimPrefix(h.Name, "./"), "/")] = entry{h.Mode, h.Uid, h.Gid, h.Typeflag, h.Linkname}
	}
	return files, cf.Config.Entrypoint, cf.Config.User
}

func TestImageTarballs(t *testing.T) {
	images, _, _ := dirs(t)
	tests := []struct {
		name       string
		entrypoint []string
		user       string
		exec       []string // executable regular files (or links to them)
		present    []string
		absent     []string
	}{
		{
			name: "launcher", entrypoint: []string{"/usr/bin/slimvirt-launcher"},
			exec: []string{"/usr/bin/slimvirt-launcher", "/usr/bin/slimvirt-diskcopy", "/usr/sbin/libvirtd",
				"/usr/sbin/virtlogd", "/usr/bin/virsh", "/usr/bin/qemu-system-x86_64", "/usr/bin/qemu-img"},
			present: []string{"/usr/share/seabios/bios-256k.bin", "/usr/share/OVMF/OVMF_CODE_4M.fd",
				"/usr/share/OVMF/OVMF_VARS_4M.fd", "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd", "/usr/share/OVMF/OVMF_VARS_4M.ms.fd",
				"/usr/lib/ipxe/qemu/efi-virtio.rom", "/usr/lib/ipxe/qemu/efi-e1000.rom", "/usr/lib/ipxe/qemu/efi-e1000e.rom",
				"/usr/lib/ipxe/qemu/efi-rtl8139.rom", "/usr/lib/x86_64-linux-gnu/qemu/accel-tcg-x86_64.so",
				"/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so", "/var/lib/dpkg/status"},
			absent: []string{"/usr/share/doc/qemu-system-x86/copyright", "/usr/bin/qemu-system-i386", "/usr/bin/apt-get",
				"/usr/lib/ipxe/qemu/efi-pcnet.rom", "/var/lib/apt/lists/lock"},
		},
		{
			name: "controller", entrypoint: []string{"/usr/bin/slimvirt-controller"}, user: "65532:65532",
			exec:    []string{"/usr/bin/slimvirt-controller"},
			present: []string{"/etc/passwd", "/etc/group"},
			absent:  []string{"/bin/sh"},
		},
		{
			name: "node", entrypoint: []string{"/usr/bin/slimvirt-node"},
			exec: []string{"/usr/bin/slimvirt-node", "/opt/slimvirt/cni/slimvirt-cni", "/usr/bin/qemu-img",
				"/usr/sbin/losetup", "/usr/sbin/mkfs.ext4"},
			present: []string{"/etc/ssl/certs/ca-certificates.crt"},
			absent:  []string{"/usr/share/doc/qemu-utils/copyright"},
		},
		{
			name: "toolbox", entrypoint: []string{"/bin/sh"},
			exec: []string{"/bin/busybox", "/bin/sh", "/bin/wget", "/bin/nc", "/bin/ip", "/bin/ping", "/bin/sleep"},
		},
		{
			name: "guest", present: []string{"/disk/disk.qcow2"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files, entrypoint, user := contents(t, filepath.Join(images, tt.name+".tar"), "slimvirt.io/"+tt.name+":dev")
			if fmt.Sprint(entrypoint) != fmt.Sprint(tt.entrypoint) || user != tt.user {
				t.Errorf("entrypoint %q user %q, want %q %q", entrypoint, user, tt.entrypoint, tt.user)
			}
			for _, p := range tt.exec {
				e, ok := files[p]
				for i := 0; ok && e.typ == tar.TypeSymlink && i < 8; i++ {
					target := e.link
					if !strings.HasPrefix(target, "/") {
						target = filepath.Join(filepath.Dir(p), target)
					}
					p = target
					e, ok = files[p]
				}
				if !ok || e.typ != tar.TypeReg || e.mode&0o111 == 0 {
					t.Errorf("%s: not an executable file in the image (%+v)", p, e)
				}
			}
			for _, p := range tt.present {
				if _, ok := files[p]; !ok {
					t.Errorf("%s missing", p)
				}
			}
			for _, p := range tt.absent {
				if _, ok := files[p]; ok {
					t.Errorf("%s should have been trimmed", p)
				}
			}
			if tt.name == "guest" {
				if e := files["/disk/disk.qcow2"]; e.uid != 107 || e.gid != 107 || len(files) != 2 {
					t.Errorf("containerDisk: /disk/disk.qcow2 %+v, %d entries; want owner 107:107 and only /disk", e, len(files))
				}
			}
		})
	}
}

// inRoot runs args chrooted into root, in a mount namespace of its own (the mounts it needs
// vanish with it), with guestDir bound read-only at /mnt and the binaries (_output/bin) at
// /media.
func inRoot(root, guestDir string, args ...string) *exec.Cmd {
	script := `set -e
mount -t proc proc "$R/proc"
mount --rbind /dev "$R/dev"
mount -t sysfs sysfs "$R/sys"
mount -t tmpfs tmpfs "$R/run"
mount -t tmpfs tmpfs "$R/tmp"
touch "$R/tmp/.slimvirt-image-test"
mount -t tmpfs tmpfs "$R/var/tmp"
mount --bind -o ro "$G" "$R/mnt"
[ -z "$B" ] || mount --bind -o ro "$B" "$R/media"
exec chroot "$R" "$@"`
	cmd := exec.Command("unshare", append([]string{"--mount", "--propagation", "private", "--", "sh", "-c", script, "sh"}, args...)...)
	cmd.Env = append(os.Environ(), "R="+root, "G="+guestDir, "B="+os.Getenv("SLIMVIRT_BIN_DIR"))
	return cmd
}

func TestNodeRootfsConvertsImages(t *testing.T) {
	_, rootfs, guestDir := dirs(t)
	out, err := inRoot(filepath.Join(rootfs, "node"), guestDir, "sh", "-c",
		"qemu-img convert -f qcow2 -O raw /mnt/disk.qcow2 /tmp/disk.raw && cmp /tmp/disk.raw /mnt/disk.raw && "+
			"truncate -s 16M /tmp/blank && mkfs.ext4 -q /tmp/blank && losetup --version && echo converted-ok").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "converted-ok") {
		t.Fatalf("qemu-img in the node rootfs: %v\n%s", err, out)
	}
}

// TestLauncherRootfsBootsGuest runs the launcher image's own QEMU, libraries and firmware
// (after trimming): a SeaBIOS boot with one NIC of every model slimvirt offers, and an OVMF
// boot.
func TestLauncherRootfsBootsGuest(t *testing.T) {
	_, rootfs, guestDir := dirs(t)
	root := filepath.Join(rootfs, "launcher")
	for _, args := range [][]string{{"/usr/sbin/libvirtd", "--version"}, {"/usr/sbin/virtlogd", "--version"}, {"/usr/bin/virsh", "--version"}} {
		if out, err := inRoot(root, guestDir, args...).CombinedOutput(); err != nil {
			t.Fatalf("%v in the launcher rootfs: %v\n%s", args, err, out)
		}
	}
	// The launcher links libvirt (cgo): its libraries must have survived the trimming.
	if os.Getenv("SLIMVIRT_BIN_DIR") != "" {
		out, _ := inRoot(root, guestDir, "/media/slimvirt-launcher", "-h").CombinedOutput()
		if strings.Contains(string(out), "error while loading shared libraries") || !strings.Contains(string(out), "Usage") {
			t.Fatalf("slimvirt-launcher -h in the launcher rootfs:\n%s", out)
		}
	}
	nics := []string{"virtio-net-pci", "e1000", "e1000e", "rtl8139"}
	tests := []struct {
		name string
		args []string
		nics []string
	}{
		{"seabios disk, every NIC model", []string{"-drive", "file=/mnt/disk.qcow2,if=virtio,format=qcow2,snapshot=on"}, nics},
		{"ovmf kernel boot", []string{
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
			"-drive", "if=pflash,format=raw,unit=1,snapshot=on,file=/usr/share/OVMF/OVMF_VARS_4M.fd",
			"-kernel", "/mnt/vmlinuz", "-initrd", "/mnt/initrd.gz", "-append", "console=ttyS0 panic=-1 quiet"}, nics[:1]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{"/usr/bin/qemu-system-x86_64", "-machine", "q35", "-accel", "tcg", "-m", "256",
				"-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot"}
			args = append(args, tt.args...)
			for i, nic := range tt.nics {
				args = append(args, "-netdev", fmt.Sprintf("user,id=n%d", i),
					"-device", fmt.Sprintf("%s,netdev=n%d,mac=52:54:00:00:01:%02x", nic, i, i))
			}
			cmd := inRoot(root, guestDir, args...)
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			console := guest.NewConsole(stdout)
			cmd.Stderr = console
			started := time.Now()
			if err := cmd.Start(); err != nil {
				t.Fatalf("start qemu in the launcher rootfs: %v", err)
			}
			t.Cleanup(func() {
				_ = cmd.Process.Kill() // unshare execs into chroot and QEMU: the same PID
				_ = cmd.Wait()
				if t.Failed() {
					t.Logf("console:\n%s", console.Log())
				}
			})
			got := map[string]string{}
			for range tt.nics {
				line, err := console.WaitFor(guest.MarkerNIC, 3*time.Minute)
				if err != nil {
					t.Fatal(err)
				}
				f, _ := guest.Fields(line, guest.MarkerNIC)
				got[f["mac"]] = f["ip"]
			}
			for i, nic := range tt.nics {
				if ip := got[fmt.Sprintf("52:54:00:00:01:%02x", i)]; ip != "10.0.2.15" {
					t.Errorf("%s NIC: lease %q, want 10.0.2.15", nic, ip)
				}
			}
			if _, err := console.WaitFor(guest.MarkerUp, time.Minute); err != nil {
				t.Fatal(err)
			}
			t.Logf("boot to %s with the launcher rootfs: %s", guest.MarkerUp, time.Since(started).Round(100*time.Millisecond))
		})
	}
}

// TestLauncherRootfsLibvirt boots the guest through the launcher tree's own libvirtd
// (testdata/libvirt-boot.sh) and shuts it down over ACPI.
func TestLauncherRootfsLibvirt(t *testing.T) {
	_, rootfs, guestDir := dirs(t)
	script, err := os.ReadFile("testdata/libvirt-boot.sh")
	if err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	out, err := inRoot(filepath.Join(rootfs, "launcher"), guestDir, "/bin/sh", "-c", string(script)).CombinedOutput()
	t.Logf("libvirtd in the launcher rootfs: create, UP and ACPI shutdown in %s", time.Since(started).Round(100*time.Millisecond))
	if err != nil || !strings.Contains(string(out), "libvirt-boot-ok") {
		t.Fatalf("libvirt boot in the launcher rootfs: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), guest.MarkerUp+" hostname=slimvirt-guest ip=10.0.2.15 mac=52:54:00:00:02:01") {
		t.Fatalf("no UP line with the domain's MAC and a lease:\n%s", out)
	}
}
