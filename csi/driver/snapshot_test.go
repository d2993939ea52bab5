package driver_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/slimvirt/slimvirt/csi/claim"
	"github.com/slimvirt/slimvirt/csi/diskimg"
	"github.com/slimvirt/slimvirt/csi/driver"
	"github.com/slimvirt/slimvirt/csi/state"
	"github.com/slimvirt/slimvirt/internal/testutil"
)

// volumeWithData makes a filesystem volume with n random bytes at off of its disk.img.
func volumeWithData(t *testing.T, h *harness, name string, size int64, n int, off int64) (string, []byte) {
	t.Helper()
	id := mountVolume(t, h, name, size)
	data := make([]byte, n)
	rand.Read(data)
	writeAt(t, diskOf(h, id), data, off)
	return id, data
}

func readAt(t *testing.T, path string, n int, off int64) []byte {
	t.Helper()
	f, err := os.Open(path)
	testutil.Must(t, err)
	defer f.Close()
	b := make([]byte, n)
	_, err = f.ReadAt(b, off)
	testutil.Must(t, err)
	return b
}

func snapshot(ctx context.Context, h *harness, name, volume string) (*csi.Snapshot, error) {
	resp, err := h.ctrl.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: name, SourceVolumeId: volume})
	return resp.GetSnapshot(), err
}

func fromSnapshot(name, id string, size int64, caps []*csi.VolumeCapability) *csi.CreateVolumeRequest {
	return &csi.CreateVolumeRequest{Name: name, VolumeCapabilities: caps,
		CapacityRange:       &csi.CapacityRange{RequiredBytes: size},
		VolumeContentSource: &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: id}}},
	}
}

// TestSnapshotIsPointInTime: a snapshot holds the volume's data as it was when it was taken,
// not what the guest writes afterwards; a volume made from it (filesystem or block, as large
// or larger) holds the same bytes and stays sparse; one smaller than the snapshot is refused.
func TestSnapshotIsPointInTime(t *testing.T) {
	ctx := context.Background()
	h := start(t, t.TempDir())
	src, before := volumeWithData(t, h, "pvc-src", 64<<20, 1<<20, 10<<20)

	taken := time.Now()
	sn, err := snapshot(ctx, h, "snapshot-1", src)
	if err != nil {
		t.Fatal(err)
	}
	if !sn.ReadyToUse || sn.SizeBytes != 64<<20 || sn.SourceVolumeId != src {
		t.Fatalf("snapshot %+v: want ready, 64 MiB, of %s", sn, src)
	}
	if ct := sn.CreationTime.AsTime(); ct.Before(taken.Add(-time.Second)) || ct.After(time.Now()) {
		t.Fatalf("creation time %s, taken at %s", ct, taken)
	}
	after := bytes.Repeat([]byte{0xee}, 1<<20)
	writeAt(t, diskOf(h, src), after, 10<<20)

	tests := []struct {
		name string
		size int64
		caps []*csi.VolumeCapability
	}{
		{"filesystem, same size", 64 << 20, mountCap()},
		{"filesystem, larger", 96 << 20, mountCap()},
		{"block", 64 << 20, blockCap()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := createVolume(t, h, fromSnapshot("pvc-"+tt.name, sn.SnapshotId, tt.size, tt.caps))
			if c := waitContent(t, h, id); c.Phase != claim.PhaseReady {
				t.Fatalf("restore ended %s: %s", c.Phase, c.Message)
			}
			if got := readAt(t, diskOf(h, id), len(before), 10<<20); !bytes.Equal(got, before) {
				t.Fatal("the restored volume does not hold the data as it was when the snapshot was taken")
			}
			if fi, _ := os.Stat(diskOf(h, id)); fi.Size() != tt.size {
				t.Fatalf("restored disk.img is %d bytes, want %d", fi.Size(), tt.size)
			}
			if alloc, _ := diskimg.Allocated(diskOf(h, id)); alloc > 4<<20 {
				t.Fatalf("restored disk.img allocates %d bytes for 1 MiB of data", alloc)
			}
		})
	}
	_, err = h.ctrl.CreateVolume(ctx, fromSnapshot("pvc-too-small", sn.SnapshotId, 32<<20, mountCap()))
	if status.Code(err) != codes.OutOfRange {
		t.Fatalf("a volume smaller than the snapshot: %v, want OutOfRange", err)
	}
	_, err = h.ctrl.CreateVolume(ctx, fromSnapshot("pvc-elsewhere", "snap-on-another-node", 64<<20, mountCap()))
	if status.Code(err) != codes.NotFound {
		t.Fatalf("a snapshot this node does not have: %v, want NotFound", err)
	}
}

