package driver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/slimvirt/slimvirt/csi/claim"
	"github.com/slimvirt/slimvirt/csi/diskimg"
	"github.com/slimvirt/slimvirt/csi/quota"
	"github.com/slimvirt/slimvirt/csi/state"
)

// ControllerGetCapabilities tells the external provisioner, resizer and snapshotter sidecars
// which controller RPCs this driver serves: create/delete, capacity, clones, listing, expansion,
// snapshots and single-node multi-writer access.
func (d *Driver) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	var caps []*csi.ControllerServiceCapability
	for _, t := range []csi.ControllerServiceCapability_RPC_Type{
		csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
		csi.ControllerServiceCapability_RPC_GET_CAPACITY,
		csi.ControllerServiceCapability_RPC_CLONE_VOLUME,
		csi.ControllerServiceCapability_RPC_LIST_VOLUMES,
		csi.ControllerServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
		csi.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT,
		csi.ControllerServiceCapability_RPC_LIST_SNAPSHOTS,
		csi.ControllerServiceCapability_RPC_GET_SNAPSHOT,
	} {
		caps = append(caps, &csi.ControllerServiceCapability{Type: &csi.ControllerServiceCapability_Rpc{
			Rpc: &csi.ControllerServiceCapability_RPC{Type: t},
		}})
	}
	if !d.cfg.NodeExpansionOnly {
		caps = append(caps, &csi.ControllerServiceCapability{Type: &csi.ControllerServiceCapability_Rpc{
			Rpc: &csi.ControllerServiceCapability_RPC{Type: csi.ControllerServiceCapability_RPC_EXPAND_VOLUME},
		}})
	}
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: caps}, nil
}

// checkCapabilities accepts single-node access in mount or block mode: a hostpath volume lives
// on one node. It returns whether the capabilities ask for a block device.
func checkCapabilities(caps []*csi.VolumeCapability) (block bool, err error) {
	if len(caps) == 0 {
		return false, errors.New("volume capabilities are required")
	}
	var mountSeen, blockSeen bool
	for _, c := range caps {
		switch {
		case c.GetBlock() != nil:
			blockSeen = true
		case c.GetMount() != nil:
			mountSeen = true
		default:
			return false, errors.New("access type must be mount or block")
		}
		switch c.GetAccessMode().GetMode() {
		case csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER,
			csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY,
			csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER,
			csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER:
		default:
			return false, fmt.Errorf("access mode %s is not supported: volumes live on one node", c.GetAccessMode().GetMode())
		}
	}
	if mountSeen && blockSeen {
		return false, errors.New("a volume is either mount or block, not both")
	}
	return blockSeen, nil
}

// requestedSize turns a capacity range into the disk.img size: the required bytes rounded up
// to a sector, so the disk is what the user asked for and no filesystem overhead is added.
func requestedSize(r *csi.CapacityRange) (int64, error) {
	req, lim := r.GetRequiredBytes(), r.GetLimitBytes()
	if req < 0 || lim < 0 {
		return 0, errors.New("capacity must not be negative")
	}
	if lim > 0 && req > lim {
		return 0, fmt.Errorf("required bytes %d exceed limit bytes %d", req, lim)
	}
	size := req
	if size == 0 {
		size = defaultSize
		if lim > 0 && lim < size {
			size = lim
		}
	}
	size = diskimg.RoundUp(size)
	if lim > 0 && size > lim {
		// A limit below the next sector boundary can only be met exactly.
		if lim%diskimg.SectorSize != 0 {
			return 0, fmt.Errorf("limit bytes %d is not a multiple of %d", lim, diskimg.SectorSize)
		}
		size = lim
	}
	return size, nil
}

func (d *Driver) poolFor(params map[string]string) (string, string, error) {
	name := params[ParamPool]
	if name == "" {
		name = d.cfg.Pools[0].Name
	}
	dir, ok := d.pools[name]
	if !ok {
		return "", "", fmt.Errorf("storage pool %q is not configured on node %s", name, d.cfg.NodeID)
	}
	return name, dir, nil
}

