package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/slimvirt/slimvirt/csi/claim"
	"github.com/slimvirt/slimvirt/csi/diskimg"
	"github.com/slimvirt/slimvirt/csi/state"
)

// A snapshot is a copy of a volume's disk (disk.img of a filesystem volume, the file behind a
// block volume's loop device) in a file of its own, <pool>/snapshots/<id>.img, on the source
// volume's node: a reflink where the pool's filesystem has them (instant, crash-consistent,
// blocks shared copy-on-write), a copy of the data extents otherwise. Other files a pod wrote
// beside disk.img are not part of it. A snapshot depends on nothing once taken, so the source
// volume can be deleted while snapshots of it remain.

// snapshotDir is the directory of a pool that holds its snapshots; volume directories are
// named vol-*, so it cannot be one.
func snapshotDir(poolDir string) string { return filepath.Join(poolDir, "snapshots") }

// CreateSnapshot takes a snapshot of a volume on this node. The copy runs in the background;
// the call waits for it up to Config.SnapshotWait and answers ready_to_use false if it takes
// longer, and the sidecar's repeated calls (same name) report it ready once it is. A copy that
// failed is reported once and taken again, from scratch, by the next call.
func (d *Driver) CreateSnapshot(ctx context.Context, req *csi.CreateSnapshotRequest) (*csi.CreateSnapshotResponse, error) {
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "snapshot name is required")
	}
	if req.GetSourceVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "source volume ID is required")
	}
	id, err := d.startSnapshot(req.GetName(), req.GetSourceVolumeId())
	if err != nil {
		return nil, err
	}
	return d.awaitSnapshot(ctx, id)
}

// startSnapshot finds the snapshot of that name, or starts taking it, and returns its ID.
func (d *Driver) startSnapshot(name, volumeID string) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	// Idempotency first: the same name is the same snapshot when it has the same source.
	if sn, err := d.store.SnapshotByName(name); err == nil {
		if sn.SourceVolume != volumeID {
			return "", status.Errorf(codes.AlreadyExists, "snapshot %s exists of volume %s, not %s", name, sn.SourceVolume, volumeID)
		}
		return sn.ID, nil
	}
	v, err := d.store.Get(volumeID)
	if err != nil {
		return "", status.Errorf(codes.NotFound, "source volume %s not found on node %s", volumeID, d.cfg.NodeID)
	}
	if v.Content.Phase != claim.PhaseReady {
		return "", status.Errorf(codes.Unavailable, "volume %s is %s, not ready: its content is not complete yet", v.ID, v.Content.Phase)
	}
	in, err := openDisk(v, os.O_RDONLY, "snapshot")
	if err != nil {
		return "", rpcError(err)
	}
	sn, err := d.newSnapshot(name, v, in)
	if err != nil {
		_ = in.Close()
		return "", err
	}
	d.log.Info("taking snapshot", "snapshot", sn.ID, "name", sn.Name, "volume", v.ID, "size", sn.Size)
	d.jobs.run(sn.ID, func(context.Context) { d.takeSnapshot(sn, in) })
	return sn.ID, nil
}

// newSnapshot checks that v's disk, open as in, may be copied into its pool and records the
// snapshot that will hold the copy. The caller holds d.mu.
func (d *Driver) newSnapshot(name string, v state.Volume, in *os.File) (state.Snapshot, error) {
	// The volume's owner can make disk.img any length and fill it up to the volume's quota; a
	// snapshot is of the volume, at most its size, and never takes space the pool has not.
	fi, err := in.Stat()
	if err != nil {
		return state.Snapshot{}, status.Errorf(codes.Internal, "stat the disk of volume %s: %v", v.Name, err)
	}
	if fi.Size() > v.Size {
		return state.Snapshot{}, status.Errorf(codes.FailedPrecondition, "volume %s: %s is %d bytes, larger than the volume's %d; refusing to snapshot",
			v.Name, diskimg.Name, fi.Size(), v.Size)
	}
	alloc, err := diskimg.AllocatedFile(in)
	if err != nil {
		return state.Snapshot{}, status.Error(codes.Internal, err.Error())
	}
	poolDir := filepath.Dir(v.Dir)
	free, err := d.available(poolDir)
	if err != nil {
		return state.Snapshot{}, status.Error(codes.Internal, err.Error())
	}
	if alloc > free {
		return state.Snapshot{}, status.Errorf(codes.ResourceExhausted, "pool %s has %d bytes left, the snapshot of volume %s needs %d", v.Pool, free, v.Name, alloc)
	}
	dir := snapshotDir(poolDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return state.Snapshot{}, status.Errorf(codes.Internal, "create snapshot dir %s: %v", dir, err)
	}
	id, err := newID("snap-")
	if err != nil {
		return state.Snapshot{}, status.Error(codes.Internal, err.Error())
	}
	sn := state.Snapshot{
		ID: id, Name: name, SourceVolume: v.ID, Pool: v.Pool, Path: filepath.Join(dir, id+".img"),
		Size: v.Size, Allocated: alloc, Created: time.Now().UTC(),
	}
	if err := d.store.PutSnapshot(sn); err != nil {
		return state.Snapshot{}, status.Error(codes.Internal, err.Error())
	}
	return sn, nil
}

