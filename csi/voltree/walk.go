package voltree

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Usage is what a tree occupies.
type Usage struct {
	// Bytes is the space its entries occupy on disk (a hard-linked file once).
	Bytes int64
	// Inodes counts its entries and the root, a hard-linked file once.
	Inodes int64
}

// Measure adds up what the tree under dir occupies, within the limits' depth and entries
// (Bytes is not used). Past a limit it returns what it counted so far with a *RefusedError.
func Measure(dir string, lim Limits) (Usage, error) {
	d, err := openDir(dir)
	if err != nil {
		return Usage{}, err
	}
	defer d.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(d.Fd()), &st); err != nil {
		return Usage{}, fmt.Errorf("stat %s: %w", dir, err)
	}
	m := &measurer{lim: lim, seen: map[uint64]bool{}, u: Usage{Bytes: st.Blocks * 512, Inodes: 1}}
	err = m.dir(d, "", 0)
	return m.u, err
}

type measurer struct {
	lim     Limits
	entries int64
	seen    map[uint64]bool // inodes of files with more than one link
	u       Usage
}

func (m *measurer) dir(d *os.File, rel string, depth int) error {
	return readDir(d, rel, nil, func(e *entry) error {
		m.entries++
		if m.lim.Entries > 0 && m.entries > m.lim.Entries {
			return &RefusedError{Path: e.rel, Err: fmt.Errorf("%w of %d", ErrTooMany, m.lim.Entries)}
		}
		if e.st.Nlink > 1 && e.st.Mode&unix.S_IFMT != unix.S_IFDIR {
			if m.seen[e.st.Ino] {
				return nil
			}
			m.seen[e.st.Ino] = true
		}
		m.u.Bytes += e.st.Blocks * 512
		m.u.Inodes++
		if e.st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return nil
		}
		if m.lim.Depth > 0 && depth+1 > m.lim.Depth {
			return &RefusedError{Path: e.rel, Err: fmt.Errorf("%w of %d", ErrTooDeep, m.lim.Depth)}
		}
		sub, err := subdir(e)
		if err != nil {
			return err
		}
		defer sub.Close()
		return m.dir(sub, e.rel, depth+1)
	})
}

// Clear removes everything in the directory dir except the entry named keep at its root
// (empty: keep nothing). It walks as Copy does, within lim's depth and entries, so it is
// meant for trees the driver made (a clone being filled), which stay within them.
func Clear(dir, keep string, lim Limits) error {
	d, err := openDir(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	c := &clearer{lim: lim}
	return c.dir(d, "", 0, keep)
}

type clearer struct {
	lim     Limits
	entries int64
}

func (c *clearer) dir(d *os.File, rel string, depth int, keep string) error {
	return readDir(d, rel, nil, func(e *entry) error {
		if depth == 0 && e.name == keep {
			return nil
		}
		c.entries++
		if c.lim.Entries > 0 && c.entries > c.lim.Entries {
			return &RefusedError{Path: e.rel, Err: fmt.Errorf("%w of %d", ErrTooMany, c.lim.Entries)}
		}
		flags := 0
		if e.st.Mode&unix.S_IFMT == unix.S_IFDIR {
			if c.lim.Depth > 0 && depth+1 > c.lim.Depth {
				return &RefusedError{Path: e.rel, Err: fmt.Errorf("%w of %d", ErrTooDeep, c.lim.Depth)}
			}
			sub, err := subdir(e)
			if err != nil {
				return err
			}
			err = c.dir(sub, e.rel, depth+1, "")
			_ = sub.Close() // read only
			if err != nil {
				return err
			}
			flags = unix.AT_REMOVEDIR
		}
		if err := unix.Unlinkat(int(d.Fd()), e.name, flags); err != nil {
			return fmt.Errorf("remove %s: %w", e.rel, err)
		}
		return nil
	})
}
