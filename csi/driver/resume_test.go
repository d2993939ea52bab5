package driver_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/slimvirt/slimvirt/csi/claim"
	"github.com/slimvirt/slimvirt/csi/driver"
	"github.com/slimvirt/slimvirt/csi/egress"
	"github.com/slimvirt/slimvirt/csi/importer"
	"github.com/slimvirt/slimvirt/csi/state"
	"github.com/slimvirt/slimvirt/internal/testutil"
)

// resumingFiller stands for an importer that says whether it resumes a volume's import.
type resumingFiller struct {
	importFunc
	resumes bool
}

func (f resumingFiller) Resumes(state.Volume) bool { return f.resumes }

// TestRestartKeepsDiskForResumedImport: after a restart, an import the filler resumes finds
// disk.img as the killed run left it (and the rest of the tree emptied); one it does not
// resume finds it reset to holes.
func TestRestartKeepsDiskForResumedImport(t *testing.T) {
	marker := []byte("written before the restart")
	for _, resumes := range []bool{true, false} {
		t.Run(map[bool]string{true: "resumed", false: "started over"}[resumes], func(t *testing.T) {
			dir := t.TempDir()
			src := claims{&claim.Source{Import: &claim.Import{URL: "http://images.example/disk.raw"}}}
			h := start(t, dir, func(c *driver.Config) {
				c.Cluster = src
				c.Filler = importFunc(func(ctx context.Context, v state.Volume) error {
					f, err := os.OpenFile(filepath.Join(v.Dir, "disk.img"), os.O_RDWR, 0)
					if err != nil {
						return err
					}
					_, err = f.WriteAt(marker, 1<<20)
					_ = f.Close()
					if err != nil {
						return err
					}
					<-ctx.Done() // the driver stops mid-import
					return ctx.Err()
				})
			})
			id := createVolume(t, h, claimed("pvc-resume"))
			disk := diskOf(h, id)
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				if data, _ := os.ReadFile(disk); bytes.Contains(data, marker) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the first run never wrote")
				}
			}
			testutil.Must(t, os.WriteFile(filepath.Join(h.pool, id, "stray"), []byte("x"), 0o644))
			h.stop()

			found := make(chan []byte, 1)
			h = start(t, dir, func(c *driver.Config) {
				c.Cluster = src
				c.Filler = resumingFiller{resumes: resumes, importFunc: func(ctx context.Context, v state.Volume) error {
					data, err := os.ReadFile(filepath.Join(v.Dir, "disk.img"))
					found <- data
					return err
				}}
			})
			if c := waitContent(t, h, id); c.Phase != claim.PhaseReady {
				t.Fatalf("import ended %s: %s", c.Phase, c.Message)
			}
			data := <-found
			if got := bytes.Contains(data, marker); got != resumes {
				t.Fatalf("after the restart disk.img holds the earlier bytes: %v, want %v", got, resumes)
			}
			if _, err := os.Stat(filepath.Join(h.pool, id, "stray")); !os.IsNotExist(err) {
				t.Fatalf("a file beside disk.img survived the restarted fill: %v", err)
			}
		})
	}
}

// TestRestartResumesImport: the real importer behind the driver, a raw image on a local
// server that stalls half-way through its first answer; the driver stops mid-import and starts
// again over the same state. The second driver asks for the rest only (Range from the byte
// the record vouches for) and the volume ends Ready holding the image.
func TestRestartResumesImport(t *testing.T) {
	img := make([]byte, 12<<20)
	_, _ = rand.Read(img)
	var mu sync.Mutex
	var ranges []string
	stalled := false
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		ranges = append(ranges, r.Header.Get("Range"))
		first := !stalled
		stalled = true
		mu.Unlock()
		w.Header().Set("ETag", `"img-1"`)
		if first {
			w.Header().Set("Accept-Ranges", "bytes")
			w.Header().Set("Content-Length", strconv.Itoa(len(img)))
			_, _ = w.Write(img[:6<<20])
			w.(http.Flusher).Flush()
			<-r.Context().Done() // the importer is gone
			return
		}
		http.ServeContent(w, r, "disk.raw", time.Unix(1e9, 0), bytes.NewReader(img))
	}))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	opts := func(c *driver.Config) {
		c.Cluster = claims{&claim.Source{Import: &claim.Import{URL: srv.URL + "/disk.raw"}}}
		c.Filler = importer.New(importer.Config{Checkpoint: 1 << 20, Backoff: 10 * time.Millisecond,
			Egress: egress.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}, Log: slog.New(slog.DiscardHandler)})
	}
	h := start(t, dir, opts)
	req := claimed("pvc-resumed-import")
	req.CapacityRange.RequiredBytes = 16 << 20
	id := createVolume(t, h, req)
	v, err := h.drv.Volume(id)
	testutil.Must(t, err)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if data, err := os.ReadFile(importer.RecordPath(v)); err == nil && bytes.Contains(data, []byte(`"offset":4194304`)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no resume record at 4 MiB")
		}
	}
	h.stop()

	h = start(t, dir, opts)
	if c := waitContent(t, h, id); c.Phase != claim.PhaseReady {
		t.Fatalf("import ended %s: %s", c.Phase, c.Message)
	}
	mu.Lock()
	got := fmt.Sprint(ranges)
	mu.Unlock()
	if want := fmt.Sprint([]string{"", "bytes=4194304-"}); got != want {
		t.Fatalf("requests %s, want %s", got, want)
	}
	disk, err := os.ReadFile(diskOf(h, id))
	testutil.Must(t, err)
	if !bytes.Equal(disk[:len(img)], img) || !bytes.Equal(disk[len(img):], make([]byte, len(disk)-len(img))) {
		t.Fatal("disk.img does not hold the image")
	}
	if _, err := os.Stat(importer.RecordPath(v)); !os.IsNotExist(err) {
		t.Fatalf("resume record left after the import: %v", err)
	}
}
