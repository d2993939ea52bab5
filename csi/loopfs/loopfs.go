// Package loopfs makes real filesystems for tests: mkfs on a sparse image in t.TempDir(),
// loop-mounted, unmounted (and the loop device detached) when the test ends.
package loopfs

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/slimvirt/slimvirt/internal/testutil"
)

// Kinds are the filesystems Make knows.
var Kinds = []string{"xfs", "ext4"}

// Make makes a 512 MiB filesystem as MakeSize does.
func Make(t testing.TB, kind string, projectQuota bool) string {
	t.Helper()
	return MakeSize(t, kind, projectQuota, 512<<20)
}

// MakeSize makes a filesystem of size bytes and kind ("xfs" with reflink, "ext4") and returns its mount
// point. With projectQuota the filesystem has project quotas on (XFS: -o prjquota; ext4: made
// with -O quota,project, -o prjquota); when the kernel cannot mount it so but can without
// (a kernel built without CONFIG_XFS_QUOTA, or CONFIG_QFMT_V2 for ext4), the test fails with
// that reason: such tests carry the guestkernel build tag and run in a guest on a kernel that
// has project quotas (make test-guest-kernel, docs/testing-guest-kernel.md).
func MakeSize(t testing.TB, kind string, projectQuota bool, size int64) string {
	t.Helper()
	testutil.RequireRoot(t, "loop-mounting a filesystem needs root")
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, kind+".img"), filepath.Join(dir, "mnt")
	f, err := os.Create(img)
	testutil.Must(t, err)
	testutil.Must(t, f.Truncate(size))
	testutil.Must(t, f.Close())
	mk := []string{"mkfs.xfs", "-q", "-m", "reflink=1", img}
	if kind == "ext4" {
		mk = []string{"mkfs.ext4", "-q", "-F", img}
		if projectQuota {
			mk = []string{"mkfs.ext4", "-q", "-F", "-O", "quota,project", img}
		}
	}
	if out, err := exec.Command(mk[0], mk[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%v: %v %s", mk, err, out)
	}
	testutil.Must(t, os.Mkdir(mnt, 0o755))
	opts := "loop"
	if projectQuota {
		opts += ",prjquota"
	}
	out, err := exec.Command("mount", "-o", opts, img, mnt).CombinedOutput()
	if err != nil && projectQuota {
		plain := Make(t, kind, false)
		t.Fatalf("this kernel has no %s project quotas (%s mounts without them): %s; run the test with make test-guest-kernel", kind, plain, out)
	}
	if err != nil {
		t.Fatalf("mount %s: %v %s", kind, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-d", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", mnt, err, out)
		}
	})
	return mnt
}

// AsPod runs fn on an OS thread without CAP_SYS_RESOURCE, as a pod's processes run: with that
// capability ext4 (and any filesystem using the generic quota code) lets writes pass the hard
// limits, so a test writing as root would prove nothing. The thread is thrown away afterwards.
func AsPod(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			errc <- fmt.Errorf("read capabilities: %w", err)
			return
		}
		data[0].Effective &^= 1 << unix.CAP_SYS_RESOURCE
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			errc <- fmt.Errorf("drop CAP_SYS_RESOURCE: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// FillAsPod writes path as a pod would (without CAP_SYS_RESOURCE), 1 MiB at a time with a sync
// after each, until the filesystem refuses or upTo bytes are written; it returns the bytes
// written and the refusal.
func FillAsPod(path string, upTo int64) (n int64, err error) {
	err = AsPod(func() error {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		defer f.Close()
		buf := make([]byte, 1<<20)
		for n < upTo {
			w, err := f.Write(buf)
			n += int64(w)
			if err != nil {
				return err
			}
			if err := f.Sync(); err != nil {
				return err
			}
		}
		return nil
	})
	return n, err
}
