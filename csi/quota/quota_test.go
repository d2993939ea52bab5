//go:build guestkernel

package quota_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/slimvirt/slimvirt/csi/loopfs"
	"github.com/slimvirt/slimvirt/csi/quota"
	"github.com/slimvirt/slimvirt/csi/testclean"
	"github.com/slimvirt/slimvirt/internal/testutil"
)

func TestMain(m *testing.M) {
	testclean.Mounts("TestSupported", "TestLimit", "TestStatfs")
	os.Exit(m.Run())
}

func TestSupported(t *testing.T) {
	for _, kind := range loopfs.Kinds {
		t.Run(kind, func(t *testing.T) {
			if err := quota.Supported(loopfs.Make(t, kind, false)); !errors.Is(err, quota.ErrUnsupported) {
				t.Fatalf("%s without prjquota: got %v, want ErrUnsupported", kind, err)
			}
			if err := quota.Supported(loopfs.Make(t, kind, true)); err != nil {
				t.Fatalf("%s with prjquota: %v", kind, err)
			}
		})
	}
}

const (
	size = 64 << 20
	id   = 1<<30 + 7
)

func volume(t *testing.T, kind string) (mnt, dir string) {
	mnt = loopfs.Make(t, kind, true)
	dir = filepath.Join(mnt, "vol")
	testutil.Must(t, os.Mkdir(dir, 0o777))
	testutil.Must(t, quota.SetProject(dir, id))
	testutil.Must(t, quota.SetLimit(dir, id, quota.LimitFor(size)))
	return mnt, dir
}

// writeDisk writes every byte of a size-byte disk.img in dir, 4 KiB blocks in random order
// (the most fragmented a guest can make it), as a guest would: without CAP_SYS_RESOURCE.
func writeDisk(dir string) error {
	return loopfs.AsPod(func() error {
		f, err := os.OpenFile(filepath.Join(dir, "disk.img"), os.O_RDWR|os.O_CREATE, 0o660)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := f.Truncate(size); err != nil {
			return err
		}
		buf := make([]byte, 4096)
		for _, i := range rand.Perm(size / 4096) {
			buf[0] = byte(i)
			if _, err := f.WriteAt(buf, int64(i)*4096); err != nil {
				return fmt.Errorf("guest write at %d: %w", int64(i)*4096, err)
			}
		}
		return f.Sync()
	})
}

func quotaFull(err error) bool {
	return errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.ENOSPC)
}

// TestLimit: a disk.img of exactly the volume's size written in full fits the project limit;
// other files written beyond it hit EDQUOT; raising the limit lets them grow; removing it
// leaves the project unlimited.
func TestLimit(t *testing.T) {
	for _, kind := range loopfs.Kinds {
		t.Run(kind, func(t *testing.T) {
			_, dir := volume(t, kind)
			if p, err := quota.Project(dir); err != nil || p != id {
				t.Fatalf("project of the volume dir: %d %v", p, err)
			}
			testutil.Must(t, writeDisk(dir))
			u, err := quota.Get(dir, id)
			testutil.Must(t, err)
			if u.UsedBytes < size || u.Bytes != quota.LimitFor(size).Bytes {
				t.Fatalf("usage %+v: want >= %d used of %d", u, size, quota.LimitFor(size).Bytes)
			}
			n, err := loopfs.FillAsPod(filepath.Join(dir, "extra"), 2*quota.Margin(size))
			if !quotaFull(err) {
				t.Fatalf("a pod wrote %d bytes beyond the volume's size: %v", n, err)
			}
			if n > quota.Margin(size) {
				t.Fatalf("%d bytes written beyond a full disk, more than the margin %d", n, quota.Margin(size))
			}
			testutil.Must(t, os.Remove(filepath.Join(dir, "extra")))

			// Expansion: 16 MiB more fits.
			testutil.Must(t, quota.SetLimit(dir, id, quota.LimitFor(size+16<<20)))
			if n, err := loopfs.FillAsPod(filepath.Join(dir, "grown"), 16<<20); err != nil {
				t.Fatalf("after expansion, %d bytes: %v", n, err)
			}
			testutil.Must(t, quota.SetLimit(dir, id, quota.Limit{}))
			if u, err := quota.Get(dir, id); err != nil || u.Bytes != 0 || u.Inodes != 0 {
				t.Fatalf("removed limit reads %+v %v", u, err)
			}
		})
	}
}

// TestStatfs: statfs of a project directory shows the project's limit and usage, which is
// what NodeGetVolumeStats reports.
func TestStatfs(t *testing.T) {
	for _, kind := range loopfs.Kinds {
		t.Run(kind, func(t *testing.T) {
			_, dir := volume(t, kind)
			if n, err := loopfs.FillAsPod(filepath.Join(dir, "data"), 8<<20); err != nil {
				t.Fatalf("%d: %v", n, err)
			}
			var st unix.Statfs_t
			testutil.Must(t, unix.Statfs(dir, &st))
			total, used := int64(st.Blocks)*st.Bsize, int64(st.Blocks-st.Bfree)*st.Bsize
			if total != quota.LimitFor(size).Bytes {
				t.Fatalf("statfs total %d, want the limit %d", total, quota.LimitFor(size).Bytes)
			}
			if used < 8<<20 || used > 9<<20 {
				t.Fatalf("statfs used %d, want about 8 MiB", used)
			}
			if int64(st.Files) != quota.LimitFor(size).Inodes {
				t.Fatalf("statfs files %d, want %d", st.Files, quota.LimitFor(size).Inodes)
			}
		})
	}
}

func TestSizeFor(t *testing.T) {
	for _, free := range []int64{0, 1 << 20, 2 << 20, 1 << 30, 1<<40 + 12345} {
		s := quota.SizeFor(free)
		if s < 0 || (s > 0 && quota.LimitFor(s).Bytes > free) || quota.LimitFor(s+1024).Bytes <= free {
			t.Fatalf("SizeFor(%d) = %d (limit %d)", free, s, quota.LimitFor(s).Bytes)
		}
	}
}
