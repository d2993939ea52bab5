package importer

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slimvirt/slimvirt/internal/testutil"
)

// FuzzParseImageInfo: whatever qemu-img info prints, an image that refers to another file is
// never accepted, and nothing panics.
func FuzzParseImageInfo(f *testing.F) {
	f.Add([]byte(`{"virtual-size": 1048576, "filename": "/dev/fd/3", "format": "qcow2", "format-specific": {"type": "qcow2", "data": {"compat": "1.1"}}}`))
	f.Add([]byte(`{"virtual-size": 1048576, "format": "qcow2", "format-specific": {"type": "qcow2", "data": {"data-file": "/etc/shadow", "data-file-raw": true}}}`))
	f.Add([]byte(`{"virtual-size": 1, "format": "qcow2", "backing-filename": "json:{}", "full-backing-filename": "json:{}", "backing-filename-format": "raw"}`))
	f.Add([]byte(`{"format": "qcow2", "encrypted": true, "format-specific": {"data": {"encrypt": {"format": "luks"}}}}`))
	f.Add([]byte(`{"format": "qcow2", "backing-image": {"filename": "/etc/hostname"}}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		info, err := parseImageInfo(b)
		if err != nil {
			return
		}
		var m map[string]any
		if json.Unmarshal(b, &m) != nil {
			t.Fatalf("accepted what is not a JSON object: %q", b)
		}
		for _, key := range []string{"backing-filename", "full-backing-filename", "data-file"} {
			if _, ok := m[key].(string); ok {
				t.Fatalf("accepted %q with %s", b, key)
			}
		}
		if fs, ok := m["format-specific"].(map[string]any); ok {
			if d, ok := fs["data"].(map[string]any); ok {
				if _, ok := d["data-file"].(string); ok {
					t.Fatalf("accepted %q with a data file", b)
				}
			}
		}
		if info.VirtualSize < 0 {
			t.Fatalf("accepted virtual size %d", info.VirtualSize)
		}
	})
}

// TestParseImageInfo: what qemu-img prints for images that use other files.
func TestParseImageInfo(t *testing.T) {
	tests := []struct {
		name, json, wantErr string
	}{
		{"plain", `{"virtual-size": 1048576, "format": "qcow2", "format-specific": {"type": "qcow2", "data": {"compat": "1.1"}}}`, ""},
		{"data file", `{"virtual-size": 1048576, "format": "qcow2", "format-specific": {"type": "qcow2", "data": {"data-file": "/etc/shadow", "data-file-raw": true}}}`, `external data file "/etc/shadow"`},
		{"data file raw alone", `{"format": "qcow2", "format-specific": {"data": {"data-file-raw": true}}}`, "data-file-raw"},
		{"top-level data file", `{"format": "qcow2", "data-file": "/dev/sda"}`, "external data file"},
		{"backing file", `{"format": "qcow2", "backing-filename": "/etc/hostname"}`, `backing file "/etc/hostname"`},
		{"full backing file", `{"format": "qcow2", "full-backing-filename": "json:{}"}`, "backing file"},
		{"backing format", `{"format": "qcow2", "backing-filename-format": "raw"}`, "backing file"},
		{"backing image", `{"format": "qcow2", "backing-image": {}}`, "backing file"},
		{"encrypted", `{"format": "qcow2", "encrypted": true}`, "encrypted"},
		{"not JSON", `qemu-img: oops`, "parse qemu-img info"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseImageInfo([]byte(tt.json))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want %q", err, tt.wantErr)
			}
		})
	}
}

// TestQemuImgLimits: qemu-img runs under the address-space and CPU limits, with and without
// prlimit(1) on the PATH.
func TestQemuImgLimits(t *testing.T) {
	for _, withPrlimit := range []bool{true, false} {
		if !withPrlimit {
			qemu, err := exec.LookPath("qemu-img")
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			if out, err := exec.Command("ln", "-s", qemu, dir+"/qemu-img").CombinedOutput(); err != nil {
				t.Fatalf("link qemu-img: %v: %s", err, out)
			}
			t.Setenv("PATH", dir)
		}
		// 16 MiB of address space is too little for qemu-img to even start.
		_, err := qemuImg(context.Background(), limits{cpu: 30 * time.Second, as: 16 << 20}, nil, "--version")
		if err == nil {
			t.Fatalf("prlimit %v: qemu-img ran in 16 MiB of address space: no limit applied", withPrlimit)
		}
		out, err := qemuImg(context.Background(), inspectLimits, nil, "--version")
		if err != nil || !strings.Contains(string(out), "qemu-img version") {
			t.Fatalf("prlimit %v: qemu-img --version under the inspect limits: %v %s", withPrlimit, err, out)
		}
	}
}

// TestQemuImgConvertFitsLimits: a convert whose I/O threads each got their own malloc arena
// passed 800 MiB of address space and aborted now and then under the 1 GiB limit ("qemu:
// qemu_thread_create: Resource temporarily unavailable"). It fits in half of that, every time.
func TestQemuImgConvertFitsLimits(t *testing.T) {
	dir := t.TempDir()
	raw := make([]byte, 64<<20)
	rand.Read(raw)
	testutil.Must(t, os.WriteFile(filepath.Join(dir, "a.raw"), raw, 0o644))
	if out, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "qcow2", filepath.Join(dir, "a.raw"), filepath.Join(dir, "a.qcow2")).CombinedOutput(); err != nil {
		t.Fatalf("make qcow2: %v: %s", err, out)
	}
	src, err := os.Open(filepath.Join(dir, "a.qcow2"))
	testutil.Must(t, err)
	defer src.Close()
	lim := limits{cpu: 60 * time.Second, as: 512 << 20}
	for i := 0; i < 5; i++ {
		dst, err := os.OpenFile(filepath.Join(dir, "disk.img"), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
		testutil.Must(t, err)
		testutil.Must(t, dst.Truncate(int64(len(raw))))
		_, err = qemuImg(context.Background(), lim, []*os.File{src, dst}, "convert", "-n", "--target-is-zero", "-t", "writeback", "-W",
			"--image-opts", imageOpts("qcow2", 3), "--target-image-opts", imageOpts("raw", 4))
		_ = dst.Close()
		if err != nil {
			t.Fatalf("convert %d under %d MiB of address space: %v", i, lim.as>>20, err)
		}
	}
}
