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
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/gzip"

	"github.com/slimvirt/slimvirt/csi/claim"
)

// Target is the volume an image is written into.
type Target struct {
	// Disk is the pre-sized sparse disk.img, all holes when the write starts.
	Disk string
	Size int64
	// Scratch is a file path outside the volume where a qcow2 image is staged for conversion.
	Scratch string
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
	var h hash.Hash
	var want string
	if s.Checksum != "" {
		algo, digest, err := claim.ParseChecksum(s.Checksum)
		if err != nil {
			return &PermanentError{Err: err}
		}
		h = map[string]func() hash.Hash{"md5": md5.New, "sha1": sha1.New, "sha256": sha256.New, "sha512": sha512.New}[algo]()
		want = digest
	}
	counted := &counter{r: s.R, total: s.Total, progress: s.Progress, ctx: ctx}
	var src io.Reader = counted
	if h != nil {
		src = io.TeeReader(counted, h)
	}
	image, format, closeFn, err := decompress(ctx, bufio.NewReaderSize(src, 1<<20))
	if err != nil {
		return err
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
		if err := writeRaw(ctx, image, t); err != nil {
			return err
		}
		if err := verify(); err != nil {
			return err
		}
		return syncFile(t.Disk)
	}
}

// decompress peels gzip or xz off the stream and says what format is inside.
func decompress(ctx context.Context, br *bufio.Reader) (io.Reader, string, func(), error) {
	head, _ := br.Peek(8)
	var r io.Reader = br
	closeFn := func() {}
	src := &recordingReader{r: br}
	switch {
	case bytes.HasPrefix(head, []byte(magicGzip)):
		zr, err := gzip.NewReader(src)
		if err != nil {
			return nil, "", nil, permanent("open gzip stream: %w", err)
		}
		zr.Multistream(true)
		r, closeFn = decoded{r: zr, src: src, what: "gzip"}, func() { zr.Close() }
	case bytes.HasPrefix(head, []byte(magicXz)):
		xr, stop, err := xzReader(ctx, src)
		if err != nil {
			return nil, "", nil, err
		}
		r, closeFn = decoded{r: xr, src: src, what: "xz"}, stop
	default:
		if bytes.HasPrefix(head, []byte(magicQcow2)) {
			return br, "qcow2", closeFn, nil
		}
		return br, "raw", closeFn, nil
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
func writeRaw(ctx context.Context, r io.Reader, t Target) error {
	f, err := os.OpenFile(t.Disk, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open disk %s: %w", t.Disk, err)
	}
	defer f.Close()
	const block = 64 << 10
	buf := make([]byte, 4<<20)
	isZero := zeroCheck(make([]byte, block)).is
	var off int64
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
			b = e
		}
		off += int64(n)
		if rerr == io.EOF {
			return nil
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
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return nil
}

// writeQcow2 stages the qcow2 image in t.Scratch (qcow2 needs random access), verifies the
// checksum, checks the image, and converts it into disk.img with qemu-img convert -n
// --target-is-zero, which writes only the allocated clusters and keeps disk.img sparse.
func writeQcow2(ctx context.Context, r io.Reader, t Target, verify func() error, progress func(float64)) error {
	if t.Scratch == "" {
		return permanent("qcow2 images need a scratch directory")
	}
	if err := os.MkdirAll(filepath.Dir(t.Scratch), 0o700); err != nil {
		return fmt.Errorf("create scratch dir: %w", err)
	}
	defer os.Remove(t.Scratch)
	f, err := os.OpenFile(t.Scratch, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("create scratch %s: %w", t.Scratch, err)
	}
	if err := copySparse(f, r); err != nil {
		f.Close()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("stage qcow2 in %s: %w", t.Scratch, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close scratch %s: %w", t.Scratch, err)
	}
	if err := verify(); err != nil {
		return err
	}
	info, err := qemuInfo(ctx, t.Scratch)
	if err != nil {
		return err
	}
	if info.Format != "qcow2" {
		return permanent("image claims to be qcow2 but qemu-img sees %s", info.Format)
	}
	if info.BackingFilename != "" {
		return permanent("qcow2 images with a backing file (%s) are not supported", info.BackingFilename)
	}
	if info.VirtualSize > t.Size {
		return permanent("image virtual size %d is larger than the volume (%d bytes): make the volume bigger", info.VirtualSize, t.Size)
	}
	if err := qemuCheck(ctx, t.Scratch); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "qemu-img", "convert", "-n", "--target-is-zero", "-f", "qcow2", "-O", "raw", "-t", "writeback", "-W", t.Scratch, t.Disk)
	if out, err := cmd.CombinedOutput(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return permanent("convert qcow2 to raw: %v: %s", err, strings.TrimSpace(string(out)))
	}
	if progress != nil {
		progress(1)
	}
	return syncFile(t.Disk)
}

// copySparse copies r to f, leaving holes for zero blocks (a qcow2 has few, but a
// decompressed one may).
func copySparse(f *os.File, r io.Reader) error {
	buf := make([]byte, 4<<20)
	isZero := zeroCheck(make([]byte, 64<<10)).is
	var off int64
	for {
		n, err := fill(r, buf)
		if n > 0 && !isZero(buf[:n]) {
			if _, werr := f.WriteAt(buf[:n], off); werr != nil {
				return werr
			}
		}
		off += int64(n)
		if err == io.EOF {
			return f.Truncate(off)
		}
		if err != nil {
			return err
		}
	}
}

// qemuCheck refuses a qcow2 whose metadata points past its end or is otherwise corrupt:
// qemu-img convert would read the missing clusters as zeros and succeed.
func qemuCheck(ctx context.Context, path string) error {
	out, err := exec.CommandContext(ctx, "qemu-img", "check", "--output=json", "-f", "qcow2", path).Output()
	var res struct {
		Corruptions int `json:"corruptions"`
		CheckErrors int `json:"check-errors"`
	}
	if jerr := json.Unmarshal(out, &res); jerr != nil {
		return permanent("qcow2 image could not be checked: %v", err)
	}
	if res.Corruptions > 0 || res.CheckErrors > 0 {
		return permanent("qcow2 image is truncated or corrupt: qemu-img check found %d corruptions and %d errors", res.Corruptions, res.CheckErrors)
	}
	return nil
}

type qemuImageInfo struct {
	Format          string `json:"format"`
	VirtualSize     int64  `json:"virtual-size"`
	BackingFilename string `json:"backing-filename"`
}

func qemuInfo(ctx context.Context, path string) (qemuImageInfo, error) {
	out, err := exec.CommandContext(ctx, "qemu-img", "info", "--output=json", "-f", "qcow2", path).Output()
	if err != nil {
		msg := ""
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			msg = strings.TrimSpace(string(ee.Stderr))
		}
		return qemuImageInfo{}, permanent("qcow2 image is not valid: %s", msg)
	}
	var info qemuImageInfo
	if err := json.Unmarshal(out, &info); err != nil {
		return info, fmt.Errorf("parse qemu-img info: %w", err)
	}
	return info, nil
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
