package qcow2

import (
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/slimvirt/slimvirt/internal/testutil"
)

// makeImage runs qemu-img create with args in a fresh directory and returns the image path.
func makeImage(t testing.TB, args ...string) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "x.qcow2")
	for i, a := range args {
		args[i] = strings.ReplaceAll(a, "DIR", dir)
	}
	argv := append(append([]string{"create", "-f", "qcow2"}, args[:len(args)-1]...), path, args[len(args)-1])
	for try := 0; ; try++ {
		out, err := exec.Command("qemu-img", argv...).CombinedOutput()
		if err == nil {
			return path
		}
		// LUKS key setup times a hash on the thread's CPU clock, which a loaded machine
		// sometimes cannot measure.
		if try < 10 && strings.Contains(string(out), "accurate CPU usage") {
			continue
		}
		t.Fatalf("qemu-img %v: %v: %s", argv, err, out)
	}
}

// TestCheckFileRealImages: images made by qemu-img that would make qemu read another file
// are refused, with a reason a user can act on; plain images pass.
func TestCheckFileRealImages(t *testing.T) {
	secret := []string{"--object", "secret,id=s0,data=abc"}
	tests := []struct {
		name    string
		args    []string
		wantErr string // empty: accepted
	}{
		{"plain v3", []string{"64M"}, ""},
		{"plain v2", []string{"-o", "compat=0.10", "64M"}, ""},
		{"extended L2, zstd, 2 MiB clusters", []string{"-o", "extended_l2=on,compression_type=zstd,cluster_size=2M", "1G"}, ""},
		{"64-bit refcounts, 512 byte clusters", []string{"-o", "refcount_bits=64,cluster_size=512", "1M"}, ""},
		{"data file raw", []string{"-o", "data_file=DIR/shadow,data_file_raw=on", "1M"}, "external data file"},
		{"data file not raw", []string{"-o", "data_file=DIR/shadow", "1M"}, "external data file"},
		{"backing file", []string{"-u", "-b", "/etc/hostname", "-F", "raw", "1M"}, `backing file "/etc/hostname"`},
		{"json backing file", []string{"-u", "-b", `json:{"driver":"raw","file":{"driver":"file","filename":"/etc/hostname"}}`, "-F", "raw", "1M"}, `backing file "json:`},
		{"nbd protocol backing file", []string{"-u", "-b", "nbd://127.0.0.1:10809/x", "-F", "raw", "1M"}, "backing file"},
		{"luks encrypted", append(secret, "-o", "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10", "1M"), "encrypted"},
		{"aes encrypted", append(secret, "-o", "encrypt.format=aes,encrypt.key-secret=s0", "1M"), "encrypted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := makeImage(t, tt.args...)
			h, err := CheckFile(path)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				fi, _ := os.Stat(path)
				if fi.Size() > h.MaxFileSize() {
					t.Fatalf("a fresh image of %d bytes is above the bound %d", fi.Size(), h.MaxFileSize())
				}
				return
			}
			var re *Error
			if !errors.As(err, &re) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want a refusal saying %q", err, tt.wantErr)
			}
		})
	}
}

// TestBoundFullImage: a fully allocated image (qemu-img convert of random data, as a user
// uploads it) fits the bound, for each cluster size.
func TestBoundFullImage(t *testing.T) {
	for _, cs := range []string{"512", "64k", "2M"} {
		t.Run(cs, func(t *testing.T) {
			dir := t.TempDir()
			raw := filepath.Join(dir, "x.raw")
			img := filepath.Join(dir, "x.qcow2")
			f, _ := os.Create(raw)
			buf := make([]byte, 3<<20+4096)
			for i := range buf {
				buf[i] = byte(i*7 + 1)
			}
			if _, err := f.Write(buf); err != nil {
				t.Fatal(err)
			}
			testutil.Must(t, f.Close())
			if out, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-o", "cluster_size="+cs+",preallocation=metadata", raw, img).CombinedOutput(); err != nil {
				t.Fatalf("qemu-img convert: %v: %s", err, out)
			}
			h, err := CheckFile(img)
			if err != nil {
				t.Fatal(err)
			}
			fi, _ := os.Stat(img)
			if fi.Size() > h.MaxFileSize() {
				t.Fatalf("full image of %d bytes above the bound %d", fi.Size(), h.MaxFileSize())
			}
		})
	}
}

