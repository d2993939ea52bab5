package diskresize_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"libvirt.org/go/libvirt"

	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/images/guest"
	"github.com/slimvirt/slimvirt/internal/testutil"
	"github.com/slimvirt/slimvirt/runtime/diskresize"
	"github.com/slimvirt/slimvirt/runtime/domain"
	"github.com/slimvirt/slimvirt/runtime/libvirtd"
	"github.com/slimvirt/slimvirt/runtime/reaper"
	"github.com/slimvirt/slimvirt/runtime/volumes"
)

const mib = 1 << 20

// inner marks the test binary running inside the namespaces the outer test made.
const inner = "SLIMVIRT_DISKRESIZE_INNER"

// The test runs as PID 1 of fresh PID, mount and network namespaces, as a launcher does in
// its pod: tmpfs over every directory libvirt writes, and a small tmpfs standing for a
// filesystem PVC whose filesystem grows (a tmpfs remounted bigger).
const wrapper = `set -e
for d in /run /var/lib /var/cache /var/log /etc/libvirt; do mount -t tmpfs -o mode=0755 tmpfs $d; done
cp /etc/passwd /etc/group "$T/"
mount --bind "$T/passwd" /etc/passwd
mount --bind "$T/group" /etc/group
mkdir -p "$T/fill"
mount -t tmpfs -o size=64m tmpfs "$T/fill"
exec "$TESTBIN" -test.run '^TestGuestSeesGrownDisk$' -test.count=1 -test.v
`

const stalePrefix = "slimvirt-diskresize-test-"

// A running guest sees its disks grow, without a restart: a filesystem PVC's disk.img grown
// (as the CSI driver grows it), a block PVC's device grown (a loop device refreshed), and an
// image that filled its filesystem when that filesystem grew. A disk.img replaced by a link
// to a node file or by a FIFO is neither followed nor opened, and nothing hangs.
func TestGuestSeesGrownDisk(t *testing.T) {
	if os.Getenv(inner) != "" {
		guestSeesGrownDisk(t)
		return
	}
	testutil.RequireRoot(t, "the test runs libvirtd and QEMU in namespaces and makes a loop device")
	guestDir := os.Getenv("SLIMVIRT_GUEST_DIR")
	if guestDir == "" {
		guestDir = "../../_output/guest"
	}
	for _, f := range []string{"vmlinux", "initrd.gz"} {
		if _, err := os.Stat(filepath.Join(guestDir, f)); err != nil {
			t.Fatalf("test guest missing (run make guest): %v", err)
		}
	}
	guestDir, _ = filepath.Abs(guestDir)
	removeStale()
	root, err := os.MkdirTemp("", stalePrefix)
	testutil.Must(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(root) })
	testutil.Must(t, os.WriteFile(filepath.Join(root, "pid"), []byte(strconv.Itoa(os.Getpid())), 0o644))

	// The block PVC: a loop device over a sparse file, as the CSI driver makes one.
	block := filepath.Join(root, "block.img")
	testutil.Must(t, os.WriteFile(block, nil, 0o600))
	testutil.Must(t, os.Truncate(block, 64*mib))
	out, err := exec.Command("losetup", "--find", "--show", block).Output()
	if err != nil {
		t.Fatalf("losetup: %v", err)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", loop).Run() })

	cmd := exec.Command("unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--mount", "--propagation", "private", "--net", "sh", "-c", wrapper)
	cmd.Env = []string{
		"PATH=/usr/sbin:/usr/bin:/sbin:/bin",
		"T=" + root, "TESTBIN=" + os.Args[0], "GUEST=" + guestDir, "LOOP=" + loop, "BLOCKFILE=" + block,
		inner + "=1",
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	b, err := cmd.CombinedOutput()
	t.Logf("in the namespaces:\n%s", b)
	if err != nil {
		t.Fatalf("the test in the namespaces failed: %v", err)
	}
	if !strings.Contains(string(b), "--- PASS: TestGuestSeesGrownDisk") {
		t.Fatal("the test in the namespaces did not pass")
	}
}

// removeStale removes what a killed earlier run left: its loop devices and directories.
func removeStale() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), stalePrefix+"*"))
	for _, dir := range dirs {
		b, _ := os.ReadFile(filepath.Join(dir, "pid"))
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && syscall.Kill(pid, 0) == nil {
			continue // a run in progress
		}
		if out, err := exec.Command("losetup", "-a").Output(); err == nil {
			for _, l := range strings.Split(string(out), "\n") {
				if dev, _, ok := strings.Cut(l, ":"); ok && strings.Contains(l, dir+"/") {
					_ = exec.Command("losetup", "-d", dev).Run()
				}
			}
		}
		_ = os.RemoveAll(dir)
	}
}

