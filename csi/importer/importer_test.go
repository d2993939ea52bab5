package importer_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/slimvirt/slimvirt/csi/diskimg"
	"github.com/slimvirt/slimvirt/csi/egress"
	"github.com/slimvirt/slimvirt/csi/importer"
	"github.com/slimvirt/slimvirt/csi/testclean"
	"github.com/slimvirt/slimvirt/internal/testutil"
)

const volSize = 64 << 20

// testImages are made once, by the first test that needs them, and only read by the tests;
// fuzz workers, which need none, do not pay for them.
var testImages struct {
	once sync.Once
	dir  string
	raw  []byte
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if testImages.dir != "" {
		os.RemoveAll(testImages.dir)
	}
	os.Exit(code)
}

// images returns the directory of test images and the raw image (random data with a zero gap,
// so sparseness can be checked).
func images(t *testing.T) (dir string, raw []byte) {
	t.Helper()
	testImages.once.Do(func() {
		dir, err := os.MkdirTemp("", "slimvirt-importer-images-")
		if err != nil {
			testImages.err = err
			return
		}
		testImages.dir = dir
		raw := make([]byte, 12<<20)
		rand.Read(raw[:4<<20])
		rand.Read(raw[8<<20:])
		err = os.WriteFile(filepath.Join(dir, "disk.raw"), raw, 0o644)
		if err == nil {
			// Every form an image is served in, made with the real tools.
			var out []byte
			out, err = exec.Command("sh", "-c", fmt.Sprintf("qemu-img convert -f raw -O qcow2 %[1]s/disk.raw %[1]s/disk.qcow2 && gzip -1 -c %[1]s/disk.raw > %[1]s/disk.raw.gz && xz -0 -T1 -c %[1]s/disk.raw > %[1]s/disk.raw.xz && xz -0 -T1 -c %[1]s/disk.qcow2 > %[1]s/disk.qcow2.xz && gzip -1 -c %[1]s/disk.qcow2 > %[1]s/disk.qcow2.gz", dir)).CombinedOutput()
			if err != nil {
				err = fmt.Errorf("%w: %s", err, out)
			}
		}
		testImages.raw, testImages.err = raw, err
	})
	if testImages.err != nil {
		t.Fatalf("make test images: %v", testImages.err)
	}
	return testImages.dir, testImages.raw
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v: %s", name, args, err, out)
	}
}

func sum(t *testing.T, path string) string {
	data, err := os.ReadFile(path)
	testutil.Must(t, err)
	h := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(h[:])
}

// newImporter returns an importer whose egress policy re-permits loopback, where the tests'
// servers listen.
func newImporter() *importer.Importer {
	return importer.New(importer.Config{Retries: 3, Backoff: 50 * time.Millisecond, Idle: 2 * time.Second,
		Egress: egress.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}},
		Log:    slog.New(slog.NewTextHandler(io.Discard, nil))})
}

// newTarget makes a fresh sparse disk.img as CreateVolume does.
func newTarget(t *testing.T, dir string, size int64) importer.Target {
	t.Helper()
	testutil.Must(t, os.MkdirAll(filepath.Join(dir, "vol"), 0o755))
	disk := filepath.Join(dir, "vol", diskimg.Name)
	testutil.Must(t, diskimg.Create(disk, size))
	return importer.Target{Disk: disk, Size: size, Scratch: filepath.Join(dir, ".scratch", "vol.qcow2")}
}

// checkDisk asserts disk.img is exactly the volume size, starts with the image, is zero after
// it, and did not allocate the image's zero gap.
func checkDisk(t *testing.T, disk string, raw []byte) {
	t.Helper()
	got, err := os.ReadFile(disk)
	testutil.Must(t, err)
	if len(got) != volSize {
		t.Fatalf("disk.img is %d bytes, want %d", len(got), volSize)
	}
	if !bytes.Equal(got[:len(raw)], raw) {
		t.Fatal("disk.img does not hold the image")
	}
	if !bytes.Equal(got[len(raw):], make([]byte, volSize-len(raw))) {
		t.Fatal("disk.img is not zero after the image")
	}
	alloc, err := diskimg.Allocated(disk)
	testutil.Must(t, err)
	if data := int64(8 << 20); alloc > data+(1<<20) {
		t.Fatalf("disk.img allocates %d bytes for %d bytes of data: not sparse", alloc, data)
	}
}

