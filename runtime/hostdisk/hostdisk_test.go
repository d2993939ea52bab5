package hostdisk

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/slimvirt/slimvirt/internal/testutil"
)

// node is a node's files for one test: an allowed hostDisk directory, a secret outside it (a
// node file a tenant wants, as /etc/shadow), and bind mounts as the kubelet makes them.
type node struct {
	t       *testing.T
	allowed string // the allowed directory, as the hostdisk-owner container sees it
	secret  string // a node file outside the allowed directory
	mounts  string // where the kubelet's bind mounts go
}

func newNode(t *testing.T) *node {
	t.Helper()
	testutil.RequireRoot(t, "hostDisk ownership is checked as root, as the hostdisk-owner container runs")
	root := t.TempDir()
	n := &node{t: t, allowed: filepath.Join(root, "hostdisks"), secret: filepath.Join(root, "etc", "shadow"), mounts: filepath.Join(root, "pod")}
	for _, d := range []string{n.allowed, filepath.Dir(n.secret), n.mounts} {
		testutil.Must(t, os.MkdirAll(d, 0o755))
	}
	testutil.Must(t, os.WriteFile(n.secret, []byte("root:secret"), 0o600))
	return n
}

// kubeletMount bind-mounts the node path p (links followed, as the kubelet's hostPath mount
// does) at a file in the pod, and returns that file.
func (n *node) kubeletMount(p string) string {
	n.t.Helper()
	dst := filepath.Join(n.mounts, strings.ReplaceAll(p, "/", "_"))
	testutil.Must(n.t, os.WriteFile(dst, nil, 0o600))
	if err := unix.Mount(p, dst, "", unix.MS_BIND, ""); err != nil {
		n.t.Fatalf("bind %s: %v", p, err)
	}
	n.t.Cleanup(func() { _ = unix.Unmount(dst, unix.MNT_DETACH) })
	return dst
}

func owner(t *testing.T, p string) (uint32, int64) {
	t.Helper()
	st, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Sys().(*syscall.Stat_t).Uid, st.Size()
}

