package voltree_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/slimvirt/slimvirt/csi/voltree"
	"github.com/slimvirt/slimvirt/internal/testutil"
)

var limits = voltree.Limits{Depth: voltree.DefaultDepth, Entries: 10000, Bytes: 64 << 20}

func write(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	testutil.Must(t, os.MkdirAll(filepath.Dir(path), 0o755))
	testutil.Must(t, os.WriteFile(path, data, mode))
	testutil.Must(t, os.Chmod(path, mode)) // past the umask
}

// copyTree runs Copy from src into a new directory and fails the test if it does not finish
// within 10 seconds (a FIFO opened for reading would block it for ever).
func copyTree(t *testing.T, src string, opt voltree.Options) (string, voltree.Stats, error) {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "dst")
	testutil.Must(t, os.Mkdir(dst, 0o755))
	type res struct {
		st  voltree.Stats
		err error
	}
	done := make(chan res, 1)
	go func() { st, err := voltree.Copy(context.Background(), src, dst, opt); done <- res{st, err} }()
	select {
	case r := <-done:
		return dst, r.st, r.err
	case <-time.After(10 * time.Second):
		t.Fatal("Copy blocked")
	}
	return "", voltree.Stats{}, nil
}

func lstat(t *testing.T, path string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	testutil.Must(t, unix.Lstat(path, &st))
	return st
}

// TestCopyKeepsTheTree: files (sparse ones stay sparse), directories, symlinks (as symlinks,
// their text copied: one to /etc/shadow, one to another volume), FIFOs, modes with
// set-user-ID, owners and times all come out as they went in; sockets are left out and
// named; hard links become separate files.
func TestCopyKeepsTheTree(t *testing.T) {
	testutil.RequireRoot(t, "chown to other users and mknod need root")
	src := filepath.Join(t.TempDir(), "src")
	write(t, filepath.Join(src, "disk.img"), nil, 0o660)
	sparse, err := os.OpenFile(filepath.Join(src, "disk.img"), os.O_RDWR, 0)
	testutil.Must(t, err)
	testutil.Must(t, sparse.Truncate(1<<30))
	_, err = sparse.WriteAt(bytes.Repeat([]byte("guest"), 1000), 512<<20)
	testutil.Must(t, err)
	testutil.Must(t, sparse.Close())
	write(t, filepath.Join(src, "a", "b", "c", "note.txt"), []byte("hello"), 0o640)
	write(t, filepath.Join(src, "bin", "tool"), []byte("#!/bin/sh\n"), 0o4755)
	testutil.Must(t, os.Symlink("/etc/shadow", filepath.Join(src, "shadow")))
	testutil.Must(t, os.Symlink("../vol-other/disk.img", filepath.Join(src, "a", "other")))
	testutil.Must(t, os.Symlink("/etc", filepath.Join(src, "etc")))
	testutil.Must(t, unix.Mkfifo(filepath.Join(src, "fifo"), 0o620))
	testutil.Must(t, os.Link(filepath.Join(src, "a", "b", "c", "note.txt"), filepath.Join(src, "hardlink")))
	sock, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	testutil.Must(t, err)
	defer unix.Close(sock)
	testutil.Must(t, unix.Bind(sock, &unix.SockaddrUnix{Name: filepath.Join(src, "a", "sock")}))
	testutil.Must(t, os.Lchown(filepath.Join(src, "a", "b"), 1234, 5678))
	testutil.Must(t, os.Lchown(filepath.Join(src, "shadow"), 1234, 5678))
	old := time.Date(2001, 2, 3, 4, 5, 6, 7, time.UTC)
	for _, p := range []string{"a/b/c/note.txt", "a/b", "fifo", "bin", "disk.img"} {
		testutil.Must(t, os.Chtimes(filepath.Join(src, p), old, old))
	}
	testutil.Must(t, unix.Lutimes(filepath.Join(src, "shadow"), []unix.Timeval{unix.NsecToTimeval(old.UnixNano()), unix.NsecToTimeval(old.UnixNano())}))

	dst, st, err := copyTree(t, src, voltree.Options{Limits: limits})
	testutil.Must(t, err)
	want := voltree.Stats{Files: 4, Dirs: 4, Symlinks: 3, FIFOs: 1, HardLinked: 2, SocketCount: 1, Sockets: []string{"a/sock"}}
	got := st
	got.Bytes, got.Reflinked = 0, 0
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("stats %+v, want %+v", got, want)
	}
	for _, p := range []string{"disk.img", "a", "a/b", "a/b/c", "a/b/c/note.txt", "bin", "bin/tool", "shadow", "a/other", "etc", "fifo", "hardlink"} {
		s, d := lstat(t, filepath.Join(src, p)), lstat(t, filepath.Join(dst, p))
		if s.Mode != d.Mode || s.Uid != d.Uid || s.Gid != d.Gid || s.Size != d.Size || s.Mtim != d.Mtim {
			t.Errorf("%s: copy has mode %o uid %d gid %d size %d mtime %v, source %o %d %d %d %v",
				p, d.Mode, d.Uid, d.Gid, d.Size, d.Mtim, s.Mode, s.Uid, s.Gid, s.Size, s.Mtim)
		}
	}
	if _, err := os.Lstat(filepath.Join(dst, "a", "sock")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket copied: %v", err)
	}
	for p, want := range map[string]string{"shadow": "/etc/shadow", "a/other": "../vol-other/disk.img", "etc": "/etc"} {
		if got, err := os.Readlink(filepath.Join(dst, p)); err != nil || got != want {
			t.Errorf("symlink %s reads %q %v, want %q", p, got, err, want)
		}
	}
	data, err := os.ReadFile(filepath.Join(dst, "a", "b", "c", "note.txt"))
	if err != nil || string(data) != "hello" {
		t.Errorf("note.txt: %q %v", data, err)
	}
	if d := lstat(t, filepath.Join(dst, "disk.img")); d.Blocks*512 > 1<<20 {
		t.Errorf("disk.img copy occupies %d bytes: not sparse", d.Blocks*512)
	}
	got5 := make([]byte, 5)
	f, err := os.Open(filepath.Join(dst, "disk.img"))
	testutil.Must(t, err)
	_, err = f.ReadAt(got5, 512<<20)
	testutil.Must(t, f.Close())
	if err != nil || string(got5) != "guest" {
		t.Errorf("disk.img data: %q %v", got5, err)
	}
	if lstat(t, filepath.Join(dst, "hardlink")).Nlink != 1 {
		t.Error("hard link kept; want separate files")
	}
}

