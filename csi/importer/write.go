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
	"os"
	"path/filepath"

	"github.com/klauspost/compress/gzip"

	"github.com/slimvirt/slimvirt/csi/claim"
	"github.com/slimvirt/slimvirt/csi/diskimg"
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

// openDisk opens a volume's disk.img for writing without following links.
func openDisk(path string) (*os.File, error) {
	f, err := diskimg.Open(filepath.Dir(path), filepath.Base(path), os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open disk: %w", err)
	}
	return f, nil
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