// TestSnapshotIdempotentAndIndependent: the same name gives the same snapshot and another
// source is AlreadyExists; deleting the source volume keeps its snapshot usable; deleting the
// snapshot removes its file, and again is no error.
func TestSnapshotIdempotentAndIndependent(t *testing.T) {
	ctx := context.Background()
	h := start(t, t.TempDir())
	src, data := volumeWithData(t, h, "pvc-src", 16<<20, 64<<10, 0)
	other := mountVolume(t, h, "pvc-other", 16<<20)
	first, err := snapshot(ctx, h, "snapshot-1", src)
	testutil.Must(t, err)
	again, err := snapshot(ctx, h, "snapshot-1", src)
	testutil.Must(t, err)
	if again.SnapshotId != first.SnapshotId || !again.CreationTime.AsTime().Equal(first.CreationTime.AsTime()) {
		t.Fatalf("the same name gave %s at %s, first %s at %s", again.SnapshotId, again.CreationTime.AsTime(), first.SnapshotId, first.CreationTime.AsTime())
	}
	if _, err := snapshot(ctx, h, "snapshot-1", other); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("the same name of another volume: %v, want AlreadyExists", err)
	}
	if _, err := h.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: src}); err != nil {
		t.Fatal(err)
	}
	id := createVolume(t, h, fromSnapshot("pvc-restored", first.SnapshotId, 16<<20, mountCap()))
	if c := waitContent(t, h, id); c.Phase != claim.PhaseReady {
		t.Fatalf("restore after the source was deleted ended %s: %s", c.Phase, c.Message)
	}
	if !bytes.Equal(readAt(t, diskOf(h, id), len(data), 0), data) {
		t.Fatal("the restored volume does not hold the snapshot's data")
	}
	files, _ := filepath.Glob(filepath.Join(h.pool, "snapshots", "*"))
	if len(files) != 1 {
		t.Fatalf("snapshot files %v, want one", files)
	}
	for range 2 {
		if _, err := h.ctrl.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: first.SnapshotId}); err != nil {
			t.Fatal(err)
		}
	}
	if files, _ := filepath.Glob(filepath.Join(h.pool, "snapshots", "*")); len(files) != 0 {
		t.Fatalf("snapshot files left after delete: %v", files)
	}
	if !bytes.Equal(readAt(t, diskOf(h, id), len(data), 0), data) {
		t.Fatal("deleting the snapshot changed the volume made from it")
	}
}

// TestSnapshotSurvivesRestart: a snapshot and what it holds are known to a restarted driver,
// by name (idempotent) and in listings, and a volume is made from it.
func TestSnapshotSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	h := start(t, dir)
	src, data := volumeWithData(t, h, "pvc-src", 16<<20, 64<<10, 1<<20)
	sn, err := snapshot(ctx, h, "snapshot-1", src)
	testutil.Must(t, err)
	h.stop()

	h = start(t, dir)
	again, err := snapshot(ctx, h, "snapshot-1", src)
	testutil.Must(t, err)
	if again.SnapshotId != sn.SnapshotId || !again.ReadyToUse || again.SizeBytes != sn.SizeBytes {
		t.Fatalf("after a restart: %+v, want %+v", again, sn)
	}
	list, err := h.ctrl.ListSnapshots(ctx, &csi.ListSnapshotsRequest{SourceVolumeId: src})
	testutil.Must(t, err)
	if len(list.Entries) != 1 || list.Entries[0].Snapshot.SnapshotId != sn.SnapshotId {
		t.Fatalf("listing after a restart: %v", list.Entries)
	}
	id := createVolume(t, h, fromSnapshot("pvc-restored", sn.SnapshotId, 16<<20, blockCap()))
	if c := waitContent(t, h, id); c.Phase != claim.PhaseReady {
		t.Fatalf("restore ended %s: %s", c.Phase, c.Message)
	}
	if !bytes.Equal(readAt(t, diskOf(h, id), len(data), 1<<20), data) {
		t.Fatal("the restored volume does not hold the snapshot's data")
	}
}

