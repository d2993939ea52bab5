package driver

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/slimvirt/slimvirt/csi/claim"
	"github.com/slimvirt/slimvirt/csi/diskimg"
	"github.com/slimvirt/slimvirt/csi/quota"
	"github.com/slimvirt/slimvirt/csi/state"
	"github.com/slimvirt/slimvirt/csi/voltree"
	"github.com/slimvirt/slimvirt/internal/qcow2"
)

// firstProject is where the project IDs of volumes start: far above the IDs admins and
// kubelet's own quota monitoring (which starts at 1048577) hand out.
const firstProject = 1 << 30

// treeLimits bounds a walk of a filesystem volume of size bytes (clone, stats, reset): the
// nesting a pod may make, its inode limit's entries, its block limit's bytes.
func treeLimits(size int64) voltree.Limits {
	l := quota.LimitFor(size)
	return voltree.Limits{Depth: voltree.DefaultDepth, Entries: l.Inodes, Bytes: l.Bytes}
}

// quotaFor says whether a new volume gets a project quota: a filesystem volume in a pool
// whose filesystem enforces them.
func (d *Driver) quotaFor(pool string, block bool) bool { return !block && d.quota[pool] }

// need is what a new volume of size bytes takes from its pool: its quota limit, or its size.
func need(size int64, withQuota bool) int64 {
	if withQuota {
		return quota.LimitFor(size).Bytes
	}
	return size
}

// newProject picks a project ID no volume uses and the filesystem of dir holds nothing for.
// The caller holds d.mu.
func (d *Driver) newProject(dir string) (uint32, error) {
	used := map[uint32]bool{}
	for _, v := range d.store.List() {
		used[v.Project] = true
	}
	for id := uint32(firstProject); id < firstProject+1<<20; id++ {
		if used[id] {
			continue
		}
		u, err := quota.Get(dir, id)
		if err != nil {
			return 0, err
		}
		if u == (quota.Usage{}) {
			return id, nil
		}
	}
	return 0, errors.New("no free project ID")
}

// applyQuota gives the new volume directory v.Dir its project and limit. The caller holds d.mu.
func (d *Driver) applyQuota(v *state.Volume, poolDir string) error {
	id, err := d.newProject(poolDir)
	if err != nil {
		return fmt.Errorf("pick a project ID for volume %s: %w", v.ID, err)
	}
	if err := quota.SetLimit(v.Dir, id, quota.LimitFor(v.Size)); err != nil {
		return err
	}
	if err := quota.SetProject(v.Dir, id); err != nil {
		_ = quota.SetLimit(poolDir, id, quota.Limit{}) // best-effort rollback; the ID is free again
		return err
	}
	v.Project = id
	return nil
}

// dropQuota removes the limit of a deleted volume's project.
func dropQuota(v state.Volume, poolDir string) error {
	if v.Project == 0 {
		return nil
	}
	return quota.SetLimit(poolDir, v.Project, quota.Limit{})
}

// available is what new volumes may still take from a pool: the filesystem's free space less
// what the pool's volumes may still grow into. A volume with a project quota may grow to its
// limit: what its project holds (disk.img and every other file) is already out of the free
// space, so it takes limit minus that. Any other volume may still fill its disk.img's holes;
// counting them as taken means a guest never finds its disk full although the disk says it
// has room. Snapshots take what snapshotReserve says.
func (d *Driver) available(dir string) (int64, error) {
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	free := int64(fs.Bavail) * fs.Bsize
	for _, v := range d.store.List() {
		if filepath.Dir(v.Dir) != filepath.Clean(dir) {
			continue
		}
		free -= d.reserved(v, dir) + scratchReserve(v)
	}
	for _, sn := range d.store.ListSnapshots() {
		if filepath.Dir(filepath.Dir(sn.Path)) == filepath.Clean(dir) {
			free -= snapshotReserve(sn)
		}
	}
	return max(free, 0), nil
}

// reserved is what v may still take from its pool beyond what it holds.
func (d *Driver) reserved(v state.Volume, dir string) int64 {
	if v.Project != 0 {
		limit := quota.LimitFor(v.Size).Bytes
		u, err := quota.Get(dir, v.Project)
		if err != nil {
			d.log.Error("read volume quota", "volume", v.ID, "project", v.Project, "err", err)
			return limit
		}
		return max(limit-u.UsedBytes, 0)
	}
	// A disk.img that cannot be measured (a pod put something else there) counts as taking
	// its whole size: what is behind a link is not the volume's.
	alloc, err := allocated(v, "measure")
	if err != nil {
		alloc = 0
	}
	return max(v.Size-alloc, 0)
}

// scratchReserve is the pool space an import or upload still under way may stage a qcow2 image
// in: the most an image of the volume's size can take (qcow2.MaxFileSizeFor), held from the
// start so that the pool's capacity never promises space a staged image will need.
func scratchReserve(v state.Volume) int64 {
	if v.Source == nil || (v.Source.Import == nil && !v.Source.Upload) {
		return 0
	}
	if v.Content.Phase != claim.PhasePending && v.Content.Phase != claim.PhasePopulating {
		return 0
	}
	return qcow2.MaxFileSizeFor(v.Size)
}

// resetVolume makes v's content blank again before a fill starts (over) and after one fails:
// a filesystem volume's tree is emptied but for disk.img, and disk.img (made again if a clone
// had removed it) is all holes.
func resetVolume(v state.Volume) error {
	if !v.Block {
		if err := voltree.Clear(v.Dir, diskimg.Name, treeLimits(v.Size)); err != nil {
			return fmt.Errorf("empty volume %s: %w", v.Name, err)
		}
		// A clone starts by removing disk.img: make it again, all holes, exactly the size.
		f, err := openDisk(v, os.O_RDWR|os.O_CREATE, "reset")
		if err != nil {
			return err
		}
		defer f.Close()
		if err := f.Truncate(0); err != nil {
			return fmt.Errorf("reset the disk of volume %s: %w", v.Name, err)
		}
		if err := f.Truncate(v.Size); err != nil {
			return fmt.Errorf("reset the disk of volume %s: %w", v.Name, err)
		}
		return nil
	}
	return resetDisk(v)
}

// volumeStats is what a pod sees of a filesystem volume: with a project quota, statfs of the
// directory (the filesystem answers with the project's limit and usage); otherwise the size
// as total and what the tree occupies as used.
func volumeStats(v state.Volume) (bytes, inodes *usage, err error) {
	if v.Project != 0 {
		var fs unix.Statfs_t
		if err := unix.Statfs(v.Dir, &fs); err != nil {
			return nil, nil, status.Errorf(codes.Internal, "statfs %s: %v", v.Dir, err)
		}
		bs := fs.Bsize
		return &usage{int64(fs.Blocks) * bs, int64(fs.Blocks-fs.Bfree) * bs, int64(fs.Bavail) * bs},
			&usage{int64(fs.Files), int64(fs.Files - fs.Ffree), int64(fs.Ffree)}, nil
	}
	lim := treeLimits(v.Size)
	u, err := voltree.Measure(v.Dir, lim)
	if err != nil && !voltree.Refused(err) {
		return nil, nil, status.Errorf(codes.Internal, "measure volume %s: %v", v.ID, err)
	}
	// Past the walk's bounds the counts so far are reported: the tree is at least that big.
	return &usage{v.Size, u.Bytes, max(v.Size-u.Bytes, 0)}, &usage{lim.Entries, u.Inodes, max(lim.Entries-u.Inodes, 0)}, nil
}

type usage struct{ total, used, available int64 }
