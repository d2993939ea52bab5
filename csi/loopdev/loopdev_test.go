package loopdev

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/slimvirt/slimvirt/csi/testclean"
	"github.com/slimvirt/slimvirt/internal/testutil"
)

// TestAttachByDescriptor: the loop device is attached to the descriptor the caller opened, so
// it serves that inode's bytes whatever the name points at later; Find and Detach go by
// inode; Refresh shows a grown file's new size.
func TestAttachByDescriptor(t *testing.T) {
	testutil.RequireRoot(t, "loop devices need root")
	testclean.Mounts("TestAttachByDescriptor")
	ctx := context.Background()
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.img")
	data := bytes.Repeat([]byte("volume data "), 4096)
	if err := os.WriteFile(disk, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, 8<<20); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(disk, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dev, err := Attach(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Detach(ctx, f) })
	if again, err := Attach(ctx, f); err != nil || again != dev {
		t.Fatalf("second Attach: %q, %v; want %q", again, err, dev)
	}

	// The name now points at another file; the device keeps serving the inode it was given.
	other := filepath.Join(dir, "other")
	if err := os.WriteFile(other, []byte("node file"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(disk, disk+".old"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(other, disk); err != nil {
		t.Fatal(err)
	}
	o, err := os.Open(other)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if found, err := Find(ctx, o); err != nil || found != "" {
		t.Fatalf("Find over another inode: %q, %v", found, err)
	}
	got := make([]byte, len(data))
	d, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("%s does not serve the volume's bytes: %v", dev, err)
	}
	d.Close()

	if err := f.Truncate(16 << 20); err != nil {
		t.Fatal(err)
	}
	if err := Refresh(ctx, dev); err != nil {
		t.Fatal(err)
	}
	if n := size(t, dev); n != 16<<20 {
		t.Fatalf("%s is %d bytes after Refresh, want %d", dev, n, 16<<20)
	}
	if err := Detach(ctx, o); err != nil {
		t.Fatal(err)
	}
	if found, _ := Find(ctx, f); found != dev {
		t.Fatalf("detaching another inode detached %s (found %q)", dev, found)
	}
	if err := Detach(ctx, f); err != nil {
		t.Fatal(err)
	}
	if found, err := Find(ctx, f); err != nil || found != "" {
		t.Fatalf("after Detach: %q, %v", found, err)
	}
	if err := Detach(ctx, f); err != nil {
		t.Fatalf("detaching twice: %v", err)
	}
}

func size(t *testing.T, dev string) int64 {
	t.Helper()
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n, err := f.Seek(0, 2)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
