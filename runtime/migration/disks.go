package migration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"
)

// MaxDiskBytes bounds the size of a disk the target creates for a migration.
const MaxDiskBytes = 64 << 40

// Disk is a local disk that a migration copies: the target needs a file of its format and
// size at the same path before the migration starts (libvirt's QEMU driver creates none
// without its storage driver, which the launcher does not load).
type Disk struct {
	Target string `json:"target"`
	Path   string `json:"path"`
	// Format is raw or qcow2.
	Format string `json:"format"`
	// Capacity is the guest-visible size in bytes.
	Capacity uint64 `json:"capacity"`
}

// CopiedDisks are dom's disks that a migration copies: the writable, unshared file disks
// (libvirt's default for VIR_MIGRATE_NON_SHARED_DISK).
func CopiedDisks(dom *libvirt.Domain) ([]Disk, error) {
	x, err := dom.GetXMLDesc(0)
	if err != nil {
		return nil, fmt.Errorf("read the domain XML: %w", err)
	}
	var def libvirtxml.Domain
	if err := def.Unmarshal(x); err != nil {
		return nil, fmt.Errorf("parse the domain XML: %w", err)
	}
	var out []Disk
	if def.Devices == nil {
		return nil, nil
	}
	for _, d := range def.Devices.Disks {
		if (d.Device != "" && d.Device != "disk") || d.ReadOnly != nil || d.Shareable != nil ||
			d.Source == nil || d.Source.File == nil || d.Target == nil || d.Driver == nil {
			continue
		}
		info, err := dom.GetBlockInfo(d.Target.Dev, 0)
		if err != nil {
			return nil, fmt.Errorf("read the size of disk %s: %w", d.Target.Dev, err)
		}
		out = append(out, Disk{Target: d.Target.Dev, Path: d.Source.File.File, Format: d.Driver.Type, Capacity: info.Capacity})
	}
	return out, nil
}

// CreateDisks creates, on the target, the files the disks are copied into: each must lie
// under root, and a file already there (a volume the pod was given) must have the size. The
// list comes from the source, so every field is checked before anything is created.
func CreateDisks(ctx context.Context, disks []Disk, root, qemuImg string) error {
	for _, d := range disks {
		if err := d.validate(root); err != nil {
			return err
		}
	}
	for _, d := range disks {
		if err := d.create(ctx, qemuImg); err != nil {
			return err
		}
	}
	return nil
}

func (d Disk) validate(root string) error {
	if !filepath.IsAbs(d.Path) || filepath.Clean(d.Path) != d.Path {
		return fmt.Errorf("disk %.64q: path %.256q is not a clean absolute path", d.Target, d.Path)
	}
	if rel, err := filepath.Rel(root, d.Path); err != nil || rel == "." || strings.HasPrefix(rel, "..") {
		return fmt.Errorf("disk %.64q: %.256q is not under %s", d.Target, d.Path, root)
	}
	if d.Format != "raw" && d.Format != "qcow2" {
		return fmt.Errorf("disk %.64q: format %.32q is neither raw nor qcow2", d.Target, d.Format)
	}
	if d.Capacity == 0 || d.Capacity > MaxDiskBytes || d.Capacity%512 != 0 {
		return fmt.Errorf("disk %.64q: size %d is not a multiple of 512 between 512 and %d", d.Target, d.Capacity, uint64(MaxDiskBytes))
	}
	return nil
}

func (d Disk) create(ctx context.Context, qemuImg string) error {
	if fi, err := os.Stat(d.Path); err == nil {
		if d.Format == "raw" && uint64(fi.Size()) != d.Capacity {
			return fmt.Errorf("disk %s: %s has %d bytes, the source's has %d", d.Target, d.Path, fi.Size(), d.Capacity)
		}
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("disk %s: %w", d.Target, err)
	}
	if d.Format == "qcow2" {
		out, err := exec.CommandContext(ctx, qemuImg, "create", "-q", "-f", "qcow2", d.Path, strconv.FormatUint(d.Capacity, 10)).CombinedOutput()
		if err != nil {
			return fmt.Errorf("create disk %s at %s: %w: %s", d.Target, d.Path, err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	f, err := os.OpenFile(d.Path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o660)
	if err != nil {
		return fmt.Errorf("create disk %s: %w", d.Target, err)
	}
	if err := f.Truncate(int64(d.Capacity)); err != nil {
		_ = f.Close()
		_ = os.Remove(d.Path)
		return fmt.Errorf("size disk %s: %w", d.Target, err)
	}
	return f.Close()
}
