package driver_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/slimvirt/slimvirt/csi/claim"
	"github.com/slimvirt/slimvirt/csi/driver"
	"github.com/slimvirt/slimvirt/csi/state"
	"github.com/slimvirt/slimvirt/internal/testutil"
)

// A pod that mounts a filesystem volume owns what is in its directory: it can replace
// disk.img with a link to a node file or with a FIFO. These tests plant each in a volume and
// call the driver as kubelet and the sidecars would; the node file must come out unread and
// unchanged, and the calls must be refused with a message saying why.

const nodeMarker = "NODE-FILE-MARKER-5c1e"

// nodeFile writes a file outside the pool full of a marker, as a node's key or token would be.
func nodeFile(t *testing.T) (string, []byte) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "node-secret")
	content := bytes.Repeat([]byte(nodeMarker), (4<<20)/len(nodeMarker))
	if err := os.WriteFile(p, content, 0o600); err != nil {
		t.Fatal(err)
	}
	return p, content
}

func nodeFileIntact(t *testing.T, p string, content []byte) {
	t.Helper()
	got, err := os.ReadFile(p)
	if err != nil || !bytes.Equal(got, content) {
		t.Errorf("the node file changed: %d bytes (was %d), %v", len(got), len(content), err)
	}
}

type plant struct {
	name string
	// put replaces disk (a volume's disk.img) with something pointing at node.
	put func(t *testing.T, disk, node string)
}

var plants = []plant{
	{"symlink", func(t *testing.T, disk, node string) {
		testutil.Must(t, os.Remove(disk))
		testutil.Must(t, os.Symlink(node, disk))
	}},
	// The pool and the node file share a filesystem here, as a pool on the root filesystem
	// does. A pod cannot make this link itself (TestHostileHardLinkNeedsTheFilesystem).
	{"hard link", func(t *testing.T, disk, node string) {
		testutil.Must(t, os.Remove(disk))
		testutil.Must(t, os.Link(node, disk))
	}},
	{"fifo", func(t *testing.T, disk, node string) {
		testutil.Must(t, os.Remove(disk))
		testutil.Must(t, syscall.Mkfifo(disk, 0o600))
		// A driver stuck opening the FIFO would hold the test forever: let it go at the end.
		t.Cleanup(func() {
			if f, err := os.OpenFile(disk, os.O_RDWR, 0); err == nil {
				_ = f.Close()
			}
		})
	}},
}

func mountVolume(t *testing.T, h *harness, name string, size int64) string {
	t.Helper()
	return createVolume(t, h, &csi.CreateVolumeRequest{Name: name, VolumeCapabilities: mountCap(),
		CapacityRange: &csi.CapacityRange{RequiredBytes: size}})
}

func createVolume(t *testing.T, h *harness, req *csi.CreateVolumeRequest) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := h.ctrl.CreateVolume(ctx, req)
	if err != nil {
		t.Fatalf("create volume %s: %v", req.Name, err)
	}
	return resp.Volume.VolumeId
}

// refused asserts a call failed with FailedPrecondition and a message naming the volume,
// disk.img and the operation refused.
func refused(t *testing.T, err error, volume, op string) {
	t.Helper()
	msg := status.Convert(err).Message()
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(msg, "volume "+volume+": disk.img ") || !strings.Contains(msg, "refusing to "+op) {
		t.Errorf("got %v; want FailedPrecondition saying volume %s: disk.img ...; refusing to %s", err, volume, op)
	}
}

