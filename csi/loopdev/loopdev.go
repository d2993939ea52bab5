// Package loopdev attaches, finds, refreshes and detaches loop devices over volume files with
// losetup, which serves block volumes as devices.
package loopdev

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// Find returns the loop device attached to file, or "" when there is none.
func Find(ctx context.Context, file string) (string, error) {
	out, err := exec.CommandContext(ctx, "losetup", "--noheadings", "--output", "NAME", "-j", file).Output()
	if err != nil {
		return "", fmt.Errorf("losetup -j %s: %w", file, exitErr(err))
	}
	for _, line := range strings.Split(string(out), "\n") {
		if dev := strings.TrimSpace(line); dev != "" {
			return dev, nil
		}
	}
	return "", nil
}

// Attach returns the loop device over file, attaching one if none is. Direct I/O keeps the
// page cache from holding every guest write twice.
func Attach(ctx context.Context, file string) (string, error) {
	if dev, err := Find(ctx, file); err != nil || dev != "" {
		return dev, err
	}
	out, err := exec.CommandContext(ctx, "losetup", "--find", "--show", "--direct-io=on", file).Output()
	if err != nil {
		// Some filesystems (tmpfs) refuse O_DIRECT; buffered I/O still works there.
		out, err = exec.CommandContext(ctx, "losetup", "--find", "--show", file).Output()
	}
	if err != nil {
		return "", fmt.Errorf("losetup --find %s: %w", file, exitErr(err))
	}
	return strings.TrimSpace(string(out)), nil
}

// Refresh makes dev see its file's new size after the file grew.
func Refresh(ctx context.Context, dev string) error {
	if out, err := exec.CommandContext(ctx, "losetup", "--set-capacity", dev).CombinedOutput(); err != nil {
		return fmt.Errorf("losetup --set-capacity %s: %w: %s", dev, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Detach detaches every loop device over file; none attached is success.
func Detach(ctx context.Context, file string) error {
	for i := 0; i < 8; i++ {
		dev, err := Find(ctx, file)
		if err != nil || dev == "" {
			return err
		}
		if out, err := exec.CommandContext(ctx, "losetup", "--detach", dev).CombinedOutput(); err != nil {
			return fmt.Errorf("losetup --detach %s: %w: %s", dev, err, strings.TrimSpace(string(out)))
		}
	}
	return fmt.Errorf("detach loop devices over %s: still attached", file)
}

func exitErr(err error) error {
	if ee, ok := err.(*exec.ExitError); ok && len(ee.Stderr) > 0 {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(string(ee.Stderr)))
	}
	return err
}