// TestCopyRefusesDeviceNodes: a device node planted in the tree fails the copy, and the
// message names it.
func TestCopyRefusesDeviceNodes(t *testing.T) {
	testutil.RequireRoot(t, "mknod needs root")
	for _, typ := range []uint32{unix.S_IFCHR, unix.S_IFBLK} {
		src := t.TempDir()
		write(t, filepath.Join(src, "disk.img"), []byte("x"), 0o660)
		testutil.Must(t, os.Mkdir(filepath.Join(src, "dev"), 0o755))
		testutil.Must(t, unix.Mknod(filepath.Join(src, "dev", "watchdog"), typ|0o600, int(unix.Mkdev(10, 130))))
		_, _, err := copyTree(t, src, voltree.Options{Limits: limits})
		var re *voltree.RefusedError
		if !errors.As(err, &re) || !errors.Is(err, voltree.ErrDeviceNode) || !strings.Contains(err.Error(), "dev/watchdog") {
			t.Fatalf("device node type %o: got %v, want a refusal naming dev/watchdog", typ, err)
		}
	}
}

// TestCopyBounds: nesting deeper than the limit, more entries than the limit and more data
// than the target holds each fail the copy; a huge sparse file costs only its data.
func TestCopyBounds(t *testing.T) {
	testutil.RequireRoot(t, "the copy keeps owners")
	nest := func(levels int) string {
		src := t.TempDir()
		p := src
		for i := 0; i < levels; i++ {
			p = filepath.Join(p, "d")
		}
		testutil.Must(t, os.MkdirAll(p, 0o755))
		return src
	}
	if _, _, err := copyTree(t, nest(voltree.DefaultDepth), voltree.Options{Limits: limits}); err != nil {
		t.Fatalf("%d levels: %v", voltree.DefaultDepth, err)
	}
	if _, _, err := copyTree(t, nest(voltree.DefaultDepth+1), voltree.Options{Limits: limits}); !errors.Is(err, voltree.ErrTooDeep) {
		t.Fatalf("%d levels: got %v, want ErrTooDeep", voltree.DefaultDepth+1, err)
	}

	many := t.TempDir()
	for i := 0; i < 60; i++ {
		write(t, filepath.Join(many, fmt.Sprint(i)), nil, 0o644)
	}
	if _, _, err := copyTree(t, many, voltree.Options{Limits: voltree.Limits{Depth: 8, Entries: 50}}); !errors.Is(err, voltree.ErrTooMany) {
		t.Fatalf("60 entries, limit 50: got %v, want ErrTooMany", err)
	}

	big := t.TempDir()
	for i := 0; i < 3; i++ {
		write(t, filepath.Join(big, fmt.Sprint(i)), bytes.Repeat([]byte{1}, 1<<20), 0o644)
	}
	_, _, err := copyTree(t, big, voltree.Options{Limits: voltree.Limits{Depth: 8, Entries: 50, Bytes: 2 << 20}})
	if !errors.Is(err, voltree.ErrTooBig) {
		t.Fatalf("3 MiB into 2 MiB: got %v, want ErrTooBig", err)
	}

	sparse := t.TempDir()
	f, err := os.Create(filepath.Join(sparse, "huge"))
	testutil.Must(t, err)
	testutil.Must(t, f.Truncate(1<<40))
	_, err = f.WriteAt([]byte("end"), 1<<40-3)
	testutil.Must(t, err)
	testutil.Must(t, f.Close())
	if _, _, err := copyTree(t, sparse, voltree.Options{Limits: voltree.Limits{Depth: 8, Entries: 50, Bytes: 1 << 20}}); err != nil {
		t.Fatalf("a 1 TiB sparse file with 3 bytes of data: %v", err)
	}
}

