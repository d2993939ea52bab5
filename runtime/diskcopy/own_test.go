package diskcopy

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestOwn(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("changing owners needs root")
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	owned, err := Own(107, 107, dir, img, filepath.Join(dir, "missing.img"))
	if err != nil {
		t.Fatal(err)
	}
	if len(owned) != 2 {
		t.Errorf("owned %v, want the directory and the image", owned)
	}
	for _, p := range []string{dir, img} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if s := st.Sys().(*syscall.Stat_t); s.Uid != 107 || s.Gid != 107 {
			t.Errorf("%s owned by %d:%d, want 107:107", p, s.Uid, s.Gid)
		}
	}
	link := filepath.Join(dir, "link.img")
	if err := os.Symlink("/etc/passwd", link); err != nil {
		t.Fatal(err)
	}
	if _, err := Own(107, 107, link); err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Errorf("a symlink: err = %v, want a refusal", err)
	}
	if st, _ := os.Stat("/etc/passwd"); st.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Fatal("/etc/passwd changed owner")
	}
}