// TestOwn: the hostdisk-owner gives the launcher the image below the allowed directory
// and nothing else; a link, a hard link or a path out of the directory is refused and no node
// file changes owner.
func TestOwn(t *testing.T) {
	tests := []struct {
		name string
		// setup makes the node's files below n.allowed and returns the path the VMI names
		// (below the allowed directory) and the node path the kubelet mounts for it.
		setup   func(n *node) (rel, mounted string)
		size    int64
		wantErr string
		// wantSize is the image's size after a success.
		wantSize int64
	}{
		{name: "existing image", setup: func(n *node) (string, string) {
			p := filepath.Join(n.allowed, "win.img")
			writeFile(n.t, p, "disk")
			return "win.img", p
		}, wantSize: 4},
		{name: "image in a subdirectory", setup: func(n *node) (string, string) {
			p := filepath.Join(n.allowed, "team", "a.img")
			writeFile(n.t, p, "disk")
			return "team/a.img", p
		}, wantSize: 4},
		{name: "empty image created by the kubelet is grown", setup: func(n *node) (string, string) {
			p := filepath.Join(n.allowed, "new.img")
			writeFile(n.t, p, "")
			return "new.img", p
		}, size: 3<<20 + 5, wantSize: 3 << 20},
		{name: "existing image is not grown", setup: func(n *node) (string, string) {
			p := filepath.Join(n.allowed, "old.img")
			writeFile(n.t, p, "data")
			return "old.img", p
		}, size: 1 << 30, wantSize: 4},
		{name: "symlink to a node file", setup: func(n *node) (string, string) {
			testutil.Must(n.t, os.Symlink(n.secret, filepath.Join(n.allowed, "evil.img")))
			return "evil.img", n.secret
		}, wantErr: "a link on the way"},
		{name: "symlinked directory on the way", setup: func(n *node) (string, string) {
			testutil.Must(n.t, os.Symlink(filepath.Dir(n.secret), filepath.Join(n.allowed, "etc")))
			return "etc/shadow", n.secret
		}, wantErr: "a link on the way"},
		{name: "hard link to a node file", setup: func(n *node) (string, string) {
			p := filepath.Join(n.allowed, "hard.img")
			testutil.Must(n.t, os.Link(n.secret, p))
			return "hard.img", p
		}, wantErr: "hard links"},
		{name: "mounted file is another file", setup: func(n *node) (string, string) {
			writeFile(n.t, filepath.Join(n.allowed, "a.img"), "disk")
			return "a.img", n.secret
		}, wantErr: "not the file below the allowed directory"},
		{name: "dot-dot out of the directory", setup: func(n *node) (string, string) {
			return "../etc/shadow", n.secret
		}, wantErr: "not a path below"},
		{name: "a directory", setup: func(n *node) (string, string) {
			testutil.Must(n.t, os.Mkdir(filepath.Join(n.allowed, "d.img"), 0o755))
			return "d.img", n.secret
		}, wantErr: "not a regular file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNode(t)
			rel, nodePath := tt.setup(n)
			file := n.kubeletMount(nodePath)
			err := Own(Disk{File: file, Dir: n.allowed, Rel: rel, Size: tt.size}, 107, 107)
			if uid, _ := owner(t, n.secret); uid != 0 {
				t.Errorf("the node file %s now belongs to %d", n.secret, uid)
			}
			if uid, _ := owner(t, n.allowed); uid != 0 {
				t.Errorf("the allowed directory now belongs to %d: only images change owner", uid)
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want a refusal with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			uid, size := owner(t, nodePath)
			if uid != 107 || size != tt.wantSize {
				t.Errorf("image owned by %d, %d bytes; want 107, %d bytes", uid, size, tt.wantSize)
			}
		})
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		args    []string
		want    int
		wantErr bool
	}{
		{[]string{"/f", "/d", "a.img", "0"}, 1, false},
		{[]string{"/f", "/d", "a.img", "0", "/g", "/d", "b.img", "1073741824"}, 2, false},
		{nil, 0, true},
		{[]string{"/f", "/d", "a.img"}, 0, true},
		{[]string{"/f", "/d", "a.img", "-1"}, 0, true},
		{[]string{"/f", "/d", "a.img", "1G"}, 0, true},
	}
	for _, tt := range tests {
		got, err := Parse(tt.args)
		if (err != nil) != tt.wantErr || len(got) != tt.want {
			t.Errorf("Parse(%q) = %v, %v; want %d disks, error %v", tt.args, got, err, tt.want, tt.wantErr)
		}
	}
}

// writeFile writes p, and the directories on its way, in the node's files.
func writeFile(t *testing.T, p, data string) {
	t.Helper()
	testutil.Must(t, os.MkdirAll(filepath.Dir(p), 0o755))
	testutil.Must(t, os.WriteFile(p, []byte(data), 0o644))
}

// FuzzParse: the hostdisk-owner's arguments (paths from a tenant's VMI) parse into
// whole disks with non-negative sizes, or are refused; and a relative path that leaves the
// allowed directory is refused before anything is opened.
func FuzzParse(f *testing.F) {
	f.Add("/f", "/d", "a.img", "0")
	f.Add("/f", "/d", "../etc/shadow", "1024")
	f.Add("/f", "/d", "/abs.img", "-1")
	f.Fuzz(func(t *testing.T, file, dir, rel, size string) {
		disks, err := Parse([]string{file, dir, rel, size})
		if err != nil {
			return
		}
		if len(disks) != 1 || disks[0].Size < 0 || disks[0].Rel != rel {
			t.Fatalf("parsed %q as %+v", []string{file, dir, rel, size}, disks)
		}
		if c := filepath.Clean(rel); c == ".." || strings.HasPrefix(c, "../") || filepath.IsAbs(rel) || rel == "" {
			err := Own(disks[0], 107, 107)
			if err == nil || !strings.Contains(err.Error(), "not a path below") {
				t.Fatalf("rel %q: err = %v, want a refusal before opening", rel, err)
			}
		}
	})
}
