package diskimg

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// ErrNotRegular is returned when a volume's disk.img is not a regular file: a symlink, a
// directory, a FIFO or a device put there by a pod that mounts the volume.
var ErrNotRegular = errors.New("not a regular file")

// Open opens name inside the volume directory dir without following any symbolic link, in dir
// or below it, and without leaving dir: a pod that mounts the volume can replace disk.img with
// a link to a node file, and the driver (root on the node) must never act on the link's
// target. The result is a regular file; anything else is refused with ErrNotRegular. flag is
// os.OpenFile's; O_NOFOLLOW, O_CLOEXEC and O_NONBLOCK (a FIFO must not block the open) are
// added. Work on the returned descriptor, never on the path again.
func Open(dir, name string, flag int, perm os.FileMode) (*os.File, error) {
	d, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open volume directory %s: %w", dir, &os.PathError{Op: "open", Path: dir, Err: err})
	}
	defer unix.Close(d)
	how := unix.OpenHow{
		Flags:   uint64(flag) | unix.O_NOFOLLOW | unix.O_CLOEXEC | unix.O_NONBLOCK,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	}
	if flag&os.O_CREATE != 0 {
		how.Mode = uint64(perm.Perm()) // openat2 refuses a mode without O_CREAT
	}
	path := filepath.Join(dir, name)
	fd, err := unix.Openat2(d, name, &how)
	if err != nil {
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EISDIR) || errors.Is(err, unix.ENXIO) {
			return nil, fmt.Errorf("open %s: %w (a link, a mount, a directory or a FIFO)", path, ErrNotRegular)
		}
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("open %s: %w (%s)", path, ErrNotRegular, fi.Mode().Type())
	}
	// The descriptor was opened non-blocking only so that a FIFO could not hang the open;
	// regular files ignore the flag, but clear it so reads and writes behave as usual.
	if err := unix.SetNonblock(fd, false); err != nil {
		f.Close()
		return nil, fmt.Errorf("set %s blocking: %w", path, err)
	}
	return f, nil
}

// OpenDisk opens the disk.img of the volume directory dir as Open does.
func OpenDisk(dir string, flag int) (*os.File, error) {
	return Open(dir, Name, flag, 0o660)
}
