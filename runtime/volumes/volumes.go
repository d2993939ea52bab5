// Package volumes turns a VMI's volumes into disk sources the domain can use: it finds what
// the controller mounted into the pod, creates what is missing (disk.img of a filesystem PVC,
// emptyDisks, hostDisks of type DiskOrCreate, cloud-init ISOs, overlays over containerDisks and
// ephemeral volumes) and picks each source's cache mode.
package volumes

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/internal/qcow2"
	"github.com/slimvirt/slimvirt/runtime/cloudinit"
	"github.com/slimvirt/slimvirt/runtime/diskcopy"
	"github.com/slimvirt/slimvirt/runtime/domain"
)

// Sizing of disk images the launcher creates, as KubeVirt does: the image leaves Reserve
// bytes of the filesystem free (for the filesystem's own metadata growth), and the filesystem
// may be up to Toleration smaller than asked for (filesystem overhead eats into a volume).
const (
	Reserve    = 128 << 10
	Toleration = 0.10
	align      = 1 << 20
)

// Layout says where the pod's volumes are.
type Layout struct {
	ContainerDiskDir string
	PVCDir           string
	BlockDir         string
	HostDiskDir      string
	// EmptyDiskDir holds emptyDisks, the overlays of containerDisks and ephemeral volumes, and
	// cloud-init ISOs.
	EmptyDiskDir string
	// SecretsDir/<volume>/{userdata,networkdata} hold secret-referenced cloud-init data.
	SecretsDir string
}

// DefaultLayout is the launcher pod's layout.
func DefaultLayout() Layout {
	return Layout{
		ContainerDiskDir: launcherpod.ContainerDiskDir,
		PVCDir:           launcherpod.PVCDir,
		BlockDir:         launcherpod.BlockDir,
		HostDiskDir:      launcherpod.HostDiskDir,
		EmptyDiskDir:     launcherpod.EmptyDiskDir,
		SecretsDir:       launcherpod.SecretsDir,
	}
}

// Error is a problem with one volume; the launcher reports it as the reason it could not start.
type Error struct {
	Volume string
	Err    error
}

func (e *Error) Error() string { return fmt.Sprintf("volume %s: %v", e.Volume, e.Err) }
func (e *Error) Unwrap() error { return e.Err }

// Runner runs helper commands (qemu-img); the launcher passes its reaper.
type Runner interface {
	Run(cmd *exec.Cmd) error
}

// Preparer prepares volumes.
type Preparer struct {
	Layout Layout
	Runner Runner
	// QEMUImg is the qemu-img binary.
	QEMUImg string
	// Now dates cloud-init ISOs.
	Now func() time.Time
	// Log, when set, says which copies out of containerDisk images are awaited.
	Log *slog.Logger
}

// Prepare returns a source for every volume a disk uses.
func (p *Preparer) Prepare(ctx context.Context, vmi *v1.VirtualMachineInstance) (map[string]domain.DiskSource, error) {
	byName := map[string]v1.Volume{}
	for _, v := range vmi.Spec.Volumes {
		byName[v.Name] = v
	}
	if err := os.MkdirAll(p.Layout.EmptyDiskDir, 0o750); err != nil {
		return nil, fmt.Errorf("create %s: %w", p.Layout.EmptyDiskDir, err)
	}
	out := map[string]domain.DiskSource{}
	for _, disk := range vmi.Spec.Domain.Devices.Disks {
		vol, ok := byName[disk.Name]
		if !ok {
			return nil, &Error{disk.Name, errors.New("the disk has no volume of that name in spec.volumes")}
		}
		src, err := p.prepare(ctx, vmi, vol, disk.CDRom != nil)
		if err != nil {
			return nil, &Error{vol.Name, err}
		}
		out[vol.Name] = src
	}
	return out, nil
}

// prepare makes vol's source; cdrom says the disk is a CD-ROM, which reads an image and never
// gets an empty one made for it.
func (p *Preparer) prepare(ctx context.Context, vmi *v1.VirtualMachineInstance, vol v1.Volume, cdrom bool) (domain.DiskSource, error) {
	switch {
	case vol.ContainerDisk != nil:
		return p.containerDisk(ctx, vol.Name)
	case vol.PersistentVolumeClaim != nil:
		return p.pvc(vol.Name, vol.PersistentVolumeClaim.ClaimName, vol.PersistentVolumeClaim.ReadOnly, cdrom)
	case vol.DataVolume != nil:
		return p.pvc(vol.Name, vol.DataVolume.Name, false, cdrom)
	case vol.Ephemeral != nil:
		return p.ephemeral(ctx, vol.Name, vol.Ephemeral.PersistentVolumeClaim.ClaimName)
	case vol.EmptyDisk != nil:
		return p.emptyDisk(vol.Name, vol.EmptyDisk.Capacity.Value())
	case vol.HostDisk != nil:
		return p.hostDisk(vol.Name, vol.HostDisk)
	case vol.CloudInitNoCloud != nil || vol.CloudInitConfigDrive != nil:
		return p.cloudInit(vmi, vol)
	}
	return domain.DiskSource{}, errors.New("no supported volume source")
}