// TestMeasure counts every entry's blocks, a hard-linked file once, and never follows a
// symlink (one points at a big file outside the tree).
func TestMeasure(t *testing.T) {
	outside := t.TempDir()
	write(t, filepath.Join(outside, "big"), bytes.Repeat([]byte{1}, 4<<20), 0o644)
	dir := t.TempDir()
	write(t, filepath.Join(dir, "x", "one"), bytes.Repeat([]byte{1}, 1<<20), 0o644)
	testutil.Must(t, os.Link(filepath.Join(dir, "x", "one"), filepath.Join(dir, "two")))
	testutil.Must(t, os.Symlink(filepath.Join(outside, "big"), filepath.Join(dir, "big")))
	testutil.Must(t, os.Symlink(outside, filepath.Join(dir, "out")))
	u, err := voltree.Measure(dir, limits)
	testutil.Must(t, err)
	if u.Bytes < 1<<20 || u.Bytes >= 2<<20 || u.Inodes != 5 {
		t.Fatalf("usage %+v: want 1-2 MiB in 5 inodes", u)
	}
	if _, err := voltree.Measure(dir, voltree.Limits{Depth: 8, Entries: 2}); !errors.Is(err, voltree.ErrTooMany) {
		t.Fatalf("entries limit: %v", err)
	}
}

// TestClear empties a tree but for disk.img, removes symlinks without following them, and
// leaves what they pointed at alone.
func TestClear(t *testing.T) {
	outside := t.TempDir()
	write(t, filepath.Join(outside, "keep", "me"), []byte("node file"), 0o644)
	dir := t.TempDir()
	write(t, filepath.Join(dir, "disk.img"), []byte("disk"), 0o660)
	write(t, filepath.Join(dir, "a", "b", "c"), []byte("x"), 0o644)
	testutil.Must(t, os.Symlink(filepath.Join(outside, "keep"), filepath.Join(dir, "link")))
	testutil.Must(t, os.Symlink(filepath.Join(outside, "keep"), filepath.Join(dir, "a", "link")))
	testutil.Must(t, unix.Mkfifo(filepath.Join(dir, "a", "fifo"), 0o600))
	testutil.Must(t, voltree.Clear(dir, "disk.img", limits))
	names, err := os.ReadDir(dir)
	testutil.Must(t, err)
	if len(names) != 1 || names[0].Name() != "disk.img" {
		t.Fatalf("left %v", names)
	}
	if data, err := os.ReadFile(filepath.Join(outside, "keep", "me")); err != nil || string(data) != "node file" {
		t.Fatalf("the symlink's target was touched: %q %v", data, err)
	}
}
