package driver_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"

	"github.com/slimvirt/slimvirt/csi/claim"
	"github.com/slimvirt/slimvirt/csi/diskimg"
	"github.com/slimvirt/slimvirt/csi/state"
	"github.com/slimvirt/slimvirt/internal/testutil"
)

func cloneReq(name, src string, size int64) *csi.CreateVolumeRequest {
	return &csi.CreateVolumeRequest{Name: name, VolumeCapabilities: mountCap(),
		CapacityRange:       &csi.CapacityRange{RequiredBytes: size},
		VolumeContentSource: &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: src}}},
	}
}

func writeAt(t *testing.T, path string, data []byte, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	testutil.Must(t, err)
	_, err = f.WriteAt(data, off)
	testutil.Must(t, err)
	testutil.Must(t, f.Close())
}

// entries lists a volume directory's tree as "path type" lines.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	testutil.Must(t, filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out = append(out, rel+" "+fi.Mode().Type().String())
		return nil
	}))
	return out
}

// TestCloneCopiesTheTree: a clone of a filesystem volume holds everything a pod wrote in the
// source (files, directories, symlinks as symlinks - one to /etc/shadow, one into another
// volume - and FIFOs, with owners and modes), and its disk.img is the clone's size.
func TestCloneCopiesTheTree(t *testing.T) {
	testutil.RequireRoot(t, "the clone keeps owners")
	h := start(t, t.TempDir())
	src := mountVolume(t, h, "src", 16<<20)
	other := mountVolume(t, h, "other", 16<<20)
	sdir := filepath.Join(h.pool, src)
	writeAt(t, diskOf(h, src), []byte("guest data"), 8<<20)
	testutil.Must(t, os.MkdirAll(filepath.Join(sdir, "logs", "2026"), 0o750))
	testutil.Must(t, os.WriteFile(filepath.Join(sdir, "logs", "2026", "app.log"), []byte("line\n"), 0o640))
	testutil.Must(t, os.Lchown(filepath.Join(sdir, "logs", "2026", "app.log"), 107, 107))
	testutil.Must(t, os.Symlink("/etc/shadow", filepath.Join(sdir, "shadow")))
	testutil.Must(t, os.Symlink(filepath.Join(h.pool, other, "disk.img"), filepath.Join(sdir, "neighbour")))
	testutil.Must(t, unix.Mkfifo(filepath.Join(sdir, "pipe"), 0o600))

	id := createVolume(t, h, cloneReq("clone", src, 32<<20))
	if c := waitContent(t, h, id); c.Phase != claim.PhaseReady {
		t.Fatalf("clone ended %s: %s", c.Phase, c.Message)
	}
	cdir := filepath.Join(h.pool, id)
	if got, want := strings.Join(entries(t, cdir), "\n"), strings.Join(entries(t, sdir), "\n"); got != want {
		t.Fatalf("clone tree:\n%s\nwant:\n%s", got, want)
	}
	if fi, err := os.Stat(diskOf(h, id)); err != nil || fi.Size() != 32<<20 {
		t.Fatalf("clone disk.img: %v %v, want %d bytes", fi, err, 32<<20)
	}
	got := make([]byte, 10)
	f, err := os.Open(diskOf(h, id))
	testutil.Must(t, err)
	_, err = f.ReadAt(got, 8<<20)
	testutil.Must(t, f.Close())
	if err != nil || string(got) != "guest data" {
		t.Fatalf("clone disk data %q %v", got, err)
	}
	var st unix.Stat_t
	testutil.Must(t, unix.Lstat(filepath.Join(cdir, "logs", "2026", "app.log"), &st))
	if st.Uid != 107 || st.Gid != 107 || st.Mode&0o7777 != 0o640 {
		t.Fatalf("app.log copy: uid %d gid %d mode %o", st.Uid, st.Gid, st.Mode&0o7777)
	}
	for link, want := range map[string]string{"shadow": "/etc/shadow", "neighbour": filepath.Join(h.pool, other, "disk.img")} {
		if got, err := os.Readlink(filepath.Join(cdir, link)); err != nil || got != want {
			t.Fatalf("%s: %q %v", link, got, err)
		}
	}
}

