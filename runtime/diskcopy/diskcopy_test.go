package diskcopy

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/slimvirt/slimvirt/internal/testutil"
)

func allocated(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// writeImage makes a 64 MiB file with data at two places and zeros (not holes) elsewhere at
// the start, as an unpacked image layer looks.
func writeImage(t *testing.T, path string, head []byte) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(head); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(make([]byte, 4<<20)); err != nil { // zeros written out
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("tail data"), 40<<20); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(64 << 20); err != nil {
		t.Fatal(err)
	}
}

func TestCopy(t *testing.T) {
	qcowHead := append([]byte{'Q', 'F', 'I', 0xfb}, bytes.Repeat([]byte{1}, 1000)...)
	rawHead := bytes.Repeat([]byte("boot"), 128)
	tests := []struct {
		name     string
		layout   map[string][]byte // files under the image's /disk, nil content = 64 MiB image
		src      string
		wantFile string
		wantErr  string
		noDisk   bool
	}{
		{name: "qcow2 in a directory", layout: map[string][]byte{"disk/fedora.qcow2": qcowHead}, src: "disk", wantFile: QCOW2Name},
		{name: "raw in a nested directory", layout: map[string][]byte{"disk/sub/os.img": rawHead}, src: "disk", wantFile: RawName},
		{name: "a file path", layout: map[string][]byte{"images/x.raw": rawHead}, src: "images/x.raw", wantFile: RawName},
		{name: "empty /disk", layout: map[string][]byte{}, src: "disk", wantErr: "holds no regular file", noDisk: true},
		{name: "no /disk at all", src: "disk", wantErr: "does not exist", noDisk: true},
		{name: "two files", layout: map[string][]byte{"disk/a.img": rawHead, "disk/b.img": rawHead}, src: "disk", wantErr: "2 files"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			img, dst := t.TempDir(), t.TempDir()
			if tc.layout != nil {
				if err := os.MkdirAll(filepath.Join(img, "disk"), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			for p, head := range tc.layout {
				full := filepath.Join(img, p)
				if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
					t.Fatal(err)
				}
				writeImage(t, full, head)
			}
			dst = filepath.Join(dst, "vol") // made by Copy
			got, err := Copy(filepath.Join(img, tc.src), dst)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				if tc.noDisk != errors.Is(err, ErrNoDisk) {
					t.Errorf("errors.Is(ErrNoDisk) = %v, want %v", !tc.noDisk, tc.noDisk)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if filepath.Base(got) != tc.wantFile {
				t.Errorf("copied to %s, want %s", got, tc.wantFile)
			}
			src, _ := FindDisk(filepath.Join(img, tc.src))
			a, _ := os.ReadFile(src)
			b, _ := os.ReadFile(got)
			if !bytes.Equal(a, b) {
				t.Fatal("copy differs from the source")
			}
			if alloc := allocated(t, got); alloc > 1<<20 {
				t.Errorf("copy allocates %d bytes of a 64 MiB image with ~1 KiB of data: not sparse", alloc)
			}
			tmps, err := filepath.Glob(filepath.Join(dst, ".*"))
			testutil.Must(t, err)
			if len(tmps) != 0 {
				t.Error("temporary files left behind")
			}
		})
	}
}

// Install makes the node directory with the copier in it, and replaces an older copier.
func TestInstall(t *testing.T) {
	src := filepath.Join(t.TempDir(), "copier")
	if err := os.WriteFile(src, []byte("copier v1"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "state", "launcher")
	if err := Install(src, dir); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "slimvirt-diskcopy")
	st, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o755 {
		t.Errorf("installed copier mode %v, want 0755", st.Mode())
	}
	if dst, _ := os.Stat(dir); dst.Mode().Perm() != 0o755 {
		t.Errorf("node directory mode %v, want 0755 (launchers read it as uid 107)", dst.Mode())
	}
	if err := os.WriteFile(src, []byte("copier v2"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Install(src, dir); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(bin); string(b) != "copier v2" {
		t.Errorf("copier = %q after reinstall, want v2", b)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(dir), ".*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func TestCopyAs(t *testing.T) {
	src := filepath.Join(t.TempDir(), "vmlinuz")
	if err := os.WriteFile(src, []byte("QFI\xfbkernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	got, err := CopyAs(src, dst, "kernel")
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(got); filepath.Base(got) != "kernel" || string(b) != "QFI\xfbkernel" {
		t.Errorf("copied %s with %q", got, b)
	}
	if _, err := CopyAs(src, dst, "../x"); err == nil {
		t.Error("a name with a slash was accepted")
	}
}