// server serves dir with Range support (http.ServeContent) behind fault injection.
type server struct {
	dir   string
	fault func(w http.ResponseWriter, r *http.Request, file *os.File) bool
	gets  atomic.Int32
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.gets.Add(1)
	f, err := os.Open(filepath.Join(s.dir, filepath.Base(r.URL.Path)))
	if err != nil {
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	if s.fault != nil && s.fault(w, r, f) {
		return
	}
	fi, _ := f.Stat()
	w.Header().Set("ETag", fmt.Sprintf(`"%d-%d"`, fi.Size(), fi.ModTime().UnixNano()))
	http.ServeContent(w, r, fi.Name(), fi.ModTime(), f)
}

func serve(t *testing.T, s *server) string {
	ts := httptest.NewServer(s) // 127.0.0.1 only
	t.Cleanup(ts.Close)
	return ts.URL
}

func TestFormats(t *testing.T) {
	dir, raw := images(t)
	url := serve(t, &server{dir: dir})
	for _, name := range []string{"disk.raw", "disk.qcow2", "disk.raw.gz", "disk.raw.xz", "disk.qcow2.xz", "disk.qcow2.gz"} {
		t.Run(name, func(t *testing.T) {
			target := newTarget(t, t.TempDir(), volSize)
			var last float64
			err := newImporter().Fetch(context.Background(), importer.Request{URL: url + "/" + name, Checksum: sum(t, filepath.Join(dir, name))}, target,
				func(f float64) { last = f })
			testutil.Must(t, err)
			checkDisk(t, target.Disk, raw)
			if last < 0.9 {
				t.Fatalf("last progress %v", last)
			}
			if _, err := os.Stat(target.Scratch); !os.IsNotExist(err) {
				t.Fatalf("scratch file left: %v", err)
			}
		})
	}
}

// TestFaults injects the failures a real import meets and checks what the user would see.
func TestFaults(t *testing.T) {
	dir, raw := images(t)
	tests := []struct {
		name     string
		file     string
		checksum func() string
		fault    func(w http.ResponseWriter, r *http.Request, f *os.File) bool
		wantErr  string // empty: success
		minGets  int32
	}{
		{name: "connection dropped mid-body resumes", file: "disk.raw.xz",
			fault: dropOnce(), minGets: 2},
		{name: "qcow2 dropped mid-body resumes", file: "disk.qcow2",
			fault: dropOnce(), minGets: 2},
		{name: "404 fails clearly", file: "disk.raw",
			fault: status(http.StatusNotFound), wantErr: "404 Not Found"},
		{name: "500 fails clearly after retries", file: "disk.raw",
			fault: status(http.StatusInternalServerError), wantErr: "500 Internal Server Error", minGets: 4},
		{name: "wrong checksum fails", file: "disk.raw.gz",
			checksum: func() string { return "sha256:" + strings.Repeat("ab", 32) }, wantErr: "checksum mismatch"},
		{name: "truncated qcow2 fails", file: "disk.qcow2", fault: truncate(), wantErr: "qcow2",
			checksum: func() string { return "" }},
		{name: "image larger than the volume fails", file: "big.raw", wantErr: "larger than the volume"},
	}
	big := make([]byte, volSize+(1<<20))
	big[len(big)-1] = 1
	testutil.Must(t, os.WriteFile(filepath.Join(dir, "big.raw"), big, 0o644))
	t.Cleanup(func() { os.Remove(filepath.Join(dir, "big.raw")) })
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &server{dir: dir, fault: tt.fault}
			url := serve(t, s)
			target := newTarget(t, t.TempDir(), volSize)
			cs := sum(t, filepath.Join(dir, tt.file))
			if tt.checksum != nil {
				cs = tt.checksum()
			}
			err := newImporter().Fetch(context.Background(), importer.Request{URL: url + "/" + tt.file, Checksum: cs}, target, nil)
			if tt.wantErr == "" {
				testutil.Must(t, err)
				checkDisk(t, target.Disk, raw)
			} else if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one saying %q", err, tt.wantErr)
			}
			if got := s.gets.Load(); got < tt.minGets {
				t.Fatalf("server saw %d requests, want at least %d", got, tt.minGets)
			}
		})
	}
}

// dropOnce sends the first response's headers and part of the body, then kills the connection.
func dropOnce() func(w http.ResponseWriter, r *http.Request, f *os.File) bool {
	var once sync.Once
	return func(w http.ResponseWriter, r *http.Request, f *os.File) bool {
		dropped := false
		once.Do(func() {
			fi, _ := f.Stat()
			w.Header().Set("Accept-Ranges", "bytes")
			w.Header().Set("ETag", fmt.Sprintf(`"%d-%d"`, fi.Size(), fi.ModTime().UnixNano()))
			w.Header().Set("Content-Length", fmt.Sprint(fi.Size()))
			w.WriteHeader(http.StatusOK)
			io.CopyN(w, f, fi.Size()/3)
			w.(http.Flusher).Flush()
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.(*net.TCPConn).SetLinger(0)
				conn.Close()
			}
			dropped = true
		})
		return dropped
	}
}

func status(code int) func(w http.ResponseWriter, r *http.Request, f *os.File) bool {
	return func(w http.ResponseWriter, r *http.Request, f *os.File) bool {
		http.Error(w, http.StatusText(code), code)
		return true
	}
}

// truncate serves only the first half of the file, as a complete response.
func truncate() func(w http.ResponseWriter, r *http.Request, f *os.File) bool {
	return func(w http.ResponseWriter, r *http.Request, f *os.File) bool {
		fi, _ := f.Stat()
		w.Header().Set("Content-Length", fmt.Sprint(fi.Size()/2))
		io.CopyN(w, f, fi.Size()/2)
		return true
	}
}