// TestCrafted: headers no qemu-img makes, patched into a real image.
func TestCrafted(t *testing.T) {
	good, err := os.ReadFile(makeImage(t, "1M"))
	if err != nil {
		t.Fatal(err)
	}
	be := binary.BigEndian
	tests := []struct {
		name    string
		patch   func(b []byte)
		wantErr string
	}{
		{"huge L1 table", func(b []byte) { be.PutUint32(b[36:], 4<<20) }, "L1 table"},
		{"L1 far larger than needed", func(b []byte) { be.PutUint32(b[36:], 100000) }, "L1 table"},
		{"L1 too small", func(b []byte) { be.PutUint64(b[24:], 1<<40) }, "too small"},
		{"unknown incompatible bit", func(b []byte) { b[79] |= 1 << 5 }, "unknown incompatible"},
		{"data file bit alone", func(b []byte) { b[79] |= 1 << 2 }, "external data file"},
		{"data file raw bit alone", func(b []byte) { b[95] |= 1 << 1 }, "data-file-raw"},
		{"corrupt bit", func(b []byte) { b[79] |= 1 << 1 }, "corrupt"},
		{"version 4", func(b []byte) { be.PutUint32(b[4:], 4) }, "version 4"},
		{"cluster bits 30", func(b []byte) { be.PutUint32(b[20:], 30) }, "cluster_bits"},
		{"refcount table huge", func(b []byte) { be.PutUint32(b[56:], 1<<20) }, "refcount table"},
		{"snapshots without table", func(b []byte) { be.PutUint32(b[60:], 3) }, "snapshots"},
		{"header length odd", func(b []byte) { be.PutUint32(b[100:], 105) }, "header length"},
		{"unknown extension", func(b []byte) { be.PutUint32(b[112:], 0x12345678) }, "unknown header extension"},
		{"extension past the cluster", func(b []byte) { be.PutUint32(b[116:], 1<<30) }, "past the first cluster"},
		{"backing offset beyond data", func(b []byte) { be.PutUint64(b[8:], 1<<62); be.PutUint32(b[16:], 10) }, "backing file"},
		{"no magic", func(b []byte) { b[0] = 'X' }, "magic"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := append([]byte(nil), good...)
			tt.patch(b)
			_, err := Parse(b)
			var re *Error
			if !errors.As(err, &re) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want a refusal saying %q", err, tt.wantErr)
			}
		})
	}
	if _, err := Parse(good[:50]); !errors.Is(err, ErrShort) {
		t.Fatalf("cut header: %v, want ErrShort", err)
	}
}

// TestCheckFileNoFollow: a containerDisk that is a link is not followed.
func TestCheckFileNoFollow(t *testing.T) {
	img := makeImage(t, "1M")
	link := filepath.Join(t.TempDir(), "disk.qcow2")
	if err := os.Symlink(img, link); err != nil {
		t.Fatal(err)
	}
	if _, err := CheckFile(link); err == nil {
		t.Fatal("a link was followed")
	}
}

// TestMaxFileSizeFor: the pool-wide bound covers the bound of every accepted header.
func TestMaxFileSizeFor(t *testing.T) {
	for _, v := range []int64{1 << 20, 1 << 30, 10 << 30} {
		worst := MaxFileSizeFor(v)
		for bits := int64(9); bits <= 21; bits++ {
			c := int64(1) << bits
			need := l1Entries(v, c, true)
			h := Header{ClusterSize: c, VirtualSize: v, L1Size: 2*need + c/8, RefcountTableClusters: maxRefTableBytes / c}
			if h.L1Size*8 <= maxL1Bytes && h.MaxFileSize() > worst {
				t.Fatalf("virtual %d cluster %d: bound %d above MaxFileSizeFor %d", v, c, h.MaxFileSize(), worst)
			}
		}
		t.Logf("virtual size %d: at most %d bytes of scratch (%.1f%% more)", v, worst, 100*float64(worst-v)/float64(v))
	}
}
