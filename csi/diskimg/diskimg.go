// Package diskimg makes and changes the sparse raw files that back slimvirt volumes: disk.img
// of an exact size, grown in place, reset to holes, and copied by reflink or sparse-aware copy.
//
// A volume's directory is written by the pods that mount it, so every file here is opened with
// Open (no link followed, regular files only) and then changed through its descriptor only.
// The *File functions take a descriptor Open returned; the path functions open one themselves.
package diskimg

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Name is the file KubeVirt and the slimvirt launcher read from a filesystem volume.
const Name = "disk.img"

// SectorSize is what sizes are rounded up to: QEMU and loop devices work in 512-byte sectors.
const SectorSize = 512

// RoundUp returns size rounded up to a whole sector.
func RoundUp(size int64) int64 {
	return (size + SectorSize - 1) / SectorSize * SectorSize
}

// Create makes a sparse file of exactly size bytes. An existing file of that size is kept, so
// the call can be repeated. The file is opened as Open does: never through a link.
func Create(path string, size int64) error {
	f, err := Open(filepath.Dir(path), filepath.Base(path), os.O_RDWR|os.O_CREATE, 0o660)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("size %s to %d bytes: %w", path, size, err)
	}
	return f.Sync()
}

// Grow opens path as Open does and grows it as GrowFile does.
func Grow(path string, size int64) error {
	f, err := Open(filepath.Dir(path), filepath.Base(path), os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("grow %s: %w", path, err)
	}
	defer f.Close()
	return GrowFile(f, size)
}

// GrowFile makes f size bytes long if it is shorter; it never shrinks a disk.
func GrowFile(f *os.File, size int64) error {
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("grow %s: %w", f.Name(), err)
	}
	if fi.Size() >= size {
		return nil
	}
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("grow %s to %d bytes: %w", f.Name(), size, err)
	}
	return nil
}

// Reset opens path as Open does and resets it as ResetFile does.
func Reset(path string) error {
	f, err := Open(filepath.Dir(path), filepath.Base(path), os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("reset %s: %w", path, err)
	}
	defer f.Close()
	return ResetFile(f)
}

// ResetFile drops every block of f, keeping its size: the disk reads as zeros again and uses
// no space. Used before an import starts over and after one fails.
func ResetFile(f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("reset %s: %w", f.Name(), err)
	}
	if err := f.Truncate(0); err != nil {
		return fmt.Errorf("reset %s: %w", f.Name(), err)
	}
	if err := f.Truncate(fi.Size()); err != nil {
		return fmt.Errorf("reset %s: %w", f.Name(), err)
	}
	return nil
}

// Allocated opens path as Open does and returns the bytes it occupies on disk.
func Allocated(path string) (int64, error) {
	f, err := Open(filepath.Dir(path), filepath.Base(path), os.O_RDONLY, 0)
	if err != nil {
		return 0, fmt.Errorf("stat %s: %w", path, err)
	}
	defer f.Close()
	return AllocatedFile(f)
}

// AllocatedFile returns the bytes f occupies on disk.
func AllocatedFile(f *os.File) (int64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, fmt.Errorf("stat %s: %w", f.Name(), err)
	}
	return st.Blocks * 512, nil
}

// Clone opens src and dst (made if missing) as Open does and copies as CloneFile does.
func Clone(src, dst string, size int64) (reflinked bool, err error) {
	in, err := Open(filepath.Dir(src), filepath.Base(src), os.O_RDONLY, 0)
	if err != nil {
		return false, fmt.Errorf("open clone source %s: %w", src, err)
	}
	defer in.Close()
	out, err := Open(filepath.Dir(dst), filepath.Base(dst), os.O_RDWR|os.O_CREATE, 0o660)
	if err != nil {
		return false, fmt.Errorf("create clone %s: %w", dst, err)
	}
	defer out.Close()
	return CloneFile(in, out, size)
}

// CloneFile makes out a copy of in, size bytes long (at least in's size); what out held is
// dropped. It copies as CopyFile does and syncs out.
func CloneFile(in, out *os.File, size int64) (reflinked bool, err error) {
	reflinked, err = CopyFile(in, out)
	if err != nil {
		return false, err
	}
	fi, err := in.Stat()
	if err != nil {
		return reflinked, fmt.Errorf("stat clone source %s: %w", in.Name(), err)
	}
	if size < fi.Size() {
		size = fi.Size()
	}
	if err := out.Truncate(size); err != nil {
		return reflinked, fmt.Errorf("size clone %s: %w", out.Name(), err)
	}
	if err := out.Sync(); err != nil {
		return reflinked, fmt.Errorf("sync clone %s: %w", out.Name(), err)
	}
	return reflinked, nil
}

