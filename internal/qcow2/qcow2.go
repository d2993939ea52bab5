// Package qcow2 reads the header of a qcow2 image, bounded and in pure Go, so that an image a
// tenant supplies can be refused before qemu ever opens it: a qcow2 may name a backing file or
// an external data file, and qemu would then read that path of the node into the tenant's
// disk. Parse accepts only a standalone image (no backing file, no data file, no encryption,
// no feature it does not know) whose metadata sizes are within qemu's own limits.
//
// Both the CSI importer (imports and uploads) and the launcher (qcow2 containerDisks) call it.
package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Magic starts every qcow2 image.
const Magic = "QFI\xfb"

// MaxClusterSize is the largest cluster qemu supports (cluster_bits 21). Everything Parse
// reads (header, extensions, backing file name) lies within the first cluster.
const MaxClusterSize = 2 << 20

// Limits qemu itself enforces (block/qcow2.h); a header beyond them is refused here first.
const (
	maxL1Bytes       = 32 << 20 // QCOW_MAX_L1_SIZE
	maxRefTableBytes = 8 << 20  // QCOW_MAX_REFTABLE_SIZE
	maxSnapshots     = 65536    // QCOW_MAX_SNAPSHOTS
	// MaxVirtualSize is qemu's QCOW_MAX_VIRTUAL_SIZE guard, rounded down: 2^55 bytes (32 PiB).
	MaxVirtualSize = 1 << 55
)

// Incompatible feature bits (docs/interop/qcow2.txt).
const (
	IncompatDirty       = 1 << 0
	IncompatCorrupt     = 1 << 1
	IncompatDataFile    = 1 << 2
	IncompatCompression = 1 << 3
	IncompatExtendedL2  = 1 << 4
	knownIncompat       = IncompatDirty | IncompatCorrupt | IncompatDataFile | IncompatCompression | IncompatExtendedL2
)

// AutoclearDataFileRaw says the external data file is a raw image; it only means something
// with a data file, so it is refused as well.
const AutoclearDataFileRaw = 1 << 1

// Header extension types.
const (
	extEnd           = 0x00000000
	extBackingFormat = 0xe2792aca
	extFeatureNames  = 0x6803f857
	extBitmaps       = 0x23852875
	extEncryption    = 0x0537be77
	extDataFile      = 0x44415441
)

// Header is what Parse read from an accepted image.
type Header struct {
	Version     int
	ClusterSize int64
	// VirtualSize is the disk size the guest sees.
	VirtualSize           int64
	L1Size                int64 // entries
	L1Offset              int64
	RefcountTableOffset   int64
	RefcountTableClusters int64
	RefcountOrder         int
	Snapshots             int64
	SnapshotsOffset       int64
	Incompatible          uint64
	Compatible            uint64
	Autoclear             uint64
	HeaderLength          int64
}

// Error is a refusal: the image is not one slimvirt will hand to qemu.
type Error struct{ Reason string }

func (e *Error) Error() string { return "qcow2 image refused: " + e.Reason }

func refuse(format string, args ...any) error {
	return &Error{Reason: fmt.Sprintf(format, args...)}
}

// ErrShort means b ended before the header did: the caller gave fewer bytes than the image's
// first cluster and the image is longer.
var ErrShort = errors.New("qcow2 header is cut short")

// Parse reads the qcow2 header in b, the image's first cluster (or the whole image, if it is
// shorter; MaxClusterSize bytes are always enough), and refuses anything but a standalone,
// unencrypted image with known features and sane metadata sizes. It never reads past b and
// allocates nothing in proportion to the values in the header.
func Parse(b []byte) (*Header, error) {
	h, off, err := parseFields(b)
	if err != nil {
		return nil, err
	}
	if err := h.checkFeatures(); err != nil {
		return nil, err
	}
	if err := checkBacking(b, off); err != nil {
		return nil, err
	}
	if err := h.checkTables(off); err != nil {
		return nil, err
	}
	h.L1Offset, h.RefcountTableOffset, h.SnapshotsOffset = int64(off.l1), int64(off.refcountTable), int64(off.snapshots)

	if err := h.checkExtensions(b); err != nil {
		return nil, err
	}
	return h, nil
}

// offsets are the header's file offsets as read, unsigned and unchecked; they enter the
// Header only once checkBacking and checkTables have found them sane.
type offsets struct {
	backing                      uint64
	backingLen                   uint32
	l1, refcountTable, snapshots uint64
}

