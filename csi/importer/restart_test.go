package importer_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/slimvirt/slimvirt/csi/importer"
	"github.com/slimvirt/slimvirt/internal/testutil"
)

// rangeServer serves one image with Range support (http.ServeContent). The first plain GET can
// be made to stall after stallAt bytes, as a download does when its importer is killed; it
// records the Range header of every request and counts the body bytes it sends.
type rangeServer struct {
	mu      sync.Mutex
	data    []byte
	etag    string // empty: the image carries Last-Modified only
	mod     time.Time
	stallAt int64
	stalled chan struct{}
	// ranged, when set, answers requests that carry Range instead of ServeContent (hostile
	// servers); it returns false to let ServeContent answer.
	ranged func(w http.ResponseWriter, r *http.Request, data []byte) bool
	ranges []string
	served atomic.Int64
}

func newRangeServer(data []byte, etag string) *rangeServer {
	return &rangeServer{data: data, etag: etag, mod: time.Now().Add(-time.Hour).Truncate(time.Second), stalled: make(chan struct{})}
}

// set replaces the image, as a server whose file changed does.
func (s *rangeServer) set(data []byte, etag string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data, s.etag, s.mod = data, etag, s.mod.Add(time.Minute)
}

// requests returns the Range header of each request so far ("" for a plain GET).
func (s *rangeServer) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.ranges...)
}

func (s *rangeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	data, etag, mod := s.data, s.etag, s.mod
	s.ranges = append(s.ranges, r.Header.Get("Range"))
	stall := s.stallAt
	if r.Header.Get("Range") == "" {
		s.stallAt = 0 // only the first plain GET stalls
	}
	s.mu.Unlock()
	cw := &countingWriter{ResponseWriter: w, n: &s.served}
	if etag != "" {
		w.Header().Set("ETag", etag)
	}
	if r.Header.Get("Range") != "" && s.ranged != nil && s.ranged(cw, r, data) {
		return
	}
	if stall > 0 && r.Header.Get("Range") == "" {
		w.Header().Set("Accept-Ranges", "bytes")
		w.Header().Set("Last-Modified", mod.UTC().Format(http.TimeFormat))
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		_, _ = cw.Write(data[:stall])
		cw.Flush()
		close(s.stalled)
		<-r.Context().Done() // the importer is gone
		return
	}
	http.ServeContent(cw, r, "disk.raw", mod, bytes.NewReader(data))
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n.Add(int64(n))
	return n, err
}

func (c *countingWriter) Flush() { c.ResponseWriter.(http.Flusher).Flush() }

// stallingImport makes a volume in a new directory and a server of image that stalls after
// 6 MiB of the first plain GET; it returns the directory, the server and the image's URL.
func stallingImport(t *testing.T, image []byte, etag string) (string, *rangeServer, string) {
	t.Helper()
	dir := t.TempDir()
	newTarget(t, dir, volSize)
	s := newRangeServer(image, etag)
	s.stallAt = 6 << 20
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return dir, s, ts.URL + "/disk.raw"
}

// resumeTarget is the target of an import into dir that keeps a resume record, checkpointing
// every MiB.
func resumeTarget(dir string) importer.Target {
	return importer.Target{Disk: filepath.Join(dir, "vol", "disk.img"), Size: volSize, Scratch: filepath.Join(dir, ".scratch", "vol.qcow2"),
		Record: filepath.Join(dir, ".scratch", "vol.resume"), Owner: "vol@test", CheckpointEvery: 1 << 20}
}

// recordOffset reads the offset a resume record vouches for; 0 when there is none.
func recordOffset(t testing.TB, path string) int64 {
	t.Helper()
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return 0
	}
	testutil.Must(t, err)
	var rec struct {
		Offset int64 `json:"offset"`
	}
	testutil.Must(t, json.Unmarshal(data, &rec))
	return rec.Offset
}

func checksumOf(algo string, data []byte) string {
	h := map[string]func() hash.Hash{"md5": md5.New, "sha1": sha1.New, "sha256": sha256.New, "sha512": sha512.New}[algo]()
	h.Write(data)
	return algo + ":" + hex.EncodeToString(h.Sum(nil))
}

// killMidImport runs an import of url into t in a child process, waits until the server
// stalled and the child's resume record vouches for want bytes, and kills the child with
// SIGKILL. It returns the offset the record vouches for then.
func killMidImport(tb testing.TB, s *rangeServer, t importer.Target, url, checksum string, want int64) int64 {
	tb.Helper()
	spec, err := json.Marshal(childImport{Target: t, URL: url, Checksum: checksum})
	testutil.Must(tb, err)
	child := exec.Command(os.Args[0], "-test.run=^TestResumeChild$")
	child.Env = append(os.Environ(), "SLIMVIRT_RESUME_CHILD="+string(spec))
	child.Stdout, child.Stderr = os.Stderr, os.Stderr
	testutil.Must(tb, child.Start())
	exited := make(chan error, 1)
	go func() { exited <- child.Wait() }()
	defer func() {
		_ = child.Process.Kill() // already killed when the test got that far
		if err := <-exited; err != nil {
			tb.Logf("importing child: %v", err)
		}
	}()
	select {
	case <-s.stalled:
	case err := <-exited:
		tb.Fatalf("the importing child ended before the server stalled: %v", err)
	case <-time.After(120 * time.Second):
		tb.Fatal("the server never stalled")
	}
	for deadline := time.Now().Add(60 * time.Second); recordOffset(tb, t.Record) < want; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			tb.Fatalf("the child's resume record vouches for %d bytes, never %d", recordOffset(tb, t.Record), want)
		}
	}
	testutil.Must(tb, child.Process.Signal(syscall.SIGKILL))
	if err := <-exited; err == nil {
		tb.Fatal("the importing child exited cleanly although it was killed")
	}
	exited <- nil
	return recordOffset(tb, t.Record)
}

