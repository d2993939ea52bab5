package driver_test

import (
	"context"
	"crypto/rand"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/slimvirt/slimvirt/csi/claim"
	"github.com/slimvirt/slimvirt/csi/diskimg"
	"github.com/slimvirt/slimvirt/csi/driver"
	"github.com/slimvirt/slimvirt/csi/state"
	"github.com/slimvirt/slimvirt/internal/qcow2"
	"github.com/slimvirt/slimvirt/internal/testutil"
)

type harness struct {
	dir  string
	pool string
	drv  *driver.Driver
	ctrl csi.ControllerClient
	node csi.NodeClient
	stop func()
}

// start runs a driver over dir (state and pool inside it) and returns clients to it. Starting
// it again over the same dir is a driver restart.
func start(t *testing.T, dir string, opts ...func(*driver.Config)) *harness {
	t.Helper()
	sock := filepath.Join(dir, "csi.sock")
	os.Remove(sock)
	pool := filepath.Join(dir, "pool")
	cfg := driver.Config{
		Endpoint: "unix://" + sock, NodeID: "node-a", StateDir: filepath.Join(dir, "state"),
		Pools:       []driver.Pool{{Name: "default", Dir: pool}},
		PublishWait: time.Second,
		Log:         slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	for _, o := range opts {
		o(&cfg)
	}
	d, err := driver.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Serve(ctx, lis) }()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{dir: dir, pool: pool, drv: d, ctrl: csi.NewControllerClient(conn), node: csi.NewNodeClient(conn)}
	stopped := false
	h.stop = func() {
		if stopped {
			return
		}
		stopped = true
		conn.Close()
		cancel()
		<-done
	}
	t.Cleanup(h.stop)
	return h
}

func mountCap() []*csi.VolumeCapability {
	return []*csi.VolumeCapability{{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}}
}

func blockCap() []*csi.VolumeCapability {
	return []*csi.VolumeCapability{{
		AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}}
}

func diskOf(h *harness, id string) string { return filepath.Join(h.pool, id, diskimg.Name) }

// TestDiskSizeIsWhatWasAsked: disk.img is exactly the requested size (rounded up to a sector
// only), not less because of filesystem overhead and not more.
func TestDiskSizeIsWhatWasAsked(t *testing.T) {
	h := start(t, t.TempDir())
	tests := []struct {
		name      string
		requested int64
		want      int64
	}{
		{"6Gi", 6 << 30, 6 << 30},
		{"512Mi", 512 << 20, 512 << 20},
		{"1G decimal", 1_000_000_000, 1_000_000_000},
		{"odd bytes round up to a sector", 1000, 1024},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := h.ctrl.CreateVolume(context.Background(), &csi.CreateVolumeRequest{
				Name: "size-" + tt.name, VolumeCapabilities: mountCap(),
				CapacityRange: &csi.CapacityRange{RequiredBytes: tt.requested},
			})
			if err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(diskOf(h, resp.Volume.VolumeId))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Size() != tt.want || resp.Volume.CapacityBytes != tt.want {
				t.Fatalf("disk.img %d bytes, capacity %d; want %d", fi.Size(), resp.Volume.CapacityBytes, tt.want)
			}
			alloc, _ := diskimg.Allocated(diskOf(h, resp.Volume.VolumeId))
			if alloc > 1<<20 {
				t.Fatalf("a new disk.img takes %d bytes; it must be sparse", alloc)
			}
			entries, _ := os.ReadDir(filepath.Dir(diskOf(h, resp.Volume.VolumeId)))
			if len(entries) != 1 {
				t.Fatalf("volume dir holds %d entries, want disk.img only", len(entries))
			}
		})
	}
}

