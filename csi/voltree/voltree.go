// Package voltree copies, measures and empties the directory tree of a filesystem volume.
//
// A filesystem volume's directory is written by the pods that mount it, so its tree is
// hostile: any name may be a symbolic link to a node file or to another volume, a FIFO that
// blocks a reader, a device node, a directory nested without end, or be swapped for one of
// those while the driver walks. Every function here walks by file descriptors only: each name
// is opened relative to its parent's descriptor with openat2 (RESOLVE_BENEATH,
// RESOLVE_NO_SYMLINKS, RESOLVE_NO_XDEV) and O_PATH|O_NOFOLLOW, which opens nothing and
// follows nothing; what the descriptor refers to is then looked at with fstat and acted on
// through that descriptor, so a swap after the look changes nothing. Depth, entries and bytes
// are bounded.
package voltree

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"

	"golang.org/x/sys/unix"
)

// Limits bound a walk.
type Limits struct {
	// Depth is how deep directories may nest below the root (the root's entries are at 1).
	Depth int
	// Entries is how many entries (of any type) the tree may hold.
	Entries int64
	// Bytes is how many bytes the tree's files may occupy on disk (Copy only).
	Bytes int64
}

// DefaultDepth is the nesting a volume tree may have.
const DefaultDepth = 128

// What a walk refuses.
var (
	ErrTooDeep    = errors.New("directories nest deeper than the limit")
	ErrTooMany    = errors.New("the tree holds more entries than the limit")
	ErrTooBig     = errors.New("the tree holds more data than the target volume may")
	ErrDeviceNode = errors.New("is a device node")
	ErrUnknown    = errors.New("is of an unknown file type")
)

// RefusedError is a walk refusing the tree: retrying cannot help.
type RefusedError struct {
	// Path is the entry's path inside the tree ("" for the tree as a whole).
	Path string
	Err  error
}

func (e *RefusedError) Error() string {
	if e.Path == "" {
		return e.Err.Error()
	}
	return fmt.Sprintf("%s: %v", e.Path, e.Err)
}

func (e *RefusedError) Unwrap() error { return e.Err }

// Permanent marks the refusal as one a retry cannot mend.
func (e *RefusedError) Permanent() bool { return true }

const resolve = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV

// openPath opens name in the directory dirfd as itself: O_PATH, no link followed, not leaving
// dirfd's filesystem. Nothing is opened for I/O: a FIFO does not block, a device's open
// routine does not run.
func openPath(dirfd int, name string) (int, error) {
	return unix.Openat2(dirfd, name, &unix.OpenHow{Flags: unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC, Resolve: resolve})
}

// reopen opens the very inode behind the O_PATH descriptor p for I/O (through its
// /proc/self/fd link, which names the inode, not a path that could have changed).
func reopen(p int, flags int) (int, error) {
	return unix.Open("/proc/self/fd/"+strconv.Itoa(p), flags|unix.O_CLOEXEC, 0)
}

// openDir opens the tree's root directory dir for reading, refusing a symlink.
func openDir(dir string) (*os.File, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	return os.NewFile(uintptr(fd), dir), nil
}

// entry is one name of a directory, opened as itself.
type entry struct {
	name string
	rel  string // path inside the tree, for messages
	fd   int    // O_PATH descriptor
	st   unix.Stat_t
}

// readDir calls fn for each entry of the directory d (in batches, so a huge directory is not
// read into memory at once), opened with openPath. A name that is gone by the time it is
// opened is skipped. fn's error stops the walk.
func readDir(d *os.File, rel string, before func(rel string), fn func(e *entry) error) error {
	for {
		names, err := d.Readdirnames(256)
		if errors.Is(err, io.EOF) || (err == nil && len(names) == 0) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read directory %s: %w", show(rel), err)
		}
		for _, name := range names {
			if before != nil {
				before(path.Join(rel, name))
			}
			if err := withEntry(int(d.Fd()), name, path.Join(rel, name), fn); err != nil {
				return err
			}
		}
	}
}

func withEntry(dirfd int, name, rel string, fn func(e *entry) error) error {
	fd, err := openPath(dirfd, name)
	if errors.Is(err, unix.ENOENT) {
		return nil // removed meanwhile
	}
	if errors.Is(err, unix.EXDEV) {
		// A mount point: a pod cannot make one, but nothing of another filesystem is the volume's.
		return &RefusedError{Path: rel, Err: errors.New("is on another filesystem")}
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", rel, err)
	}
	defer unix.Close(fd)
	e := &entry{name: name, rel: rel, fd: fd}
	if err := unix.Fstat(fd, &e.st); err != nil {
		return fmt.Errorf("stat %s: %w", rel, err)
	}
	return fn(e)
}

// subdir opens the directory behind an O_PATH descriptor for reading.
func subdir(e *entry) (*os.File, error) {
	fd, err := reopen(e.fd, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return nil, fmt.Errorf("open directory %s: %w", e.rel, err)
	}
	return os.NewFile(uintptr(fd), e.rel), nil
}

func show(rel string) string {
	if rel == "" {
		return "the volume's root"
	}
	return rel
}

// Refused reports whether err is a walk refusing the tree.
func Refused(err error) bool {
	var r *RefusedError
	return errors.As(err, &r)
}
