package diskimg

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/slimvirt/slimvirt/csi/testclean"
	"github.com/slimvirt/slimvirt/internal/testutil"
)

// nodeFile is a file outside any volume holding a marker, as a node's key or token would.
const marker = "NODE-SECRET-MARKER-7f3a"

// plants are what a pod that mounts a filesystem volume can put at disk.img (and what a node
// file bind-mounted there would look like), with the refusal each must meet.
func plants(secret string) map[string]struct {
	plant func(t *testing.T, dir string) error
	want  error
} {
	type plant = struct {
		plant func(t *testing.T, dir string) error
		want  error
	}
	return map[string]plant{
		"symlink to a node file": {func(_ *testing.T, dir string) error { return os.Symlink(secret, filepath.Join(dir, Name)) }, ErrNotRegular},
		"relative symlink out": {func(_ *testing.T, dir string) error {
			return os.Symlink("../../../../../../.."+secret, filepath.Join(dir, Name))
		}, ErrNotRegular},
		"dangling symlink": {func(_ *testing.T, dir string) error { return os.Symlink(secret+".none", filepath.Join(dir, Name)) }, ErrNotRegular},
		// t.TempDir()s share a filesystem, as a pool on the root filesystem does with node files.
		"hard link to a node file": {func(_ *testing.T, dir string) error { return os.Link(secret, filepath.Join(dir, Name)) }, ErrHardLinked},
		"fifo":                     {func(_ *testing.T, dir string) error { return syscall.Mkfifo(filepath.Join(dir, Name), 0o600) }, ErrNotRegular},
		"directory":                {func(_ *testing.T, dir string) error { return os.Mkdir(filepath.Join(dir, Name), 0o700) }, ErrNotRegular},
		// Container runtimes grant CAP_MKNOD; the device cgroup stops the pod, not the driver.
		"device node": {func(_ *testing.T, dir string) error {
			return unix.Mknod(filepath.Join(dir, Name), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3)))
		}, ErrNotRegular},
		"node file bind-mounted over disk.img": {func(t *testing.T, dir string) error {
			disk := filepath.Join(dir, Name)
			if err := os.WriteFile(disk, nil, 0o600); err != nil {
				return err
			}
			if err := unix.Mount(secret, disk, "", unix.MS_BIND, ""); err != nil {
				return err
			}
			t.Cleanup(func() { unix.Unmount(disk, unix.MNT_DETACH) })
			return nil
		}, ErrNotRegular},
	}
}

// TestOperationsRefuseWhatAPodPutAtDiskImg: every operation on disk.img refuses what is not the
// volume's own regular file, and the node file behind it keeps its size and its bytes; a clone
// of such a volume holds no byte of the node file.
func TestOperationsRefuseWhatAPodPutAtDiskImg(t *testing.T) {
	testutil.RequireRoot(t, "device nodes and bind mounts need root")
	testclean.Mounts("TestOperationsRefuseWhatAPodPutAtDiskImg")
	secret := filepath.Join(t.TempDir(), "node-secret")
	content := bytes.Repeat([]byte(marker), 4096)
	ops := map[string]func(t *testing.T, vol string) error{
		"create": func(t *testing.T, vol string) error { return Create(filepath.Join(vol, Name), 1<<30) },
		"grow":   func(t *testing.T, vol string) error { return Grow(filepath.Join(vol, Name), 1<<30) },
		"reset":  func(t *testing.T, vol string) error { return Reset(filepath.Join(vol, Name)) },
		"allocated": func(t *testing.T, vol string) error {
			n, err := Allocated(filepath.Join(vol, Name))
			if err == nil && n > 0 {
				t.Errorf("Allocated reported %d bytes of what is behind disk.img", n)
			}
			return err
		},
		"clone from": func(t *testing.T, vol string) error {
			dst := t.TempDir()
			_, err := Clone(filepath.Join(vol, Name), filepath.Join(dst, Name), 1<<20)
			if got, _ := os.ReadFile(filepath.Join(dst, Name)); bytes.Contains(got, []byte(marker)) {
				t.Errorf("the clone holds the node file's marker")
			}
			return err
		},
		"clone into": func(t *testing.T, vol string) error {
			src := t.TempDir()
			if err := os.WriteFile(filepath.Join(src, Name), make([]byte, 4096), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Clone(filepath.Join(src, Name), filepath.Join(vol, Name), 1<<20)
			return err
		},
	}
	for pname, p := range plants(secret) {
		for oname, op := range ops {
			t.Run(pname+"/"+oname, func(t *testing.T) {
				if err := os.WriteFile(secret, content, 0o600); err != nil {
					t.Fatal(err)
				}
				vol := t.TempDir()
				if err := p.plant(t, vol); err != nil {
					t.Fatalf("plant: %v", err)
				}
				done := make(chan error, 1)
				go func() { done <- op(t, vol) }()
				var err error
				select {
				case err = <-done:
				case <-time.After(5 * time.Second):
					t.Fatalf("%s over %s blocked", oname, pname)
				}
				if !errors.Is(err, p.want) || !Refused(err) {
					t.Errorf("%s over %s: %v, want a refusal (%v)", oname, pname, err, p.want)
				}
				got, rerr := os.ReadFile(secret)
				if rerr != nil || !bytes.Equal(got, content) {
					t.Errorf("%s over %s changed the node file: %d bytes (was %d), %v", oname, pname, len(got), len(content), rerr)
				}
			})
		}
	}
}

// TestOpenCreatesAndReopens: Open makes a missing file, keeps an existing one (its bytes, or
// none with O_TRUNC), and does not create through a name that exists.
func TestOpenCreatesAndReopens(t *testing.T) {
	dir := t.TempDir()
	f, err := Open(dir, Name, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("boot")
	f.Close()
	if fi, _ := os.Stat(filepath.Join(dir, Name)); fi.Mode().Perm() != 0o640&^umask() {
		t.Errorf("made with mode %v", fi.Mode().Perm())
	}
	f, err = Open(dir, Name, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	if _, err := f.ReadAt(b, 0); err != nil || string(b) != "boot" {
		t.Fatalf("reopened file reads %q, %v", b, err)
	}
	f.Close()
	if f, err = Open(dir, Name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o640); !errors.Is(err, os.ErrExist) {
		t.Fatalf("O_EXCL over an existing file: %v", err)
	}
	if f, err = Open(dir, Name, os.O_WRONLY|os.O_TRUNC, 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if fi, _ := os.Stat(filepath.Join(dir, Name)); fi.Size() != 0 {
		t.Fatalf("O_TRUNC left %d bytes", fi.Size())
	}
	if _, err := Open(dir, "missing", os.O_RDONLY, 0); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a missing file: %v", err)
	}
}

func umask() os.FileMode {
	m := unix.Umask(0)
	unix.Umask(m)
	return os.FileMode(m)
}