func (p *Preparer) containerDisk(ctx context.Context, name string) (domain.DiskSource, error) {
	dir := filepath.Join(p.Layout.ContainerDiskDir, name)
	if _, err := os.Stat(dir); err != nil {
		return domain.DiskSource{}, fmt.Errorf("containerDisk has no directory %s (no copier container in the pod for it): %w", dir, err)
	}
	// The copier runs in a container of its own next to the launcher's: wait for its copy.
	backing, err := diskcopy.Await(ctx, dir, "", []string{diskcopy.QCOW2Name, diskcopy.RawName}, func() {
		if p.Log != nil {
			p.Log.Info("waiting for the disk out of the containerDisk image", "volume", name)
		}
	})
	if err != nil {
		return domain.DiskSource{}, fmt.Errorf("the containerDisk image's disk: %w", err)
	}
	format := "raw"
	if filepath.Base(backing) == diskcopy.QCOW2Name {
		format = "qcow2"
		// The image is the tenant's: a qcow2 header may name a backing file or an external
		// data file, which QEMU would open in this pod (OpenStack CVE-2024-32498).
		if _, err := qcow2.CheckFile(backing); err != nil {
			return domain.DiskSource{}, fmt.Errorf("the containerDisk image's disk: %w", err)
		}
	}
	if st, _ := os.Stat(backing); st.Size() == 0 {
		return domain.DiskSource{}, fmt.Errorf("the containerDisk image's disk %s is empty", backing)
	}
	// The copied disk stays read-only; the guest writes into a throwaway overlay.
	return p.overlay(ctx, name, backing, format)
}

// overlay makes the throwaway qcow2 overlay the guest writes to over backing, which is only
// ever read, in the scratch directory: it goes with the pod. format is the backing's, given
// to qemu so that it never probes an image the tenant wrote.
func (p *Preparer) overlay(ctx context.Context, name, backing, format string) (domain.DiskSource, error) {
	overlay := filepath.Join(p.Layout.EmptyDiskDir, name+".qcow2")
	_ = os.Remove(overlay)
	cmd := exec.CommandContext(ctx, p.QEMUImg, "create", "-q", "-f", "qcow2", "-F", format, "-b", backing, overlay)
	if out, err := output(p.Runner, cmd); err != nil {
		return domain.DiskSource{}, fmt.Errorf("create overlay over %s: %w: %s", backing, err, out)
	}
	// QEMU opens the whole chain with the disk's cache mode: none only when both files take
	// O_DIRECT (a PVC's filesystem may not).
	cache := CacheMode(overlay)
	if CacheMode(backing) != "none" {
		cache = "writethrough"
	}
	return domain.DiskSource{Path: overlay, Format: "qcow2", Cache: cache}, nil
}

// ephemeral puts an overlay over an ephemeral volume's PVC, which the controller mounted
// read-only: over the device of a block PVC, over disk.img of a filesystem one. disk.img is
// the tenant's and the launcher's run directory is not: it must be a regular file reached
// without a link, and it is never made. Like every PVC's disk.img, it is raw; a qcow2 header
// in it is the guest's data, not a format (and so never names a file qemu would open).
func (p *Preparer) ephemeral(ctx context.Context, name, claim string) (domain.DiskSource, error) {
	dev := filepath.Join(p.Layout.BlockDir, name)
	if st, err := os.Stat(dev); err == nil {
		if st.Mode()&fs.ModeDevice == 0 {
			return domain.DiskSource{}, fmt.Errorf("%s (block PVC %s) is not a block device", dev, claim)
		}
		if err := checkAccess(dev, true); err != nil {
			return domain.DiskSource{}, fmt.Errorf("block PVC %s: %w", claim, err)
		}
		return p.overlay(ctx, name, dev, "raw")
	}
	dir := filepath.Join(p.Layout.PVCDir, name)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return domain.DiskSource{}, fmt.Errorf("PVC %s is not mounted: neither %s nor %s exists", claim, dir, dev)
	}
	img := filepath.Join(dir, "disk.img")
	st, err := os.Lstat(img)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return domain.DiskSource{}, fmt.Errorf("PVC %s holds no disk.img for its ephemeral volume: the overlay needs an image under it (import or upload one into the PVC first); an empty one is not made", claim)
	case err != nil:
		return domain.DiskSource{}, fmt.Errorf("PVC %s: %w", claim, err)
	case !st.Mode().IsRegular():
		return domain.DiskSource{}, fmt.Errorf("PVC %s: disk.img is not a regular file (%s)", claim, st.Mode().Type())
	case st.Size() == 0:
		return domain.DiskSource{}, fmt.Errorf("PVC %s: disk.img is empty", claim)
	}
	if err := checkAccess(img, true); err != nil {
		return domain.DiskSource{}, fmt.Errorf("PVC %s: %w", claim, err)
	}
	return p.overlay(ctx, name, img, "raw")
}

