package importer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/slimvirt/slimvirt/csi/diskimg"
	"github.com/slimvirt/slimvirt/csi/importer"
	"github.com/slimvirt/slimvirt/internal/testutil"
)

// stopMidImport runs an import in this process until the server stalled half-way and the
// resume record settled, then stops it as a driver shutting down does (its context ends), which
// keeps the record. It returns the offset the record vouches for.
func stopMidImport(t *testing.T, s *rangeServer, dir, url, checksum string) int64 {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- newImporter().Fetch(ctx, importer.Request{URL: url, Checksum: checksum}, resumeTarget(dir), nil)
	}()
	select {
	case <-s.stalled:
	case err := <-done:
		cancel()
		t.Fatalf("the import ended before the server stalled: %v", err)
	}
	rec := resumeTarget(dir).Record
	for deadline := time.Now().Add(30 * time.Second); recordOffset(t, rec) < 4<<20; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			cancel()
			t.Fatal("no resume record at 4 MiB")
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("stopped import: %v, want context.Canceled", err)
	}
	return recordOffset(t, rec)
}

// TestHostileRangeAnswers: the server is the tenant's. Its answers to the Range request of a
// resumed import lie in every way the importer can be told a length: another length, another
// start, another total, a body longer than announced, another file under the old validator.
// None of them may put a byte out of place in disk.img or write past the image: the import
// starts over from byte zero (and the disk ends as the image) or fails for good.
func TestHostileRangeAnswers(t *testing.T) {
	_, raw := images(t)
	size := len(raw)
	garbage := bytes.Repeat([]byte{0xAA}, 16<<20)
	partial := func(contentRange string, length int, body []byte) func(w http.ResponseWriter, r *http.Request, data []byte) bool {
		return func(w http.ResponseWriter, r *http.Request, data []byte) bool {
			w.Header().Set("Content-Range", contentRange)
			if length >= 0 {
				w.Header().Set("Content-Length", strconv.Itoa(length))
			}
			w.WriteHeader(http.StatusPartialContent)
			w.(http.Flusher).Flush() // without a length: chunked, so nothing bounds the body
			_, _ = w.Write(body)
			return true
		}
	}
	off := 4 << 20
	tests := []struct {
		name   string
		ranged func(w http.ResponseWriter, r *http.Request, data []byte) bool
		// startsOver: a plain GET follows the Range request; otherwise the import fails with wantErr.
		startsOver bool
		wantErr    string
	}{
		// Each lie comes with bytes that are not the image's: taken at its word, the server
		// would put them into the disk.
		{name: "announces a longer range than asked", startsOver: true,
			ranged: partial(fmt.Sprintf("bytes %d-%d/%d", off, size-1, size), size-off+(1<<20), garbage[:size-off+(1<<20)])},
		{name: "announces a shorter range than asked", startsOver: true,
			ranged: partial(fmt.Sprintf("bytes %d-%d/%d", off, size-1, size), size-off-(1<<20), garbage[:size-off-(1<<20)])},
		{name: "sends another start", startsOver: true,
			ranged: partial(fmt.Sprintf("bytes 0-%d/%d", size-1, size), size, raw)},
		{name: "sends a larger total", startsOver: true,
			ranged: partial(fmt.Sprintf("bytes %d-%d/%d", off, 2*size-1, 2*size), 2*size-off, bytes.Repeat([]byte{0xAA}, 2*size-off))},
		{name: "garbage Content-Range", startsOver: true,
			ranged: partial("bytes */"+strconv.Itoa(size), size-off, garbage[:size-off])},
		{name: "no Content-Range", startsOver: true,
			ranged: partial("", size-off, garbage[:size-off])},
		{name: "another validator on the 206", startsOver: true,
			ranged: func(w http.ResponseWriter, r *http.Request, data []byte) bool {
				w.Header().Set("ETag", `"v2"`)
				return partial(fmt.Sprintf("bytes %d-%d/%d", off, size-1, size), size-off, garbage[:size-off])(w, r, data)
			}},
		{name: "ignores Range: 200 with the whole file", startsOver: true,
			ranged: func(w http.ResponseWriter, r *http.Request, data []byte) bool {
				r.Header.Del("Range")
				return false
			}},
		{name: "416", startsOver: true,
			ranged: func(w http.ResponseWriter, r *http.Request, data []byte) bool {
				w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
				return true
			}},
		// Chunked, so only the importer can stop at the announced end; the 8 MiB beyond would
		// land past the image (and past the volume if it went on).
		{name: "body longer than announced (chunked)",
			ranged: func(w http.ResponseWriter, r *http.Request, data []byte) bool {
				return partial(fmt.Sprintf("bytes %d-%d/%d", off, size-1, size), -1, append(append([]byte(nil), raw[off:]...), garbage...))(w, r, data)
			}},
		{name: "another file under the same validator", wantErr: "checksum mismatch",
			ranged: func(w http.ResponseWriter, r *http.Request, data []byte) bool {
				return partial(fmt.Sprintf("bytes %d-%d/%d", off, size-1, size), size-off, garbage[:size-off])(w, r, data)
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, s, url := stallingImport(t, raw, `"v1"`)
			s.ranged = tt.ranged
			checksum := checksumOf("sha256", raw)
			if got := stopMidImport(t, s, dir, url, checksum); got != int64(off) {
				t.Fatalf("record vouches for %d bytes, want %d", got, off)
			}
			target := resumeTarget(dir)
			err := newImporter().Fetch(context.Background(), importer.Request{URL: url, Checksum: checksum}, target, nil)
			reqs := s.requests()[1:]
			if len(reqs) == 0 || reqs[0] != "bytes="+strconv.Itoa(off)+"-" {
				t.Fatalf("second run's requests %q: no Range request from byte %d", reqs, off)
			}
			disk, rerr := os.ReadFile(target.Disk)
			testutil.Must(t, rerr)
			if len(disk) != volSize {
				t.Fatalf("disk.img is %d bytes, want %d", len(disk), volSize)
			}
			if bytes.Contains(disk[size:], []byte{0xAA, 0xAA, 0xAA, 0xAA}) {
				t.Fatal("bytes past the image's end reached the disk")
			}
			if tt.startsOver {
				testutil.Must(t, err)
				checkDisk(t, target.Disk, raw)
			} else if tt.wantErr == "" {
				testutil.Must(t, err)
				checkDisk(t, target.Disk, raw)
			} else if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one saying %q", err, tt.wantErr)
			}
			if _, err := os.Stat(target.Record); !os.IsNotExist(err) {
				t.Fatalf("resume record left after the import ended: %v", err)
			}
		})
	}
}

