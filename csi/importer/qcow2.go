package importer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/slimvirt/slimvirt/internal/qcow2"
)

// writeQcow2 checks the qcow2 header before anything else sees the image (no backing file,
// no external data file, no encryption, sane metadata), stages the image in an unlinked
// scratch file in the pool (qcow2 needs random access) no larger than a valid image of its
// virtual size can be, verifies the checksum, has qemu-img check it, and converts it into
// disk.img with qemu-img convert -n --target-is-zero, which writes only the allocated
// clusters and keeps disk.img sparse.
func writeQcow2(ctx context.Context, r io.Reader, t Target, verify func() error, progress func(float64)) error {
	if t.Scratch == "" {
		return permanent("qcow2 images need a scratch directory")
	}
	// Everything the header check reads lies in the first cluster, at most 2 MiB.
	head := make([]byte, qcow2.MaxClusterSize)
	n, err := io.ReadFull(r, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("read qcow2 header: %w", err)
	}
	head = head[:n]
	h, err := checkHeader(head, int64(len(head)), t)
	if err != nil {
		return err
	}
	bound := h.MaxFileSize()
	f, err := openScratch(t.Scratch)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.WriteAt(head, 0); err != nil {
		return fmt.Errorf("stage qcow2 in %s: %w", filepath.Dir(t.Scratch), err)
	}
	if err := copySparse(f, r, int64(len(head)), bound); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var pe *PermanentError
		if errors.As(err, &pe) {
			return err
		}
		return fmt.Errorf("stage qcow2 in %s: %w", filepath.Dir(t.Scratch), err)
	}
	if err := verify(); err != nil {
		return err
	}
	return convertQcow2(ctx, stagedFile{f}, t, progress)
}

// convertQcow2 has qemu-img info refuse an image that names other files or is larger than the
// disk, qemu-img check refuse a truncated or corrupt one, and converts it into disk.img, which
// is fsynced.
func convertQcow2(ctx context.Context, src qcow2Source, t Target, progress func(float64)) error {
	info, err := qemuInfo(ctx, src)
	if err != nil {
		return err
	}
	if info.VirtualSize > t.Size {
		return permanent("image virtual size %d is larger than the volume (%d bytes): make the volume bigger", info.VirtualSize, t.Size)
	}
	if err := qemuCheck(ctx, src); err != nil {
		return err
	}
	disk, err := openDisk(t.Disk)
	if err != nil {
		return err
	}
	defer disk.Close()
	if err := qemuConvert(ctx, src, disk, t.Size); err != nil {
		return err
	}
	if progress != nil {
		progress(1)
	}
	if err := disk.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", t.Disk, err)
	}
	return nil
}

// checkHeader refuses a qcow2 image whose header (head, its first cluster or the whole
// image) names another file, is encrypted or has insane metadata, whose virtual size exceeds
// the volume, or whose length (as far as known) exceeds what an image of its virtual size can be.
func checkHeader(head []byte, length int64, t Target) (*qcow2.Header, error) {
	h, err := qcow2.Parse(head)
	var refused *qcow2.Error
	if errors.As(err, &refused) {
		return nil, &PermanentError{Err: fmt.Errorf("import refused: qcow2 header: %s", refused.Reason)}
	}
	if err != nil {
		return nil, &PermanentError{Err: fmt.Errorf("import refused: qcow2 header: %w", err)}
	}
	if h.VirtualSize > t.Size {
		return nil, permanent("image virtual size %d is larger than the volume (%d bytes): make the volume bigger", h.VirtualSize, t.Size)
	}
	if bound := h.MaxFileSize(); length > bound {
		return nil, permanent("import refused: the qcow2 image is larger than an image of its virtual size can be (%d bytes at most)", bound)
	}
	return h, nil
}

// openScratch makes an unlinked file in the scratch directory: it holds pool space only while
// the import runs and vanishes with the descriptor, however the import ends (a cut upload, a
// failed import, a killed driver). Filesystems without O_TMPFILE get a named file that is
// unlinked at once.
func openScratch(path string) (*os.File, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create scratch dir: %w", err)
	}
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err == nil {
		return os.NewFile(uintptr(fd), path), nil
	}
	if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EISDIR) {
		return nil, fmt.Errorf("create scratch in %s: %w", dir, err)
	}
	// A leftover of a killed import; if it cannot be removed, O_EXCL below reports it.
	_ = os.Remove(path)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create scratch %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil {
		_ = f.Close() // nothing written yet; the unlink error is the one to report
		return nil, fmt.Errorf("unlink scratch %s: %w", path, err)
	}
	return f, nil
}

// RemoveStaleScratch removes the scratch files in the scratch directories of the pools (one
// .scratch directory per pool): files an older version staged by name and a driver that was
// killed left, and the resume records of volumes that are gone. Call it before any import
// starts.
func RemoveStaleScratch(poolDirs []string, log *slog.Logger) {
	if log == nil {
		log = slog.Default()
	}
	for _, p := range poolDirs {
		dir := filepath.Join(p, scratchDir)
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			if !e.Type().IsRegular() || (!strings.HasSuffix(e.Name(), ".qcow2") && !staleRecord(p, e.Name())) {
				continue
			}
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				log.Error("remove stale scratch file", "file", filepath.Join(dir, e.Name()), "err", err)
				continue
			}
			log.Info("removed stale scratch file", "file", filepath.Join(dir, e.Name()))
		}
	}
}

// copySparse copies r to f from offset off, leaving holes for zero blocks (a qcow2 has few,
// but a decompressed one may), and refuses to make f larger than limit bytes.
func copySparse(f *os.File, r io.Reader, off, limit int64) error {
	buf := make([]byte, 4<<20)
	isZero := zeroCheck(make([]byte, 64<<10)).is
	for {
		n, err := fill(r, buf)
		if off+int64(n) > limit {
			return permanent("import refused: the qcow2 image is larger than an image of its virtual size can be (%d bytes at most)", limit)
		}
		if n > 0 && !isZero(buf[:n]) {
			if _, werr := f.WriteAt(buf[:n], off); werr != nil {
				return werr
			}
		}
		off += int64(n)
		if errors.Is(err, io.EOF) {
			return f.Truncate(off)
		}
		if err != nil {
			return err
		}
	}
}