// TestRestart: volumes, publications and sizes survive a driver restart, and the restarted
// driver answers repeated calls idempotently.
func TestRestart(t *testing.T) {
	testutil.RequireRoot(t, "publishing needs bind mounts")
	dir := t.TempDir()
	ctx := context.Background()
	h := start(t, dir)
	vol, err := h.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-1", VolumeCapabilities: mountCap(),
		CapacityRange: &csi.CapacityRange{RequiredBytes: 8 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	id := vol.Volume.VolumeId
	target := filepath.Join(dir, "pods", "target")
	if _, err := h.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: id, TargetPath: target, VolumeCapability: mountCap()[0]}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.ctrl.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: id, CapacityRange: &csi.CapacityRange{RequiredBytes: 16 << 20}}); err != nil {
		t.Fatal(err)
	}
	h.stop()

	h = start(t, dir)
	again, err := h.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-1", VolumeCapabilities: mountCap(),
		CapacityRange: &csi.CapacityRange{RequiredBytes: 8 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	if again.Volume.VolumeId != id || again.Volume.CapacityBytes != 16<<20 {
		t.Fatalf("after restart CreateVolume gave %s/%d, want %s/%d", again.Volume.VolumeId, again.Volume.CapacityBytes, id, 16<<20)
	}
	fi, err := os.Stat(filepath.Join(target, diskimg.Name))
	if err != nil || fi.Size() != 16<<20 {
		t.Fatalf("published disk.img after expansion: %v, %v", fi, err)
	}
	stats, err := h.node.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: target})
	if err != nil {
		t.Fatalf("the restarted driver forgot the publication: %v", err)
	}
	if stats.Usage[0].Total != 16<<20 {
		t.Fatalf("stats total %d", stats.Usage[0].Total)
	}
	if _, err := h.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(target); !os.IsNotExist(err) {
		t.Fatalf("target left after unpublish: %v", err)
	}
	if _, err := h.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(h.pool, id)); !os.IsNotExist(err) {
		t.Fatalf("volume dir left after delete: %v", err)
	}
}

// TestCloneAndBlock: a clone has the source's bytes, stays sparse, and a block volume cloned
// from it shows the same bytes through its loop device; growing the block volume grows the
// device.
func TestCloneAndBlock(t *testing.T) {
	testutil.RequireRoot(t, "loop devices need root")
	dir := t.TempDir()
	ctx := context.Background()
	h := start(t, dir)
	src, err := h.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "src", VolumeCapabilities: mountCap(),
		CapacityRange: &csi.CapacityRange{RequiredBytes: 64 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 1<<20)
	rand.Read(data)
	f, err := os.OpenFile(diskOf(h, src.Volume.VolumeId), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(data, 10<<20)
	f.Close()

	clone, err := h.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "clone", VolumeCapabilities: blockCap(),
		CapacityRange:       &csi.CapacityRange{RequiredBytes: 64 << 20},
		VolumeContentSource: &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: src.Volume.VolumeId}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	id := clone.Volume.VolumeId
	target := filepath.Join(dir, "pods", "dev")
	// Publishing waits for the clone to finish.
	if _, err := h.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: id, TargetPath: target, VolumeCapability: blockCap()[0]}); err != nil {
		t.Fatal(err)
	}
	alloc, _ := diskimg.Allocated(diskOf(h, id))
	if alloc > 4<<20 {
		t.Fatalf("clone allocates %d bytes for 1 MiB of data", alloc)
	}
	dev, err := os.Open(target)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	if _, err := dev.ReadAt(got, 10<<20); err != nil {
		t.Fatal(err)
	}
	dev.Close()
	if string(got) != string(data) {
		t.Fatal("the block clone does not hold the source's data")
	}
	if _, err := h.ctrl.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: id, CapacityRange: &csi.CapacityRange{RequiredBytes: 96 << 20}}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.node.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{VolumeId: id, VolumePath: target}); err != nil {
		t.Fatal(err)
	}
	if size := deviceSize(t, target); size != 96<<20 {
		t.Fatalf("device is %d bytes after expansion, want %d", size, 96<<20)
	}
	// A volume still in use is not deleted.
	if _, err := h.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("deleting a published volume: %v", err)
	}
	if _, err := h.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id}); err != nil {
		t.Fatal(err)
	}
}