// waitContent waits until a volume's fill has ended and returns how it ended.
func waitContent(t *testing.T, h *harness, id string) claim.Content {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		v, err := h.drv.Volume(id)
		if err != nil {
			t.Fatal(err)
		}
		if v.Content.Phase != claim.PhasePopulating {
			return v.Content
		}
		if time.Now().After(deadline) {
			t.Fatalf("volume %s still %s after 30s", id, v.Content.Phase)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestHostileClone: a clone of a volume whose disk.img was replaced fails with the reason,
// and the new volume holds no byte of the node file.
func TestHostileClone(t *testing.T) {
	for _, p := range plants {
		t.Run(p.name, func(t *testing.T) {
			node, content := nodeFile(t)
			h := start(t, t.TempDir())
			src := mountVolume(t, h, "pvc-source", 8<<20)
			p.put(t, diskOf(h, src), node)
			id := createVolume(t, h, &csi.CreateVolumeRequest{Name: "pvc-clone", VolumeCapabilities: mountCap(),
				CapacityRange:       &csi.CapacityRange{RequiredBytes: 8 << 20},
				VolumeContentSource: &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: src}}},
			})
			c := waitContent(t, h, id)
			if c.Phase != claim.PhaseFailed || !strings.Contains(c.Message, "volume pvc-source: disk.img ") || !strings.Contains(c.Message, "refusing to clone") {
				t.Errorf("clone ended %s: %q; want Failed, refusing to clone pvc-source", c.Phase, c.Message)
			}
			if got, _ := os.ReadFile(diskOf(h, id)); bytes.Contains(got, []byte(nodeMarker)) {
				t.Error("the clone holds the node file's bytes")
			}
			nodeFileIntact(t, node, content)
		})
	}
}

// TestHostileCloneOfAGrownDisk: the owner of a volume can make its disk.img longer than the
// volume; a clone of it is refused rather than made larger than its own volume.
func TestHostileCloneOfAGrownDisk(t *testing.T) {
	h := start(t, t.TempDir())
	src := mountVolume(t, h, "pvc-source", 8<<20)
	testutil.Must(t, os.Truncate(diskOf(h, src), 1<<40))
	id := createVolume(t, h, &csi.CreateVolumeRequest{Name: "pvc-clone", VolumeCapabilities: mountCap(),
		CapacityRange:       &csi.CapacityRange{RequiredBytes: 8 << 20},
		VolumeContentSource: &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: src}}},
	})
	c := waitContent(t, h, id)
	if c.Phase != claim.PhaseFailed || !strings.Contains(c.Message, "larger than the clone's") {
		t.Errorf("clone ended %s: %q; want Failed, larger than the clone's", c.Phase, c.Message)
	}
	if fi, err := os.Stat(diskOf(h, id)); err != nil || fi.Size() != 8<<20 {
		t.Errorf("the clone's disk.img: %v, %v; want 8 MiB", fi, err)
	}
}

// TestHostileExpand: expanding a volume whose disk.img was replaced is refused, by the
// controller and by the node, and the node file keeps its size.
func TestHostileExpand(t *testing.T) {
	for _, p := range plants {
		t.Run(p.name, func(t *testing.T) {
			node, content := nodeFile(t)
			h := start(t, t.TempDir())
			id := mountVolume(t, h, "pvc-grown", 8<<20)
			p.put(t, diskOf(h, id), node)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := h.ctrl.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: id,
				CapacityRange: &csi.CapacityRange{RequiredBytes: 64 << 20}})
			refused(t, err, "pvc-grown", "expand")
			_, err = h.node.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{VolumeId: id, VolumePath: t.TempDir(),
				CapacityRange: &csi.CapacityRange{RequiredBytes: 64 << 20}})
			refused(t, err, "pvc-grown", "expand")
			nodeFileIntact(t, node, content)
			if v, _ := h.drv.Volume(id); v.Size != 8<<20 {
				t.Errorf("the volume's size became %d", v.Size)
			}
		})
	}
}

// claims is the driver's view of PVCs: every PVC asks for src.
type claims struct{ src *claim.Source }

func (c claims) ClaimSource(context.Context, string, string) (*claim.Source, error) {
	return c.src, nil
}
func (claims) ReportContent(context.Context, string, string, claim.Content) error { return nil }
func (claims) BasicAuth(context.Context, string, string) (string, string, error) {
	return "", "", nil
}
func (claims) CABundle(context.Context, string, string) ([]byte, error) { return nil, nil }

// importFunc stands for the HTTP importer.
type importFunc func(ctx context.Context, v state.Volume) error

func (f importFunc) Import(ctx context.Context, v state.Volume, _ claim.Import, _ func(float64)) error {
	return f(ctx, v)
}

type permanent struct{ error }

func (permanent) Permanent() bool { return true }

func claimed(name string) *csi.CreateVolumeRequest {
	return &csi.CreateVolumeRequest{Name: name, VolumeCapabilities: mountCap(),
		CapacityRange: &csi.CapacityRange{RequiredBytes: 8 << 20},
		Parameters:    map[string]string{"csi.storage.k8s.io/pvc/namespace": "tenant", "csi.storage.k8s.io/pvc/name": name}}
}

