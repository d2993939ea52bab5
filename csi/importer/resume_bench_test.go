package importer_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/slimvirt/slimvirt/csi/diskimg"
	"github.com/slimvirt/slimvirt/csi/importer"
	"github.com/slimvirt/slimvirt/internal/testutil"
)

// BenchmarkResumeAfterKill imports a 1 GiB raw image (768 MiB random, every fourth 8 MiB a
// zero region) with a sha256 checksum on the root disk: fresh; killed with SIGKILL once the
// server has sent half; the run after the kill, which resumes; fresh again. It reports the
// times and what the resumed run fetched.
//
//	go test ./csi/importer -run '^$' -bench BenchmarkResumeAfterKill -benchtime 1x
func BenchmarkResumeAfterKill(b *testing.B) {
	const size = 1 << 30
	data := make([]byte, size)
	for off := 0; off < size; off += 8 << 20 {
		if (off/(8<<20))%4 != 3 {
			rand.Read(data[off : off+8<<20])
		}
	}
	checksum := checksumOf("sha256", data)
	work, err := os.MkdirTemp("/var/tmp", "slimvirt-resume-bench-") // the root disk, not tmpfs
	testutil.Must(b, err)
	b.Cleanup(func() { os.RemoveAll(work) })
	target := func(name string) importer.Target {
		dir := filepath.Join(work, name)
		testutil.Must(b, os.MkdirAll(filepath.Join(dir, "vol"), 0o755))
		t := resumeTarget(dir)
		t.Size, t.CheckpointEvery = size, 0 // the default: a record every 64 MiB
		testutil.Must(b, diskimg.Create(t.Disk, size))
		return t
	}
	same := func(t importer.Target) {
		got, err := os.ReadFile(t.Disk)
		testutil.Must(b, err)
		if !bytes.Equal(got, data) {
			b.Fatal("disk.img is not the image")
		}
	}
	for range b.N {
		s := newRangeServer(data, `"v1"`)
		ts := httptest.NewServer(s)
		fresh := target("fresh")
		start := time.Now()
		testutil.Must(b, newImporter().Fetch(context.Background(), importer.Request{URL: ts.URL + "/disk.raw", Checksum: checksum}, fresh, nil))
		freshTime := time.Since(start)
		same(fresh)
		ts.Close()

		s = newRangeServer(data, `"v1"`)
		s.stallAt = size / 2
		ts = httptest.NewServer(s)
		killed := target("killed")
		start = time.Now()
		off := killMidImport(b, s, killed, ts.URL+"/disk.raw", checksum, size/2)
		killedTime := time.Since(start)
		before := s.served.Load()
		start = time.Now()
		testutil.Must(b, newImporter().Fetch(context.Background(), importer.Request{URL: ts.URL + "/disk.raw", Checksum: checksum}, killed, nil))
		resumedTime := time.Since(start)
		fetched := s.served.Load() - before
		same(killed)
		// A fresh import again, after the others, so the order of the runs shows in the figures.
		fresh2 := target("fresh-after")
		start = time.Now()
		testutil.Must(b, newImporter().Fetch(context.Background(), importer.Request{URL: ts.URL + "/disk.raw", Checksum: checksum}, fresh2, nil))
		freshAfter := time.Since(start)
		same(fresh2)
		ts.Close()
		for _, d := range []string{"fresh", "killed", "fresh-after"} {
			testutil.Must(b, os.RemoveAll(filepath.Join(work, d)))
		}
		b.ReportMetric(freshTime.Seconds(), "fresh-s")
		b.ReportMetric(freshAfter.Seconds(), "fresh-after-s")
		b.ReportMetric(killedTime.Seconds(), "until-kill-s")
		b.ReportMetric(resumedTime.Seconds(), "resumed-s")
		b.ReportMetric(float64(off)/(1<<20), "resumed-at-MiB")
		b.ReportMetric(float64(fetched)/(1<<20), "resumed-fetched-MiB")
		b.Logf("fresh %v; killed after %v at %d MiB vouched; resumed run %v fetching %d MiB (requests %q); fresh again %v",
			freshTime, killedTime, off>>20, resumedTime, fetched>>20, s.requests(), freshAfter)
	}
}
