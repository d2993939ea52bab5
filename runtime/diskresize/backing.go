package diskresize

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/slimvirt/slimvirt/csi/diskimg"
	"github.com/slimvirt/slimvirt/runtime/volumes"
)

// backing is a disk's backing file or device, open for the whole watch. The PVC is written
// by the tenant (a guest with the PVC on another pod, or anything sharing the volume), so
// the name is looked at once, never through a link, and only a regular file (a block device
// for a block PVC) is opened; after that only the descriptor is used. That is also the inode
// QEMU opened when the domain started: a name swapped later changes nothing the guest sees,
// and nothing the watch does.
type backing struct {
	f     *os.File
	block bool
}

// openBacking opens d's backing.
func openBacking(d Disk) (*backing, error) {
	if !d.Block {
		// Read-write: an image that fills its filesystem is grown through this descriptor.
		f, err := diskimg.Open(filepath.Dir(d.Path), filepath.Base(d.Path), os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("open the image of volume %s: %w", d.Volume, err)
		}
		return &backing{f: f}, nil
	}
	// O_PATH opens nothing: a FIFO does not block and a character device's open routine
	// does not run before the type is checked.
	p, err := unix.Open(d.Path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open the device of volume %s: %w", d.Volume, &os.PathError{Op: "open", Path: d.Path, Err: err})
	}
	defer unix.Close(p) //nolint:errcheck // an O_PATH descriptor
	var st unix.Stat_t
	if err := unix.Fstat(p, &st); err != nil {
		return nil, fmt.Errorf("stat the device of volume %s: %w", d.Volume, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return nil, fmt.Errorf("the device of volume %s: %s is %s, not a block device", d.Volume, d.Path, diskimg.FileType(st.Mode))
	}
	// The very inode checked; the name may have been swapped since.
	fd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(p), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open the device of volume %s: %w", d.Volume, &os.PathError{Op: "open", Path: d.Path, Err: err})
	}
	return &backing{f: os.NewFile(uintptr(fd), d.Path), block: true}, nil
}

func (b *backing) Close() error { return b.f.Close() }

// look measures the backing: its size and, for an image, the size it would have if it
// filled its filesystem as the launcher sizes a new disk.img (the image's own blocks count
// as room it may take).
func (b *backing) look() (look, error) {
	if b.block {
		size, err := b.f.Seek(0, io.SeekEnd)
		if err != nil {
			return look{}, fmt.Errorf("size %s: %w", b.f.Name(), err)
		}
		return look{size: size}, nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(b.f.Fd()), &st); err != nil {
		return look{}, fmt.Errorf("stat %s: %w", b.f.Name(), err)
	}
	var fs unix.Statfs_t
	if err := unix.Fstatfs(int(b.f.Fd()), &fs); err != nil {
		return look{}, fmt.Errorf("statfs %s: %w", b.f.Name(), err)
	}
	bs := fs.Bsize
	fill := volumes.ImageSize(int64(fs.Blocks)*bs, int64(fs.Bavail)*bs+st.Blocks*512)
	return look{size: st.Size, fill: fill}, nil
}

// grow makes the image size bytes long, sparse; it never shrinks it.
func (b *backing) grow(size int64) error {
	return diskimg.GrowFile(b.f, size)
}
