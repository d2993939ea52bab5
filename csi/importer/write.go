package importer

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/gzip"
	"golang.org/x/sys/unix"

	"github.com/slimvirt/slimvirt/csi/claim"
	"github.com/slimvirt/slimvirt/csi/diskimg"
	"github.com/slimvirt/slimvirt/internal/qcow2"
)

// Target is the volume an image is written into.
type Target struct {
	// Disk is the pre-sized sparse disk.img, all holes when the write starts.
	Disk string
	Size int64
	// Scratch is a file path outside the volume where a qcow2 image is staged for conversion.
	Scratch string
	// Record is where an HTTP import of a raw image keeps its resume record: outside the
	// volume, where the volume's pods cannot write. Empty: an import cut short by a restart
	// starts over.
	Record string
	// Owner names the volume and its incarnation; a record of another owner is discarded.
	Owner string
	// CheckpointEvery is how many bytes are written between two records (default: the
	// importer's Checkpoint).
	CheckpointEvery int64
}

// Stream is the image as it arrives.
type Stream struct {
	R io.Reader
	// Total is the number of bytes R will yield, or -1; progress is counted against it.
	Total int64
	// Checksum is algorithm:hex of the bytes of R, or empty.
	Checksum string
	// Progress receives the fraction done, from 0 to 1.
	Progress func(float64)
}

// The first bytes of the formats the importer recognises.
const (
	magicGzip  = "\x1f\x8b"
	magicXz    = "\xfd7zXZ\x00"
	magicQcow2 = "QFI\xfb"
)

// Write puts the image from s into t: gzip and xz are decompressed on the fly, raw data is
// written straight into disk.img leaving holes where the image has zeros, and qcow2 is staged
// and converted with qemu-img. The checksum, when given, is checked over every byte received
// before Write returns success; on any error the disk may hold a partial image and the caller
// must not hand it out.
func Write(ctx context.Context, s Stream, t Target) error {
	return write(ctx, s, t, nil, nil)
}

// resumePoint is where a resumed import continues: the first offset bytes of the raw image
// are in disk.img (data of them in blocks that are not holes), and hash (nil without a
// checksum) is the checksum's state over them.
type resumePoint struct {
	offset, data int64
	hash         hash.Hash
}

// checkpoint makes what writeRaw wrote durable and hands it to save, every `every` bytes.
type checkpoint struct {
	every int64
	last  int64
	// data counts the bytes written into the disk (not left as holes) so far.
	data int64
	hash hash.Hash
	save func(off, data int64, h hash.Hash)
}

// reached is called with the image's bytes up to off written into f.
func (c *checkpoint) reached(f *os.File, off int64) error {
	if c == nil || off-c.last < c.every {
		return nil
	}
	// The record may say "written" only of bytes that are on disk.
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", f.Name(), err)
	}
	c.save(off, c.data, c.hash)
	c.last = off
	return nil
}

