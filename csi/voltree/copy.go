package voltree

import (
	"context"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/slimvirt/slimvirt/csi/diskimg"
)

// Stats says what Copy made.
type Stats struct {
	Files, Dirs, Symlinks, FIFOs int64
	// Reflinked counts the files that share their blocks with their source.
	Reflinked int64
	// HardLinked counts files the source had under more than one name: each name is copied as
	// a file of its own.
	HardLinked int64
	// Bytes is what the copy occupies on disk.
	Bytes int64
	// Sockets are the sockets left out (a socket is a live endpoint, not content); at most the
	// first 16 paths are kept, SocketCount counts them all.
	Sockets     []string
	SocketCount int64
}

// Options are Copy's bounds and its test hook.
type Options struct {
	Limits
	// before runs before each name is opened; tests use it to swap entries mid-walk.
	before func(rel string)
}

type copier struct {
	ctx     context.Context
	opt     Options
	entries int64
	st      Stats
}

// Copy copies the tree under the directory src into the directory dst, which should be empty:
// regular files sparse-aware and reflinked where the filesystem can, directories, symlinks as
// symlinks (their text, never followed), FIFOs; each with its mode, owner and times. Hard
// links are copied as separate files, sockets are left out (Stats.Sockets), and device nodes
// refuse the copy. Beyond the Limits (depth, entries, bytes occupied by the copy) Copy stops
// with a *RefusedError; what it copied so far stays in dst for the caller to Clear.
func Copy(ctx context.Context, src, dst string, opt Options) (Stats, error) {
	s, err := openDir(src)
	if err != nil {
		return Stats{}, fmt.Errorf("open clone source: %w", err)
	}
	defer s.Close()
	d, err := openDir(dst)
	if err != nil {
		return Stats{}, fmt.Errorf("open clone target: %w", err)
	}
	defer d.Close()
	c := &copier{ctx: ctx, opt: opt}
	if err := c.dir(s, d, "", 0); err != nil {
		return c.st, err
	}
	if err := unix.Syncfs(int(d.Fd())); err != nil {
		return c.st, fmt.Errorf("sync clone target %s: %w", dst, err)
	}
	return c.st, nil
}

func (c *copier) dir(src, dst *os.File, rel string, depth int) error {
	return readDir(src, rel, c.opt.before, func(e *entry) error { return c.entry(e, int(dst.Fd()), depth+1) })
}

func (c *copier) entry(e *entry, dstfd, depth int) error {
	if err := c.ctx.Err(); err != nil {
		return err
	}
	c.entries++
	if c.opt.Entries > 0 && c.entries > c.opt.Entries {
		return &RefusedError{Path: e.rel, Err: fmt.Errorf("%w of %d", ErrTooMany, c.opt.Entries)}
	}
	switch e.st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return c.copyDir(e, dstfd, depth)
	case unix.S_IFREG:
		return c.copyFile(e, dstfd)
	case unix.S_IFLNK:
		return c.copyLink(e, dstfd)
	case unix.S_IFIFO:
		if err := unix.Mknodat(dstfd, e.name, unix.S_IFIFO|0o600, 0); err != nil {
			return fmt.Errorf("make FIFO %s: %w", e.rel, err)
		}
		c.st.FIFOs++
		return c.attrs(e, dstfd)
	case unix.S_IFSOCK:
		c.st.SocketCount++
		if len(c.st.Sockets) < 16 {
			c.st.Sockets = append(c.st.Sockets, e.rel)
		}
		return nil
	case unix.S_IFCHR, unix.S_IFBLK:
		return &RefusedError{Path: e.rel, Err: fmt.Errorf("%w (%s %d:%d)", ErrDeviceNode, diskimg.FileType(e.st.Mode), unix.Major(e.st.Rdev), unix.Minor(e.st.Rdev))}
	}
	return &RefusedError{Path: e.rel, Err: fmt.Errorf("%w (%s)", ErrUnknown, diskimg.FileType(e.st.Mode))}
}