// TestListSnapshots: filters by snapshot and by source volume, and pages with a token; a token
// the driver did not give is Aborted.
func TestListSnapshots(t *testing.T) {
	ctx := context.Background()
	h := start(t, t.TempDir())
	a := mountVolume(t, h, "pvc-a", 8<<20)
	b := mountVolume(t, h, "pvc-b", 8<<20)
	var ofA []string
	for _, name := range []string{"a-1", "a-2", "a-3"} {
		sn, err := snapshot(ctx, h, name, a)
		testutil.Must(t, err)
		ofA = append(ofA, sn.SnapshotId)
	}
	snB, err := snapshot(ctx, h, "b-1", b)
	testutil.Must(t, err)

	ids := func(resp *csi.ListSnapshotsResponse) map[string]bool {
		out := map[string]bool{}
		for _, e := range resp.Entries {
			out[e.Snapshot.SnapshotId] = true
		}
		return out
	}
	tests := []struct {
		name string
		req  *csi.ListSnapshotsRequest
		want []string
	}{
		{"all", &csi.ListSnapshotsRequest{}, append([]string{snB.SnapshotId}, ofA...)},
		{"by snapshot", &csi.ListSnapshotsRequest{SnapshotId: ofA[1]}, ofA[1:2]},
		{"by unknown snapshot", &csi.ListSnapshotsRequest{SnapshotId: "snap-unknown"}, nil},
		{"by source volume", &csi.ListSnapshotsRequest{SourceVolumeId: b}, []string{snB.SnapshotId}},
		{"by both, not matching", &csi.ListSnapshotsRequest{SnapshotId: snB.SnapshotId, SourceVolumeId: a}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := h.ctrl.ListSnapshots(ctx, tt.req)
			testutil.Must(t, err)
			got := ids(resp)
			if len(got) != len(tt.want) {
				t.Fatalf("listed %v, want %v", got, tt.want)
			}
			for _, id := range tt.want {
				if !got[id] {
					t.Fatalf("listed %v, want %v", got, tt.want)
				}
			}
		})
	}
	t.Run("pages", func(t *testing.T) {
		seen := map[string]bool{}
		token := ""
		for pages := 0; ; pages++ {
			resp, err := h.ctrl.ListSnapshots(ctx, &csi.ListSnapshotsRequest{MaxEntries: 3, StartingToken: token})
			testutil.Must(t, err)
			if len(resp.Entries) > 3 || pages > 2 {
				t.Fatalf("page of %d entries, page %d", len(resp.Entries), pages)
			}
			for id := range ids(resp) {
				if seen[id] {
					t.Fatalf("%s listed twice", id)
				}
				seen[id] = true
			}
			if token = resp.NextToken; token == "" {
				break
			}
		}
		if len(seen) != 4 {
			t.Fatalf("pages listed %d snapshots, want 4", len(seen))
		}
	})
	for _, token := range []string{"x", "-1", "99"} {
		if _, err := h.ctrl.ListSnapshots(ctx, &csi.ListSnapshotsRequest{StartingToken: token}); status.Code(err) != codes.Aborted {
			t.Errorf("token %q: %v, want Aborted", token, err)
		}
	}
}

// TestSnapshotSpace: a snapshot's copy takes its data's space from the pool's capacity, and a
// snapshot whose data the pool has no room for is ResourceExhausted.
func TestSnapshotSpace(t *testing.T) {
	ctx := context.Background()
	h := start(t, t.TempDir())
	src, _ := volumeWithData(t, h, "pvc-src", 64<<20, 32<<20, 0)
	capacity := func() int64 {
		c, err := h.ctrl.GetCapacity(ctx, &csi.GetCapacityRequest{})
		testutil.Must(t, err)
		return c.AvailableCapacity
	}
	before := capacity()
	if _, err := snapshot(ctx, h, "snapshot-1", src); err != nil {
		t.Fatal(err)
	}
	// Other work on the machine moves the free space too: allow it a margin.
	if d := before - capacity(); d < 28<<20 || d > 48<<20 {
		t.Fatalf("capacity went down by %d bytes for a snapshot of 32 MiB of data", d)
	}
	// Fill the pool's capacity with a volume, leaving less than the data.
	fill := capacity() - 16<<20
	createVolume(t, h, &csi.CreateVolumeRequest{Name: "pvc-fill", VolumeCapabilities: mountCap(),
		CapacityRange: &csi.CapacityRange{RequiredBytes: fill, LimitBytes: fill + 1<<20}})
	if _, err := snapshot(ctx, h, "snapshot-2", src); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("a snapshot the pool has no room for: %v, want ResourceExhausted", err)
	}
	if files, _ := filepath.Glob(filepath.Join(h.pool, "snapshots", "*")); len(files) != 1 {
		t.Fatalf("snapshot files %v, want only the first", files)
	}
}

// TestSnapshotOfAVolumeBeingFilled: a volume whose import is not done yet has no content to
// snapshot: Unavailable, and nothing is taken.
func TestSnapshotOfAVolumeBeingFilled(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	h := start(t, t.TempDir(), func(c *driver.Config) {
		c.Cluster = claims{&claim.Source{Import: &claim.Import{URL: "http://images.example/disk.qcow2"}}}
		c.Filler = importFunc(func(ctx context.Context, _ state.Volume) error {
			select {
			case <-release:
			case <-ctx.Done():
			}
			return ctx.Err()
		})
	})
	id := createVolume(t, h, claimed("pvc-importing"))
	if _, err := snapshot(context.Background(), h, "snapshot-1", id); status.Code(err) != codes.Unavailable {
		t.Fatalf("a snapshot of a volume being imported: %v, want Unavailable", err)
	}
	if _, err := snapshot(context.Background(), h, "snapshot-2", "vol-unknown"); status.Code(err) != codes.NotFound {
		t.Fatalf("a snapshot of an unknown volume: %v, want NotFound", err)
	}
}
