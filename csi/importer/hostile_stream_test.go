package importer_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/slimvirt/slimvirt/csi/diskimg"
	"github.com/slimvirt/slimvirt/csi/egress"
	"github.com/slimvirt/slimvirt/csi/importer"
	"github.com/slimvirt/slimvirt/internal/testutil"
)

// asked reads the range a request asks for ("bytes=a-b").
func asked(r *http.Request) (first, last int) {
	spec := strings.TrimPrefix(r.Header.Get("Range"), "bytes=")
	a, b, _ := strings.Cut(spec, "-")
	first, _ = strconv.Atoi(a)
	last, _ = strconv.Atoi(b)
	return first, last
}

// corruptRefcounts zeroes the first refcount block: every cluster in use then has refcount 0,
// which only qemu-img check notices.
func corruptRefcounts(t *testing.T, img []byte) []byte {
	out := append([]byte(nil), img...)
	table := binary.BigEndian.Uint64(out[48:])
	block := binary.BigEndian.Uint64(out[table:])
	cluster := 1 << binary.BigEndian.Uint32(out[20:])
	if block == 0 || int(block)+cluster > len(out) {
		t.Fatalf("no refcount block in the test image (table at %d, block at %d)", table, block)
	}
	copy(out[block:block+uint64(cluster)], make([]byte, cluster))
	return out
}

// TestQcow2StreamedRefused: a qcow2 that is truncated, corrupt or names another file is refused
// on the streaming path, and nothing of it reaches disk.img.
func TestQcow2StreamedRefused(t *testing.T) {
	img, _ := qcow2Image(t)
	dir := t.TempDir()
	dataFile, err := os.ReadFile(hostileImage(t, dir, "-o", "data_file=DIR/secret,data_file_raw=on"))
	testutil.Must(t, err)
	backing, err := os.ReadFile(hostileImage(t, t.TempDir(), "-u", "-b", "DIR/secret", "-F", "raw"))
	testutil.Must(t, err)
	tests := []struct {
		name    string
		image   []byte
		wantErr string
	}{
		// qemu-img check refuses these over the export (the staging path would have made the
		// scratch directory the test finds absent).
		{"truncated", img[:len(img)/2], "truncated or corrupt"},
		{"corrupt refcounts", corruptRefcounts(t, img), "truncated or corrupt"},
		// The header check refuses these before qemu-img runs.
		{"external data file", dataFile, "external data file"},
		{"backing file", backing, "backing file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newRangeServer(tt.image, `"v1"`)
			url := serveHandler(t, s)
			target := newTarget(t, t.TempDir(), volSize)
			err := newImporter().Fetch(context.Background(), importer.Request{URL: url + "/disk.qcow2"}, target, nil)
			var pe *importer.PermanentError
			if !errors.As(err, &pe) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want a permanent refusal saying %q", err, tt.wantErr)
			}
			if alloc, err := diskimg.Allocated(target.Disk); err != nil || alloc != 0 {
				t.Fatalf("refused image left %d bytes in disk.img", alloc)
			}
			if _, err := os.Stat(filepath.Dir(target.Scratch)); !os.IsNotExist(err) {
				t.Fatalf("the scratch directory was made: %v", err)
			}
		})
	}
}

// TestQemuInfoOverNBDRefusesDataFile: were the header check bypassed, qemu-img info reading the
// image from the NBD export refuses an external data file and a backing file too.
func TestQemuInfoOverNBDRefusesDataFile(t *testing.T) {
	for _, args := range [][]string{
		{"-o", "data_file=DIR/secret,data_file_raw=on"},
		{"-u", "-b", "DIR/secret", "-F", "raw"},
	} {
		img, err := os.ReadFile(hostileImage(t, t.TempDir(), args...))
		testutil.Must(t, err)
		if _, err := importer.QemuInfoOverNBD(context.Background(), img); err == nil || !strings.Contains(err.Error(), "import refused") {
			t.Fatalf("%v: qemu-img info over NBD accepted it: %v", args, err)
		}
	}
}

