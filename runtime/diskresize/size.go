package diskresize

import (
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/runtime/domain"
)

// SectorSize is the unit a disk's size is given to the guest in: virtio-blk, SCSI and SATA
// all count 512-byte sectors, and QEMU sizes a raw image in them.
const SectorSize = 512

// Disk is one PVC-backed disk of the running domain.
type Disk struct {
	// Volume is the VMI volume the disk uses, for logs and reports.
	Volume string
	// Path is the disk's source in the domain: the disk.img of a filesystem PVC or the
	// device node of a block PVC. libvirt names the disk by it.
	Path string
	// Block says Path is a block device.
	Block bool
}

// Disks are the disks of vmi that may grow while it runs: writable raw disks (not CD-ROMs,
// not LUNs, which the guest sizes itself) over a PVC or a DataVolume. sources are the
// prepared volumes (package volumes).
func Disks(vmi *v1.VirtualMachineInstance, sources map[string]domain.DiskSource) []Disk {
	pvc := map[string]bool{}
	for _, v := range vmi.Spec.Volumes {
		pvc[v.Name] = v.PersistentVolumeClaim != nil || v.DataVolume != nil
	}
	var out []Disk
	for _, d := range vmi.Spec.Domain.Devices.Disks {
		src, ok := sources[d.Name]
		switch {
		case !ok || !pvc[d.Name]:
		case d.CDRom != nil || d.LUN != nil:
		case src.ReadOnly || (d.Disk != nil && d.Disk.ReadOnly):
		case src.Format != "raw" || src.Path == "":
		default:
			out = append(out, Disk{Volume: d.Name, Path: src.Path, Block: src.Block})
		}
	}
	return out
}

// GuestSize is the size the guest is given for a backing of size bytes: whole sectors, so
// a tail shorter than a sector is left out and the backing is never cut.
func GuestSize(size int64) int64 {
	return size / SectorSize * SectorSize
}

// state is what the watch knows of one disk between two looks at its backing.
type state struct {
	// capacity is the size the guest sees.
	capacity int64
	// size is the backing's size at the last look.
	size int64
	// follows says the image filled its filesystem (as the launcher makes a missing
	// disk.img) when the watch began and nothing but the watch sized it since: the image
	// then grows with its filesystem.
	follows bool
	// pending is a fill size seen at the last look and not acted on yet: a filesystem must
	// show the same room twice in a row before the image is grown into it, so a volume whose
	// storage grows the image itself right after its filesystem is left to it.
	pending int64
	// failed is a guest size libvirt refused: not asked again until the backing grows more.
	failed int64
}

// look is one measurement of a disk's backing.
type look struct {
	// size is the backing's size.
	size int64
	// fill is the size an image filling its filesystem would have now (volumes.ImageSize);
	// 0 for a block device.
	fill int64
}

// start is the state of a disk whose guest sees capacity bytes when the watch begins.
func start(capacity int64, first look) state {
	return state{
		capacity: capacity,
		size:     first.size,
		follows:  first.fill > 0 && first.size >= first.fill,
	}
}

// step decides what to do after a look: grow the image to growTo (0: leave it) and give the
// guest resizeTo bytes (0: leave it). It never shrinks either. next assumes both succeed.
func step(s state, l look) (next state, growTo, resizeTo int64) {
	next = s
	if l.size != s.size {
		// Sized by someone else (the volume's storage): the image is theirs to size.
		next.follows = false
	}
	next.size = l.size
	size := l.size
	next.pending = 0
	if next.follows && l.fill > size {
		if l.fill == s.pending {
			growTo, size, next.size = l.fill, l.fill, l.fill
		} else {
			next.pending = l.fill
		}
	}
	if g := GuestSize(size); g > s.capacity && g != s.failed {
		resizeTo, next.capacity = g, g
	}
	return next, growTo, resizeTo
}