// TestHostileRecord: a resume record that does not belong to this import, or that is not a
// record at all, is discarded: the import starts from byte zero on a disk reset to holes (the
// disk holds planted bytes the record claims), and asks for no Range.
func TestHostileRecord(t *testing.T) {
	_, raw := images(t)
	edit := func(f func(rec map[string]any)) func(t *testing.T, path string) {
		return func(t *testing.T, path string) {
			data, err := os.ReadFile(path)
			testutil.Must(t, err)
			var rec map[string]any
			testutil.Must(t, json.Unmarshal(data, &rec))
			f(rec)
			data, err = json.Marshal(rec)
			testutil.Must(t, err)
			testutil.Must(t, os.WriteFile(path, data, 0o600))
		}
	}
	write := func(data []byte) func(t *testing.T, path string) {
		return func(t *testing.T, path string) { testutil.Must(t, os.WriteFile(path, data, 0o600)) }
	}
	tests := []struct {
		name    string
		tamper  func(t *testing.T, path string)
		resumes bool
	}{
		{name: "untouched record resumes", tamper: func(*testing.T, string) {}, resumes: true},
		{name: "another URL", tamper: edit(func(r map[string]any) { r["url"] = "http://127.0.0.1:1/other.raw" })},
		{name: "another volume", tamper: edit(func(r map[string]any) { r["owner"] = "vol@another-incarnation" })},
		{name: "another disk.img", tamper: edit(func(r map[string]any) { r["diskIno"] = r["diskIno"].(float64) + 1 })},
		{name: "disk.img reset to holes since", tamper: func(t *testing.T, path string) {
			testutil.Must(t, diskimg.Reset(filepath.Join(filepath.Dir(filepath.Dir(path)), "vol", "disk.img")))
		}},
		{name: "data count past the offset", tamper: edit(func(r map[string]any) { r["data"] = r["offset"].(float64) + 1 })},
		{name: "offset past the image", tamper: edit(func(r map[string]any) { r["offset"] = float64(len(raw) + 1) })},
		{name: "offset past the disk", tamper: edit(func(r map[string]any) {
			r["offset"], r["total"] = float64(volSize+(1<<20)), float64(volSize+(2<<20))
		})},
		{name: "negative offset", tamper: edit(func(r map[string]any) { r["offset"] = float64(-4096) })},
		{name: "no validator", tamper: edit(func(r map[string]any) { r["validator"] = "" })},
		{name: "checksum state garbage", tamper: edit(func(r map[string]any) { r["hash"] = "AAAA" })},
		{name: "another checksum", tamper: edit(func(r map[string]any) { r["checksum"] = checksumOf("md5", raw) })},
		{name: "unknown field", tamper: edit(func(r map[string]any) { r["exec"] = "/bin/sh" })},
		{name: "another version", tamper: edit(func(r map[string]any) { r["version"] = float64(99) })},
		{name: "garbage", tamper: write([]byte("\x00\xff not a record {"))},
		{name: "two records", tamper: func(t *testing.T, path string) {
			data, err := os.ReadFile(path)
			testutil.Must(t, err)
			testutil.Must(t, os.WriteFile(path, append(data, data...), 0o600))
		}},
		{name: "huge", tamper: func(t *testing.T, path string) {
			data, err := os.ReadFile(path)
			testutil.Must(t, err)
			testutil.Must(t, os.WriteFile(path, append(bytes.Repeat([]byte(" "), 8<<20), data...), 0o600))
		}},
		{name: "symlink to a valid record", tamper: func(t *testing.T, path string) {
			testutil.Must(t, os.Rename(path, path+".real"))
			testutil.Must(t, os.Symlink(path+".real", path))
		}},
		{name: "a FIFO", tamper: func(t *testing.T, path string) {
			testutil.Must(t, os.Remove(path))
			run(t, "mkfifo", path)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, s, url := stallingImport(t, raw, `"v1"`)
			checksum := checksumOf("sha256", raw)
			off := stopMidImport(t, s, dir, url, checksum)
			target := resumeTarget(dir)
			// Plant bytes where the image has its zero gap: only a disk reset to holes (or a
			// resume that punched the unvouched tail) gets rid of them.
			f, err := os.OpenFile(target.Disk, os.O_RDWR, 0)
			testutil.Must(t, err)
			_, err = f.WriteAt(bytes.Repeat([]byte{0xEE}, 1<<20), 5<<20)
			testutil.Must(t, err)
			testutil.Must(t, f.Close())
			tt.tamper(t, target.Record)
			before := s.served.Load()
			testutil.Must(t, newImporter().Fetch(context.Background(), importer.Request{URL: url, Checksum: checksum}, target, nil))
			want, fetched := "", int64(len(raw))
			if tt.resumes {
				want, fetched = "bytes="+strconv.FormatInt(off, 10)+"-", int64(len(raw))-off
			}
			if got := s.requests()[1:]; fmt.Sprint(got) != fmt.Sprint([]string{want}) {
				t.Fatalf("second run's requests %q, want [%q]", got, want)
			}
			if got := s.served.Load() - before; got != fetched {
				t.Fatalf("the second run fetched %d bytes, want %d", got, fetched)
			}
			checkDisk(t, target.Disk, raw)
			if _, err := os.Lstat(target.Record); !os.IsNotExist(err) {
				t.Fatalf("resume record left after the import: %v", err)
			}
		})
	}
}

// TestStaleRecords: at start the driver removes the resume records of volumes that are gone
// and save temporaries a kill left, and keeps those of volumes that are still there.
func TestStaleRecords(t *testing.T) {
	pool := t.TempDir()
	scratch := filepath.Join(pool, ".scratch")
	testutil.Must(t, os.MkdirAll(filepath.Join(pool, "vol-live"), 0o755))
	testutil.Must(t, os.MkdirAll(scratch, 0o700))
	files := map[string]bool{ // name: kept
		"vol-live.resume":            true,
		"vol-gone.resume":            false,
		".vol-live.resume.tmp-12345": false,
		"notes.txt":                  true,
	}
	for name := range files {
		testutil.Must(t, os.WriteFile(filepath.Join(scratch, name), []byte("{}"), 0o600))
	}
	importer.RemoveStaleScratch([]string{pool}, nil)
	for name, kept := range files {
		_, err := os.Stat(filepath.Join(scratch, name))
		if kept != (err == nil) {
			t.Errorf("%s: kept=%v, want %v (%v)", name, err == nil, kept, err)
		}
	}
}
