package driver_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/slimvirt/slimvirt/csi/claim"
	"github.com/slimvirt/slimvirt/csi/driver"
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