// TestSlowServerProgress: with a slow server the progress moves in steps before the end.
func TestSlowServerProgress(t *testing.T) {
	dir, raw := images(t)
	s := &server{dir: dir, fault: func(w http.ResponseWriter, r *http.Request, f *os.File) bool {
		fi, _ := f.Stat()
		w.Header().Set("Content-Length", fmt.Sprint(fi.Size()))
		for {
			n, err := io.CopyN(w, f, 512<<10)
			w.(http.Flusher).Flush()
			if err != nil || n == 0 {
				return true
			}
			time.Sleep(100 * time.Millisecond)
		}
	}}
	url := serve(t, s)
	target := newTarget(t, t.TempDir(), volSize)
	var seen []float64
	testutil.Must(t, newImporter().Fetch(context.Background(), importer.Request{URL: url + "/disk.raw"}, target, func(f float64) {
		if len(seen) == 0 || f-seen[len(seen)-1] > 0.05 {
			seen = append(seen, f)
		}
	}))
	checkDisk(t, target.Disk, raw)
	if len(seen) < 5 {
		t.Fatalf("progress moved %d times during a slow import: %v", len(seen), seen)
	}
	for i := 1; i < len(seen); i++ {
		if seen[i] <= seen[i-1] || seen[i] > 1 {
			t.Fatalf("progress not increasing within 0..1: %v", seen)
		}
	}
}

// TestDiskFull: an import into a pool that runs out of space fails with ENOSPC. The pool is a
// small tmpfs the test mounts and unmounts.
func TestDiskFull(t *testing.T) {
	testutil.RequireRoot(t, "mounting a tmpfs needs root")
	testclean.Mounts("TestDiskFull")
	dir, _ := images(t)
	url := serve(t, &server{dir: dir})
	pool := t.TempDir()
	testutil.Must(t, unix.Mount("tmpfs", pool, "tmpfs", 0, "size=16m"))
	t.Cleanup(func() { unix.Unmount(pool, unix.MNT_DETACH) })
	// Another tenant of the filesystem took most of it after the volume was made.
	target := newTarget(t, pool, volSize)
	testutil.Must(t, os.WriteFile(filepath.Join(pool, "filler"), make([]byte, 0), 0o644))
	run(t, "fallocate", "-l", "10m", filepath.Join(pool, "filler"))
	for _, name := range []string{"disk.raw.gz", "disk.qcow2"} {
		err := newImporter().Fetch(context.Background(), importer.Request{URL: url + "/" + name}, target, nil)
		if !errors.Is(err, unix.ENOSPC) && (err == nil || !strings.Contains(err.Error(), "No space left")) {
			t.Fatalf("%s into a full pool: %v, want no space left", name, err)
		}
		if _, err := os.Stat(target.Scratch); !os.IsNotExist(err) {
			t.Fatalf("scratch left after failure: %v", err)
		}
		testutil.Must(t, diskimg.Reset(target.Disk))
		if alloc, _ := diskimg.Allocated(target.Disk); alloc != 0 {
			t.Fatalf("reset disk still allocates %d bytes", alloc)
		}
	}
}

// TestXZ: xz(1) decompresses xz images; a corrupt xz stream fails clearly, and a node without
// xz(1) refuses xz images with a reason rather than falling back to a decoder that cannot be
// limited in memory.
func TestXZ(t *testing.T) {
	dir, raw := images(t)
	xzData, err := os.ReadFile(filepath.Join(dir, "disk.raw.xz"))
	testutil.Must(t, err)
	corrupt := append([]byte(nil), xzData...)
	for i := len(corrupt) / 2; i < len(corrupt)/2+64; i++ {
		corrupt[i] ^= 0xff
	}
	cdir := t.TempDir()
	testutil.Must(t, os.WriteFile(filepath.Join(cdir, "corrupt.raw.xz"), corrupt, 0o644))
	testutil.Must(t, os.Symlink(filepath.Join(dir, "disk.raw.xz"), filepath.Join(cdir, "disk.raw.xz")))
	url := serve(t, &server{dir: cdir})
	target := newTarget(t, t.TempDir(), volSize)
	testutil.Must(t, newImporter().Fetch(context.Background(), importer.Request{URL: url + "/disk.raw.xz"}, target, nil))
	checkDisk(t, target.Disk, raw)
	target = newTarget(t, t.TempDir(), volSize)
	err = newImporter().Fetch(context.Background(), importer.Request{URL: url + "/corrupt.raw.xz"}, target, nil)
	var pe *importer.PermanentError
	if err == nil || !errors.As(err, &pe) {
		t.Fatalf("corrupt xz: %v, want a permanent failure", err)
	}

	t.Setenv("PATH", t.TempDir()) // no xz binary to find
	target = newTarget(t, t.TempDir(), volSize)
	err = newImporter().Fetch(context.Background(), importer.Request{URL: url + "/disk.raw.xz"}, target, nil)
	if err == nil || !errors.As(err, &pe) || !strings.Contains(err.Error(), "xz images need xz(1) on the node") {
		t.Fatalf("xz without xz(1): %v, want a permanent failure saying so", err)
	}
}