// takeSnapshot copies in (the source's disk, checked by newSnapshot) into the snapshot's
// file and records the outcome.
func (d *Driver) takeSnapshot(sn state.Snapshot, in *os.File) {
	defer in.Close()
	start := time.Now()
	reflinked, alloc, err := copySnapshot(sn, in)
	if err != nil {
		_ = os.Remove(sn.Path)
		d.log.Error("snapshot failed", "snapshot", sn.ID, "volume", sn.SourceVolume, "err", err)
	}
	_, uerr := d.store.UpdateSnapshot(sn.ID, func(s *state.Snapshot) error {
		if err != nil {
			s.Failed = err.Error()
			return nil
		}
		s.Ready, s.Reflinked, s.Allocated = true, reflinked, alloc
		return nil
	})
	if errors.Is(uerr, state.ErrNotFound) {
		_ = os.Remove(sn.Path) // deleted while it was taken
		return
	}
	if uerr != nil {
		d.log.Error("record snapshot", "snapshot", sn.ID, "err", uerr)
		return
	}
	if err == nil {
		d.log.Info("took snapshot", "snapshot", sn.ID, "volume", sn.SourceVolume, "reflink", reflinked,
			"allocated", alloc, "duration", time.Since(start))
	}
}

// copySnapshot makes the snapshot's file a copy of in, exactly the snapshot's size, synced.
func copySnapshot(sn state.Snapshot, in *os.File) (reflinked bool, alloc int64, err error) {
	out, err := diskimg.Open(filepath.Dir(sn.Path), filepath.Base(sn.Path), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return false, 0, fmt.Errorf("create snapshot %s: %w", sn.ID, err)
	}
	defer out.Close()
	reflinked, err = diskimg.CopyFileAtMost(in, out, sn.Size)
	if err != nil {
		return reflinked, 0, fmt.Errorf("copy volume %s into snapshot %s: %w", sn.SourceVolume, sn.ID, err)
	}
	// A disk.img its owner shortened reads as zeros past its end, as a disk of the size would.
	if err := out.Truncate(sn.Size); err != nil {
		return reflinked, 0, fmt.Errorf("size snapshot %s: %w", sn.ID, err)
	}
	if err := out.Sync(); err != nil {
		return reflinked, 0, fmt.Errorf("sync snapshot %s: %w", sn.ID, err)
	}
	alloc, err = diskimg.AllocatedFile(out)
	return reflinked, alloc, err
}

