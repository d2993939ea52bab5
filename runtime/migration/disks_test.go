package migration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/slimvirt/slimvirt/internal/testutil"
)

// The disk list comes from the source: anything outside the pod's directory, of another
// format or of an absurd size is refused before a file is made.
func TestCreateDisksRefuses(t *testing.T) {
	root := t.TempDir()
	for name, d := range map[string]Disk{
		"outside":       {Target: "vda", Path: "/etc/passwd", Format: "raw", Capacity: 1 << 20},
		"dot-dot":       {Target: "vda", Path: root + "/../x.img", Format: "raw", Capacity: 1 << 20},
		"relative":      {Target: "vda", Path: "x.img", Format: "raw", Capacity: 1 << 20},
		"the root":      {Target: "vda", Path: root, Format: "raw", Capacity: 1 << 20},
		"format":        {Target: "vda", Path: root + "/x.img", Format: "vmdk", Capacity: 1 << 20},
		"empty":         {Target: "vda", Path: root + "/x.img", Format: "raw"},
		"too large":     {Target: "vda", Path: root + "/x.img", Format: "raw", Capacity: MaxDiskBytes + 512},
		"not sectors":   {Target: "vda", Path: root + "/x.img", Format: "raw", Capacity: 1000},
		"raw, resized":  {Target: "vda", Path: root + "/small.img", Format: "raw", Capacity: 2 << 20},
		"second is bad": {Target: "vdb", Path: "/x.img", Format: "raw", Capacity: 1 << 20},
	} {
		t.Run(name, func(t *testing.T) {
			testutil.Must(t, os.WriteFile(filepath.Join(root, "small.img"), make([]byte, 1<<20), 0o600))
			disks := []Disk{d}
			if name == "second is bad" {
				disks = []Disk{{Target: "vda", Path: root + "/first.img", Format: "raw", Capacity: 1 << 20}, d}
			}
			if err := CreateDisks(context.Background(), disks, root, "qemu-img"); err == nil {
				t.Fatal("accepted")
			}
			if _, err := os.Stat(filepath.Join(root, "first.img")); err == nil {
				t.Error("a disk was created before the whole list was checked")
			}
		})
	}
}

// Raw disks are sparse files of the size, qcow2 disks images of that virtual size; a raw
// file of the right size that is already there (the pod's volume) is kept.
func TestCreateDisks(t *testing.T) {
	root := t.TempDir()
	kept := filepath.Join(root, "kept.img")
	testutil.Must(t, os.WriteFile(kept, []byte("volume"), 0o600))
	testutil.Must(t, os.Truncate(kept, 4<<20))
	disks := []Disk{
		{Target: "vda", Path: root + "/a/../raw.img", Format: "raw", Capacity: 8 << 20},
	}
	if err := CreateDisks(context.Background(), disks, root, "qemu-img"); err == nil {
		t.Fatal("an unclean path was accepted")
	}
	disks = []Disk{
		{Target: "vda", Path: filepath.Join(root, "raw.img"), Format: "raw", Capacity: 8 << 20},
		{Target: "vdb", Path: filepath.Join(root, "q.qcow2"), Format: "qcow2", Capacity: 64 << 20},
		{Target: "vdc", Path: kept, Format: "raw", Capacity: 4 << 20},
	}
	testutil.Must(t, CreateDisks(context.Background(), disks, root, "qemu-img"))
	fi, err := os.Stat(disks[0].Path)
	testutil.Must(t, err)
	if fi.Size() != 8<<20 {
		t.Errorf("raw disk of %d bytes", fi.Size())
	}
	out, err := exec.Command("qemu-img", "info", "--output=json", disks[1].Path).Output()
	testutil.Must(t, err)
	if !strings.Contains(string(out), `"virtual-size": 67108864`) || !strings.Contains(string(out), `"format": "qcow2"`) {
		t.Errorf("qcow2 disk: %s", out)
	}
	b, err := os.ReadFile(kept)
	testutil.Must(t, err)
	if !strings.HasPrefix(string(b), "volume") {
		t.Error("the existing volume was overwritten")
	}
}
