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
// which controller RPCs this driver serves: create/delete, capacity, clones, listing, expansion
// and single-node multi-writer access.
func (d *Driver) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	var caps []*csi.ControllerServiceCapability
	for _, t := range []csi.ControllerServiceCapability_RPC_Type{
		csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
		csi.ControllerServiceCapability_RPC_GET_CAPACITY,
		csi.ControllerServiceCapability_RPC_CLONE_VOLUME,
		csi.ControllerServiceCapability_RPC_LIST_VOLUMES,
		csi.ControllerServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
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
// limit), empty, cloned from another volume on this node, or to be filled by an import or upload named by the PVC. A
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
	cloneOf, err := contentSource(req.GetVolumeContentSource())
	if err != nil {
		return nil, err
	}
	// The PVC is read before taking the lock: an API round trip must not stall other calls.
	owner, claimSrc, err := d.claimOf(ctx, req.GetParameters(), cloneOf)
	if err != nil {
		return nil, err
	}

	d.mu.Lock()
	defer d.mu.Unlock()

	// Idempotency first: the same name returns the same volume when it is compatible.
	if v, err := d.store.ByName(req.GetName()); err == nil {
		lim := req.GetCapacityRange().GetLimitBytes()
		if v.Size < req.GetCapacityRange().GetRequiredBytes() || (lim > 0 && v.Size > lim) || v.Block != block || v.Pool != pool || sourceOf(v) != cloneOf {
			return nil, status.Errorf(codes.AlreadyExists, "volume %s exists with different size, mode, pool or source", req.GetName())
		}
		return &csi.CreateVolumeResponse{Volume: d.csiVolume(v, req.GetVolumeContentSource())}, nil
	}
	if !d.reachable(req.GetAccessibilityRequirements()) {
		return nil, status.Errorf(codes.ResourceExhausted, "topology requirement does not include node %s", d.cfg.NodeID)
	}

	var src *state.Source
	if cloneOf != "" {
		sv, err := d.store.Get(cloneOf)
		if err != nil {
			return nil, status.Errorf(codes.NotFound, "clone source volume %s not found on node %s", cloneOf, d.cfg.NodeID)
		}
		if sv.Size > size {
			return nil, status.Errorf(codes.OutOfRange, "clone source %s is %d bytes, larger than the requested %d", cloneOf, sv.Size, size)
		}
		src = &state.Source{CloneOf: cloneOf}
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

// claimOf names the PVC a volume is made for, when the provisioner said, and reads the content
// it asks for (none for a clone, whose content is the source volume's).
func (d *Driver) claimOf(ctx context.Context, params map[string]string, cloneOf string) (*state.Claim, *state.Source, error) {
	ns, name := params[paramPVCNamespace], params[paramPVCName]
	if ns == "" || name == "" {
		return nil, nil, nil
	}
	owner := &state.Claim{Namespace: ns, Name: name}
	if cloneOf != "" || d.cfg.Cluster == nil {
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
	id, err := newID()
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

func contentSource(cs *csi.VolumeContentSource) (string, error) {
	if cs == nil {
		return "", nil
	}
	if cs.GetSnapshot() != nil {
		return "", status.Error(codes.InvalidArgument, "snapshots are not supported yet")
	}
	id := cs.GetVolume().GetVolumeId()
	if id == "" {
		return "", status.Error(codes.InvalidArgument, "content source volume ID is required")
	}
	return id, nil
}

func sourceOf(v state.Volume) string {
	if v.Source == nil {
		return ""
	}
	return v.Source.CloneOf
}

func describeSource(s *state.Source) string {
	switch {
	case s == nil:
		return "blank"
	case s.CloneOf != "":
		return "clone:" + s.CloneOf
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

func newID() (string, error) {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("make volume ID: %w", err)
	}
	return "vol-" + hex.EncodeToString(b), nil
}

// DeleteVolume stops the volume's import, detaches its loop device and removes its directory and
// state. An unknown volume is already deleted; a volume still published is FailedPrecondition.
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
	vols := d.store.List()
	start := 0
	if tok := req.GetStartingToken(); tok != "" {
		n, err := strconv.Atoi(tok)
		if err != nil || n < 0 || n > len(vols) {
			return nil, status.Errorf(codes.Aborted, "starting token %q is not valid", tok)
		}
		start = n
	}
	end := len(vols)
	if m := int(req.GetMaxEntries()); m > 0 && start+m < end {
		end = start + m
	}
	resp := &csi.ListVolumesResponse{}
	for _, v := range vols[start:end] {
		resp.Entries = append(resp.Entries, &csi.ListVolumesResponse_Entry{
			Volume: d.csiVolume(v, nil),
		})
	}
	if end < len(vols) {
		resp.NextToken = strconv.Itoa(end)
	}
	return resp, nil
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
