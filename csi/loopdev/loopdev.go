// Package loopdev attaches, finds, refreshes and detaches the loop devices that serve block
// volumes, over files the caller has opened. It talks to the kernel (loop-control and loop
// ioctls) rather than to losetup: losetup takes a path and opens it again, and a path inside a
// volume can be swapped for a link to a node file between the check and the open.
package loopdev

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Where the kernel's loop devices are controlled and listed.
const (
	controlPath = "/dev/loop-control"
	sysBlock    = "/sys/block"
)

// Find returns the loop device attached to the file f (the same inode, not the same name),
// or "" when there is none. A device being detached (autoclear set) is not counted.
func Find(ctx context.Context, f *os.File) (string, error) {
	devs, err := findAll(ctx, f)
	if err != nil || len(devs) == 0 {
		return "", err
	}
	return devs[0], nil
}

// findAll lists the loop devices backed by f's inode that are not already being detached.
func findAll(ctx context.Context, f *os.File) ([]string, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, fmt.Errorf("stat %s: %w", f.Name(), err)
	}
	entries, err := os.ReadDir(sysBlock)
	if err != nil {
		return nil, fmt.Errorf("list block devices: %w", err)
	}
	var devs []string
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if _, err := strconv.Atoi(strings.TrimPrefix(e.Name(), "loop")); err != nil || !strings.HasPrefix(e.Name(), "loop") {
			continue
		}
		dev := filepath.Join("/dev", e.Name())
		info, err := status(dev)
		if err != nil {
			continue // unbound, or gone since the listing
		}
		if info.Device == st.Dev && info.Inode == st.Ino && info.Flags&unix.LO_FLAGS_AUTOCLEAR == 0 {
			devs = append(devs, dev)
		}
	}
	return devs, nil
}

func status(dev string) (*unix.LoopInfo64, error) {
	fd, err := unix.Open(dev, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	return unix.IoctlLoopGetStatus64(fd)
}

// Attach returns the loop device over f, attaching one to f's descriptor if none is. f must
// be open read-write. Direct I/O keeps the page cache from holding every guest write twice.
func Attach(ctx context.Context, f *os.File) (string, error) {
	if dev, err := Find(ctx, f); err != nil || dev != "" {
		return dev, err
	}
	ctl, err := unix.Open(controlPath, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("open %s: %w", controlPath, err)
	}
	defer unix.Close(ctl)
	// Another process may take the free device between asking and configuring: ask again.
	for attempt := 0; ; attempt++ {
		n, err := unix.IoctlRetInt(ctl, unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return "", fmt.Errorf("find a free loop device: %w", err)
		}
		dev := "/dev/loop" + strconv.Itoa(n)
		err = configure(dev, f)
		if err == nil {
			return dev, nil
		}
		if (!errors.Is(err, unix.EBUSY) && !errors.Is(err, os.ErrNotExist)) || attempt >= 20 {
			return "", fmt.Errorf("attach %s to %s: %w", f.Name(), dev, err)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(10 * time.Millisecond << min(attempt, 5)):
		}
	}
}

func configure(dev string, f *os.File) error {
	fd, err := unix.Open(dev, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: dev, Err: err}
	}
	defer unix.Close(fd)
	cfg := unix.LoopConfig{Fd: uint32(f.Fd())}
	cfg.Info.Flags = unix.LO_FLAGS_DIRECT_IO
	copy(cfg.Info.File_name[:len(cfg.Info.File_name)-1], f.Name())
	err = unix.IoctlLoopConfigure(fd, &cfg)
	if errors.Is(err, unix.EINVAL) {
		// Some filesystems (tmpfs) refuse O_DIRECT; buffered I/O still works there.
		cfg.Info.Flags = 0
		err = unix.IoctlLoopConfigure(fd, &cfg)
	}
	return err
}

// Refresh makes dev see its file's new size after the file grew.
func Refresh(ctx context.Context, dev string) error {
	fd, err := unix.Open(dev, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", dev, err)
	}
	defer unix.Close(fd)
	if _, err := unix.IoctlRetInt(fd, unix.LOOP_SET_CAPACITY); err != nil {
		return fmt.Errorf("refresh the size of %s: %w", dev, err)
	}
	return nil
}

// Detach detaches every loop device over the file f; none attached is success. A device
// still open elsewhere is detached by the kernel when it is last closed.
func Detach(ctx context.Context, f *os.File) error {
	devs, err := findAll(ctx, f)
	if err != nil {
		return err
	}
	for _, dev := range devs {
		fd, err := unix.Open(dev, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENXIO) {
			continue
		}
		if err != nil {
			return fmt.Errorf("open %s: %w", dev, err)
		}
		_, err = unix.IoctlRetInt(fd, unix.LOOP_CLR_FD)
		_ = unix.Close(fd) // the ioctl's result is what counts; the device fd holds no data
		if err != nil && !errors.Is(err, unix.ENXIO) {
			return fmt.Errorf("detach %s from %s: %w", dev, f.Name(), err)
		}
	}
	return nil
}