func deviceSize(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n, err := f.Seek(0, 2)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestCapacityCountsHoles: a pool's capacity goes down by a volume's full size when it is
// made, although the sparse file takes almost nothing yet, and a volume larger than what is
// left is refused.
func TestCapacityCountsHoles(t *testing.T) {
	h := start(t, t.TempDir())
	ctx := context.Background()
	before, err := h.ctrl.GetCapacity(ctx, &csi.GetCapacityRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "big", VolumeCapabilities: mountCap(),
		CapacityRange: &csi.CapacityRange{RequiredBytes: 1 << 30}}); err != nil {
		t.Fatal(err)
	}
	after, err := h.ctrl.GetCapacity(ctx, &csi.GetCapacityRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if d := before.AvailableCapacity - after.AvailableCapacity; d < 1<<30-(64<<20) || d > 1<<30+(64<<20) {
		t.Fatalf("capacity went down by %d bytes for a 1 GiB volume", d)
	}
	_, err = h.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "too-big", VolumeCapabilities: mountCap(),
		CapacityRange: &csi.CapacityRange{RequiredBytes: after.AvailableCapacity + 1<<30}})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("a volume larger than the pool: %v", err)
	}
	other, err := h.ctrl.GetCapacity(ctx, &csi.GetCapacityRequest{AccessibleTopology: &csi.Topology{Segments: map[string]string{driver.TopologyKey: "node-b"}}})
	if err != nil || other.AvailableCapacity != 0 {
		t.Fatalf("capacity for another node: %v, %v", other, err)
	}
}

// TestNodeExpansionOnly: with controller expansion turned off (multi-node clusters), the
// resizer sees no EXPAND_VOLUME and kubelet's NodeExpandVolume on the volume's node grows
// disk.img.
func TestNodeExpansionOnly(t *testing.T) {
	testutil.RequireRoot(t, "publishing needs bind mounts")
	dir := t.TempDir()
	ctx := context.Background()
	h := start(t, dir, func(c *driver.Config) { c.NodeExpansionOnly = true })
	caps, err := h.ctrl.ControllerGetCapabilities(ctx, &csi.ControllerGetCapabilitiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range caps.Capabilities {
		if c.GetRpc().GetType() == csi.ControllerServiceCapability_RPC_EXPAND_VOLUME {
			t.Fatal("controller expansion advertised")
		}
	}
	vol, err := h.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc", VolumeCapabilities: mountCap(),
		CapacityRange: &csi.CapacityRange{RequiredBytes: 8 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	id := vol.Volume.VolumeId
	target := filepath.Join(dir, "pods", "t")
	if _, err := h.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: id, TargetPath: target, VolumeCapability: mountCap()[0]}); err != nil {
		t.Fatal(err)
	}
	defer h.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target})
	resp, err := h.node.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{VolumeId: id, VolumePath: target,
		CapacityRange: &csi.CapacityRange{RequiredBytes: 24 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(target, diskimg.Name))
	if err != nil || fi.Size() != 24<<20 || resp.CapacityBytes != 24<<20 {
		t.Fatalf("after node expansion: %v %v, capacity %d", fi, err, resp.CapacityBytes)
	}
}

// TestCapacityReservesImportScratch: while an import runs, the pool's capacity also holds the
// most a qcow2 image of the volume's size may stage in the pool, and gives it back when the
// import ends.
func TestCapacityReservesImportScratch(t *testing.T) {
	release := make(chan struct{})
	h := start(t, t.TempDir(), func(c *driver.Config) {
		c.Cluster = claims{&claim.Source{Import: &claim.Import{URL: "http://images.example/disk.qcow2"}}}
		c.Filler = importFunc(func(ctx context.Context, _ state.Volume) error {
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	})
	ctx := context.Background()
	capacity := func() int64 {
		c, err := h.ctrl.GetCapacity(ctx, &csi.GetCapacityRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return c.AvailableCapacity
	}
	before := capacity()
	req := claimed("pvc-importing")
	req.CapacityRange.RequiredBytes = 256 << 20
	id := createVolume(t, h, req)
	during := capacity()
	want := 256<<20 + qcow2.MaxFileSizeFor(256<<20)
	if d := before - during; d < want-(16<<20) || d > want+(16<<20) {
		t.Fatalf("capacity went down by %d bytes while a 256 MiB volume imports, want about %d (volume + staging bound)", d, want)
	}
	close(release)
	if c := waitContent(t, h, id); c.Phase != claim.PhaseReady {
		t.Fatalf("import ended %s: %s", c.Phase, c.Message)
	}
	if d := before - capacity(); d < 256<<20-(16<<20) || d > 256<<20+(16<<20) {
		t.Fatalf("after the import capacity is down by %d bytes, want the volume's 256 MiB only", d)
	}
}