// parseFields reads the header's fields, refusing values no qemu image can have.
func parseFields(b []byte) (*Header, offsets, error) {
	var off offsets
	if len(b) < 72 {
		if len(b) >= 4 && string(b[:4]) != Magic {
			return nil, off, refuse("no qcow2 magic")
		}
		return nil, off, fmt.Errorf("read header (%d bytes): %w", len(b), ErrShort)
	}
	be := binary.BigEndian
	if string(b[:4]) != Magic {
		return nil, off, refuse("no qcow2 magic")
	}
	h := &Header{Version: int(be.Uint32(b[4:]))}
	if h.Version != 2 && h.Version != 3 {
		return nil, off, refuse("version %d (only 2 and 3 exist)", h.Version)
	}
	off.backing, off.backingLen = be.Uint64(b[8:]), be.Uint32(b[16:])
	bits := be.Uint32(b[20:])
	if bits < 9 || bits > 21 {
		return nil, off, refuse("cluster_bits %d outside 9..21", bits)
	}
	h.ClusterSize = 1 << bits
	size := be.Uint64(b[24:])
	if size > MaxVirtualSize {
		return nil, off, refuse("virtual size %d is beyond qemu's limit", size)
	}
	h.VirtualSize = int64(size)
	if m := be.Uint32(b[32:]); m != 0 {
		return nil, off, refuse("the image is encrypted (method %d); import it decrypted", m)
	}
	h.L1Size = int64(be.Uint32(b[36:]))
	off.l1, off.refcountTable = be.Uint64(b[40:]), be.Uint64(b[48:])
	h.RefcountTableClusters = int64(be.Uint32(b[56:]))
	h.Snapshots = int64(be.Uint32(b[60:]))
	off.snapshots = be.Uint64(b[64:])

	h.RefcountOrder, h.HeaderLength = 4, 72
	if h.Version == 3 {
		if err := h.parseV3Fields(b); err != nil {
			return nil, off, err
		}
	}
	return h, off, nil
}

// parseV3Fields reads the fields version 3 added after the version 2 header.
func (h *Header) parseV3Fields(b []byte) error {
	be := binary.BigEndian
	if len(b) < 104 {
		return fmt.Errorf("read version 3 header (%d bytes): %w", len(b), ErrShort)
	}
	h.Incompatible, h.Compatible, h.Autoclear = be.Uint64(b[72:]), be.Uint64(b[80:]), be.Uint64(b[88:])
	h.RefcountOrder = int(be.Uint32(b[96:]))
	hl := be.Uint32(b[100:])
	if hl < 104 || hl%8 != 0 || int64(hl) > h.ClusterSize {
		return refuse("header length %d", hl)
	}
	h.HeaderLength = int64(hl)
	return nil
}

// checkFeatures refuses feature bits that make an image depend on another file, or that this
// check does not know.
func (h *Header) checkFeatures() error {
	if h.Incompatible&IncompatDataFile != 0 {
		return refuse("it names an external data file (incompatible feature bit 2); only self-contained images are accepted")
	}
	if h.Autoclear&AutoclearDataFileRaw != 0 {
		return refuse("it has the data-file-raw flag; only self-contained images are accepted")
	}
	if h.Incompatible&IncompatCorrupt != 0 {
		return refuse("it is marked corrupt")
	}
	if u := h.Incompatible &^ knownIncompat; u != 0 {
		return refuse("unknown incompatible features %#x", u)
	}
	if h.RefcountOrder > 6 {
		return refuse("refcount_order %d above 6", h.RefcountOrder)
	}
	return nil
}

// checkBacking refuses an image with a backing file, naming it if it lies within b.
func checkBacking(b []byte, off offsets) error {
	if off.backing == 0 && off.backingLen == 0 {
		return nil
	}
	name := ""
	if off.backing < uint64(len(b)) {
		end := min(off.backing+uint64(min(off.backingLen, 1023)), uint64(len(b)))
		name = string(b[off.backing:end])
	}
	return refuse("it has a backing file %s; only self-contained images are accepted", strconv.Quote(name))
}

// checkTables keeps the metadata within qemu's limits and cluster aligned, so that neither
// qemu nor a size computed from them can be made to allocate or seek absurdly.
func (h *Header) checkTables(off offsets) error {
	cs := uint64(h.ClusterSize)
	if h.L1Size*8 > maxL1Bytes {
		return refuse("L1 table of %d entries is beyond qemu's limit", h.L1Size)
	}
	// qemu makes the L1 table exactly as large as needed and grows it by half when an
	// image grows; more than twice that plus a cluster of entries serves only to make qemu
	// allocate and scan a table for blocks that do not exist.
	need := l1Entries(h.VirtualSize, h.ClusterSize, h.Incompatible&IncompatExtendedL2 != 0)
	if h.L1Size < need {
		return refuse("L1 table of %d entries is too small for %d bytes (needs %d)", h.L1Size, h.VirtualSize, need)
	}
	if h.L1Size > 2*need+h.ClusterSize/8 {
		return refuse("L1 table of %d entries for %d bytes (needs %d)", h.L1Size, h.VirtualSize, need)
	}
	if off.l1%cs != 0 || (h.L1Size > 0 && off.l1 == 0) || off.l1 > MaxVirtualSize {
		return refuse("L1 table offset %d", off.l1)
	}
	if off.refcountTable == 0 || off.refcountTable%cs != 0 || off.refcountTable > MaxVirtualSize {
		return refuse("refcount table offset %d", off.refcountTable)
	}
	if h.RefcountTableClusters == 0 || uint64(h.RefcountTableClusters)*cs > maxRefTableBytes {
		return refuse("refcount table of %d clusters", h.RefcountTableClusters)
	}
	if h.Snapshots > maxSnapshots || off.snapshots%cs != 0 || off.snapshots > MaxVirtualSize || (h.Snapshots > 0 && off.snapshots == 0) {
		return refuse("%d snapshots at offset %d", h.Snapshots, off.snapshots)
	}
	return nil
}

