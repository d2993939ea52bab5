package importer

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/slimvirt/slimvirt/internal/atomicfile"
)

// record is what an HTTP import of a raw image keeps beside its volume so that a driver
// restarted mid-import continues where it stopped instead of at byte zero.
//
// What it vouches for ("verified" bytes): the first Offset bytes of the image were received
// from URL while the server named them Validator, were written into disk.img at their offsets
// (all-zero blocks left as the holes disk.img started as; Data bytes are not holes) and
// disk.img was fsynced before the record naming Offset replaced the previous one; Hash is the checksum's running state over
// exactly those Offset bytes. Nothing after Offset is trusted: it is punched out before the
// download continues. The record lives in the pool's scratch directory, which the volume's
// pods cannot reach, and is bound to one volume (Owner: its ID and creation time) and to its
// disk.img (device and inode).
type record struct {
	Version   int    `json:"version"`
	Owner     string `json:"owner"`
	URL       string `json:"url"`
	Checksum  string `json:"checksum,omitempty"`
	Validator string `json:"validator"`
	Total     int64  `json:"total"`
	Offset    int64  `json:"offset"`
	// Data is how many of the first Offset bytes were written (the rest are holes): a disk.img
	// that holds fewer was reset or replaced since.
	Data    int64  `json:"data"`
	Hash    []byte `json:"hash,omitempty"`
	DiskDev uint64 `json:"diskDev"`
	DiskIno uint64 `json:"diskIno"`
}

const (
	recordVersion = 1
	// maxRecord bounds what is read of a record file; a real one is well under 16 KiB.
	maxRecord = 64 << 10
	// maxValidator bounds an ETag or Last-Modified worth keeping.
	maxValidator = 1024
	// recordSuffix ends the name of a record file in the scratch directory.
	recordSuffix = ".resume"
)

// diskID is the identity of a disk.img: a record of another file is not about this one.
type diskID struct{ dev, ino uint64 }

func fileID(f *os.File) (diskID, int64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return diskID{}, 0, fmt.Errorf("stat %s: %w", f.Name(), err)
	}
	return diskID{dev: st.Dev, ino: st.Ino}, st.Size, nil
}

// loadRecord reads the record at path and returns it if it is one for this import of this
// disk; otherwise nil and why not ("" when there is no record). A record is read bounded and
// never through a link.
func loadRecord(path string, want record, disk diskID, diskSize int64) (*record, string) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil, ""
	}
	if err != nil {
		return nil, fmt.Sprintf("open: %v", err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil, "not a regular file"
	}
	data, err := io.ReadAll(io.LimitReader(f, maxRecord+1))
	if err != nil {
		return nil, fmt.Sprintf("read: %v", err)
	}
	if len(data) > maxRecord {
		return nil, fmt.Sprintf("larger than %d bytes", maxRecord)
	}
	var rec record
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rec); err != nil {
		return nil, fmt.Sprintf("parse: %v", err)
	}
	if dec.More() {
		return nil, "trailing data"
	}
	if why := rec.mismatch(want, disk, diskSize); why != "" {
		return nil, why
	}
	return &rec, ""
}

// mismatch says why rec cannot resume the import want describes, or "".
func (rec *record) mismatch(want record, disk diskID, diskSize int64) string {
	switch {
	case rec.Version != recordVersion:
		return fmt.Sprintf("version %d", rec.Version)
	case rec.Owner != want.Owner:
		return "another volume's record"
	case rec.URL != want.URL:
		return "another URL"
	case rec.Checksum != want.Checksum:
		return "another checksum"
	case rec.DiskDev != disk.dev || rec.DiskIno != disk.ino:
		return "another disk.img"
	case rec.Validator == "" || len(rec.Validator) > maxValidator:
		return "no usable validator"
	case rec.Total <= 0 || rec.Total > diskSize:
		return fmt.Sprintf("image length %d does not fit the %d-byte disk", rec.Total, diskSize)
	case rec.Offset <= 0 || rec.Offset >= rec.Total:
		return fmt.Sprintf("offset %d outside the %d-byte image", rec.Offset, rec.Total)
	case rec.Data < 0 || rec.Data > rec.Offset:
		return fmt.Sprintf("%d bytes of data in the first %d", rec.Data, rec.Offset)
	case (rec.Checksum == "") != (len(rec.Hash) == 0):
		return "checksum state missing or unexpected"
	}
	return ""
}

// restoreHash gives back the checksum's state the record saved, or nil without a checksum.
func (rec *record) restoreHash() (hash.Hash, error) {
	if rec.Checksum == "" {
		return nil, nil
	}
	h, _, err := newHash(rec.Checksum)
	if err != nil {
		return nil, err
	}
	u, ok := h.(encoding.BinaryUnmarshaler)
	if !ok {
		return nil, fmt.Errorf("restore %T state: not supported", h)
	}
	if err := u.UnmarshalBinary(rec.Hash); err != nil {
		return nil, fmt.Errorf("restore checksum state: %w", err)
	}
	return h, nil
}

// saveRecord replaces the record at path atomically (temp file, fsync, rename, directory fsync),
// so a driver killed at any point finds the old record or the new one.
func saveRecord(path string, rec record, h hash.Hash) error {
	if h != nil {
		m, ok := h.(encoding.BinaryMarshaler)
		if !ok {
			return fmt.Errorf("save %T state: not supported", h)
		}
		st, err := m.MarshalBinary()
		if err != nil {
			return fmt.Errorf("save checksum state: %w", err)
		}
		rec.Hash = st
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode resume record: %w", err)
	}
	if len(data) > maxRecord {
		return fmt.Errorf("resume record of %d bytes is larger than %d", len(data), maxRecord)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create scratch dir: %w", err)
	}
	if err := atomicfile.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("save resume record: %w", err)
	}
	return nil
}

// removeRecord deletes the record at path; a missing one is fine.
func removeRecord(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove resume record: %w", err)
	}
	return nil
}

// staleRecord says whether name in a pool's scratch directory is a resume record (or a
// temporary file of one) whose volume directory in the pool is gone.
func staleRecord(pool, name string) bool {
	if strings.HasPrefix(name, ".") && strings.Contains(name, recordSuffix+".tmp-") {
		return true // a save cut short
	}
	id, ok := strings.CutSuffix(name, recordSuffix)
	if !ok || id == "" || strings.ContainsAny(id, "/.") {
		return false
	}
	_, err := os.Lstat(filepath.Join(pool, id))
	return errors.Is(err, os.ErrNotExist)
}
