// Package loopfs makes real filesystems for tests: mkfs on a sparse image in t.TempDir(),
// loop-mounted, unmounted (and the loop device detached) when the test ends.
package loopfs

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/slimvirt/slimvirt/internal/testutil"
)

// Kinds are the filesystems Make knows.
var Kinds = []string{"xfs", "ext4"}

// Make makes a 512 MiB filesystem of kind ("xfs" with reflink, "ext4") and returns its mount
// point. With projectQuota the filesystem has project quotas on (XFS: -o prjquota; ext4: made
// with -O quota,project, -o prjquota); when the kernel cannot mount it so but can without
// (a kernel built without CONFIG_XFS_QUOTA, or CONFIG_QFMT_V2 for ext4), the test is skipped
// with that reason.
func Make(t *testing.T, kind string, projectQuota bool) string {
	t.Helper()
	testutil.RequireRoot(t, "loop-mounting a filesystem needs root")
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, kind+".img"), filepath.Join(dir, "mnt")
	f, err := os.Create(img)
	testutil.Must(t, err)
	testutil.Must(t, f.Truncate(512<<20))
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
		t.Skipf("this kernel has no %s project quotas (%s mounts without them): %s", kind, plain, out)
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