// TestHostileReset: the resets that release a volume's space (after a failed import, when a
// fill restarts, before an upload) never truncate what is behind disk.img.
func TestHostileReset(t *testing.T) {
	imports := func(f importFunc) func(*driver.Config) {
		return func(c *driver.Config) {
			c.Cluster = claims{&claim.Source{Import: &claim.Import{URL: "http://images.example/disk.qcow2"}}}
			c.Filler = f
		}
	}
	for _, p := range plants {
		t.Run(p.name+"/after a failed import", func(t *testing.T) {
			node, content := nodeFile(t)
			dir := t.TempDir()
			h := start(t, dir, imports(func(_ context.Context, v state.Volume) error {
				p.put(t, filepath.Join(v.Dir, "disk.img"), node)
				return permanent{errors.New("image is not a disk")}
			}))
			id := createVolume(t, h, claimed("pvc-import"))
			if c := waitContent(t, h, id); c.Phase != claim.PhaseFailed || c.Message != "image is not a disk" {
				t.Errorf("import ended %s: %q", c.Phase, c.Message)
			}
			nodeFileIntact(t, node, content)
		})
		t.Run(p.name+"/when a fill restarts", func(t *testing.T) {
			node, content := nodeFile(t)
			dir := t.TempDir()
			h := start(t, dir, imports(func(ctx context.Context, _ state.Volume) error {
				<-ctx.Done()
				return ctx.Err()
			}))
			id := createVolume(t, h, claimed("pvc-restarted"))
			h.stop()
			p.put(t, filepath.Join(h.pool, id, "disk.img"), node)
			h = start(t, dir, imports(func(context.Context, state.Volume) error { return nil }))
			if c := waitContent(t, h, id); c.Phase != claim.PhaseFailed || !strings.Contains(c.Message, "volume pvc-restarted: disk.img ") || !strings.Contains(c.Message, "refusing to reset") {
				t.Errorf("restarted fill ended %s: %q; want Failed, refusing to reset", c.Phase, c.Message)
			}
			nodeFileIntact(t, node, content)
		})
		t.Run(p.name+"/before an upload", func(t *testing.T) {
			node, content := nodeFile(t)
			h := start(t, t.TempDir(), func(c *driver.Config) { c.Cluster = claims{&claim.Source{Upload: true}} })
			id := createVolume(t, h, claimed("pvc-upload"))
			p.put(t, diskOf(h, id), node)
			wrote := false
			err := h.drv.Upload(context.Background(), id, func(context.Context, string, int64, func(float64)) error {
				wrote = true
				return nil
			})
			if err == nil || !strings.Contains(err.Error(), "refusing to reset") || wrote {
				t.Errorf("upload: %v (written: %v); want refusing to reset, nothing written", err, wrote)
			}
			nodeFileIntact(t, node, content)
		})
	}
}

// TestHostileStats: the usage of a volume whose disk.img was replaced by a link is the tree's
// own: a symlink is counted as itself, never as the node file it points at, and a FIFO is
// not opened. (A hard link is the node file's inode in the volume's tree, which only root on
// the node can make: TestHostileHardLinkNeedsTheFilesystem; it is counted as the tree's.)
func TestHostileStats(t *testing.T) {
	testutil.RequireRoot(t, "publishing needs bind mounts")
	for _, p := range plants {
		t.Run(p.name, func(t *testing.T) {
			node, content := nodeFile(t)
			dir := t.TempDir()
			h := start(t, dir)
			id := mountVolume(t, h, "pvc-stats", 64<<20)
			target := filepath.Join(dir, "pods", "vol")
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := h.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: id, TargetPath: target, VolumeCapability: mountCap()[0]}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				_, _ = h.node.NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target})
			})
			disk := filepath.Join(target, "disk.img") // where the pod sees it
			if p.name == "hard link" {
				disk = diskOf(h, id) // a pod cannot: TestHostileHardLinkNeedsTheFilesystem
			}
			p.put(t, disk, node)
			resp, err := h.node.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: target})
			if err != nil {
				t.Fatal(err)
			}
			if used := resp.Usage[0].Used; p.name != "hard link" && used >= int64(len(content)) {
				t.Errorf("stats count %d bytes used: the node file's %d", used, len(content))
			}
			nodeFileIntact(t, node, content)
		})
	}
}