// TestQcow2StreamedLyingServer: the server answers the range requests of the convert (those
// past the image's first half, where only data clusters lie) with something else than the
// bytes asked for of the file it first announced. The import fails for good and says why;
// a connection dropped mid-range is only asked again.
func TestQcow2StreamedLyingServer(t *testing.T) {
	img, raw := qcow2Image(t)
	size := len(img)
	partial := func(w http.ResponseWriter, contentRange string, length int, body []byte) {
		w.Header().Set("Content-Range", contentRange)
		if length >= 0 {
			w.Header().Set("Content-Length", strconv.Itoa(length))
		}
		w.WriteHeader(http.StatusPartialContent)
		w.(http.Flusher).Flush()
		_, _ = w.Write(body)
	}
	tests := []struct {
		name    string
		lie     func(w http.ResponseWriter, r *http.Request, a, b int)
		wantErr string // empty: the import succeeds
	}{
		{"another validator", func(w http.ResponseWriter, r *http.Request, a, b int) {
			w.Header().Set("ETag", `"v2"`)
			partial(w, fmt.Sprintf("bytes %d-%d/%d", a, b, size), b-a+1, img[a:b+1])
		}, "the file changed on the server"},
		{"another total", func(w http.ResponseWriter, r *http.Request, a, b int) {
			partial(w, fmt.Sprintf("bytes %d-%d/%d", a, b, size+1), b-a+1, img[a:b+1])
		}, "asked for bytes"},
		{"another start", func(w http.ResponseWriter, r *http.Request, a, b int) {
			partial(w, fmt.Sprintf("bytes %d-%d/%d", a-512, b, size), b-a+513, img[a-512:b+1])
		}, "asked for bytes"},
		{"another length", func(w http.ResponseWriter, r *http.Request, a, b int) {
			partial(w, fmt.Sprintf("bytes %d-%d/%d", a, b, size), b-a, img[a:b])
		}, "announced"},
		{"body longer than the range (chunked)", func(w http.ResponseWriter, r *http.Request, a, b int) {
			partial(w, fmt.Sprintf("bytes %d-%d/%d", a, b, size), -1, append(append([]byte(nil), img[a:b+1]...), 0xAA))
		}, "more bytes than the range"},
		{"garbage Content-Range", func(w http.ResponseWriter, r *http.Request, a, b int) {
			partial(w, "bytes */"+strconv.Itoa(size), b-a+1, img[a:b+1])
		}, "bad Content-Range"},
		{"404", func(w http.ResponseWriter, r *http.Request, a, b int) {
			w.WriteHeader(http.StatusNotFound)
		}, "404"},
		{"dropped mid-range, once", dropRangeOnce(img), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newRangeServer(img, `"v1"`)
			var lied atomic.Bool
			s.ranged = func(w http.ResponseWriter, r *http.Request, data []byte) bool {
				a, b := asked(r)
				if a < size/2 {
					return false
				}
				lied.Store(true)
				tt.lie(w, r, a, b)
				return true
			}
			url := serveHandler(t, s)
			target := newTarget(t, t.TempDir(), volSize)
			sockets := unixSockets(t)
			err := newImporter().Fetch(context.Background(), importer.Request{URL: url + "/disk.qcow2"}, target, nil)
			if !lied.Load() {
				t.Fatal("no range request past the first half reached the server")
			}
			if tt.wantErr == "" {
				testutil.Must(t, err)
				checkDisk(t, target.Disk, raw)
			} else {
				var pe *importer.PermanentError
				if !errors.As(err, &pe) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want a permanent failure saying %q", err, tt.wantErr)
				}
			}
			checkNothingLeft(t, sockets, target)
		})
	}
}