// reachable says whether the topology requirement lets the volume live on this node.
func (d *Driver) reachable(req *csi.TopologyRequirement) bool {
	if req == nil || (len(req.GetRequisite()) == 0 && len(req.GetPreferred()) == 0) {
		return true
	}
	for _, t := range append(req.GetRequisite(), req.GetPreferred()...) {
		if t.GetSegments()[TopologyKey] == d.cfg.NodeID {
			return true
		}
	}
	return false
}

func (d *Driver) topology() []*csi.Topology {
	return []*csi.Topology{{Segments: map[string]string{TopologyKey: d.cfg.NodeID}}}
}

// CreateVolume makes a volume directory with a sparse disk.img of the requested size in the
// chosen pool (a filesystem volume in a pool with project quotas also gets its own project and
// limit), empty, cloned from another volume or restored from a snapshot on this node, or to be
// filled by an import or upload named by the PVC. A
// repeated call with the same name returns the existing volume when it matches the request and
// AlreadyExists when it does not.
func (d *Driver) CreateVolume(ctx context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume name is required")
	}
	block, err := checkCapabilities(req.GetVolumeCapabilities())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	size, err := requestedSize(req.GetCapacityRange())
	if err != nil {
		return nil, status.Error(codes.OutOfRange, err.Error())
	}
	pool, poolDir, err := d.poolFor(req.GetParameters())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	from, err := contentSource(req.GetVolumeContentSource())
	if err != nil {
		return nil, err
	}
	// The PVC is read before taking the lock: an API round trip must not stall other calls.
	owner, claimSrc, err := d.claimOf(ctx, req.GetParameters(), from)
	if err != nil {
		return nil, err
	}

	d.mu.Lock()
	defer d.mu.Unlock()

	// Idempotency first: the same name returns the same volume when it is compatible.
	if v, err := d.store.ByName(req.GetName()); err == nil {
		lim := req.GetCapacityRange().GetLimitBytes()
		if v.Size < req.GetCapacityRange().GetRequiredBytes() || (lim > 0 && v.Size > lim) || v.Block != block || v.Pool != pool || copiedFrom(v) != from {
			return nil, status.Errorf(codes.AlreadyExists, "volume %s exists with different size, mode, pool or source", req.GetName())
		}
		return &csi.CreateVolumeResponse{Volume: d.csiVolume(v, req.GetVolumeContentSource())}, nil
	}
	if !d.reachable(req.GetAccessibilityRequirements()) {
		return nil, status.Errorf(codes.ResourceExhausted, "topology requirement does not include node %s", d.cfg.NodeID)
	}

	src, err := d.copySource(from, size)
	if err != nil {
		return nil, err
	}
	if claimSrc != nil && src == nil {
		src = claimSrc
	}

	free, err := d.available(poolDir)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if n := need(size, d.quotaFor(pool, block)); n > free {
		return nil, status.Errorf(codes.ResourceExhausted, "pool %s has %d bytes left, %d requested", pool, free, n)
	}

	v, err := d.newVolume(req.GetName(), pool, poolDir, size, block, src, owner)
	if err != nil {
		return nil, err
	}
	d.log.Info("created volume", "volume", v.ID, "name", v.Name, "pool", pool, "size", size, "block", block, "source", describeSource(src))
	d.report(ctx, v)
	if v.Content.Phase == claim.PhasePopulating {
		d.jobs.start(v)
	}
	return &csi.CreateVolumeResponse{Volume: d.csiVolume(v, req.GetVolumeContentSource())}, nil
}

// copySource checks the volume or snapshot a new volume of size bytes copies, on this node,
// and returns the new volume's source; nil when it copies nothing. The caller holds d.mu.
func (d *Driver) copySource(from copyOf, size int64) (*state.Source, error) {
	switch {
	case from.volume != "":
		sv, err := d.store.Get(from.volume)
		if err != nil {
			return nil, status.Errorf(codes.NotFound, "clone source volume %s not found on node %s", from.volume, d.cfg.NodeID)
		}
		if sv.Size > size {
			return nil, status.Errorf(codes.OutOfRange, "clone source %s is %d bytes, larger than the requested %d", from.volume, sv.Size, size)
		}
		return &state.Source{CloneOf: from.volume}, nil
	case from.snapshot != "":
		// A snapshot lives on its source volume's node: a volume made from it is made there.
		sn, err := d.store.GetSnapshot(from.snapshot)
		if err != nil || sn.Failed != "" {
			return nil, status.Errorf(codes.NotFound, "snapshot %s not found on node %s", from.snapshot, d.cfg.NodeID)
		}
		if !sn.Ready {
			return nil, status.Errorf(codes.Unavailable, "snapshot %s is still being taken", from.snapshot)
		}
		if sn.Size > size {
			return nil, status.Errorf(codes.OutOfRange, "snapshot %s is %d bytes, larger than the requested %d", from.snapshot, sn.Size, size)
		}
		return &state.Source{Snapshot: from.snapshot}, nil
	}
	return nil, nil
}

