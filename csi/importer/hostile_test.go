package importer_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"

	"github.com/slimvirt/slimvirt/csi/diskimg"
	"github.com/slimvirt/slimvirt/csi/importer"
	"github.com/slimvirt/slimvirt/internal/qcow2"
	"github.com/slimvirt/slimvirt/internal/testutil"
)

// secretMarker is what the node file a hostile image points at holds; no byte of it may
// reach the volume.
const secretMarker = "NODE-SECRET-4f1c9a"

// hostileImage makes a qcow2 with qemu-img create (args before the size) in dir; DIR in args
// is replaced by dir, where a node file full of secretMarker waits at DIR/secret.
func hostileImage(t *testing.T, dir string, args ...string) string {
	t.Helper()
	secret := filepath.Join(dir, "secret")
	testutil.Must(t, os.WriteFile(secret, bytes.Repeat([]byte(secretMarker), (1<<20)/len(secretMarker)+1)[:1<<20], 0o600))
	img := filepath.Join(dir, "hostile.qcow2")
	for i, a := range args {
		args[i] = strings.ReplaceAll(a, "DIR", dir)
	}
	argv := append(append([]string{"create", "-f", "qcow2"}, args...), img, "1M")
	for try := 0; ; try++ {
		out, err := exec.Command("qemu-img", argv...).CombinedOutput()
		if err == nil {
			break
		}
		if try < 10 && strings.Contains(string(out), "accurate CPU usage") {
			continue // LUKS key setup could not time itself on a loaded machine
		}
		t.Fatalf("qemu-img %v: %v: %s", argv, err, out)
	}
	if strings.Contains(strings.Join(args, " "), "data_file=") {
		// qemu-img create emptied the data file; put the node's secret back in it.
		testutil.Must(t, os.WriteFile(secret, bytes.Repeat([]byte(secretMarker), (1<<20)/len(secretMarker)+1)[:1<<20], 0o600))
	}
	return img
}

// TestHostileQcow2: images that name another file of the node are refused, over HTTP and as an
// upload, with a reason the user can read, and the volume holds nothing.
func TestHostileQcow2(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"data file raw", []string{"-o", "data_file=DIR/secret,data_file_raw=on"}, "external data file"},
		{"data file not raw", []string{"-o", "data_file=DIR/secret"}, "external data file"},
		{"backing file", []string{"-u", "-b", "DIR/secret", "-F", "raw"}, "backing file"},
		{"json backing file", []string{"-u", "-b", `json:{"driver":"raw","file":{"driver":"file","filename":"DIR/secret"}}`, "-F", "raw"}, "backing file"},
		{"luks encrypted", []string{"--object", "secret,id=s0,data=abc", "-o", "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10"}, "encrypted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			img := hostileImage(t, dir, tt.args...)
			for _, how := range []string{"http", "upload"} {
				target := newTarget(t, t.TempDir(), volSize)
				var err error
				if how == "http" {
					url := serve(t, &server{dir: dir})
					err = newImporter().Fetch(context.Background(), importer.Request{URL: url + "/hostile.qcow2"}, target, nil)
				} else {
					f, ferr := os.Open(img)
					testutil.Must(t, ferr)
					err = importer.Write(context.Background(), importer.Stream{R: f, Total: -1}, target)
					f.Close()
				}
				var pe *importer.PermanentError
				if !errors.As(err, &pe) || !strings.Contains(err.Error(), "import refused") || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("%s: error %v, want a permanent refusal saying %q", how, err, tt.wantErr)
				}
				got, rerr := os.ReadFile(target.Disk)
				testutil.Must(t, rerr)
				if bytes.Contains(got, []byte(secretMarker[:8])) {
					t.Fatalf("%s: the volume holds the node file", how)
				}
			}
		})
	}
}

// TestQemuInfoRefusesDataFile: were the header check ever bypassed, qemu-img info's view of
// such an image is refused as well (the --image-opts layer of the defence).
func TestQemuInfoRefusesDataFile(t *testing.T) {
	for _, args := range [][]string{
		{"-o", "data_file=DIR/secret,data_file_raw=on"},
		{"-u", "-b", "DIR/secret", "-F", "raw"},
	} {
		dir := t.TempDir()
		img := hostileImage(t, dir, args...)
		f, err := os.Open(img)
		testutil.Must(t, err)
		_, err = importer.QemuInfo(context.Background(), f)
		f.Close()
		if err == nil || !strings.Contains(err.Error(), "import refused") {
			t.Fatalf("%v: qemu-img info accepted it: %v", args, err)
		}
	}
}

// scratchWatch records the largest scratch file this process holds while an import runs:
// the named file and any unlinked one in the scratch directory.
func scratchWatch(t *testing.T, scratch string) (stop func() int64) {
	var mu sync.Mutex
	var peak int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		dir := filepath.Dir(scratch)
		for {
			select {
			case <-done:
				return
			default:
			}
			sizes := []string{scratch}
			if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
				for _, fd := range fds {
					p := "/proc/self/fd/" + fd.Name()
					if l, err := os.Readlink(p); err == nil && strings.HasPrefix(l, dir+"/") {
						sizes = append(sizes, p)
					}
				}
			}
			for _, p := range sizes {
				if fi, err := os.Stat(p); err == nil {
					mu.Lock()
					peak = max(peak, fi.Size())
					mu.Unlock()
				}
			}
			time.Sleep(200 * time.Microsecond)
		}
	}()
	return func() int64 {
		close(done)
		wg.Wait()
		return peak
	}
}