// CopyFile makes out a copy of in, as long as in; what out held is dropped. It asks the
// filesystem for a reflink first (btrfs, XFS: instant, shares blocks); otherwise it copies
// only the data extents, so the time and the space taken follow the data, not the size. It
// does not sync out.
func CopyFile(in, out *os.File) (reflinked bool, err error) {
	return copyFile(in, out, -1)
}

// ErrTooLarge is returned for a file longer than the copy may be.
var ErrTooLarge = errors.New("is larger than the copy may be")

// CopyFileAtMost copies as CopyFile does, but never more than limit bytes: an in longer than
// limit is refused with ErrTooLarge before anything is copied, and a reflink (which takes in
// as long as it is by then) that comes out longer is dropped and refused the same way. Whoever
// writes in while it is copied cannot make out larger than limit.
func CopyFileAtMost(in, out *os.File, limit int64) (reflinked bool, err error) {
	return copyFile(in, out, limit)
}

// copyFile is CopyFile with a limit (-1: none).
func copyFile(in, out *os.File, limit int64) (reflinked bool, err error) {
	src, dst := in.Name(), out.Name()
	fi, err := in.Stat()
	if err != nil {
		return false, fmt.Errorf("stat clone source %s: %w", src, err)
	}
	if limit >= 0 && fi.Size() > limit {
		return false, fmt.Errorf("copy %s: %d bytes, %d allowed: %w", src, fi.Size(), limit, ErrTooLarge)
	}
	if fo, err := out.Stat(); err != nil {
		return false, fmt.Errorf("stat clone %s: %w", dst, err)
	} else if os.SameFile(fi, fo) {
		return false, fmt.Errorf("clone %s onto itself (%s)", src, dst)
	}
	if err := out.Truncate(0); err != nil {
		return false, fmt.Errorf("empty clone %s: %w", dst, err)
	}
	if unix.IoctlFileClone(int(out.Fd()), int(in.Fd())) == nil {
		if limit < 0 {
			return true, nil
		}
		fo, err := out.Stat()
		if err != nil {
			return true, fmt.Errorf("stat clone %s: %w", dst, err)
		}
		if fo.Size() > limit {
			return true, errors.Join(fmt.Errorf("copy %s: %d bytes, %d allowed: %w", src, fo.Size(), limit, ErrTooLarge), out.Truncate(0))
		}
		return true, nil
	}
	if err := copySparse(in, out, fi.Size()); err != nil {
		return false, fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	return false, nil
}

// copySparse copies the data extents of in (found with SEEK_DATA/SEEK_HOLE) below size to the
// same offsets of out, using copy_file_range so the kernel moves the bytes. Data written past
// size while it copies is left out.
func copySparse(in, out *os.File, size int64) error {
	if err := out.Truncate(size); err != nil {
		return err
	}
	ifd, ofd := int(in.Fd()), int(out.Fd())
	var off int64
	for off < size {
		data, err := unix.Seek(ifd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			return nil // only a hole is left
		}
		if err != nil {
			return fmt.Errorf("find data after %d: %w", off, err)
		}
		hole, err := unix.Seek(ifd, data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("find hole after %d: %w", data, err)
		}
		if data >= size {
			return nil
		}
		hole = min(hole, size)
		if err := copyRange(ifd, ofd, data, hole-data); err != nil {
			return err
		}
		off = hole
	}
	return nil
}

func copyRange(ifd, ofd int, off, n int64) error {
	roff, woff := off, off
	for n > 0 {
		chunk := n
		if chunk > 1<<30 {
			chunk = 1 << 30
		}
		c, err := unix.CopyFileRange(ifd, &roff, ofd, &woff, int(chunk), 0)
		if errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) {
			return copyRead(ifd, ofd, roff, n)
		}
		if err != nil {
			return fmt.Errorf("copy %d bytes at %d: %w", chunk, roff, err)
		}
		if c == 0 {
			return fmt.Errorf("copy at %d: %w", roff, io.ErrUnexpectedEOF)
		}
		n -= int64(c)
	}
	return nil
}

func copyRead(ifd, ofd int, off, n int64) error {
	buf := make([]byte, 1<<20)
	for n > 0 {
		b := buf
		if int64(len(b)) > n {
			b = b[:n]
		}
		r, err := unix.Pread(ifd, b, off)
		if err != nil {
			return fmt.Errorf("read at %d: %w", off, err)
		}
		if r == 0 {
			return fmt.Errorf("read at %d: %w", off, io.ErrUnexpectedEOF)
		}
		if _, err := unix.Pwrite(ofd, b[:r], off); err != nil {
			return fmt.Errorf("write at %d: %w", off, err)
		}
		off += int64(r)
		n -= int64(r)
	}
	return nil
}
