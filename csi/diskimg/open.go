package diskimg

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// What Open refuses to act on. A pod that mounts a filesystem volume can put anything at
// disk.img: a symbolic link or a hard link to a node file, a FIFO, a directory, a device node.
var (
	// ErrNotRegular: a symlink, a directory, a FIFO, a socket, a device node, or a mount point.
	ErrNotRegular = errors.New("is not a regular file")
	// ErrHardLinked: the inode has other names, which may be outside the volume. A tenant
	// cannot make one to a node file (link(2) fails with EXDEV across mount points, and the
	// pod sees the volume through its own bind mount), but a pool on a filesystem shared with
	// node files is reachable through other mounts of the same filesystem on the node.
	ErrHardLinked = errors.New("has more than one hard link")
	// ErrOtherDevice: the file is not on the volume directory's filesystem.
	ErrOtherDevice = errors.New("is not on its volume's filesystem")
)

// RefusedError says why Open would not act on a file in a volume.
type RefusedError struct {
	// Path is the file's full path; Name its name in the volume (disk.img).
	Path, Name string
	// Err is ErrNotRegular, ErrHardLinked or ErrOtherDevice.
	Err error
	// Found is what was there instead ("symlink", "fifo", "3 links"...).
	Found string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("%s %v (%s)", e.Path, e.Err, e.Found)
}

func (e *RefusedError) Unwrap() error { return e.Err }

// Open opens name inside the volume directory dir without following any symbolic link, in dir
// or below it, and without leaving dir: a pod that mounts the volume can replace disk.img with
// a link to a node file, and the driver (root on the node) must never act on the link's
// target. What is there is looked at before it is opened for I/O (a device node planted by a
// pod must not even be opened: opening /dev/watchdog's twin arms the node's watchdog), and
// anything but a regular file with one link on dir's filesystem is refused with a
// *RefusedError. flag is os.OpenFile's; with os.O_CREATE a missing file is made (mode perm).
// Work on the returned descriptor, never on the path again.
func Open(dir, name string, flag int, perm os.FileMode) (*os.File, error) {
	path := filepath.Join(dir, name)
	d, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open volume directory %s: %w", dir, &os.PathError{Op: "open", Path: dir, Err: err})
	}
	defer unix.Close(d)
	var dst unix.Stat_t
	if err := unix.Fstat(d, &dst); err != nil {
		return nil, fmt.Errorf("stat volume directory %s: %w", dir, err)
	}
	const resolve = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV

	if flag&os.O_CREATE != 0 {
		// O_EXCL: a name that exists, even as a dangling symlink, is not created through.
		how := unix.OpenHow{
			Flags:   uint64(flag|os.O_EXCL) | unix.O_NOFOLLOW | unix.O_CLOEXEC,
			Mode:    uint64(perm.Perm()),
			Resolve: resolve,
		}
		fd, err := unix.Openat2(d, name, &how)
		switch {
		case err == nil:
			return os.NewFile(uintptr(fd), path), nil
		case !errors.Is(err, unix.EEXIST) || flag&os.O_EXCL != 0:
			return nil, openErr(path, name, err)
		}
		flag &^= os.O_CREATE // it exists: look at it as any other file
	}

	// O_PATH opens nothing: a FIFO does not block, a device's open routine does not run, and
	// a trailing symlink is returned as itself for fstat to show.
	p, err := unix.Openat2(d, name, &unix.OpenHow{Flags: unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC, Resolve: resolve})
	if err != nil {
		return nil, openErr(path, name, err)
	}
	defer unix.Close(p)
	var st unix.Stat_t
	if err := unix.Fstat(p, &st); err != nil {
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	if err := check(path, name, &st, &dst); err != nil {
		return nil, err
	}
	// Reopen the very inode that was checked; the name may have been swapped since.
	fd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(p), (flag&^(os.O_CREATE|os.O_EXCL))|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// check refuses what is not a regular file with one link on the volume's filesystem.
func check(path, name string, st, dir *unix.Stat_t) error {
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return &RefusedError{Path: path, Name: name, Err: ErrNotRegular, Found: FileType(st.Mode)}
	case st.Dev != dir.Dev:
		return &RefusedError{Path: path, Name: name, Err: ErrOtherDevice, Found: fmt.Sprintf("device %d:%d, volume on %d:%d",
			unix.Major(st.Dev), unix.Minor(st.Dev), unix.Major(dir.Dev), unix.Minor(dir.Dev))}
	case st.Nlink > 1:
		return &RefusedError{Path: path, Name: name, Err: ErrHardLinked, Found: fmt.Sprintf("%d links", st.Nlink)}
	}
	return nil
}

func openErr(path, name string, err error) error {
	switch {
	case errors.Is(err, unix.ELOOP):
		return &RefusedError{Path: path, Name: name, Err: ErrNotRegular, Found: "a symlink on the way"}
	case errors.Is(err, unix.EXDEV):
		return &RefusedError{Path: path, Name: name, Err: ErrNotRegular, Found: "a mount point or a path out of the volume"}
	}
	return &os.PathError{Op: "open", Path: path, Err: err}
}

// FileType names the kind of file mode says, with its article ("a symlink", "a FIFO"), for
// messages about what a pod put in a volume.
func FileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "a regular file"
	case unix.S_IFLNK:
		return "a symlink"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	}
	return fmt.Sprintf("file type %#o", mode&unix.S_IFMT)
}

// Refused reports whether err is Open refusing what a pod put in a volume.
func Refused(err error) bool {
	var r *RefusedError
	return errors.As(err, &r)
}

// OpenDisk opens the disk.img of the volume directory dir as Open does.
func OpenDisk(dir string, flag int) (*os.File, error) {
	return Open(dir, Name, flag, 0o660)
}
