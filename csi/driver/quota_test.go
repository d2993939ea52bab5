//go:build guestkernel

package driver_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/slimvirt/slimvirt/csi/claim"
	"github.com/slimvirt/slimvirt/csi/driver"
	"github.com/slimvirt/slimvirt/csi/loopfs"
	"github.com/slimvirt/slimvirt/csi/quota"
	"github.com/slimvirt/slimvirt/internal/testutil"
)

// onPool starts a driver whose pool is the directory pool.
func onPool(pool string) func(*driver.Config) {
	return func(c *driver.Config) { c.Pools = []driver.Pool{{Name: "default", Dir: pool}} }
}

// TestRequireQuota: with --require-quota a pool without project quotas stops the driver from
// starting, and the error names the pool.
func TestRequireQuota(t *testing.T) {
	pool := filepath.Join(loopfs.Make(t, "xfs", false), "pool")
	_, err := driver.New(driver.Config{Endpoint: "unix:///nonexistent", NodeID: "n", StateDir: t.TempDir(),
		Pools: []driver.Pool{{Name: "slow", Dir: pool}}, RequireQuota: true})
	if !errors.Is(err, quota.ErrUnsupported) || !strings.Contains(err.Error(), "pool slow") {
		t.Fatalf("got %v; want a start-up error naming pool slow", err)
	}
}

// writeDisk writes every byte of a disk.img, 64 KiB at a time in random order, as a guest
// filling its disk would (without CAP_SYS_RESOURCE, which would pass the limit).
func writeDisk(path string, size int64) error {
	return loopfs.AsPod(func() error {
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		buf := bytes.Repeat([]byte{0xa5}, 64<<10)
		for _, i := range rand.Perm(int(size / int64(len(buf)))) {
			if _, err := f.WriteAt(buf, int64(i)*int64(len(buf))); err != nil {
				return fmt.Errorf("guest write at %d: %w", i*len(buf), err)
			}
		}
		return f.Sync()
	})
}

// TestQuotaPool: on XFS and ext4 with project quotas each filesystem volume has its own
// project, from 1<<30 up; a guest writes every byte of its disk.img, a pod writing other
// files beyond the size gets EDQUOT; capacity counts the volume's limit; stats show the
// project; expansion raises the limit and deletion removes it. Clones are charged to their
// own project; block volumes get none.
func TestQuotaPool(t *testing.T) {
	for _, kind := range loopfs.Kinds {
		t.Run(kind, func(t *testing.T) {
			pool := filepath.Join(loopfs.Make(t, kind, true), "pool")
			h := start(t, t.TempDir(), onPool(pool))
			ctx := context.Background()
			capacity := func() int64 {
				r, err := h.ctrl.GetCapacity(ctx, &csi.GetCapacityRequest{})
				testutil.Must(t, err)
				return r.AvailableCapacity
			}
			const size = 64 << 20
			before := capacity()
			t0 := time.Now()
			id := mountVolume(t, h, "q", size)
			withQuota := time.Since(t0)
			v, err := h.drv.Volume(id)
			testutil.Must(t, err)
			if v.Project < 1<<30 {
				t.Fatalf("volume project %d, want one from 1<<30", v.Project)
			}
			if got, err := quota.Project(v.Dir); err != nil || got != v.Project {
				t.Fatalf("directory project %d %v, want %d", got, err, v.Project)
			}
			limit := quota.LimitFor(size)
			if u, err := quota.Get(v.Dir, v.Project); err != nil || u.Limit != limit {
				t.Fatalf("limit %+v %v, want %+v", u, err, limit)
			}
			if took := before - capacity(); took < limit.Bytes-1<<20 || took > limit.Bytes+2<<20 {
				t.Fatalf("a %d-byte volume took %d bytes of capacity, want about its limit %d", size, took, limit.Bytes)
			}

			testutil.Must(t, writeDisk(filepath.Join(v.Dir, "disk.img"), size))
			n, err := loopfs.FillAsPod(filepath.Join(v.Dir, "extra"), 2*quota.Margin(size))
			if !errors.Is(err, syscall.EDQUOT) && !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("a pod wrote %d bytes beyond a full disk: %v", n, err)
			}

			target := filepath.Join(t.TempDir(), "target")
			_, err = h.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: id, TargetPath: target, VolumeCapability: mountCap()[0]})
			testutil.Must(t, err)
			st, err := h.node.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: target})
			testutil.Must(t, err)
			if b, i := st.Usage[0], st.Usage[1]; b.Total != limit.Bytes || b.Used < size || i.Total != limit.Inodes || i.Used < 2 {
				t.Fatalf("stats %v, want the project's limit %+v and usage", st.Usage, limit)
			}
			_, err = h.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target})
			testutil.Must(t, err)
			testutil.Must(t, os.Remove(filepath.Join(v.Dir, "extra")))

			clone := createVolume(t, h, cloneReq("q-clone", id, size))
			if c := waitContent(t, h, clone); c.Phase != claim.PhaseReady {
				t.Fatalf("clone ended %s: %s", c.Phase, c.Message)
			}
			cv, err := h.drv.Volume(clone)
			testutil.Must(t, err)
			if u, err := quota.Get(cv.Dir, cv.Project); err != nil || cv.Project == v.Project || u.UsedBytes < size {
				t.Fatalf("clone project %d (source %d) holds %+v %v; want its own, charged with the copy", cv.Project, v.Project, u, err)
			}

			_, err = h.ctrl.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: id, CapacityRange: &csi.CapacityRange{RequiredBytes: size + 16<<20}})
			testutil.Must(t, err)
			if u, _ := quota.Get(v.Dir, v.Project); u.Limit != quota.LimitFor(size+16<<20) {
				t.Fatalf("after expansion the limit is %+v", u.Limit)
			}
			if n, err := loopfs.FillAsPod(filepath.Join(v.Dir, "grown"), 16<<20); err != nil {
				t.Fatalf("after expansion a pod wrote only %d bytes: %v", n, err)
			}

			t0 = time.Now()
			blk := createVolume(t, h, &csi.CreateVolumeRequest{Name: "b", VolumeCapabilities: blockCap(), CapacityRange: &csi.CapacityRange{RequiredBytes: size}})
			t.Logf("CreateVolume: %v with a project quota, %v without (block)", withQuota, time.Since(t0))
			if bv, _ := h.drv.Volume(blk); bv.Project != 0 {
				t.Fatalf("block volume has project %d", bv.Project)
			}

			_, err = h.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id})
			testutil.Must(t, err)
			if u, err := quota.Get(pool, v.Project); err != nil || u.Limit != (quota.Limit{}) {
				t.Fatalf("deleted volume's project still limited: %+v %v", u, err)
			}
		})
	}
}