// vm is the guest under test and its watch.
type vm struct {
	t       *testing.T
	dom     *libvirt.Domain
	con     *guest.Console
	conn    net.Conn
	resized chan diskresize.Resized
}

func guestSeesGrownDisk(t *testing.T) {
	root, guestDir := os.Getenv("T"), os.Getenv("GUEST")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rp := reaper.New()
	go rp.Loop(ctx)
	log := slog.New(slog.NewTextHandler(os.Stdout, nil))
	lv, err := libvirtd.Start(ctx, libvirtd.Config{
		RunDir: "/run/libvirt", ConfDir: "/etc/libvirt",
		// The copies bound there: libvirtd looks its QEMU account up in them.
		PasswdFile: "/etc/passwd", GroupFile: "/etc/group",
		Libvirtd: "/usr/sbin/libvirtd", DriverDir: "/usr/lib/x86_64-linux-gnu/libvirt/connection-driver",
		QEMUUser: "root", QEMUGroup: "root",
	}, rp, log)
	testutil.Must(t, err)
	defer lv.Stop()

	// Four PVC disks: vda a filesystem PVC, vdb a block PVC, vdc an image that fills its
	// filesystem (made by the launcher's rule), vdd a filesystem PVC the tenant attacks.
	data := pvcImage(t, root, "data", 64*mib)
	hostile := pvcImage(t, root, "hostile", 64*mib)
	fill := filepath.Join(root, "fill", "disk.img")
	testutil.Must(t, volumes.EnsureImage(fill, 0, false))
	fillSize := size(t, fill)
	loop := os.Getenv("LOOP")
	src := func(p string, block bool) domain.DiskSource {
		return domain.DiskSource{Path: p, Block: block, Format: "raw", Cache: volumes.CacheMode(p)}
	}
	sources := map[string]domain.DiskSource{
		"data": src(data, false), "block": src(loop, true), "fill": src(fill, false), "hostile": src(hostile, false),
	}
	vmi := testVMI([]string{"data", "block", "fill", "hostile"})
	serial := filepath.Join(root, "serial.sock")
	dx, err := domain.Convert(vmi, domain.Options{
		Accelerator: "tcg", Disks: sources, SerialSocket: serial,
		Kernel: filepath.Join(guestDir, "vmlinux"), Initrd: filepath.Join(guestDir, "initrd.gz"),
	})
	testutil.Must(t, err)
	xml, err := dx.Marshal()
	testutil.Must(t, err)
	dom, err := lv.Conn.DomainCreateXML(xml, libvirt.DOMAIN_START_AUTODESTROY)
	testutil.Must(t, err)
	defer func() { _ = dom.Destroy(); _ = dom.Free() }()

	disks := diskresize.Disks(vmi, sources)
	if len(disks) != 4 {
		t.Fatalf("eligible disks %+v, want all four", disks)
	}
	v := &vm{t: t, dom: dom, resized: make(chan diskresize.Resized, 16)}
	watchCtx, stopWatch := context.WithCancel(ctx)
	watchDone := make(chan error, 1)
	go func() {
		watchDone <- diskresize.Watch(watchCtx, diskresize.LibvirtDomain{Dom: dom}, disks, diskresize.Options{
			Log: log, OnResize: func(r diskresize.Resized) { v.resized <- r },
		})
	}()
	defer func() {
		stopWatch()
		select {
		case err := <-watchDone:
			if err != nil {
				t.Errorf("the watch ended with %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("the watch did not end with its context")
		}
	}()
	v.attach(serial)
	defer v.conn.Close()
	boot := time.Now()
	if _, err := v.con.WaitFor(guest.MarkerUp, 4*time.Minute); err != nil {
		t.Fatalf("%v\nconsole:\n%s", err, v.con.Log())
	}
	t.Logf("guest up after %s", time.Since(boot).Round(time.Millisecond))
	for dev, want := range map[string]int64{"vda": 64 * mib, "vdb": 64 * mib, "vdc": fillSize, "vdd": 64 * mib} {
		if got := v.guestSize(dev); got != want {
			t.Fatalf("the guest sees %s at %d bytes before any growth, want %d", dev, got, want)
		}
	}

	t.Run("filesystem PVC", func(t *testing.T) {
		v := v.in(t)
		for _, to := range []int64{96 * mib, 128 * mib, 1_000_000_000} {
			v.grow("data", "vda", to, false, func() { testutil.Must(t, os.Truncate(data, to)) })
		}
		if c := v.capacity(data); c != 1_000_000_000 {
			t.Errorf("libvirt's capacity of vda is %d, want 1000000000", c)
		}
	})
	t.Run("block PVC", func(t *testing.T) {
		v := v.in(t)
		v.grow("block", "vdb", 128*mib, false, func() {
			testutil.Must(t, os.Truncate(os.Getenv("BLOCKFILE"), 128*mib))
			if out, err := exec.Command("losetup", "-c", loop).CombinedOutput(); err != nil {
				t.Fatalf("losetup -c: %v: %s", err, out)
			}
		})
	})
	t.Run("filesystem grew, image did not", func(t *testing.T) {
		v := v.in(t)
		var want int64
		v.grow("fill", "vdc", -1, true, func() {
			if out, err := exec.Command("mount", "-o", "remount,size=128m", filepath.Join(root, "fill")).CombinedOutput(); err != nil {
				t.Fatalf("remount: %v: %s", err, out)
			}
			var fs unix.Statfs_t
			testutil.Must(t, unix.Statfs(filepath.Join(root, "fill"), &fs))
			var st unix.Stat_t
			testutil.Must(t, unix.Stat(fill, &st))
			want = volumes.ImageSize(int64(fs.Blocks)*fs.Bsize, int64(fs.Bavail)*fs.Bsize+st.Blocks*512)
		})
		if got := size(t, fill); got != want || want <= fillSize {
			t.Errorf("disk.img is %d bytes after its filesystem grew, want %d (was %d)", got, want, fillSize)
		}
	})
	t.Run("disk.img replaced by a link or a FIFO", func(t *testing.T) {
		v := v.in(t)
		v.hostile(hostile, root)
		// The watch still works for the other disks: it did not hang.
		// Not a whole number of sectors: the guest gets the whole sectors.
		v.grow("data", "vda", diskresize.GuestSize(1_100_000_000), false, func() { testutil.Must(t, os.Truncate(data, 1_100_000_000)) })
		// A watch that begins on such a name refuses the disk at once.
		for _, kind := range []string{"symlink", "FIFO"} {
			testutil.Must(t, os.Remove(hostile))
			if kind == "symlink" {
				testutil.Must(t, os.Symlink(filepath.Join(root, "node-file"), hostile))
			} else {
				testutil.Must(t, unix.Mkfifo(hostile, 0o600))
			}
			wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
			began := time.Now()
			err := diskresize.Watch(wctx, diskresize.LibvirtDomain{Dom: dom}, []diskresize.Disk{disks[3]}, diskresize.Options{Log: log})
			wcancel()
			if err == nil || time.Since(began) > time.Second {
				t.Errorf("a watch of a disk.img that is a %s: %v after %s, want a refusal at once", kind, err, time.Since(began))
			}
			t.Logf("a watch of a disk.img that is a %s: %v", kind, err)
		}
	})
}

// testVMI has one virtio disk over a PVC per name and boots the test guest's kernel.
func testVMI(names []string) *v1.VirtualMachineInstance {
	vmi := &v1.VirtualMachineInstance{ObjectMeta: metav1.ObjectMeta{Name: "grow", Namespace: "test", UID: "0f0e0d0c-0000-4000-8000-000000000002"}}
	vmi.Spec.Domain.Memory = &v1.Memory{Guest: ptr.To(resource.MustParse("256Mi"))}
	vmi.Spec.Domain.Devices.AutoattachPodInterface = ptr.To(false)
	vmi.Spec.Domain.Devices.AutoattachGraphicsDevice = ptr.To(false)
	vmi.Spec.Domain.Firmware = &v1.Firmware{KernelBoot: &v1.KernelBoot{
		KernelArgs: "console=ttyS0 panic=-1 quiet",
		Container:  &v1.KernelBootContainer{Image: "guest", KernelPath: "/boot/vmlinux", InitrdPath: "/boot/initrd.gz"},
	}}
	for _, n := range names {
		vmi.Spec.Domain.Devices.Disks = append(vmi.Spec.Domain.Devices.Disks, v1.Disk{Name: n, Disk: &v1.DiskTarget{Bus: "virtio"}})
		vmi.Spec.Volumes = append(vmi.Spec.Volumes, v1.Volume{Name: n, VolumeSource: v1.VolumeSource{
			PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: n},
		}})
	}
	return vmi
}

// pvcImage makes a filesystem PVC's sparse disk.img.
func pvcImage(t *testing.T, root, name string, size int64) string {
	dir := filepath.Join(root, "pvc-"+name)
	testutil.Must(t, os.MkdirAll(dir, 0o755))
	img := filepath.Join(dir, "disk.img")
	testutil.Must(t, os.WriteFile(img, nil, 0o600))
	testutil.Must(t, os.Truncate(img, size))
	return img
}

func size(t *testing.T, path string) int64 {
	fi, err := os.Stat(path)
	testutil.Must(t, err)
	return fi.Size()
}

// in is v for a subtest.
func (v *vm) in(t *testing.T) *vm {
	c := *v
	c.t = t
	return &c
}

// attach connects to the guest's serial console.
func (v *vm) attach(sock string) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.Dial("unix", sock)
		if err == nil {
			v.conn, v.con = c, guest.NewConsole(c)
			return
		}
		if time.Now().After(deadline) {
			v.t.Fatalf("attach to the serial console: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// guestSize asks the guest's shell how big it sees dev (/sys/block/<dev>/size, in sectors).
func (v *vm) guestSize(dev string) int64 {
	v.t.Helper()
	// The marker is split on the line typed, so the shell's echo of it does not match.
	if _, err := fmt.Fprintf(v.conn, "echo \"DISK\"\"SIZE dev=%s sectors=$(cat /sys/block/%s/size)\"\n", dev, dev); err != nil {
		v.t.Fatal(err)
	}
	for {
		line, err := v.con.WaitFor("DISKSIZE", 30*time.Second)
		if err != nil {
			v.t.Fatalf("the guest did not say the size of %s: %v", dev, err)
		}
		f, _ := guest.Fields(line, "DISKSIZE")
		if f["dev"] != dev {
			continue
		}
		n, err := strconv.ParseInt(f["sectors"], 10, 64)
		if err != nil {
			v.t.Fatalf("the guest said %q", line)
		}
		return n * 512
	}
}

// capacity is the size libvirt says the guest sees.
func (v *vm) capacity(path string) int64 {
	v.t.Helper()
	info, err := v.dom.GetBlockInfo(path, 0)
	testutil.Must(v.t, err)
	return int64(info.Capacity)
}

// grow runs do, which grows volume's backing to want bytes (-1: whatever the watch makes
// of it), then waits for the watch to give the guest the new size and for the guest to see
// it on dev, and logs how long each took.
func (v *vm) grow(volume, dev string, want int64, filled bool, do func()) {
	v.t.Helper()
	began := time.Now()
	do()
	var r diskresize.Resized
	select {
	case r = <-v.resized:
	case <-time.After(30 * time.Second):
		v.t.Fatalf("no resize of %s within 30s", volume)
	}
	resized := time.Since(began)
	if r.Volume != volume || (want >= 0 && r.To != want) || r.Filled != filled {
		v.t.Fatalf("resized %+v, want volume %s to %d (filled %v)", r, volume, want, filled)
	}
	for {
		got := v.guestSize(dev)
		if got == r.To {
			break
		}
		if time.Since(began) > 30*time.Second {
			v.t.Fatalf("the guest sees %s at %d bytes 30s after it grew to %d", dev, got, r.To)
		}
		time.Sleep(100 * time.Millisecond)
	}
	v.t.Logf("%s (%s) grew from %d to %d bytes: resized after %s, the guest saw it after %s",
		volume, dev, r.From, r.To, resized.Round(time.Millisecond), time.Since(began).Round(time.Millisecond))
}

// hostile replaces the watched disk.img with a link to a node file, then with a FIFO: the
// guest's disk stays as it is, nothing opens the node file, nothing waits on the FIFO.
func (v *vm) hostile(img, root string) {
	v.t.Helper()
	node := filepath.Join(root, "node-file")
	testutil.Must(v.t, os.WriteFile(node, []byte("a node file the tenant must not reach\n"), 0o600))
	testutil.Must(v.t, os.Truncate(node, 1<<30))
	in, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	testutil.Must(v.t, err)
	defer unix.Close(in)
	_, err = unix.InotifyAddWatch(in, node, unix.IN_OPEN|unix.IN_ACCESS)
	testutil.Must(v.t, err)
	// QEMU keeps the inode it opened; the tenant renames it away and plants a link.
	testutil.Must(v.t, os.Rename(img, img+".moved"))
	testutil.Must(v.t, os.Symlink(node, img))
	v.noResize("disk.img is a link to a 1 GiB node file")
	testutil.Must(v.t, os.Remove(img))
	testutil.Must(v.t, unix.Mkfifo(img, 0o600))
	v.noResize("disk.img is a FIFO")
	if got := v.guestSize("vdd"); got != 64*mib {
		v.t.Errorf("the guest sees vdd at %d bytes after disk.img was replaced, want %d", got, 64*mib)
	}
	buf := make([]byte, 4096)
	if n, err := unix.Read(in, buf); !errors.Is(err, unix.EAGAIN) {
		v.t.Errorf("the node file was opened or read (%d bytes of inotify events, %v)", n, err)
	}
}

// noResize waits three looks of the watch and fails on any resize.
func (v *vm) noResize(what string) {
	v.t.Helper()
	select {
	case r := <-v.resized:
		v.t.Fatalf("%s: resized %+v", what, r)
	case <-time.After(3 * diskresize.DefaultInterval):
	}
}