func output(r Runner, cmd *exec.Cmd) (string, error) {
	var buf limitedBuffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := r.Run(cmd)
	return string(buf.b), err
}

type limitedBuffer struct{ b []byte }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := 4096 - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (p *Preparer) pvc(name, claim string, readOnly, cdrom bool) (domain.DiskSource, error) {
	dev := filepath.Join(p.Layout.BlockDir, name)
	if st, err := os.Stat(dev); err == nil {
		if st.Mode()&fs.ModeDevice == 0 {
			return domain.DiskSource{}, fmt.Errorf("%s (block PVC %s) is not a block device", dev, claim)
		}
		if err := checkAccess(dev, readOnly); err != nil {
			return domain.DiskSource{}, fmt.Errorf("block PVC %s: %w", claim, err)
		}
		return domain.DiskSource{Block: true, Path: dev, Format: "raw", Cache: CacheMode(dev), ReadOnly: readOnly}, nil
	}
	dir := filepath.Join(p.Layout.PVCDir, name)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return domain.DiskSource{}, fmt.Errorf("PVC %s is not mounted: neither %s nor %s exists", claim, dir, dev)
	}
	img := filepath.Join(dir, "disk.img")
	if cdrom {
		if err := hasImage(img); err != nil {
			return domain.DiskSource{}, fmt.Errorf("PVC %s holds no image for its CD-ROM: %w (import or upload the ISO into the PVC first)", claim, err)
		}
	}
	if err := EnsureImage(img, 0, readOnly); err != nil {
		return domain.DiskSource{}, fmt.Errorf("PVC %s: %w", claim, err)
	}
	if err := checkAccess(img, readOnly); err != nil {
		return domain.DiskSource{}, fmt.Errorf("PVC %s: %w", claim, err)
	}
	return domain.DiskSource{Path: img, Format: "raw", Cache: CacheMode(img), ReadOnly: readOnly}, nil
}

func (p *Preparer) emptyDisk(name string, capacity int64) (domain.DiskSource, error) {
	img := filepath.Join(p.Layout.EmptyDiskDir, name+".img")
	// An emptyDisk lives as long as the VMI: never reuse what an earlier run left.
	_ = os.Remove(img)
	if err := createSparse(img, capacity); err != nil {
		return domain.DiskSource{}, err
	}
	return domain.DiskSource{Path: img, Format: "raw", Cache: CacheMode(img)}, nil
}

func (p *Preparer) hostDisk(name string, hd *v1.HostDisk) (domain.DiskSource, error) {
	dir := filepath.Join(p.Layout.HostDiskDir, name)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return domain.DiskSource{}, fmt.Errorf("the directory of hostDisk %s is not mounted at %s", hd.Path, dir)
	}
	img := filepath.Join(dir, filepath.Base(hd.Path))
	switch hd.Type {
	case v1.HostDiskExists:
		st, err := os.Lstat(img)
		if err != nil {
			return domain.DiskSource{}, fmt.Errorf("hostDisk %s of type Disk does not exist: %w", hd.Path, err)
		}
		if !st.Mode().IsRegular() {
			return domain.DiskSource{}, fmt.Errorf("hostDisk %s is not a regular file", hd.Path)
		}
	case v1.HostDiskExistsOrCreate:
		if hd.Capacity == nil {
			return domain.DiskSource{}, fmt.Errorf("hostDisk %s of type DiskOrCreate has no capacity", hd.Path)
		}
		if err := EnsureImage(img, hd.Capacity.Value(), false); err != nil {
			return domain.DiskSource{}, fmt.Errorf("hostDisk %s: %w", hd.Path, err)
		}
	default:
		return domain.DiskSource{}, fmt.Errorf("hostDisk %s: unknown type %q", hd.Path, hd.Type)
	}
	if err := checkAccess(img, false); err != nil {
		return domain.DiskSource{}, fmt.Errorf("hostDisk %s: %w", hd.Path, err)
	}
	return domain.DiskSource{Path: img, Format: "raw", Cache: CacheMode(img)}, nil
}

