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
	mount "k8s.io/mount-utils"

	"github.com/slimvirt/slimvirt/csi/claim"
	"github.com/slimvirt/slimvirt/csi/loopdev"
	"github.com/slimvirt/slimvirt/csi/state"
)

// NodeGetInfo gives kubelet this node's ID, its topology segment and the volume limit.
func (d *Driver) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{
		NodeId:             d.cfg.NodeID,
		MaxVolumesPerNode:  d.cfg.MaxVolumesPerNode,
		AccessibleTopology: d.topology()[0],
	}, nil
}

// NodeGetCapabilities tells kubelet the node RPCs it may call besides publish and unpublish:
// expansion, volume stats and single-node multi-writer access.
func (d *Driver) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	var caps []*csi.NodeServiceCapability
	for _, t := range []csi.NodeServiceCapability_RPC_Type{
		csi.NodeServiceCapability_RPC_EXPAND_VOLUME,
		csi.NodeServiceCapability_RPC_GET_VOLUME_STATS,
		csi.NodeServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
	} {
		caps = append(caps, &csi.NodeServiceCapability{Type: &csi.NodeServiceCapability_Rpc{
			Rpc: &csi.NodeServiceCapability_RPC{Type: t},
		}})
	}
	return &csi.NodeGetCapabilitiesResponse{Capabilities: caps}, nil
}

