package diskimg

import (
	"bytes"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/slimvirt/slimvirt/csi/testclean"
	"github.com/slimvirt/slimvirt/internal/testutil"
)

// TestCloneReflink: on a filesystem with reflinks (XFS made with reflink=1, loop-mounted by
// the test) a clone shares the source's blocks: it is a reflink, and the filesystem's used
// space does not grow by the data's size.
func TestCloneReflink(t *testing.T) {
	testutil.RequireRoot(t, "loop-mounting XFS needs root")
	if _, err := exec.LookPath("mkfs.xfs"); err != nil {
		t.Skip("mkfs.xfs (xfsprogs) is not installed")
	}
	testclean.Mounts("TestCloneReflink")
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "xfs.img"), filepath.Join(dir, "mnt")
	if err := Create(img, 512<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.xfs", "-q", "-m", "reflink=1", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.xfs: %v %s", err, out)
	}
	os.Mkdir(mnt, 0o755)
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-d", mnt).Run() })

	src, dst := filepath.Join(mnt, "src"), filepath.Join(mnt, "dst")
	if err := Create(src, 256<<20); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 64<<20)
	rand.Read(data)
	f, _ := os.OpenFile(src, os.O_WRONLY, 0)
	f.WriteAt(data, 32<<20)
	f.Sync()
	f.Close()
	used := func() int64 {
		var st unix.Statfs_t
		unix.Statfs(mnt, &st)
		return int64(st.Blocks-st.Bfree) * st.Bsize
	}
	before := used()
	reflinked, err := Clone(src, dst, 256<<20)
	if err != nil {
		t.Fatal(err)
	}
	if !reflinked {
		t.Fatal("no reflink on XFS with reflink=1")
	}
	if grew := used() - before; grew > 8<<20 {
		t.Fatalf("the filesystem grew by %d bytes for a reflink clone of 64 MiB", grew)
	}
	got := make([]byte, len(data))
	g, _ := os.Open(dst)
	g.ReadAt(got, 32<<20)
	g.Close()
	if !bytes.Equal(got, data) {
		t.Fatal("reflinked clone differs")
	}
}