// write is Write continuing from a resume point (s.R then yields the raw image from
// from.offset on) and keeping checkpoints of a raw image, when they are given.
func write(ctx context.Context, s Stream, t Target, from *resumePoint, ck *checkpoint) error {
	h, want, err := newHash(s.Checksum)
	if err != nil {
		return &PermanentError{Err: err}
	}
	var start, data int64
	if from != nil {
		start, data, h = from.offset, from.data, from.hash
	}
	counted := &counter{r: s.R, n: start, total: s.Total, progress: s.Progress, ctx: ctx}
	br := bufio.NewReaderSize(counted, 1<<20)
	// The hash sees exactly the bytes handed on, so at a checkpoint it covers what is written.
	var src io.Reader = br
	if h != nil {
		src = io.TeeReader(br, h)
	}
	image, format, closeFn := src, "raw", func() {}
	if from == nil {
		if head, _ := br.Peek(8); compressed(head) {
			ck = nil // a compressed stream cannot be taken up again at a byte of its own
		}
		if image, format, closeFn, err = decompress(ctx, br, src); err != nil {
			return err
		}
	}
	defer closeFn()

	verify := func() error {
		// Drain what the decompressor left (trailers, padding) so the checksum covers the file.
		if _, err := io.Copy(io.Discard, src); err != nil {
			return fmt.Errorf("read image: %w", err)
		}
		if h == nil {
			return nil
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != want {
			return permanent("checksum mismatch: image has %s, expected %s", got, want)
		}
		return nil
	}

	switch format {
	case "qcow2":
		return writeQcow2(ctx, image, t, verify, s.Progress)
	default:
		if ck != nil {
			ck.last, ck.data, ck.hash = start, data, h
		}
		if err := writeRaw(ctx, image, t, start, ck); err != nil {
			return err
		}
		if err := verify(); err != nil {
			return err
		}
		return syncFile(t.Disk)
	}
}

// newHash makes the hash a checksum (algorithm:hex) names and returns it with the digest; nil
// for no checksum.
func newHash(checksum string) (hash.Hash, string, error) {
	if checksum == "" {
		return nil, "", nil
	}
	algo, digest, err := claim.ParseChecksum(checksum)
	if err != nil {
		return nil, "", err
	}
	mk, ok := map[string]func() hash.Hash{"md5": md5.New, "sha1": sha1.New, "sha256": sha256.New, "sha512": sha512.New}[algo]
	if !ok {
		return nil, "", fmt.Errorf("checksum algorithm %q not supported", algo)
	}
	return mk(), digest, nil
}

// compressed says whether an image starting with head is gzip or xz.
func compressed(head []byte) bool {
	return bytes.HasPrefix(head, []byte(magicGzip)) || bytes.HasPrefix(head, []byte(magicXz))
}

// decompress peels gzip or xz off the stream and says what format is inside. br is peeked at,
// the image is read from in (br, or a reader of br's bytes).
func decompress(ctx context.Context, br *bufio.Reader, in io.Reader) (io.Reader, string, func(), error) {
	head, _ := br.Peek(8)
	r := in
	closeFn := func() {}
	src := &recordingReader{r: in}
	switch {
	case bytes.HasPrefix(head, []byte(magicGzip)):
		zr, err := gzip.NewReader(src)
		if err != nil {
			return nil, "", nil, permanent("open gzip stream: %w", err)
		}
		zr.Multistream(true)
		r, closeFn = decoded{r: zr, src: src, what: "gzip"}, func() { _ = zr.Close() } // a read side: Close only releases the decoder
	case bytes.HasPrefix(head, []byte(magicXz)):
		xr, stop, err := xzReader(ctx, src)
		if err != nil {
			return nil, "", nil, err
		}
		r, closeFn = decoded{r: xr, src: src, what: "xz"}, stop
	default:
		if bytes.HasPrefix(head, []byte(magicQcow2)) {
			return in, "qcow2", closeFn, nil
		}
		return in, "raw", closeFn, nil
	}
	inner := bufio.NewReaderSize(r, 1<<20)
	head, _ = inner.Peek(4)
	if bytes.HasPrefix(head, []byte(magicQcow2)) {
		return inner, "qcow2", closeFn, nil
	}
	return inner, "raw", closeFn, nil
}

// decoded tells a corrupt compressed image (permanent: the same bytes come again) from a
// broken download underneath (passed on as it is).
type decoded struct {
	r    io.Reader
	src  *recordingReader
	what string
}

func (d decoded) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	if err == nil || err == io.EOF {
		return n, err
	}
	if f := d.src.failure(); f != nil {
		return n, f
	}
	var pe *PermanentError
	if errors.As(err, &pe) {
		return n, err
	}
	return n, permanent("decompress %s: %w", d.what, err)
}

// writeRaw copies the image into disk.img, seeking over zero blocks so the file stays sparse
// (the disk started as holes, so skipped blocks read as zeros).
func writeRaw(ctx context.Context, r io.Reader, t Target, start int64, ck *checkpoint) error {
	f, err := openDisk(t.Disk)
	if err != nil {
		return err
	}
	defer f.Close()
	const block = 64 << 10
	buf := make([]byte, 4<<20)
	isZero := zeroCheck(make([]byte, block)).is
	off := start
	for {
		n, rerr := fill(r, buf)
		if off+int64(n) > t.Size {
			return permanent("image is larger than the volume (%d bytes): make the volume bigger", t.Size)
		}
		for b := 0; b < n; {
			e := min(b+block, n)
			if isZero(buf[b:e]) {
				b = e
				continue
			}
			for e < n { // one write for a run of data blocks
				ne := min(e+block, n)
				if isZero(buf[e:ne]) {
					break
				}
				e = ne
			}
			if _, err := f.WriteAt(buf[b:e], off+int64(b)); err != nil {
				return fmt.Errorf("write disk %s at %d: %w", t.Disk, off+int64(b), err)
			}
			if ck != nil {
				ck.data += int64(e - b)
			}
			b = e
		}
		off += int64(n)
		if errors.Is(rerr, io.EOF) {
			return nil
		}
		if rerr == nil {
			if err := ck.reached(f, off); err != nil {
				return err
			}
		}
		if rerr != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("read image: %w", rerr)
		}
	}
}

// fill reads until buf is full or r fails; io.EOF means the image ended.
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// zeroCheck tells whether a block is all zeros by comparing with a zero block, which runs at
// memory speed (a byte loop would cap imports far below disk speed).
type zeroCheck []byte

func (z zeroCheck) is(b []byte) bool {
	for len(b) > len(z) {
		if !bytes.Equal(b[:len(z)], z) {
			return false
		}
		b = b[len(z):]
	}
	return bytes.Equal(b, z[:len(b)])
}

func syncFile(path string) error {
	f, err := openDisk(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return nil
}

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

// openDisk opens a volume's disk.img for writing without following links.
func openDisk(path string) (*os.File, error) {
	f, err := diskimg.Open(filepath.Dir(path), filepath.Base(path), os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open disk: %w", err)
	}
	return f, nil
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

// counter counts the bytes read and reports progress.
type counter struct {
	ctx      context.Context
	r        io.Reader
	n, total int64
	progress func(float64)
}

func (c *counter) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.progress != nil && c.total > 0 {
		f := float64(c.n) / float64(c.total)
		if f >= 1 {
			f = 0.99 // done only once written and verified
		}
		c.progress(f)
	}
	return n, err
}