func (c *copier) copyDir(e *entry, dstfd, depth int) error {
	if c.opt.Depth > 0 && depth > c.opt.Depth {
		return &RefusedError{Path: e.rel, Err: fmt.Errorf("%w of %d", ErrTooDeep, c.opt.Depth)}
	}
	src, err := subdir(e)
	if err != nil {
		return err
	}
	defer src.Close()
	if err := unix.Mkdirat(dstfd, e.name, 0o700); err != nil {
		return fmt.Errorf("make directory %s: %w", e.rel, err)
	}
	fd, err := unix.Openat(dstfd, e.name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open directory %s of the copy: %w", e.rel, err)
	}
	dst := os.NewFile(uintptr(fd), e.rel)
	defer dst.Close()
	c.st.Dirs++
	if err := c.dir(src, dst, e.rel, depth); err != nil {
		return err
	}
	if err := c.charge(e.rel, fd); err != nil {
		return err
	}
	return c.attrs(e, dstfd) // last: making the children changed the directory's times
}

func (c *copier) copyFile(e *entry, dstfd int) error {
	if c.opt.Bytes > 0 && c.st.Bytes+e.st.Blocks*512 > c.opt.Bytes {
		return c.tooBig(e.rel)
	}
	ifd, err := reopen(e.fd, unix.O_RDONLY)
	if err != nil {
		return fmt.Errorf("open %s: %w", e.rel, err)
	}
	in := os.NewFile(uintptr(ifd), e.rel)
	defer in.Close()
	ofd, err := unix.Openat(dstfd, e.name, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("create %s in the copy: %w", e.rel, err)
	}
	out := os.NewFile(uintptr(ofd), e.rel)
	defer out.Close()
	reflinked, err := diskimg.CopyFile(in, out)
	if err != nil {
		return err
	}
	c.st.Files++
	if reflinked {
		c.st.Reflinked++
	}
	if e.st.Nlink > 1 {
		c.st.HardLinked++
	}
	// The source may have grown since it was looked at: what counts is what the copy holds.
	if err := c.charge(e.rel, ofd); err != nil {
		return err
	}
	return c.attrs(e, dstfd)
}

func (c *copier) charge(rel string, fd int) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("stat %s of the copy: %w", rel, err)
	}
	c.st.Bytes += st.Blocks * 512
	if c.opt.Bytes > 0 && c.st.Bytes > c.opt.Bytes {
		return c.tooBig(rel)
	}
	return nil
}

func (c *copier) tooBig(rel string) error {
	return &RefusedError{Path: rel, Err: fmt.Errorf("%w (%d bytes)", ErrTooBig, c.opt.Bytes)}
}

func (c *copier) copyLink(e *entry, dstfd int) error {
	buf := make([]byte, unix.PathMax+1)
	n, err := unix.Readlinkat(e.fd, "", buf)
	if err != nil {
		return fmt.Errorf("read symlink %s: %w", e.rel, err)
	}
	if n > unix.PathMax {
		return &RefusedError{Path: e.rel, Err: errors.New("symlink text is longer than PATH_MAX")}
	}
	if err := unix.Symlinkat(string(buf[:n]), dstfd, e.name); err != nil {
		return fmt.Errorf("make symlink %s: %w", e.rel, err)
	}
	c.st.Symlinks++
	return c.attrs(e, dstfd)
}

// attrs gives the copy of e (name in the copy's directory dstfd, which no pod can reach
// while it is filled) e's owner, mode and times; a symlink's mode is left alone.
func (c *copier) attrs(e *entry, dstfd int) error {
	if err := unix.Fchownat(dstfd, e.name, int(e.st.Uid), int(e.st.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown %s: %w", e.rel, err)
	}
	if e.st.Mode&unix.S_IFMT != unix.S_IFLNK {
		// After chown, which clears set-user-ID and set-group-ID bits.
		if err := unix.Fchmodat(dstfd, e.name, e.st.Mode&0o7777, 0); err != nil {
			return fmt.Errorf("chmod %s: %w", e.rel, err)
		}
	}
	ts := []unix.Timespec{e.st.Atim, e.st.Mtim}
	if err := unix.UtimesNanoAt(dstfd, e.name, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times of %s: %w", e.rel, err)
	}
	return nil
}
