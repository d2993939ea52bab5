package importer_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/slimvirt/slimvirt/csi/importer"
	"github.com/slimvirt/slimvirt/internal/testutil"
)

// qcow2Image returns the test qcow2 image and the raw image it holds.
func qcow2Image(t *testing.T) ([]byte, []byte) {
	dir, raw := images(t)
	img, err := os.ReadFile(filepath.Join(dir, "disk.qcow2"))
	testutil.Must(t, err)
	return img, raw
}

// rangeRequests returns the Range headers of the requests that had one.
func rangeRequests(s *rangeServer) []string {
	var out []string
	for _, r := range s.requests() {
		if r != "" {
			out = append(out, r)
		}
	}
	return out
}

// TestQcow2Streamed: a qcow2 from a server that serves ranges is converted while it downloads:
// no scratch file is ever made, the server sees a few bounded range requests after the first
// GET and sends about the file once, and disk.img is the image, sparse. So for compressed
// clusters (zlib, zstd), extended L2 entries and small clusters. With a checksum, or gzip
// compressed, the same image is staged as before.
func TestQcow2Streamed(t *testing.T) {
	dir, raw := images(t)
	for _, tc := range []struct{ name, opts string }{
		{"plain", ""},
		{"zlib compressed clusters", "-c"},
		{"zstd, extended L2", "-c -o compression_type=zstd,extended_l2=on,cluster_size=32k"},
		{"4 KiB clusters", "-o cluster_size=4k"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "disk.qcow2")
			run(t, "sh", "-c", "qemu-img convert -f raw -O qcow2 "+tc.opts+" "+filepath.Join(dir, "disk.raw")+" "+path)
			img, err := os.ReadFile(path)
			testutil.Must(t, err)
			s := newRangeServer(img, `"v1"`)
			url := serveHandler(t, s)
			target := newTarget(t, t.TempDir(), volSize)
			stop := scratchWatch(t, target.Scratch)
			var last float64
			err = newImporter().Fetch(context.Background(), importer.Request{URL: url + "/disk.qcow2"}, target, func(f float64) { last = f })
			peak := stop()
			testutil.Must(t, err)
			checkDisk(t, target.Disk, raw)
			if _, err := os.Stat(filepath.Dir(target.Scratch)); !os.IsNotExist(err) {
				t.Fatalf("the scratch directory was made: %v", err)
			}
			if peak != 0 {
				t.Fatalf("a scratch file of %d bytes was staged", peak)
			}
			ranges := rangeRequests(s)
			if len(img) > 2<<20 && len(ranges) == 0 || len(ranges) > 16 {
				t.Fatalf("server saw %d range requests, want a few: %v", len(ranges), ranges)
			}
			for _, r := range ranges {
				if !strings.HasPrefix(r, "bytes=") || strings.HasSuffix(r, "-") {
					t.Fatalf("range request %q is not a bounded range", r)
				}
			}
			// The first GET is closed after 2 MiB; the socket buffers may hold a few MiB more.
			if sent := s.served.Load(); sent > int64(len(img))+(8<<20) {
				t.Fatalf("server sent %d bytes for a %d-byte image", sent, len(img))
			}
			if last != 1 {
				t.Fatalf("last progress %v", last)
			}
			t.Logf("streamed %d-byte qcow2 with %d range requests: %v", len(img), len(ranges), ranges)
		})
	}

	img, raw := qcow2Image(t)
	gz, err := os.ReadFile(filepath.Join(dir, "disk.qcow2.gz"))
	testutil.Must(t, err)
	for _, tc := range []struct {
		name, checksum string
		image          []byte
	}{{"checksum", checksumOf("sha256", img), img}, {"gzip", "", gz}} {
		s := newRangeServer(tc.image, `"v1"`)
		url := serveHandler(t, s)
		target := newTarget(t, t.TempDir(), volSize)
		testutil.Must(t, newImporter().Fetch(context.Background(), importer.Request{URL: url + "/disk.qcow2", Checksum: tc.checksum}, target, nil))
		checkDisk(t, target.Disk, raw)
		if ranges := rangeRequests(s); len(ranges) != 0 {
			t.Fatalf("%s: staged import sent range requests %v", tc.name, ranges)
		}
	}
}