// TestQcow2StreamedWholeFile: a server that answers a range request of the convert with a 200
// (it ignores Range although it announced ranges, or the file changed and If-Range failed)
// makes the import start over, staged, from a fresh GET on a disk reset to holes, and end
// with the file the server now has.
func TestQcow2StreamedWholeFile(t *testing.T) {
	img, raw := qcow2Image(t)
	dir := t.TempDir()
	changed := append([]byte(nil), raw...)
	copy(changed, bytes.Repeat([]byte("changed!"), 1<<17))
	testutil.Must(t, os.WriteFile(filepath.Join(dir, "changed.raw"), changed, 0o644))
	run(t, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", filepath.Join(dir, "changed.raw"), filepath.Join(dir, "changed.qcow2"))
	changedImg, err := os.ReadFile(filepath.Join(dir, "changed.qcow2"))
	testutil.Must(t, err)
	for _, tc := range []struct {
		name string
		want []byte
		lie  func(s *rangeServer, w http.ResponseWriter)
	}{
		{"ignores Range", raw, func(s *rangeServer, w http.ResponseWriter) {
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(img)
		}},
		{"file changed", changed, func(s *rangeServer, w http.ResponseWriter) {
			s.set(changedImg, `"v2"`)
			w.Header().Set("ETag", `"v2"`)
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(changedImg)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newRangeServer(img, `"v1"`)
			s.ranged = func(w http.ResponseWriter, r *http.Request, data []byte) bool {
				if a, _ := asked(r); a < len(img)/2 {
					return false
				}
				tc.lie(s, w)
				return true
			}
			url := serveHandler(t, s)
			target := newTarget(t, t.TempDir(), volSize)
			sockets := unixSockets(t)
			testutil.Must(t, newImporter().Fetch(context.Background(), importer.Request{URL: url + "/disk.qcow2"}, target, nil))
			checkDisk(t, target.Disk, tc.want)
			reqs := s.requests()
			if len(reqs) < 3 || reqs[0] != "" || reqs[len(reqs)-1] != "" {
				t.Fatalf("requests %q: want a GET, range requests, and a GET again", reqs)
			}
			checkNothingLeft(t, sockets, target)
		})
	}
}

// dropRangeOnce sends half of the first range it is asked for and drops the connection.
func dropRangeOnce(img []byte) func(w http.ResponseWriter, r *http.Request, a, b int) {
	var dropped atomic.Bool
	return func(w http.ResponseWriter, r *http.Request, a, b int) {
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", a, b, len(img)))
		w.Header().Set("Content-Length", strconv.Itoa(b-a+1))
		w.WriteHeader(http.StatusPartialContent)
		if dropped.Swap(true) {
			_, _ = w.Write(img[a : b+1])
			return
		}
		_, _ = w.Write(img[a : a+(b-a+1)/2])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // the connection is cut mid-body
	}
}

// stallingConvert serves the test qcow2 and returns its URL; the range requests past the
// image's first half, which only the convert makes, are never answered.
func stallingConvert(t *testing.T) string {
	img, _ := qcow2Image(t)
	s := newRangeServer(img, `"v1"`)
	s.ranged = func(w http.ResponseWriter, r *http.Request, data []byte) bool {
		if a, _ := asked(r); a < len(img)/2 {
			return false
		}
		<-r.Context().Done()
		return true
	}
	return serveHandler(t, s) + "/disk.qcow2"
}

// TestQcow2StreamedCancelled: an import stopped while qemu-img convert reads from the export
// returns at once and leaves no qemu-img process, no socket and no scratch behind.
func TestQcow2StreamedCancelled(t *testing.T) {
	url := stallingConvert(t)
	target := newTarget(t, t.TempDir(), volSize)
	sockets := unixSockets(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- newImporter().Fetch(ctx, importer.Request{URL: url}, target, nil)
	}()
	for deadline := time.Now().Add(30 * time.Second); len(childrenOf(os.Getpid(), "convert")) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("qemu-img convert never started")
		}
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled import: %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the cancelled import did not return")
	}
	checkNothingLeft(t, sockets, target)
}