// awaitSnapshot waits for the copy of snapshot id, at most Config.SnapshotWait, and answers
// what it is then. A failed copy is forgotten, so the next call takes it again.
func (d *Driver) awaitSnapshot(ctx context.Context, id string) (*csi.CreateSnapshotResponse, error) {
	if done := d.jobs.done(id); done != nil {
		t := time.NewTimer(d.cfg.SnapshotWait)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
		case <-ctx.Done():
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	sn, err := d.store.GetSnapshot(id)
	if err != nil {
		return nil, status.Errorf(codes.Aborted, "snapshot %s was deleted while it was taken", id)
	}
	if sn.Failed != "" {
		if err := d.removeSnapshot(sn); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		return nil, status.Errorf(codes.Internal, "snapshot %s of volume %s failed: %s", sn.Name, sn.SourceVolume, sn.Failed)
	}
	return &csi.CreateSnapshotResponse{Snapshot: d.csiSnapshot(sn)}, nil
}

// abandonSnapshots marks the snapshots a killed driver was still copying as failed: the
// source may have changed since, so they are taken again, from scratch, when the sidecar asks.
func (d *Driver) abandonSnapshots() {
	for _, sn := range d.store.ListSnapshots() {
		if sn.Ready || sn.Failed != "" {
			continue
		}
		_, err := d.store.UpdateSnapshot(sn.ID, func(s *state.Snapshot) error {
			s.Failed = "interrupted by a driver restart"
			return nil
		})
		if err != nil {
			d.log.Error("abandon interrupted snapshot", "snapshot", sn.ID, "err", err)
		}
	}
}

// removeSnapshot deletes a snapshot's file and record. The caller holds d.mu.
func (d *Driver) removeSnapshot(sn state.Snapshot) error {
	if err := os.Remove(sn.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove snapshot %s: %w", sn.Path, err)
	}
	return d.store.DeleteSnapshot(sn.ID)
}

// DeleteSnapshot stops a copy still running and removes the snapshot; an unknown snapshot is
// already deleted. Volumes made from it keep their content: they are copies too.
func (d *Driver) DeleteSnapshot(_ context.Context, req *csi.DeleteSnapshotRequest) (*csi.DeleteSnapshotResponse, error) {
	if req.GetSnapshotId() == "" {
		return nil, status.Error(codes.InvalidArgument, "snapshot ID is required")
	}
	d.jobs.cancel(req.GetSnapshotId())
	d.mu.Lock()
	defer d.mu.Unlock()
	sn, err := d.store.GetSnapshot(req.GetSnapshotId())
	if errors.Is(err, state.ErrNotFound) {
		return &csi.DeleteSnapshotResponse{}, nil
	}
	if err := d.removeSnapshot(sn); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	d.log.Info("deleted snapshot", "snapshot", sn.ID, "name", sn.Name)
	return &csi.DeleteSnapshotResponse{}, nil
}

// GetSnapshot reports one snapshot of this node.
func (d *Driver) GetSnapshot(_ context.Context, req *csi.GetSnapshotRequest) (*csi.GetSnapshotResponse, error) {
	if req.GetSnapshotId() == "" {
		return nil, status.Error(codes.InvalidArgument, "snapshot ID is required")
	}
	sn, err := d.store.GetSnapshot(req.GetSnapshotId())
	if err != nil || sn.Failed != "" {
		return nil, status.Errorf(codes.NotFound, "snapshot %s not found on node %s", req.GetSnapshotId(), d.cfg.NodeID)
	}
	return &csi.GetSnapshotResponse{Snapshot: d.csiSnapshot(sn)}, nil
}

// ListSnapshots pages through this node's snapshots (those taken or being taken), or finds one
// by ID or by source volume; the token is the index of the next entry.
func (d *Driver) ListSnapshots(_ context.Context, req *csi.ListSnapshotsRequest) (*csi.ListSnapshotsResponse, error) {
	var match []state.Snapshot
	for _, sn := range d.store.ListSnapshots() {
		switch {
		case sn.Failed != "":
		case req.GetSnapshotId() != "" && sn.ID != req.GetSnapshotId():
		case req.GetSourceVolumeId() != "" && sn.SourceVolume != req.GetSourceVolumeId():
		default:
			match = append(match, sn)
		}
	}
	entries, next, err := page(match, req.GetMaxEntries(), req.GetStartingToken())
	if err != nil {
		return nil, err
	}
	resp := &csi.ListSnapshotsResponse{NextToken: next}
	for _, sn := range entries {
		resp.Entries = append(resp.Entries, &csi.ListSnapshotsResponse_Entry{Snapshot: d.csiSnapshot(sn)})
	}
	return resp, nil
}

func (d *Driver) csiSnapshot(sn state.Snapshot) *csi.Snapshot {
	return &csi.Snapshot{
		SnapshotId:     sn.ID,
		SourceVolumeId: sn.SourceVolume,
		SizeBytes:      sn.Size,
		CreationTime:   timestamppb.New(sn.Created),
		ReadyToUse:     sn.Ready,
	}
}

// snapshotReserve is what a snapshot may still take from its pool: a reflinked snapshot shares
// its blocks with its source, and each one the source's owner overwrites is copied then, up
// to what the snapshot held when taken. A plain copy holds its blocks already.
func snapshotReserve(sn state.Snapshot) int64 {
	if sn.Ready && !sn.Reflinked {
		return 0
	}
	return sn.Allocated
}