// serveHandler serves h on loopback for the test.
func serveHandler(t *testing.T, h http.Handler) string {
	ts := httptest.NewServer(h) // 127.0.0.1 only
	t.Cleanup(ts.Close)
	return ts.URL
}

// TestQcow2StreamedProgress: with a slow server the progress of a streamed import moves in
// steps, never backwards, and ends at 1.
func TestQcow2StreamedProgress(t *testing.T) {
	img, raw := qcow2Image(t)
	s := newRangeServer(img, `"v1"`)
	s.ranged = func(w http.ResponseWriter, r *http.Request, data []byte) bool {
		a, b := asked(r)
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", a, b, len(data)))
		w.Header().Set("Content-Length", strconv.Itoa(b-a+1))
		w.WriteHeader(http.StatusPartialContent)
		for off := a; off <= b; off += 256 << 10 {
			_, _ = w.Write(data[off:min(off+256<<10, b+1)])
			w.(http.Flusher).Flush()
			time.Sleep(40 * time.Millisecond)
		}
		return true
	}
	url := serveHandler(t, s)
	target := newTarget(t, t.TempDir(), volSize)
	var seen []float64
	testutil.Must(t, newImporter().Fetch(context.Background(), importer.Request{URL: url + "/disk.qcow2"}, target, func(f float64) {
		seen = append(seen, f)
	}))
	checkDisk(t, target.Disk, raw)
	if len(seen) < 5 || seen[len(seen)-1] != 1 {
		t.Fatalf("progress %v: want at least 5 steps ending at 1", seen)
	}
	for i := 1; i < len(seen); i++ {
		if seen[i] <= seen[i-1] || seen[i] > 1 {
			t.Fatalf("progress not increasing within 0..1: %v", seen)
		}
	}
}

// TestQcow2StreamedFewRequests: a 96 MiB qcow2 of random data comes in a few range requests of
// growing size, each byte once (read ahead and kept until it is read, not fetched twice).
func TestQcow2StreamedFewRequests(t *testing.T) {
	dir := t.TempDir()
	raw := make([]byte, 96<<20)
	rand.Read(raw)
	testutil.Must(t, os.WriteFile(filepath.Join(dir, "a.raw"), raw, 0o644))
	run(t, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", filepath.Join(dir, "a.raw"), filepath.Join(dir, "a.qcow2"))
	img, err := os.ReadFile(filepath.Join(dir, "a.qcow2"))
	testutil.Must(t, err)
	s := newRangeServer(img, `"v1"`)
	url := serveHandler(t, s)
	target := newTarget(t, t.TempDir(), 128<<20)
	testutil.Must(t, newImporter().Fetch(context.Background(), importer.Request{URL: url + "/disk.qcow2"}, target, nil))
	got, err := os.ReadFile(target.Disk)
	testutil.Must(t, err)
	if !bytes.Equal(got[:len(raw)], raw) {
		t.Fatal("disk.img does not hold the image")
	}
	ranges := rangeRequests(s)
	if len(ranges) > 12 {
		t.Fatalf("%d range requests for a %d-byte image: %v", len(ranges), len(img), ranges)
	}
	// The first GET is closed after 2 MiB; the socket buffers may hold a few MiB more.
	if sent := s.served.Load(); sent > int64(len(img))+(8<<20) {
		t.Fatalf("server sent %d bytes for a %d-byte image: %v", sent, len(img), ranges)
	}
	t.Logf("%d range requests, %d bytes sent for %d: %v", len(ranges), s.served.Load(), len(img), ranges)
}
