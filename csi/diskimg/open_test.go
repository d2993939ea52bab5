package diskimg

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/slimvirt/slimvirt/internal/testutil"
)

// A pod that mounts a filesystem volume may put anything at disk.img; the driver, root on the
// node, must refuse whatever is not the volume's own regular file, and must not hang on it.
func TestOpenRefusesWhatIsNotTheVolumesOwnFile(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "node-secret")
	if err := os.WriteFile(secret, []byte("node key"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := map[string]func(dir string) error{
		"symlink to a node file": func(dir string) error { return os.Symlink(secret, filepath.Join(dir, Name)) },
		"relative symlink out":   func(dir string) error { return os.Symlink("../../../../../.."+secret, filepath.Join(dir, Name)) },
		"fifo":                   func(dir string) error { return syscall.Mkfifo(filepath.Join(dir, Name), 0o600) },
		"directory":              func(dir string) error { return os.Mkdir(filepath.Join(dir, Name), 0o700) },
	}
	for name, plant := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if err := plant(dir); err != nil {
				t.Fatal(err)
			}
			for _, flag := range []int{os.O_RDONLY, os.O_RDWR, os.O_WRONLY} {
				done := make(chan error, 1)
				go func() {
					f, err := OpenDisk(dir, flag)
					if err == nil {
						_ = f.Close()
					}
					done <- err
				}()
				select {
				case err := <-done:
					if !errors.Is(err, ErrNotRegular) {
						t.Fatalf("OpenDisk(flag %#x) = %v, want ErrNotRegular", flag, err)
					}
				case <-time.After(5 * time.Second):
					t.Fatalf("OpenDisk(flag %#x) blocked", flag)
				}
			}
		})
	}
	t.Run("volume directory that is a symlink", func(t *testing.T) {
		real := t.TempDir()
		if err := os.WriteFile(filepath.Join(real, Name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		link := filepath.Join(t.TempDir(), "vol")
		if err := os.Symlink(real, link); err != nil {
			t.Fatal(err)
		}
		if f, err := OpenDisk(link, os.O_RDONLY); err == nil {
			_ = f.Close()
			t.Fatal("OpenDisk followed a symlinked volume directory")
		}
	})
}

func TestOpenOpensARegularDisk(t *testing.T) {
	dir := t.TempDir()
	f, err := OpenDisk(dir, os.O_RDWR|os.O_CREATE)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("boot"); err != nil {
		t.Fatal(err)
	}
	testutil.Must(t, f.Close())
	got, err := os.ReadFile(filepath.Join(dir, Name))
	if err != nil || string(got) != "boot" {
		t.Fatalf("disk.img = %q, %v", got, err)
	}
}
