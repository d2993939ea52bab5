//go:build guestkernel

package prjquota

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/slimvirt/slimvirt/csi/loopdev"
	"github.com/slimvirt/slimvirt/internal/testutil"
)

// From linux/fs.h, linux/quota.h and linux/dqblk_xfs.h; x/sys/unix has none of them.
const (
	fsIOCFSGetXattr    = 0x801c581f // _IOR('X', 31, struct fsxattr)
	fsIOCFSSetXattr    = 0x401c5820 // _IOW('X', 32, struct fsxattr)
	fsXflagProjInherit = 0x200
	qXSetQLim          = 0x5804 // XQM_CMD(4)
	prjQuota           = 2
	fsDquotVersion     = 1
	fsProjQuota        = 2
	fsDqBHard          = 1 << 3
	basicBlock         = 512 // fs_disk_quota counts blocks of 512 bytes
)

type fsxattr struct {
	Xflags, Extsize, Nextents, Projid, Cowextsize uint32
	Pad                                           [8]byte
}

type fsDiskQuota struct {
	Version                                  int8
	Flags                                    int8
	Fieldmask                                uint16
	ID                                       uint32
	BlkHard, BlkSoft, InoHard, InoSoft       uint64
	Bcount, Icount                           uint64
	Itimer, Btimer                           int32
	Iwarns, Bwarns                           uint16
	ItimerHi, BtimerHi, RtbtimerHi, Padding2 int8
	RtbHard, RtbSoft, Rtbcount               uint64
	Rtbtimer                                 int32
	Rtbwarns                                 uint16
	Padding3                                 int16
	Padding4                                 [8]byte
}

const (
	projectID = 42
	limit     = 1 << 20
)

// TestProjectQuota limits a directory's project to 1 MiB on XFS and on ext4 and checks that
// statfs on the directory reports the limit and that writing 2 MiB there fails. XFS reports
// a project over its limit as a full filesystem (ENOSPC), ext4 as EDQUOT.
func TestProjectQuota(t *testing.T) {
	testutil.RequireRoot(t, "mkfs, loop devices and mounts")
	if a, q := unsafe.Sizeof(fsxattr{}), unsafe.Sizeof(fsDiskQuota{}); a != 28 || q != 112 {
		t.Fatalf("struct sizes %d and %d, want the kernel's 28 (fsxattr) and 112 (fs_disk_quota)", a, q)
	}
	for _, tc := range []struct {
		fstype string
		mkfs   []string
		want   error
	}{
		{"xfs", []string{"mkfs.xfs", "-q"}, unix.ENOSPC},
		{"ext4", []string{"mkfs.ext4", "-q", "-O", "quota,project", "-I", "256"}, unix.EDQUOT},
	} {
		t.Run(tc.fstype, func(t *testing.T) {
			mnt := mountImage(t, tc.fstype, tc.mkfs)
			dir := filepath.Join(mnt, "volume")
			testutil.Must(t, os.Mkdir(dir, 0o755))
			setProject(t, dir, projectID)
			setBlockLimit(t, mnt, projectID, limit)

			var st unix.Statfs_t
			testutil.Must(t, unix.Statfs(dir, &st))
			if got := st.Blocks * uint64(st.Bsize); got != limit {
				t.Errorf("statfs %s: %d bytes, want the limit %d", dir, got, limit)
			}
			if err := writeUnprivileged(filepath.Join(dir, "data"), 2*limit); !errors.Is(err, tc.want) {
				t.Errorf("write 2 MiB under a 1 MiB limit: %v, want %v", err, tc.want)
			}
		})
	}
}

// mountImage makes a filesystem on a sparse 512 MiB file (XFS wants 300 MB at least) and
// mounts it through a loop device with project quotas on.
func mountImage(t *testing.T, fstype string, mkfs []string) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), fstype+".img")
	f, err := os.OpenFile(img, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	testutil.Must(t, err)
	t.Cleanup(func() { _ = f.Close() })
	testutil.Must(t, f.Truncate(512<<20))
	if out, err := exec.Command(mkfs[0], append(mkfs[1:], img)...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", mkfs[0], img, err, out)
	}
	dev, err := loopdev.Attach(t.Context(), f)
	testutil.Must(t, err)
	t.Cleanup(func() {
		if err := loopdev.Detach(context.Background(), f); err != nil {
			t.Errorf("detach %s: %v", dev, err)
		}
	})
	mnt := t.TempDir()
	if err := unix.Mount(dev, mnt, fstype, 0, "prjquota"); err != nil {
		t.Fatalf("mount %s on %s -o prjquota: %v", dev, mnt, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	return mnt
}

// setProject gives dir the project id and makes what is created in it inherit the id.
func setProject(t *testing.T, dir string, id uint32) {
	t.Helper()
	d, err := os.Open(dir)
	testutil.Must(t, err)
	defer d.Close()
	var attr fsxattr
	if err := ioctl(d, fsIOCFSGetXattr, unsafe.Pointer(&attr)); err != nil {
		t.Fatalf("get the attributes of %s: %v", dir, err)
	}
	attr.Projid = id
	attr.Xflags |= fsXflagProjInherit
	if err := ioctl(d, fsIOCFSSetXattr, unsafe.Pointer(&attr)); err != nil {
		t.Fatalf("set project %d on %s: %v", id, dir, err)
	}
}

// setBlockLimit sets the hard block limit of project id on the filesystem mounted at mnt
// through quotactl_fd, which takes a descriptor of the mount rather than the device.
func setBlockLimit(t *testing.T, mnt string, id uint32, bytes uint64) {
	t.Helper()
	m, err := os.Open(mnt)
	testutil.Must(t, err)
	defer m.Close()
	q := fsDiskQuota{
		Version: fsDquotVersion, Flags: fsProjQuota, Fieldmask: fsDqBHard, ID: id,
		BlkHard: bytes / basicBlock,
	}
	// The command and the quota type in one number, as the QCMD macro packs them.
	cmd := qXSetQLim<<8 | prjQuota
	_, _, errno := unix.Syscall6(unix.SYS_QUOTACTL_FD, m.Fd(), uintptr(cmd), uintptr(id),
		uintptr(unsafe.Pointer(&q)), 0, 0)
	if errno != 0 {
		t.Fatalf("set the block limit of project %d on %s: %v", id, mnt, errno)
	}
}

func ioctl(f *os.File, req uintptr, arg unsafe.Pointer) error {
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), req, uintptr(arg)); errno != 0 {
		return errno
	}
	return nil
}

// writeUnprivileged writes as a VM's QEMU would: without CAP_SYS_RESOURCE, which lets a
// writer past the hard limits of the generic quota code (ext4). Capabilities belong to a
// thread: the write runs on a thread of its own that is dropped with its goroutine.
func writeUnprivileged(path string, n int) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			done <- fmt.Errorf("get capabilities: %w", err)
			return
		}
		data[unix.CAP_SYS_RESOURCE/32].Effective &^= 1 << (unix.CAP_SYS_RESOURCE % 32)
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			done <- fmt.Errorf("drop CAP_SYS_RESOURCE: %w", err)
			return
		}
		done <- writeBytes(path, n)
	}()
	return <-done
}

// writeBytes writes n bytes to a new file and syncs it, returning the first error.
func writeBytes(path string, n int) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	buf := make([]byte, 64<<10)
	for written := 0; written < n; written += len(buf) {
		if _, err := f.Write(buf); err != nil {
			_ = f.Close()
			return err
		}
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