// TestHostileHardLinkNeedsTheFilesystem: a pod sees its volume through a bind mount, and
// link(2) refuses to cross mount points even on one filesystem, so a pod cannot make disk.img
// a hard link to a node file; the driver refuses one anyway (TestHostileClone/hard_link).
func TestHostileHardLinkNeedsTheFilesystem(t *testing.T) {
	testutil.RequireRoot(t, "publishing needs bind mounts")
	node, _ := nodeFile(t)
	dir := t.TempDir()
	h := start(t, dir)
	id := mountVolume(t, h, "pvc-link", 8<<20)
	target := filepath.Join(dir, "pods", "vol")
	if _, err := h.node.NodePublishVolume(context.Background(), &csi.NodePublishVolumeRequest{VolumeId: id, TargetPath: target, VolumeCapability: mountCap()[0]}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = h.node.NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target})
	})
	err := os.Link(node, filepath.Join(target, "node-secret"))
	if !errors.Is(err, syscall.EXDEV) {
		t.Fatalf("hard link into the published volume: %v, want EXDEV", err)
	}
}

// TestHostileBlockAttach: a block volume whose disk.img was replaced is not attached to a
// loop device, so no pod gets the node file as its disk.
func TestHostileBlockAttach(t *testing.T) {
	testutil.RequireRoot(t, "loop devices need root")
	for _, p := range plants {
		t.Run(p.name, func(t *testing.T) {
			node, content := nodeFile(t)
			dir := t.TempDir()
			h := start(t, dir)
			id := createVolume(t, h, &csi.CreateVolumeRequest{Name: "pvc-block", VolumeCapabilities: blockCap(),
				CapacityRange: &csi.CapacityRange{RequiredBytes: 8 << 20}})
			p.put(t, diskOf(h, id), node)
			target := filepath.Join(dir, "pods", "dev")
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := h.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: id, TargetPath: target, VolumeCapability: blockCap()[0]})
			t.Cleanup(func() {
				_, _ = h.node.NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target})
				if out, _ := exec.Command("losetup", "-j", node).Output(); len(out) > 0 {
					for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
						_ = exec.Command("losetup", "-d", strings.TrimSuffix(strings.Fields(l)[0], ":")).Run()
					}
				}
			})
			refused(t, err, "pvc-block", "attach")
			if out, _ := exec.Command("losetup", "-j", node).Output(); len(out) > 0 {
				t.Errorf("the node file is attached: %s", out)
			}
			nodeFileIntact(t, node, content)
		})
	}
}

// TestHostileSnapshot: a snapshot of a volume whose disk.img was replaced by a link to a node
// file, a FIFO or a directory, or grown into a huge sparse file, is refused with the reason
// before anything is copied: no snapshot is recorded or copied into the pool,
// and the node file is unchanged.
func TestHostileSnapshot(t *testing.T) {
	all := slices.Concat(plants, []plant{
		{"directory", func(t *testing.T, disk, _ string) {
			testutil.Must(t, os.Remove(disk))
			testutil.Must(t, os.Mkdir(disk, 0o755))
		}},
		{"sparse terabyte", func(t *testing.T, disk, _ string) {
			testutil.Must(t, os.Truncate(disk, 1<<40))
		}},
	})
	for _, p := range all {
		t.Run(p.name, func(t *testing.T) {
			node, content := nodeFile(t)
			h := start(t, t.TempDir())
			id := mountVolume(t, h, "pvc-tenant", 8<<20)
			p.put(t, diskOf(h, id), node)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := h.ctrl.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "snapshot-tenant", SourceVolumeId: id})
			refused(t, err, "pvc-tenant", "snapshot")
			list, lerr := h.ctrl.ListSnapshots(ctx, &csi.ListSnapshotsRequest{})
			if lerr != nil || len(list.Entries) != 0 {
				t.Errorf("snapshots after a refusal: %v, %v", list.GetEntries(), lerr)
			}
			if files, _ := filepath.Glob(filepath.Join(h.pool, "snapshots", "*")); len(files) != 0 {
				t.Errorf("snapshot files after a refusal: %v", files)
			}
			nodeFileIntact(t, node, content)
		})
	}
}