// claimOf names the PVC a volume is made for, when the provisioner said, and reads the content
// it asks for (none for a clone or a restore, whose content is its source's).
func (d *Driver) claimOf(ctx context.Context, params map[string]string, from copyOf) (*state.Claim, *state.Source, error) {
	ns, name := params[paramPVCNamespace], params[paramPVCName]
	if ns == "" || name == "" {
		return nil, nil, nil
	}
	owner := &state.Claim{Namespace: ns, Name: name}
	if from != (copyOf{}) || d.cfg.Cluster == nil {
		return owner, nil, nil
	}
	req, err := d.cfg.Cluster.ClaimSource(ctx, ns, name)
	if err != nil {
		return nil, nil, status.Errorf(codes.Unavailable, "read the content source of PVC %s/%s: %v", ns, name, err)
	}
	if req == nil {
		return owner, nil, nil
	}
	if req.Import != nil && d.cfg.Filler == nil {
		return nil, nil, status.Error(codes.InvalidArgument, "this driver instance cannot import")
	}
	return owner, &state.Source{Upload: req.Upload, Import: req.Import}, nil
}

// newVolume makes the volume's directory and disk and records it: blank and ready, or waiting
// for its content.
func (d *Driver) newVolume(name, pool, poolDir string, size int64, block bool, src *state.Source, owner *state.Claim) (state.Volume, error) {
	id, err := newID("vol-")
	if err != nil {
		return state.Volume{}, status.Error(codes.Internal, err.Error())
	}
	v := state.Volume{
		ID: id, Name: name, Pool: pool, Dir: filepath.Join(poolDir, id),
		Size: size, Block: block, Source: src, Claim: owner,
		Content: claim.Content{Phase: claim.PhaseReady, Progress: "100.0%"},
		Created: time.Now().UTC(),
	}
	switch {
	case src != nil && src.Upload:
		v.Content = claim.Content{Phase: claim.PhasePending, Progress: "0.00%"}
	case src != nil:
		v.Content = claim.Content{Phase: claim.PhasePopulating, Progress: "0.00%"}
	}
	if err := os.MkdirAll(v.Dir, 0o750); err != nil {
		return state.Volume{}, status.Errorf(codes.Internal, "create volume dir %s: %v", v.Dir, err)
	}
	rollback := func() {
		// Best effort; the CreateVolume retry starts afresh.
		_ = os.RemoveAll(v.Dir)
		_ = dropQuota(v, poolDir)
	}
	if d.quotaFor(pool, block) {
		// Before disk.img is made, so that it inherits the project like all that follows.
		if err := d.applyQuota(&v, poolDir); err != nil {
			rollback()
			return state.Volume{}, status.Error(codes.Internal, err.Error())
		}
	}
	if err := diskimg.Create(filepath.Join(v.Dir, diskimg.Name), size); err != nil {
		rollback()
		return state.Volume{}, status.Error(codes.Internal, err.Error())
	}
	if err := d.store.Put(v); err != nil {
		rollback()
		return state.Volume{}, status.Error(codes.Internal, err.Error())
	}
	return v, nil
}

// copyOf is the volume or the snapshot a new volume copies.
type copyOf struct{ volume, snapshot string }

func contentSource(cs *csi.VolumeContentSource) (copyOf, error) {
	switch {
	case cs == nil:
		return copyOf{}, nil
	case cs.GetSnapshot() != nil:
		id := cs.GetSnapshot().GetSnapshotId()
		if id == "" {
			return copyOf{}, status.Error(codes.InvalidArgument, "content source snapshot ID is required")
		}
		return copyOf{snapshot: id}, nil
	}
	id := cs.GetVolume().GetVolumeId()
	if id == "" {
		return copyOf{}, status.Error(codes.InvalidArgument, "content source volume ID is required")
	}
	return copyOf{volume: id}, nil
}