// waitFilled waits up to PublishWait for the volume's content to be complete: a volume is never
// handed to a pod half-written. Kubelet retries the publish after an Unavailable.
func (d *Driver) waitFilled(ctx context.Context, id string) (state.Volume, error) {
	deadline := time.Now().Add(d.cfg.PublishWait)
	for {
		v, err := d.store.Get(id)
		if err != nil {
			return v, status.Errorf(codes.NotFound, "volume %s not found on node %s", id, d.cfg.NodeID)
		}
		switch v.Content.Phase {
		case claim.PhaseReady:
			return v, nil
		case claim.PhaseFailed:
			return v, status.Errorf(codes.FailedPrecondition, "volume %s could not be filled: %s", id, v.Content.Message)
		}
		if time.Now().After(deadline) {
			what := "filled"
			if v.Content.Phase == claim.PhasePending {
				what = "waiting for its upload"
			}
			return v, status.Errorf(codes.Unavailable, "volume %s is being %s (%s)", id, what, v.Content.Progress)
		}
		select {
		case <-ctx.Done():
			return v, status.Errorf(codes.DeadlineExceeded, "volume %s is still being filled (%s)", id, v.Content.Progress)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// NodePublishVolume bind-mounts the volume at the target path, once an import or upload has
// filled it: its directory for a filesystem volume, or a loop device attached to its disk.img
// for a block volume. Publishing the same target again with the same read-only setting
// succeeds; the publication is recorded in the state.
func (d *Driver) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	id, target := req.GetVolumeId(), req.GetTargetPath()
	switch {
	case id == "":
		return nil, status.Error(codes.InvalidArgument, "volume ID is required")
	case target == "":
		return nil, status.Error(codes.InvalidArgument, "target path is required")
	case req.GetVolumeCapability() == nil:
		return nil, status.Error(codes.InvalidArgument, "volume capability is required")
	}
	block, err := checkCapabilities([]*csi.VolumeCapability{req.GetVolumeCapability()})
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if _, err := d.waitFilled(ctx, id); err != nil {
		return nil, err
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	v, err := d.store.Get(id)
	if err != nil {
		return nil, status.Errorf(codes.NotFound, "volume %s not found on node %s", id, d.cfg.NodeID)
	}
	if block != v.Block {
		return nil, status.Errorf(codes.InvalidArgument, "volume %s is a %s volume", id, kind(v.Block))
	}
	readOnly := req.GetReadonly() || req.GetVolumeCapability().GetAccessMode().GetMode() == csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY
	if p, ok := v.Published[target]; ok {
		if p.ReadOnly != readOnly {
			return nil, status.Errorf(codes.AlreadyExists, "volume %s is published at %s with another read-only setting", id, target)
		}
		if mounted, _ := d.isMounted(target); mounted {
			return &csi.NodePublishVolumeResponse{}, nil
		}
	}
	if req.GetVolumeCapability().GetAccessMode().GetMode() == csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER {
		for other := range v.Published {
			if other != target {
				return nil, status.Errorf(codes.FailedPrecondition, "volume %s is single-writer and already published at %s", id, other)
			}
		}
	}

	src := v.Dir
	if v.Block {
		f, err := openDisk(v, os.O_RDWR, "attach")
		if err != nil {
			return nil, rpcError(err)
		}
		dev, err := loopdev.Attach(ctx, f)
		_ = f.Close() // the loop device holds its own reference to the file
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		v.LoopDevice, src = dev, dev
		if err := makeFile(target); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
	} else if err := os.MkdirAll(target, 0o750); err != nil {
		return nil, status.Errorf(codes.Internal, "create target %s: %v", target, err)
	}
	opts := []string{"bind"}
	if readOnly {
		opts = append(opts, "ro")
	}
	if err := d.mounter.Mount(src, target, "", opts); err != nil {
		return nil, status.Errorf(codes.Internal, "bind %s to %s: %v", src, target, err)
	}
	if _, err := d.store.Update(id, func(sv *state.Volume) error {
		if sv.Published == nil {
			sv.Published = map[string]state.Publication{}
		}
		sv.Published[target] = state.Publication{ReadOnly: readOnly}
		sv.LoopDevice = v.LoopDevice
		return nil
	}); err != nil {
		_ = mount.CleanupMountPoint(target, d.mounter, true)
		return nil, status.Error(codes.Internal, err.Error())
	}
	d.log.Info("published volume", "volume", id, "target", target, "readOnly", readOnly, "block", v.Block)
	return &csi.NodePublishVolumeResponse{}, nil
}

func kind(block bool) string {
	if block {
		return "block"
	}
	return "filesystem"
}

func makeFile(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return fmt.Errorf("create dir of %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDONLY, 0o640)
	if err != nil {
		return fmt.Errorf("create target file %s: %w", path, err)
	}
	return f.Close()
}

func (d *Driver) isMounted(path string) (bool, error) {
	notMnt, err := d.mounter.IsLikelyNotMountPoint(path)
	if err != nil {
		return false, err
	}
	if !notMnt {
		return true, nil
	}
	// A bind mount of a file or of a directory on the same filesystem does not change the
	// device number, so IsLikelyNotMountPoint misses it; the mount table does not.
	mps, err := d.mounter.List()
	if err != nil {
		return false, err
	}
	for _, mp := range mps {
		if mp.Path == path {
			return true, nil
		}
	}
	return false, nil
}

// NodeUnpublishVolume unmounts and removes the target path, forgets the publication and detaches
// a block volume's loop device when it was the last one. A target already gone, or a volume the
// driver does not know, is success, so that kubelet can always finish.
func (d *Driver) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	id, target := req.GetVolumeId(), req.GetTargetPath()
	switch {
	case id == "":
		return nil, status.Error(codes.InvalidArgument, "volume ID is required")
	case target == "":
		return nil, status.Error(codes.InvalidArgument, "target path is required")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	v, err := d.store.Get(id)
	known := err == nil
	for {
		mounted, err := d.isMounted(target)
		if errors.Is(err, os.ErrNotExist) || (err == nil && !mounted) {
			break
		}
		if err != nil {
			return nil, status.Errorf(codes.Internal, "check mount %s: %v", target, err)
		}
		if err := d.mounter.Unmount(target); err != nil {
			return nil, status.Errorf(codes.Internal, "unmount %s: %v", target, err)
		}
	}
	if err := os.Remove(target); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, status.Errorf(codes.Internal, "remove target %s: %v", target, err)
	}
	if !known {
		// A volume the driver does not know (its state was lost) is still unpublished, or
		// kubelet would retry forever and the pod would never go away.
		d.log.Info("unpublished unknown volume", "volume", id, "target", target)
		return &csi.NodeUnpublishVolumeResponse{}, nil
	}
	v, err = d.store.Update(id, func(sv *state.Volume) error {
		delete(sv.Published, target)
		return nil
	})
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if v.Block && len(v.Published) == 0 {
		if err := d.detachLoop(ctx, v); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
	}
	d.log.Info("unpublished volume", "volume", id, "target", target)
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

// detachLoop releases the loop device of a block volume that is no longer published.
func (d *Driver) detachLoop(ctx context.Context, v state.Volume) error {
	if !v.Block {
		return nil
	}
	f, err := openDisk(v, os.O_RDONLY, "look up the loop device of")
	switch {
	case errors.Is(err, os.ErrNotExist):
		// No disk.img, no device to find by it.
	case err != nil:
		return err
	default:
		err = loopdev.Detach(ctx, f)
		_ = f.Close() // opened read-only to find the device; nothing to flush
		if err != nil {
			return err
		}
	}
	if v.LoopDevice == "" {
		return nil
	}
	_, err = d.store.Update(v.ID, func(sv *state.Volume) error { sv.LoopDevice = ""; return nil })
	if errors.Is(err, state.ErrNotFound) {
		return nil
	}
	return err
}

// NodeGetVolumeStats reports the size of a published volume and, for a filesystem volume, what a
// pod sees: bytes and inodes, total, used and available (see volumeStats).
func (d *Driver) NodeGetVolumeStats(_ context.Context, req *csi.NodeGetVolumeStatsRequest) (*csi.NodeGetVolumeStatsResponse, error) {
	id, path := req.GetVolumeId(), req.GetVolumePath()
	switch {
	case id == "":
		return nil, status.Error(codes.InvalidArgument, "volume ID is required")
	case path == "":
		return nil, status.Error(codes.InvalidArgument, "volume path is required")
	}
	v, err := d.store.Get(id)
	if err != nil {
		return nil, status.Errorf(codes.NotFound, "volume %s not found on node %s", id, d.cfg.NodeID)
	}
	if _, ok := v.Published[path]; !ok {
		return nil, status.Errorf(codes.NotFound, "volume %s is not published at %s", id, path)
	}
	if _, err := os.Stat(path); err != nil {
		return nil, status.Errorf(codes.NotFound, "volume path %s: %v", path, err)
	}
	if v.Block {
		return &csi.NodeGetVolumeStatsResponse{Usage: []*csi.VolumeUsage{{Unit: csi.VolumeUsage_BYTES, Total: v.Size}}}, nil
	}
	b, i, err := volumeStats(v)
	if err != nil {
		return nil, err
	}
	return &csi.NodeGetVolumeStatsResponse{Usage: []*csi.VolumeUsage{
		{Unit: csi.VolumeUsage_BYTES, Total: b.total, Used: b.used, Available: b.available},
		{Unit: csi.VolumeUsage_INODES, Total: i.total, Used: i.used, Available: i.available},
	}}, nil
}

// NodeExpandVolume grows the disk.img when the request asks for more than the volume has (the
// controller side may run on another node) and refreshes a block volume's loop device so that
// it shows the new size.
func (d *Driver) NodeExpandVolume(ctx context.Context, req *csi.NodeExpandVolumeRequest) (*csi.NodeExpandVolumeResponse, error) {
	id, path := req.GetVolumeId(), req.GetVolumePath()
	switch {
	case id == "":
		return nil, status.Error(codes.InvalidArgument, "volume ID is required")
	case path == "":
		return nil, status.Error(codes.InvalidArgument, "volume path is required")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	v, err := d.store.Get(id)
	if err != nil {
		return nil, status.Errorf(codes.NotFound, "volume %s not found on node %s", id, d.cfg.NodeID)
	}
	if _, err := os.Stat(path); err != nil {
		return nil, status.Errorf(codes.NotFound, "volume path %s: %v", path, err)
	}
	if req.GetCapacityRange() != nil {
		size, err := requestedSize(req.GetCapacityRange())
		if err != nil {
			return nil, status.Error(codes.OutOfRange, err.Error())
		}
		// Growing here too lets expansion work where the controller side runs on another
		// node (the resizer is not node-aware); without that, it is a no-op.
		if size > v.Size {
			if v, err = d.grow(v, size); err != nil {
				return nil, err
			}
		}
	}
	if v.Block && v.LoopDevice != "" {
		if err := loopdev.Refresh(ctx, v.LoopDevice); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
	}
	// A filesystem volume's disk.img was grown by the controller; the guest sees it after
	// QEMU's block_resize, which is the launcher's job.
	return &csi.NodeExpandVolumeResponse{CapacityBytes: v.Size}, nil
}