// TestGzipBombQcow2: a 63 KiB gzip stream that starts with a qcow2 header of a small disk and
// then inflates to 64 MiB of zeros is refused, and the scratch file never grows past what an
// image of that virtual size can be.
func TestGzipBombQcow2(t *testing.T) {
	for _, size := range []int64{1 << 20, 16 << 20} {
		t.Run(fmt.Sprint(size>>20, "MiB"), func(t *testing.T) {
			dir := t.TempDir()
			img := filepath.Join(dir, "small.qcow2")
			run(t, "qemu-img", "create", "-f", "qcow2", img, fmt.Sprint(size))
			head, err := os.ReadFile(img)
			testutil.Must(t, err)
			h, err := qcow2.Parse(head)
			testutil.Must(t, err)
			var gz bytes.Buffer
			zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
			zw.Write(head)
			zw.Write(make([]byte, 64<<20))
			zw.Close()
			if gz.Len() > 80<<10 {
				t.Fatalf("bomb is %d bytes", gz.Len())
			}
			target := newTarget(t, dir, size)
			stop := scratchWatch(t, target.Scratch)
			err = importer.Write(context.Background(), importer.Stream{R: bytes.NewReader(gz.Bytes()), Total: int64(gz.Len())}, target)
			peak := stop()
			var pe *importer.PermanentError
			if !errors.As(err, &pe) || !strings.Contains(err.Error(), "larger than an image of its virtual size can be") {
				t.Fatalf("error %v, want the bomb refused", err)
			}
			if peak > h.MaxFileSize() {
				t.Fatalf("scratch grew to %d bytes, bound %d", peak, h.MaxFileSize())
			}
			t.Logf("gzip bomb of %d bytes for a %d byte volume: refused, scratch peaked at %d bytes (bound %d)", gz.Len(), size, peak, h.MaxFileSize())
			if entries, _ := os.ReadDir(filepath.Dir(target.Scratch)); len(entries) != 0 {
				t.Fatalf("scratch directory holds %d files", len(entries))
			}
		})
	}
}

// TestXZHugeDictionary: an xz stream whose header asks for a 1.5 GiB dictionary is refused
// before xz allocates it.
func TestXZHugeDictionary(t *testing.T) {
	dir := t.TempDir()
	raw := filepath.Join(dir, "x.raw")
	testutil.Must(t, os.WriteFile(raw, bytes.Repeat([]byte("slimvirt"), 1<<16), 0o644))
	run(t, "xz", "-k", "-T1", "--lzma2=dict=1536MiB,mf=hc3", raw)
	data, err := os.ReadFile(raw + ".xz")
	testutil.Must(t, err)
	target := newTarget(t, dir, volSize)
	err = importer.Write(context.Background(), importer.Stream{R: bytes.NewReader(data), Total: int64(len(data))}, target)
	var pe *importer.PermanentError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "needs more than 128 MiB of memory") {
		t.Fatalf("error %v, want the stream refused for its memory", err)
	}
}

// TestHugeL1Refused: a qcow2 whose header declares the largest L1 table qemu allows is refused
// by the header check before qemu-img allocates it.
func TestHugeL1Refused(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "l1.qcow2")
	run(t, "qemu-img", "create", "-f", "qcow2", img, "1M")
	b, err := os.ReadFile(img)
	testutil.Must(t, err)
	binary.BigEndian.PutUint32(b[36:], 4<<20) // 32 MiB of L1 entries for a 1 MiB disk
	target := newTarget(t, dir, volSize)
	err = importer.Write(context.Background(), importer.Stream{R: bytes.NewReader(b), Total: int64(len(b))}, target)
	if err == nil || !strings.Contains(err.Error(), "L1 table") {
		t.Fatalf("error %v, want the L1 table refused", err)
	}
}

// TestRemoveStaleScratch: scratch files a killed driver or an older version left are removed
// at startup; the volumes themselves are not touched.
func TestRemoveStaleScratch(t *testing.T) {
	pool := t.TempDir()
	testutil.Must(t, os.MkdirAll(filepath.Join(pool, ".scratch"), 0o700))
	testutil.Must(t, os.MkdirAll(filepath.Join(pool, "pvc-1"), 0o700))
	testutil.Must(t, os.WriteFile(filepath.Join(pool, ".scratch", "pvc-1.qcow2"), []byte("stale"), 0o600))
	testutil.Must(t, os.WriteFile(filepath.Join(pool, "pvc-1", diskimg.Name), []byte("data"), 0o600))
	importer.RemoveStaleScratch([]string{pool}, nil)
	if entries, _ := os.ReadDir(filepath.Join(pool, ".scratch")); len(entries) != 0 {
		t.Fatalf("stale scratch left: %v", entries)
	}
	if _, err := os.Stat(filepath.Join(pool, "pvc-1", diskimg.Name)); err != nil {
		t.Fatal(err)
	}
}