// checkExtensions walks the header extensions, which end before the first cluster does.
func (h *Header) checkExtensions(b []byte) error {
	be := binary.BigEndian
	off := h.HeaderLength
	end := h.ClusterSize
	for {
		if off+8 > end {
			return refuse("header extensions run past the first cluster")
		}
		if off+8 > int64(len(b)) {
			return fmt.Errorf("read header extension at %d: %w", off, ErrShort)
		}
		typ, n := be.Uint32(b[off:]), int64(be.Uint32(b[off+4:]))
		off += 8
		if typ == extEnd {
			return nil
		}
		if n > end-off {
			return refuse("header extension %#x of %d bytes runs past the first cluster", typ, n)
		}
		switch typ {
		case extDataFile:
			name := ""
			if off < int64(len(b)) {
				name = string(b[off:min(off+min(n, 1023), int64(len(b)))])
			}
			return refuse("it names an external data file %s; only self-contained images are accepted", strconv.Quote(name))
		case extBackingFormat:
			return refuse("it has a backing file format extension; only self-contained images are accepted")
		case extEncryption:
			return refuse("it has an encryption header; import it decrypted")
		case extFeatureNames, extBitmaps:
		default:
			return refuse("unknown header extension %#x", typ)
		}
		off += (n + 7) &^ 7
	}
}

// l1Entries is how many L1 entries a virtual size needs.
func l1Entries(size, cluster int64, extendedL2 bool) int64 {
	entry := int64(8)
	if extendedL2 {
		entry = 16
	}
	perL2 := cluster / entry * cluster // bytes one L2 table maps
	return (size + perL2 - 1) / perL2
}

// MaxFileSize is the largest a valid image of this header's virtual size and cluster size
// can be without internal snapshots: the data clusters (at most the virtual size, rounded up
// to clusters) plus the metadata that maps and counts them. Per data cluster there is at most
// one L2 entry (16 bytes with extended L2) and one refcount (8 bytes at refcount_order 6);
// the refcounts of the metadata clusters themselves, the L1 table, the refcount table and the
// rounding of each table up to whole clusters are covered by doubling the per-cluster cost and
// adding 8 clusters (header, L1, refcount table, bitmaps and their rounding), plus the L1 and
// refcount tables the header declares. An image larger than this has data that maps to no
// guest block (or internal snapshots) and is refused rather than staged.
func (h *Header) MaxFileSize() int64 {
	c := h.ClusterSize
	data := (h.VirtualSize + c - 1) / c * c
	clusters := data / c
	return data + 2*clusters*(16+8) + 8*c + h.L1Size*8 + h.RefcountTableClusters*c
}

// Check reads the first cluster of the image in r and parses it.
func Check(r io.ReaderAt) (*Header, error) {
	buf := make([]byte, MaxClusterSize)
	n, err := r.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read qcow2 header: %w", err)
	}
	return Parse(buf[:n])
}

// CheckFile opens path without following a link and checks its qcow2 header: the launcher
// calls this on a containerDisk before handing it to qemu.
func CheckFile(path string) (*Header, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open image %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat image %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("image %s is not a regular file (%s)", path, fi.Mode().Type())
	}
	h, err := Check(f)
	if err != nil {
		return nil, fmt.Errorf("check image %s: %w", path, err)
	}
	return h, nil
}

// MaxFileSizeFor is the most any image Parse accepts for virtual size v can take on disk,
// whatever its cluster size: what a pool must have free to stage an import into a volume of
// v bytes, beside the volume itself.
func MaxFileSizeFor(v int64) int64 {
	var worst int64
	for bits := 9; bits <= 21; bits++ {
		c := int64(1) << bits
		need := l1Entries(v, c, true)
		h := Header{ClusterSize: c, VirtualSize: v, L1Size: min(2*need+c/8, maxL1Bytes/8), RefcountTableClusters: maxRefTableBytes / c}
		worst = max(worst, h.MaxFileSize())
	}
	return worst
}