// childImport is the import killMidImport hands its child.
type childImport struct {
	Target   importer.Target
	URL      string
	Checksum string
}

// TestResumeChild is the process killMidImport kills mid-import.
func TestResumeChild(t *testing.T) {
	spec := os.Getenv("SLIMVIRT_RESUME_CHILD")
	if spec == "" {
		return // only run as the child of killMidImport
	}
	var c childImport
	testutil.Must(t, json.Unmarshal([]byte(spec), &c))
	err := newImporter().Fetch(context.Background(), importer.Request{URL: c.URL, Checksum: c.Checksum}, c.Target, nil)
	t.Fatalf("the import was meant to be killed, it ended: %v", err)
}

// TestKilledImportResumes: an importer killed with SIGKILL half-way through a raw image is run
// again; it asks only for the rest (Range from the byte its record vouches for), the server
// sends only the rest, the disk ends byte-identical to the image and the checksum (each
// algorithm's saved state) still covers every byte. Validated by ETag and by Last-Modified.
func TestKilledImportResumes(t *testing.T) {
	_, raw := images(t)
	tests := []struct{ algo, etag string }{
		{"sha256", `"v1"`},
		{"sha512", `"v1"`},
		{"md5", ""},
		{"sha1", ""},
		{"", `"v1"`},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s etag=%q", tt.algo, tt.etag), func(t *testing.T) {
			dir, s, url := stallingImport(t, raw, tt.etag)
			checksum := ""
			if tt.algo != "" {
				checksum = checksumOf(tt.algo, raw)
			}
			// Killed with 6 MiB received: the record vouches for the 4 MiB written in full chunks.
			off := killMidImport(t, s, resumeTarget(dir), url, checksum, 4<<20)
			if off != 4<<20 {
				t.Fatalf("the killed import's record vouches for %d bytes, want %d", off, 4<<20)
			}
			before := s.served.Load()
			target := resumeTarget(dir)
			testutil.Must(t, newImporter().Fetch(context.Background(), importer.Request{URL: url, Checksum: checksum}, target, nil))
			reqs := s.requests()
			if want := []string{"", fmt.Sprintf("bytes=%d-", off)}; fmt.Sprint(reqs) != fmt.Sprint(want) {
				t.Fatalf("requests %q, want %q", reqs, want)
			}
			if got, want := s.served.Load()-before, int64(len(raw))-off; got != want {
				t.Fatalf("the second run fetched %d bytes, want the rest: %d", got, want)
			}
			checkDisk(t, target.Disk, raw)
			if _, err := os.Stat(target.Record); !os.IsNotExist(err) {
				t.Fatalf("resume record left after the import: %v", err)
			}
		})
	}
}

// TestKilledImportSourceChanged: the image changed on the server between the killed run and
// the next; the next run starts over from byte zero and ends with the new image, never a mix.
func TestKilledImportSourceChanged(t *testing.T) {
	_, raw := images(t)
	changed := append([]byte(nil), raw...)
	for i := range 4 << 20 {
		changed[i] ^= 0x5a
	}
	tests := []struct {
		name     string
		etag     string
		checksum func([]byte) string
		want     []string // Range headers of the second run
	}{
		{"new ETag, If-Range answered 200", `"v1"`, func([]byte) string { return "" }, []string{"bytes=4194304-"}},
		{"new Last-Modified, If-Range answered 200", "", func([]byte) string { return "" }, []string{"bytes=4194304-"}},
		{"new checksum asked for: record discarded", `"v1"`, func(b []byte) string { return checksumOf("sha256", b) }, []string{""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, s, url := stallingImport(t, raw, tt.etag)
			if off := killMidImport(t, s, resumeTarget(dir), url, tt.checksum(raw), 4<<20); off != 4<<20 {
				t.Fatalf("record vouches for %d bytes, want %d", off, 4<<20)
			}
			newEtag := ""
			if tt.etag != "" {
				newEtag = `"v2"`
			}
			s.set(changed, newEtag)
			before, n := s.served.Load(), len(s.requests())
			target := resumeTarget(dir)
			testutil.Must(t, newImporter().Fetch(context.Background(), importer.Request{URL: url, Checksum: tt.checksum(changed)}, target, nil))
			if got := s.requests()[n:]; fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("second run's requests %q, want %q", got, tt.want)
			}
			if got := s.served.Load() - before; got != int64(len(changed)) {
				t.Fatalf("the second run fetched %d bytes, want the whole new image: %d", got, len(changed))
			}
			checkDisk(t, target.Disk, changed)
		})
	}
}
