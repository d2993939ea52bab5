// Package diskcopy takes the disk out of a containerDisk image, and the kernel and initrd out of
// a kernelBoot image. It runs in a container next to the launcher's, started from that image
// itself, which holds nothing but the files, so it is a static binary, which the node agent's
// seed init container installs on every node (Install). The launcher waits for its copy
// (Await).
package diskcopy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/slimvirt/slimvirt/internal/atomicfile"
)

// DefaultSource is where a containerDisk image keeps its disk (KubeVirt's convention).
const DefaultSource = "/disk"

// Names of the copied disk in the destination directory; the launcher looks for either.
const (
	RawName   = "disk.img"
	QCOW2Name = "disk.qcow2"
)

// ErrNoDisk says the image holds no disk file; ErrAmbiguous that it holds more than one.
var (
	ErrNoDisk    = errors.New("no disk file")
	ErrAmbiguous = errors.New("more than one disk file")
)

// Install puts the copier src (the launcher image's) into dir, the node directory every
// launcher pod mounts. The directory appears at once with the copier in it (a launcher pod
// that finds the directory must find the copier), and a copier already there is replaced at
// once.
func Install(src, dir string) error {
	in, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("read the copier: %w", err)
	}
	const name = "slimvirt-diskcopy"
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			return fmt.Errorf("create %s: %w", filepath.Dir(dir), err)
		}
		tmp, err := os.MkdirTemp(filepath.Dir(dir), "."+filepath.Base(dir)+".")
		if err != nil {
			return fmt.Errorf("create a directory next to %s: %w", dir, err)
		}
		defer os.RemoveAll(tmp)
		if err := os.WriteFile(filepath.Join(tmp, name), in, 0o755); err != nil {
			return fmt.Errorf("write the copier: %w", err)
		}
		if err := os.Chmod(filepath.Join(tmp, name), 0o755); err != nil {
			return fmt.Errorf("chmod the copier: %w", err)
		}
		if err := os.Chmod(tmp, 0o755); err != nil {
			return fmt.Errorf("chmod %s: %w", tmp, err)
		}
		if err := os.Rename(tmp, dir); err == nil {
			return nil
		}
		// Made meanwhile by another agent: replace the copier in it.
	}
	return atomicfile.WriteFile(filepath.Join(dir, name), in, 0o755)
}

// FindDisk resolves src: a regular file is the disk; a directory must hold exactly one regular
// file (searched recursively), which is the disk.
func FindDisk(src string) (string, error) {
	st, err := os.Stat(src)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("%w: %s does not exist in the image", ErrNoDisk, src)
		}
		return "", fmt.Errorf("stat %s: %w", src, err)
	}
	if st.Mode().IsRegular() {
		return src, nil
	}
	if !st.IsDir() {
		return "", fmt.Errorf("%w: %s is neither a file nor a directory", ErrNoDisk, src)
	}
	var files []string
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("search %s: %w", src, err)
	}
	sort.Strings(files)
	switch len(files) {
	case 0:
		return "", fmt.Errorf("%w: %s holds no regular file", ErrNoDisk, src)
	case 1:
		return files[0], nil
	default:
		return "", fmt.Errorf("%w: %s holds %d files (%v): name the disk with path", ErrAmbiguous, src, len(files), files)
	}
}

// IsQCOW2 says whether the file starts with qcow2's magic.
func IsQCOW2(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	magic := make([]byte, 4)
	if _, err := io.ReadFull(f, magic); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return false, nil
		}
		return false, fmt.Errorf("read %s: %w", path, err)
	}
	return bytes.Equal(magic, []byte{'Q', 'F', 'I', 0xfb}), nil
}

// Copy copies the disk found at src into dstDir as disk.qcow2 (qcow2) or disk.img (anything
// else, used as raw), sparsely, and returns the path written.
func Copy(src, dstDir string) (string, error) {
	disk, err := FindDisk(src)
	if err != nil {
		return "", err
	}
	qcow, err := IsQCOW2(disk)
	if err != nil {
		return "", err
	}
	name := RawName
	if qcow {
		name = QCOW2Name
	}
	return copyInto(disk, dstDir, name)
}

// CopyAs copies the file src into dstDir under name, sparsely, without looking at its format
// (the kernel and initrd of a kernelBoot image).
func CopyAs(src, dstDir, name string) (string, error) {
	if name == "" || strings.ContainsRune(name, '/') || name == "." || name == ".." {
		return "", fmt.Errorf("bad file name %q", name)
	}
	return copyInto(src, dstDir, name)
}

// copyInto copies the file src into dstDir as name, sparsely, through a temporary file renamed
// into place, so that the launcher, which waits for the name, never sees half a file.
//
// Unlike internal/atomicfile it does not fsync: the copy lives in the pod's emptyDir, which a
// node crash takes along with the pod (launcher pods never restart), and syncing a disk image
// costs every VM start the writeback of the whole image (a 512 MiB image: 0.3-0.6 s to copy,
// 0.8-2.5 s with the sync) while other VMs start.
func copyInto(src, dstDir, name string) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", fmt.Errorf("open %s: %w", src, err)
	}
	defer in.Close()
	// The launcher, another user than the copier's perhaps, must read the copy.
	if err := os.MkdirAll(dstDir, 0o755); err != nil {
		return "", fmt.Errorf("create %s: %w", dstDir, err)
	}
	dst := filepath.Join(dstDir, name)
	tmp, err := os.CreateTemp(dstDir, "."+name+".*")
	if err != nil {
		return "", fmt.Errorf("create a temporary file for %s: %w", dst, err)
	}
	defer os.Remove(tmp.Name()) // a no-op after the rename
	err = SparseCopy(tmp, in)
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), dst)
	}
	if err != nil {
		return "", fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	return dst, nil
}

// block is the granularity of hole detection: zero blocks of this size are not written.
const block = 64 << 10

// SparseCopy copies in to out without writing the holes of in (found with SEEK_DATA/SEEK_HOLE)
// nor blocks of zeros (image layers are often unpacked without holes), and sets out's size.
func SparseCopy(out, in *os.File) error {
	st, err := in.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	buf := make([]byte, block)
	zero := make([]byte, block)
	for off := int64(0); off < size; {
		data, err := unix.Seek(int(in.Fd()), off, unix.SEEK_DATA)
		if err != nil {
			if errors.Is(err, unix.ENXIO) { // only a hole is left
				break
			}
			if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
				data = off // no hole support: scan everything
			} else {
				return fmt.Errorf("seek data: %w", err)
			}
		}
		hole, err := unix.Seek(int(in.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			hole = size
		}
		for off = data; off < hole; {
			n := int64(len(buf))
			if hole-off < n {
				n = hole - off
			}
			if _, err := in.ReadAt(buf[:n], off); err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("read at %d: %w", off, err)
			}
			if !bytes.Equal(buf[:n], zero[:n]) {
				if _, err := out.WriteAt(buf[:n], off); err != nil {
					return fmt.Errorf("write at %d: %w", off, err)
				}
			}
			off += n
		}
	}
	return out.Truncate(size)
}
