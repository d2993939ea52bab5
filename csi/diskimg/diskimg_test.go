package diskimg

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/slimvirt/slimvirt/internal/testutil"
)

func TestRoundUp(t *testing.T) {
	for _, tt := range []struct{ in, want int64 }{{0, 0}, {1, 512}, {512, 512}, {513, 1024}, {1_000_000_000, 1_000_000_000}, {6 << 30, 6 << 30}} {
		if got := RoundUp(tt.in); got != tt.want {
			t.Errorf("RoundUp(%d) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

// TestCloneIsSparse: a clone has the source's bytes, takes about the source's allocated space
// (not its size), and can be larger than the source.
func TestCloneIsSparse(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	if err := Create(src, 256<<20); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 4<<20)
	rand.Read(data)
	f, _ := os.OpenFile(src, os.O_WRONLY, 0)
	if _, err := f.WriteAt(data, 100<<20); err != nil {
		t.Fatal(err)
	}
	testutil.Must(t, f.Close())
	if _, err := Clone(src, dst, 300<<20); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(dst)
	if fi.Size() != 300<<20 {
		t.Fatalf("clone is %d bytes", fi.Size())
	}
	alloc, _ := Allocated(dst)
	if alloc > 8<<20 {
		t.Fatalf("clone allocates %d bytes for 4 MiB of data", alloc)
	}
	got := make([]byte, len(data))
	g, _ := os.Open(dst)
	if _, err := g.ReadAt(got, 100<<20); err != nil {
		t.Fatal(err)
	}
	testutil.Must(t, g.Close())
	if !bytes.Equal(got, data) {
		t.Fatal("clone data differs")
	}
}

func TestResetAndGrow(t *testing.T) {
	p := filepath.Join(t.TempDir(), Name)
	if err := Create(p, 8<<20); err != nil {
		t.Fatal(err)
	}
	testutil.Must(t, os.WriteFile(p+".x", nil, 0o600))
	f, _ := os.OpenFile(p, os.O_WRONLY, 0)
	if _, err := f.WriteAt(bytes.Repeat([]byte{1}, 1<<20), 0); err != nil {
		t.Fatal(err)
	}
	testutil.Must(t, f.Close())
	if err := Reset(p); err != nil {
		t.Fatal(err)
	}
	if alloc, _ := Allocated(p); alloc != 0 {
		t.Fatalf("reset file allocates %d", alloc)
	}
	if err := Grow(p, 16<<20); err != nil {
		t.Fatal(err)
	}
	if err := Grow(p, 4<<20); err != nil { // never shrinks
		t.Fatal(err)
	}
	if fi, _ := os.Stat(p); fi.Size() != 16<<20 {
		t.Fatalf("size %d after grow", fi.Size())
	}
}

// TestCopyFileAtMost: a copy bounded by a limit takes a file up to the limit, refuses a longer
// one (a sparse file of any length costs its owner nothing) before copying a byte, and never
// leaves out longer than the limit.
func TestCopyFileAtMost(t *testing.T) {
	tests := []struct {
		name    string
		size    int64
		limit   int64
		refused bool
	}{
		{"shorter than the limit", 8 << 20, 16 << 20, false},
		{"exactly the limit", 16 << 20, 16 << 20, false},
		{"one sector longer", 16<<20 + 512, 16 << 20, true},
		{"a sparse terabyte", 1 << 40, 16 << 20, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
			testutil.Must(t, Create(src, tt.size))
			data := make([]byte, 1<<20)
			rand.Read(data)
			f, err := os.OpenFile(src, os.O_WRONLY, 0)
			testutil.Must(t, err)
			_, err = f.WriteAt(data, 4<<20)
			testutil.Must(t, err)
			testutil.Must(t, f.Close())
			in, err := Open(dir, "src", os.O_RDONLY, 0)
			testutil.Must(t, err)
			defer in.Close()
			out, err := Open(dir, "dst", os.O_RDWR|os.O_CREATE, 0o600)
			testutil.Must(t, err)
			defer out.Close()
			_, err = CopyFileAtMost(in, out, tt.limit)
			if tt.refused != errors.Is(err, ErrTooLarge) {
				t.Fatalf("copy of %d bytes with limit %d: %v, want refused %v", tt.size, tt.limit, err, tt.refused)
			}
			fi, _ := os.Stat(dst)
			want := tt.size
			if tt.refused {
				want = 0
			}
			if fi.Size() != want {
				t.Fatalf("out is %d bytes, want %d", fi.Size(), want)
			}
			if !tt.refused {
				got := make([]byte, len(data))
				if _, err := out.ReadAt(got, 4<<20); err != nil || !bytes.Equal(got, data) {
					t.Fatalf("copy differs: %v", err)
				}
			}
		})
	}
}