// TestCloneRefusals: a source tree holding a device node, or more than the clone's size, fails
// the clone for good with a message naming why, and leaves the clone empty: only disk.img, all
// holes.
func TestCloneRefusals(t *testing.T) {
	testutil.RequireRoot(t, "mknod needs root")
	for _, tc := range []struct {
		name, want string
		plant      func(t *testing.T, dir string)
	}{
		{"device node", "dev/kmsg: is a device node", func(t *testing.T, dir string) {
			testutil.Must(t, os.Mkdir(filepath.Join(dir, "dev"), 0o755))
			testutil.Must(t, unix.Mknod(filepath.Join(dir, "dev", "kmsg"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 11))))
		}},
		{"bigger than the clone", "more data than the target volume may", func(t *testing.T, dir string) {
			testutil.Must(t, os.WriteFile(filepath.Join(dir, "big"), bytes.Repeat([]byte{7}, 20<<20), 0o644))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := start(t, t.TempDir())
			src := mountVolume(t, h, "src", 16<<20)
			writeAt(t, diskOf(h, src), bytes.Repeat([]byte{1}, 1<<20), 0)
			testutil.Must(t, os.WriteFile(filepath.Join(h.pool, src, "a-first"), []byte("copied before the refusal"), 0o644))
			tc.plant(t, filepath.Join(h.pool, src))
			id := createVolume(t, h, cloneReq("clone", src, 16<<20))
			c := waitContent(t, h, id)
			if c.Phase != claim.PhaseFailed || !strings.Contains(c.Message, tc.want) {
				t.Fatalf("clone ended %s %q; want Failed saying %q", c.Phase, c.Message, tc.want)
			}
			if got := entries(t, filepath.Join(h.pool, id)); len(got) != 1 || got[0] != "disk.img ----------" {
				t.Fatalf("failed clone holds %v; want disk.img only", got)
			}
			if alloc, err := diskimg.Allocated(diskOf(h, id)); err != nil || alloc != 0 {
				t.Fatalf("failed clone's disk.img occupies %d bytes (%v)", alloc, err)
			}
		})
	}
}

// TestCloneRestartEmptiesTheTree: a driver killed in the middle of a clone leaves part of the
// tree; the restarted fill starts from an empty volume, so nothing of the first attempt (or
// of anything else) is left beside the copy.
func TestCloneRestartEmptiesTheTree(t *testing.T) {
	testutil.RequireRoot(t, "the clone keeps owners")
	dir := t.TempDir()
	h := start(t, dir)
	src := mountVolume(t, h, "src", 16<<20)
	testutil.Must(t, os.WriteFile(filepath.Join(h.pool, src, "kept"), []byte("x"), 0o644))
	id := createVolume(t, h, cloneReq("clone", src, 16<<20))
	waitContent(t, h, id)
	h.stop()

	// What a killed clone leaves: a populating volume with a partial tree.
	store, err := state.Open(filepath.Join(dir, "state", "state.json"))
	testutil.Must(t, err)
	_, err = store.Update(id, func(v *state.Volume) error {
		v.Content = claim.Content{Phase: claim.PhasePopulating, Progress: "40.00%"}
		return nil
	})
	testutil.Must(t, err)
	cdir := filepath.Join(h.pool, id)
	testutil.Must(t, os.MkdirAll(filepath.Join(cdir, "half", "way"), 0o755))
	testutil.Must(t, os.WriteFile(filepath.Join(cdir, "half", "way", "partial"), []byte("partial"), 0o644))
	testutil.Must(t, os.Symlink("/etc", filepath.Join(cdir, "half", "etc")))

	h = start(t, dir)
	if c := waitContent(t, h, id); c.Phase != claim.PhaseReady || c.Restarts != 1 {
		t.Fatalf("restarted clone ended %+v", c)
	}
	if got := strings.Join(entries(t, cdir), ","); got != "disk.img ----------,kept ----------" {
		t.Fatalf("restarted clone holds %s", got)
	}
	if _, err := os.Stat("/etc/passwd"); err != nil {
		t.Fatalf("the restart touched /etc through the planted symlink: %v", err)
	}
}

// TestStatsCountTheTree: without project quotas, a filesystem volume's stats count every file
// a pod wrote, not only disk.img, in bytes and in inodes.
func TestStatsCountTheTree(t *testing.T) {
	testutil.RequireRoot(t, "publishing needs bind mounts")
	dir := t.TempDir()
	h := start(t, dir)
	id := mountVolume(t, h, "stats", 64<<20)
	target := filepath.Join(dir, "pods", "vol")
	ctx := context.Background()
	_, err := h.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: id, TargetPath: target, VolumeCapability: mountCap()[0]})
	testutil.Must(t, err)
	t.Cleanup(func() {
		_, _ = h.node.NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target})
	})
	writeAt(t, filepath.Join(target, "disk.img"), bytes.Repeat([]byte{1}, 1<<20), 0)
	testutil.Must(t, os.MkdirAll(filepath.Join(target, "a", "b"), 0o755))
	testutil.Must(t, os.WriteFile(filepath.Join(target, "a", "b", "f"), bytes.Repeat([]byte{2}, 3<<20), 0o644))
	resp, err := h.node.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: target})
	testutil.Must(t, err)
	if len(resp.Usage) != 2 {
		t.Fatalf("usage %v: want bytes and inodes", resp.Usage)
	}
	b, i := resp.Usage[0], resp.Usage[1]
	if b.Unit != csi.VolumeUsage_BYTES || b.Total != 64<<20 || b.Used < 4<<20 || b.Used > 5<<20 || b.Available != b.Total-b.Used {
		t.Fatalf("bytes %v: want total 64 MiB, about 4 MiB used", b)
	}
	if i.Unit != csi.VolumeUsage_INODES || i.Used != 5 || i.Available != i.Total-i.Used {
		t.Fatalf("inodes %v: want 5 used (root, disk.img, a, a/b, a/b/f)", i)
	}
}
