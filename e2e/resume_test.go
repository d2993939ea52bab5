//go:build e2e

package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	v1alpha1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// TestStorageImportResumesAfterDriverRestart imports a 112 MiB raw image from a slow server and
// deletes the node's slimvirt pod (the CSI driver with it) half way: the new driver continues
// the import with a Range request from where the old one had made its bytes durable, the
// DataVolume succeeds with its checksum verified, and the server sent far less than twice the
// image.
func TestStorageImportResumesAfterDriverRestart(t *testing.T) {
	storageNamespace(t)
	const size = 112 << 20 // under the DataVolume's 128Mi
	raw, err := os.ReadFile("../_output/guest/disk.raw")
	if err != nil {
		t.Fatalf("the test guest is needed (make guest): %v", err)
	}
	img := make([]byte, size)
	copy(img, raw)
	for i := len(raw); i < size; i += 4096 {
		copy(img[i:], fmt.Sprintf("block %d of the resumed import", i/4096))
	}
	sum := sha256.Sum256(img)
	srv := &slowServer{img: img, rate: 6 << 20, modified: time.Now().Add(-time.Hour)}
	url := srv.serve(t)

	importDV(t, "resumed", url+"/disk.img", hex.EncodeToString(sum[:]), true)
	eventually(t, 2*time.Minute, "the server to send 80 MiB", func() (bool, error) {
		return srv.sentBytes() >= 80<<20, fmt.Errorf("sent %d MiB", srv.sentBytes()>>20)
	})
	pod := strings.TrimSpace(mustKubectl(t, "-n", "slimvirt", "get", "pod", "-l", "app.kubernetes.io/component=node", "-o", "jsonpath={.items[0].metadata.name}"))
	killedAt := srv.sentBytes()
	mustKubectl(t, "-n", "slimvirt", "delete", "pod", pod, "--wait=false")
	dv := waitDV(t, "resumed", v1alpha1.DataVolumeSucceeded, 5*time.Minute)
	ranges, sent := srv.rangesAsked(), srv.sentBytes()
	t.Logf("killed after %d MiB; Range headers asked %q; %d MiB sent in all for a %d MiB image; DataVolume %s",
		killedAt>>20, ranges, sent>>20, size>>20, dv.Status.Phase)
	resumed := false
	for _, r := range ranges {
		resumed = resumed || strings.HasPrefix(r, "bytes=") && !strings.HasPrefix(r, "bytes=0-")
	}
	if !resumed {
		t.Errorf("no request asked for the rest of the image after the restart: Range headers %q", ranges)
	}
	if sent >= size+killedAt {
		t.Errorf("the server sent %d MiB for a %d MiB image killed at %d MiB: the import started over", sent>>20, size>>20, killedAt>>20)
	}
	out := runVolumePod(t, "resumed-sum", "resumed", `echo "sum $(head -c `+fmt.Sprint(size)+` /vol/disk.img | sha256sum | cut -d' ' -f1)"`)
	if got := field(t, out, "sum"); got != hex.EncodeToString(sum[:]) {
		t.Errorf("disk.img's first %d bytes hash to %s, the image to %x", size, got, sum)
	}
}

// slowServer serves one image at a bounded rate with a validator, answering Range requests
// (http.ServeContent), and counts what it sent and the ranges it was asked.
type slowServer struct {
	img      []byte
	rate     int // bytes per second
	modified time.Time

	mu     sync.Mutex
	sent   int64
	ranges []string
}

func (s *slowServer) sentBytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sent
}

func (s *slowServer) rangesAsked() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.ranges...)
}

func (s *slowServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	if r.Method == http.MethodGet {
		s.ranges = append(s.ranges, r.Header.Get("Range"))
	}
	s.mu.Unlock()
	w.Header().Set("ETag", `"resume-test-image"`)
	http.ServeContent(&slowWriter{ResponseWriter: w, s: s}, r, "disk.img", s.modified, bytes.NewReader(s.img))
}

type slowWriter struct {
	http.ResponseWriter
	s *slowServer
}

func (w *slowWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		chunk := min(len(p), 256<<10)
		m, err := w.ResponseWriter.Write(p[:chunk])
		n += m
		w.s.mu.Lock()
		w.s.sent += int64(m)
		w.s.mu.Unlock()
		if err != nil {
			return n, err
		}
		p = p[chunk:]
		time.Sleep(time.Duration(chunk) * time.Second / time.Duration(w.s.rate))
	}
	return n, nil
}

// serve listens in the image server's namespace (see serveImages) and returns the base URL.
func (s *slowServer) serve(t *testing.T) string {
	t.Helper()
	serveImages(t, t.TempDir()) // makes the namespace and its link to the node
	var ln net.Listener
	err := ns.WithNetNSPath("/var/run/netns/"+imagesNetns, func(ns.NetNS) error {
		var err error
		ln, err = net.Listen("tcp", imagesIP+":0")
		return err
	})
	if err != nil {
		t.Fatalf("listen in %s: %v", imagesNetns, err)
	}
	hs := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })
	return "http://" + ln.Addr().String()
}