func copiedFrom(v state.Volume) copyOf {
	if v.Source == nil {
		return copyOf{}
	}
	return copyOf{volume: v.Source.CloneOf, snapshot: v.Source.Snapshot}
}

func describeSource(s *state.Source) string {
	switch {
	case s == nil:
		return "blank"
	case s.CloneOf != "":
		return "clone:" + s.CloneOf
	case s.Snapshot != "":
		return "snapshot:" + s.Snapshot
	case s.Upload:
		return "upload"
	case s.Import != nil:
		return "http"
	}
	return "blank"
}

func (d *Driver) csiVolume(v state.Volume, cs *csi.VolumeContentSource) *csi.Volume {
	return &csi.Volume{
		VolumeId:           v.ID,
		CapacityBytes:      v.Size,
		VolumeContext:      map[string]string{ParamPool: v.Pool},
		ContentSource:      cs,
		AccessibleTopology: d.topology(),
	}
}

// newID makes a volume's or a snapshot's ID: prefix and 24 random hex digits.
func newID(prefix string) (string, error) {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("make %sID: %w", prefix, err)
	}
	return prefix + hex.EncodeToString(b), nil
}

// DeleteVolume stops the volume's import, detaches its loop device and removes its directory and
// state. An unknown volume is already deleted; a volume still published is FailedPrecondition.
// Its snapshots stay: each is a copy of its own.
func (d *Driver) DeleteVolume(ctx context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID is required")
	}
	d.jobs.cancel(req.GetVolumeId())
	d.mu.Lock()
	defer d.mu.Unlock()
	v, err := d.store.Get(req.GetVolumeId())
	if errors.Is(err, state.ErrNotFound) {
		return &csi.DeleteVolumeResponse{}, nil
	}
	if len(v.Published) > 0 {
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s is still published at %d paths", v.ID, len(v.Published))
	}
	if err := d.detachLoop(ctx, v); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if err := os.RemoveAll(v.Dir); err != nil {
		return nil, status.Errorf(codes.Internal, "remove volume dir %s: %v", v.Dir, err)
	}
	if err := dropQuota(v, filepath.Dir(v.Dir)); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if err := d.store.Delete(v.ID); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	d.log.Info("deleted volume", "volume", v.ID, "name", v.Name)
	return &csi.DeleteVolumeResponse{}, nil
}

// ValidateVolumeCapabilities confirms the capabilities when they are ones the driver supports and
// their access type (block or filesystem) is the volume's; otherwise it answers with the reason.
func (d *Driver) ValidateVolumeCapabilities(_ context.Context, req *csi.ValidateVolumeCapabilitiesRequest) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID is required")
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "volume capabilities are required")
	}
	v, err := d.store.Get(req.GetVolumeId())
	if err != nil {
		return nil, status.Errorf(codes.NotFound, "volume %s not found", req.GetVolumeId())
	}
	block, err := checkCapabilities(req.GetVolumeCapabilities())
	if err != nil {
		return &csi.ValidateVolumeCapabilitiesResponse{Message: err.Error()}, nil
	}
	if block != v.Block {
		return &csi.ValidateVolumeCapabilitiesResponse{Message: "access type does not match the volume's"}, nil
	}
	return &csi.ValidateVolumeCapabilitiesResponse{Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeContext:      req.GetVolumeContext(),
		VolumeCapabilities: req.GetVolumeCapabilities(),
		Parameters:         req.GetParameters(),
	}}, nil
}

// ListVolumes pages through the volumes of this node; the token is the index of the next entry.
func (d *Driver) ListVolumes(_ context.Context, req *csi.ListVolumesRequest) (*csi.ListVolumesResponse, error) {
	vols, next, err := page(d.store.List(), req.GetMaxEntries(), req.GetStartingToken())
	if err != nil {
		return nil, err
	}
	resp := &csi.ListVolumesResponse{NextToken: next}
	for _, v := range vols {
		resp.Entries = append(resp.Entries, &csi.ListVolumesResponse_Entry{
			Volume: d.csiVolume(v, nil),
		})
	}
	return resp, nil
}