func (p *Preparer) cloudInit(vmi *v1.VirtualMachineInstance, vol v1.Volume) (domain.DiskSource, error) {
	src, configDrive, _ := cloudinit.FromVolume(vol)
	user, network, err := cloudinit.Resolve(src, filepath.Join(p.Layout.SecretsDir, vol.Name))
	if err != nil {
		return domain.DiskSource{}, err
	}
	iso := filepath.Join(p.Layout.EmptyDiskDir, vol.Name+".iso")
	data := cloudinit.Data{
		UserData: user, NetworkData: network,
		InstanceID: vmi.Name + "." + vmi.Namespace, Hostname: vmi.GuestHostname(), UUID: string(vmi.UID),
	}
	now := time.Now
	if p.Now != nil {
		now = p.Now
	}
	if err := cloudinit.WriteISO(iso, configDrive, data, now()); err != nil {
		return domain.DiskSource{}, err
	}
	return domain.DiskSource{Path: iso, Format: "raw", Cache: CacheMode(iso), ReadOnly: true}, nil
}

// EnsureImage checks or creates a raw image. capacity 0 means the filesystem's size stands
// for the volume's size (a PVC is its own filesystem; the launcher does not know the claim's
// size). An image larger than the volume is refused; a missing one is created sparse at the
// volume size less Reserve, rounded down to 1 MiB, when the filesystem has at least
// (1-Toleration) of it free.
func EnsureImage(img string, capacity int64, readOnly bool) error {
	var st unix.Statfs_t
	if err := unix.Statfs(filepath.Dir(img), &st); err != nil {
		return fmt.Errorf("statfs %s: %w", filepath.Dir(img), err)
	}
	fsSize := int64(st.Blocks) * st.Bsize
	free := int64(st.Bavail) * st.Bsize
	volSize := capacity
	if volSize == 0 {
		volSize = fsSize
	}
	if fi, err := os.Lstat(img); err == nil { // a link is not a regular file: refused, never followed
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("%s is not a regular file", img)
		}
		if capacity == 0 && fi.Size() > fsSize {
			return fmt.Errorf("disk.img is larger than its PVC: %d bytes on a %d-byte volume", fi.Size(), fsSize)
		}
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("stat %s: %w", img, err)
	}
	if readOnly {
		return fmt.Errorf("%s does not exist and the volume is read-only", img)
	}
	if float64(free) < float64(volSize)*(1-Toleration) {
		return fmt.Errorf("not enough space for %s: %d bytes free, %d wanted (%.0f%% tolerated)", img, free, volSize, Toleration*100)
	}
	size := ImageSize(volSize, free)
	if size <= 0 {
		return fmt.Errorf("volume too small for a disk image: %d bytes", volSize)
	}
	return createSparse(img, size)
}

// ImageSize is the size of a raw image that fills a volume of volSize bytes with free bytes
// to spare: the volume less Reserve, and no more than free less Reserve, rounded down to
// 1 MiB; 0 when nothing fits. The launcher creates a missing disk.img this size, and grows
// one that filled its filesystem to this size when the filesystem grew (package diskresize).
func ImageSize(volSize, free int64) int64 {
	size := (min(volSize, free) - Reserve) / align * align
	return max(size, 0)
}

func createSparse(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o660)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if err := f.Truncate(size); err != nil {
		_ = f.Close()
		return fmt.Errorf("size %s to %d bytes: %w", path, size, err)
	}
	return f.Close()
}

// checkAccess fails early, with the user's id, when QEMU (running as the launcher's user)
// could not open the image, instead of leaving it to a libvirt error at start.
func checkAccess(path string, readOnly bool) error {
	mode := uint32(unix.R_OK | unix.W_OK)
	what := "read and write"
	if readOnly {
		mode, what = unix.R_OK, "read"
	}
	if err := unix.Access(path, mode); err != nil {
		return fmt.Errorf("uid %d cannot %s %s: %w", os.Geteuid(), what, path, err)
	}
	return nil
}

// CacheMode is none when the file can be opened with O_DIRECT (no double caching in the
// host's page cache), else writethrough (tmpfs and some FUSE filesystems refuse O_DIRECT),
// as KubeVirt chooses.
func CacheMode(path string) string {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return "writethrough"
	}
	_ = unix.Close(fd)
	return "none"
}

// hasImage says why img cannot be a CD-ROM's image: missing (one is never made for a CD-ROM),
// or blank, with no byte ever written (a new slimvirt volume's disk.img is all holes). It is
// opened without following a link.
func hasImage(img string) error {
	fd, err := unix.Open(img, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return errors.New("it has no disk.img")
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", img, err)
	}
	defer unix.Close(fd) //nolint:errcheck // read-only
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("stat %s: %w", img, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return errors.New("its disk.img is not a regular file")
	}
	if _, err := unix.Seek(fd, 0, unix.SEEK_DATA); errors.Is(err, unix.ENXIO) {
		return errors.New("its disk.img is blank, nothing was ever written to it")
	}
	return nil
}