// unixSockets returns the inodes of the unix sockets this process holds.
func unixSockets(t *testing.T) map[string]bool {
	t.Helper()
	table, err := os.ReadFile("/proc/self/net/unix")
	testutil.Must(t, err)
	unix := map[string]bool{}
	for _, line := range strings.Split(string(table), "\n")[1:] {
		if f := strings.Fields(line); len(f) >= 7 {
			unix[f[6]] = true
		}
	}
	fds, err := os.ReadDir("/proc/self/fd")
	testutil.Must(t, err)
	out := map[string]bool{}
	for _, fd := range fds {
		l, err := os.Readlink("/proc/self/fd/" + fd.Name())
		if ino, ok := strings.CutPrefix(l, "socket:["); err == nil && ok && unix[strings.TrimSuffix(ino, "]")] {
			out[strings.TrimSuffix(ino, "]")] = true
		}
	}
	return out
}

// checkNothingLeft asserts that no qemu-img child runs, no unix socket was added since before
// and no scratch file is left.
func checkNothingLeft(t *testing.T, before map[string]bool, target importer.Target) {
	t.Helper()
	if left := childrenOf(os.Getpid(), "qemu-img"); len(left) > 0 {
		t.Fatalf("qemu-img still runs: %v", left)
	}
	for ino := range unixSockets(t) {
		if !before[ino] {
			t.Fatalf("unix socket %s left open", ino)
		}
	}
	if entries, _ := os.ReadDir(filepath.Dir(target.Scratch)); len(entries) != 0 {
		t.Fatalf("%d scratch files left", len(entries))
	}
}

// TestQcow2StreamedEgress: the range requests of the streaming path go through the import's
// own client: every one carries the credentials and Accept-Encoding: identity, and one
// redirected to an address the policy refuses is refused for good without reaching it.
func TestQcow2StreamedEgress(t *testing.T) {
	img, raw := qcow2Image(t)
	denied, deniedHits := listen(t, "127.0.0.3:0", newRangeServer(img, `"v1"`).ServeHTTP)
	for _, redirect := range []bool{false, true} {
		s := newRangeServer(img, `"v1"`)
		var bad atomic.Value
		url, _ := listen(t, "127.0.0.2:0", func(w http.ResponseWriter, r *http.Request) {
			if u, p, ok := r.BasicAuth(); !ok || u != "user" || p != "pass" || r.Header.Get("Accept-Encoding") != "identity" {
				bad.Store(fmt.Sprintf("request %q without credentials or identity encoding", r.Header.Get("Range")))
			}
			if redirect && r.Header.Get("Range") != "" {
				http.Redirect(w, r, denied+"/disk.qcow2", http.StatusFound)
				return
			}
			s.ServeHTTP(w, r)
		})
		im := importer.New(importer.Config{Retries: 3, Backoff: 50 * time.Millisecond,
			Egress: egress.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}},
			Log:    slog.New(slog.NewTextHandler(io.Discard, nil))})
		target := newTarget(t, t.TempDir(), volSize)
		err := im.Fetch(context.Background(), importer.Request{URL: url + "/disk.qcow2", Username: "user", Password: "pass"}, target, nil)
		if b := bad.Load(); b != nil {
			t.Fatal(b)
		}
		if !redirect {
			testutil.Must(t, err)
			checkDisk(t, target.Disk, raw)
			if len(rangeRequests(s)) == 0 {
				t.Fatal("no range request: the image was not streamed")
			}
			continue
		}
		var pe *importer.PermanentError
		if !errors.As(err, &pe) || !strings.Contains(err.Error(), "import refused: 127.0.0.3 is a loopback address") {
			t.Fatalf("error %v, want the redirect's address refused", err)
		}
		if deniedHits.Load() != 0 {
			t.Fatal("a range request reached the refused server")
		}
	}
}