// page returns the entries of a listing from the token (the index of the next entry; empty:
// the first), at most maxEntries of them (0: all), and the token of the entry after them.
func page[T any](all []T, maxEntries int32, token string) ([]T, string, error) {
	start := 0
	if token != "" {
		n, err := strconv.Atoi(token)
		if err != nil || n < 0 || n > len(all) {
			return nil, "", status.Errorf(codes.Aborted, "starting token %q is not valid", token)
		}
		start = n
	}
	end := len(all)
	if m := int(maxEntries); m > 0 && start+m < end {
		end = start + m
	}
	next := ""
	if end < len(all) {
		next = strconv.Itoa(end)
	}
	return all[start:end], next, nil
}

// GetCapacity reports what new volumes may still take from the pool the parameters name (see
// available), and nothing for a topology segment other than this node.
func (d *Driver) GetCapacity(_ context.Context, req *csi.GetCapacityRequest) (*csi.GetCapacityResponse, error) {
	if t := req.GetAccessibleTopology(); t != nil && t.GetSegments()[TopologyKey] != d.cfg.NodeID {
		return &csi.GetCapacityResponse{AvailableCapacity: 0}, nil
	}
	pool, dir, err := d.poolFor(req.GetParameters())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	d.mu.Lock()
	free, err := d.available(dir)
	d.mu.Unlock()
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if d.quota[pool] {
		// The largest filesystem volume whose limit (size plus margin) still fits.
		free = quota.SizeFor(free)
	}
	return &csi.GetCapacityResponse{AvailableCapacity: free, MaximumVolumeSize: wrapperspb.Int64(free)}, nil
}

// ControllerExpandVolume grows the volume's disk.img. A published block volume also needs the
// node to refresh its loop device, so it asks for node expansion.
func (d *Driver) ControllerExpandVolume(ctx context.Context, req *csi.ControllerExpandVolumeRequest) (*csi.ControllerExpandVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID is required")
	}
	if req.GetCapacityRange() == nil {
		return nil, status.Error(codes.InvalidArgument, "capacity range is required")
	}
	size, err := requestedSize(req.GetCapacityRange())
	if err != nil {
		return nil, status.Error(codes.OutOfRange, err.Error())
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	v, err := d.store.Get(req.GetVolumeId())
	if err != nil {
		return nil, status.Errorf(codes.NotFound, "volume %s not found", req.GetVolumeId())
	}
	if size <= v.Size {
		return &csi.ControllerExpandVolumeResponse{CapacityBytes: v.Size, NodeExpansionRequired: v.Block && len(v.Published) > 0}, nil
	}
	if v, err = d.grow(v, size); err != nil {
		return nil, err
	}
	// A loop device keeps the old size until it is told; the node does that.
	return &csi.ControllerExpandVolumeResponse{CapacityBytes: size, NodeExpansionRequired: v.Block}, nil
}

// grow makes a volume's disk.img size bytes long. The caller holds d.mu.
func (d *Driver) grow(v state.Volume, size int64) (state.Volume, error) {
	if v.Content.Phase != claim.PhaseReady {
		return v, status.Errorf(codes.FailedPrecondition, "volume %s is being filled", v.ID)
	}
	free, err := d.available(filepath.Dir(v.Dir))
	if err != nil {
		return v, status.Error(codes.Internal, err.Error())
	}
	withQuota := v.Project != 0
	if more := need(size, withQuota) - need(v.Size, withQuota); more > free {
		return v, status.Errorf(codes.ResourceExhausted, "pool %s has %d bytes left, %d more requested", v.Pool, free, more)
	}
	f, err := openDisk(v, os.O_RDWR, "expand")
	if err != nil {
		return v, rpcError(err)
	}
	defer f.Close()
	if withQuota {
		if err := quota.SetLimit(v.Dir, v.Project, quota.LimitFor(size)); err != nil {
			return v, status.Error(codes.Internal, err.Error())
		}
	}
	if err := diskimg.GrowFile(f, size); err != nil {
		return v, status.Error(codes.Internal, err.Error())
	}
	v, err = d.store.Update(v.ID, func(v *state.Volume) error { v.Size = size; return nil })
	if err != nil {
		return v, status.Error(codes.Internal, err.Error())
	}
	d.log.Info("expanded volume", "volume", v.ID, "size", size)
	return v, nil
}

// sortedPaths gives the publications in a stable order for logs and messages.
func sortedPaths(m map[string]state.Publication) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
