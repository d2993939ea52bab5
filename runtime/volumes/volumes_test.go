package volumes

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/runtime/diskcopy"
	"github.com/slimvirt/slimvirt/runtime/domain"

	"github.com/slimvirt/slimvirt/internal/testutil"
)

type execRunner struct{}

func (execRunner) Run(cmd *exec.Cmd) error { return cmd.Run() }

func testLayout(t *testing.T) Layout {
	root := t.TempDir()
	l := Layout{
		ContainerDiskDir: filepath.Join(root, "container-disks"),
		PVCDir:           filepath.Join(root, "pvcs"),
		BlockDir:         filepath.Join(root, "dev"),
		HostDiskDir:      filepath.Join(root, "hostdisks"),
		EmptyDiskDir:     filepath.Join(root, "scratch"),
		SecretsDir:       filepath.Join(root, "secrets"),
	}
	for _, d := range []string{l.ContainerDiskDir, l.PVCDir, l.HostDiskDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

func vmiWith(vols ...v1.Volume) *v1.VirtualMachineInstance {
	vmi := &v1.VirtualMachineInstance{ObjectMeta: metav1.ObjectMeta{Name: "vm", Namespace: "ns", UID: "uid-1"}}
	for _, v := range vols {
		vmi.Spec.Volumes = append(vmi.Spec.Volumes, v)
		vmi.Spec.Domain.Devices.Disks = append(vmi.Spec.Domain.Devices.Disks, v1.Disk{Name: v.Name})
	}
	return vmi
}

func size(t *testing.T, p string) (apparent, allocated int64) {
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Size, st.Blocks * 512
}

func TestPrepare(t *testing.T) {
	q := resource.MustParse
	tests := []struct {
		name    string
		vol     v1.Volume
		setup   func(t *testing.T, l Layout)
		check   func(t *testing.T, l Layout, path string)
		wantErr string
		cdrom   bool // the volume's disk is a CD-ROM
	}{
		{
			name: "emptyDisk is sparse at its capacity",
			vol:  v1.Volume{Name: "e", VolumeSource: v1.VolumeSource{EmptyDisk: &v1.EmptyDiskSource{Capacity: q("2Gi")}}},
			check: func(t *testing.T, l Layout, p string) {
				if a, alloc := size(t, p); a != 2<<30 || alloc > 1<<20 {
					t.Errorf("emptyDisk %d bytes, %d allocated", a, alloc)
				}
			},
		},
		{
			name: "existing disk.img is used as it is",
			vol:  v1.Volume{Name: "p", VolumeSource: v1.VolumeSource{DataVolume: &v1.DataVolumeSource{Name: "dv"}}},
			setup: func(t *testing.T, l Layout) {
				testutil.Must(t, os.MkdirAll(filepath.Join(l.PVCDir, "p"), 0o755))
				testutil.Must(t, os.WriteFile(filepath.Join(l.PVCDir, "p", "disk.img"), []byte("data"), 0o644))
			},
			check: func(t *testing.T, l Layout, p string) {
				if b, _ := os.ReadFile(p); string(b) != "data" {
					t.Error("disk.img was changed")
				}
			},
		},
		{
			name:    "PVC not mounted",
			vol:     v1.Volume{Name: "p", VolumeSource: v1.VolumeSource{PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: "c"}}},
			wantErr: "volume p: PVC c is not mounted",
		},
		{
			name: "read-only PVC without disk.img",
			vol:  v1.Volume{Name: "p", VolumeSource: v1.VolumeSource{PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: "c", ReadOnly: true}}},
			setup: func(t *testing.T, l Layout) {
				testutil.Must(t, os.MkdirAll(filepath.Join(l.PVCDir, "p"), 0o755))
			},
			wantErr: "read-only",
		},
		{
			name: "PVC whose disk.img is a link",
			vol:  v1.Volume{Name: "p", VolumeSource: v1.VolumeSource{PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: "c"}}},
			setup: func(t *testing.T, l Layout) {
				testutil.Must(t, os.MkdirAll(filepath.Join(l.PVCDir, "p"), 0o755))
				testutil.Must(t, os.Symlink("/etc/hostname", filepath.Join(l.PVCDir, "p", "disk.img")))
			},
			wantErr: "disk.img is not a regular file",
		},
		{
			name: "CD-ROM over a PVC without disk.img",
			vol:  v1.Volume{Name: "p", VolumeSource: v1.VolumeSource{PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: "iso"}}},
			setup: func(t *testing.T, l Layout) {
				testutil.Must(t, os.MkdirAll(filepath.Join(l.PVCDir, "p"), 0o755))
			},
			cdrom:   true,
			wantErr: "volume p: PVC iso holds no image for its CD-ROM: it has no disk.img",
		},
		{
			name: "CD-ROM over a PVC whose disk.img is blank",
			vol:  v1.Volume{Name: "p", VolumeSource: v1.VolumeSource{PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: "iso"}}},
			setup: func(t *testing.T, l Layout) {
				testutil.Must(t, os.MkdirAll(filepath.Join(l.PVCDir, "p"), 0o755))
				testutil.Must(t, os.Truncate(createFile(t, filepath.Join(l.PVCDir, "p", "disk.img")), 64<<20))
			},
			cdrom:   true,
			wantErr: "volume p: PVC iso holds no image for its CD-ROM: its disk.img is blank",
		},
		{
			name: "CD-ROM over a DataVolume with its image",
			vol:  v1.Volume{Name: "p", VolumeSource: v1.VolumeSource{DataVolume: &v1.DataVolumeSource{Name: "iso"}}},
			setup: func(t *testing.T, l Layout) {
				testutil.Must(t, os.MkdirAll(filepath.Join(l.PVCDir, "p"), 0o755))
				testutil.Must(t, os.WriteFile(filepath.Join(l.PVCDir, "p", "disk.img"), []byte("CD001"), 0o644))
			},
			cdrom: true,
			check: func(t *testing.T, l Layout, p string) {
				if b, _ := os.ReadFile(p); string(b) != "CD001" {
					t.Error("the CD-ROM's image was changed")
				}
			},
		},
		{
			name: "hostDisk of type Disk must exist",
			vol:  v1.Volume{Name: "h", VolumeSource: v1.VolumeSource{HostDisk: &v1.HostDisk{Path: "/data/x.img", Type: v1.HostDiskExists}}},
			setup: func(t *testing.T, l Layout) {
				testutil.Must(t, os.MkdirAll(filepath.Join(l.HostDiskDir, "h"), 0o755))
			},
			wantErr: "volume h: hostDisk /data/x.img of type Disk does not exist",
		},
		{
			name: "hostDisk DiskOrCreate is created at its capacity",
			vol:  v1.Volume{Name: "h", VolumeSource: v1.VolumeSource{HostDisk: &v1.HostDisk{Path: "/data/x.img", Type: v1.HostDiskExistsOrCreate, Capacity: ptr.To(q("64Mi"))}}},
			setup: func(t *testing.T, l Layout) {
				testutil.Must(t, os.MkdirAll(filepath.Join(l.HostDiskDir, "h"), 0o755))
			},
			check: func(t *testing.T, l Layout, p string) {
				if a, _ := size(t, p); a != 64<<20-align || filepath.Base(p) != "x.img" {
					t.Errorf("hostDisk %s is %d bytes", p, a)
				}
			},
		},
		{
			name: "containerDisk gets a qcow2 overlay over the copied disk",
			vol:  v1.Volume{Name: "c", VolumeSource: v1.VolumeSource{ContainerDisk: &v1.ContainerDiskSource{Image: "i"}}},
			setup: func(t *testing.T, l Layout) {
				testutil.Must(t, os.MkdirAll(filepath.Join(l.ContainerDiskDir, "c"), 0o755))
				f, _ := os.Create(filepath.Join(l.ContainerDiskDir, "c", "disk.img"))
				_ = f.Truncate(32 << 20)
				_ = f.Close()
			},
			check: func(t *testing.T, l Layout, p string) {
				out, err := exec.Command("qemu-img", "info", p).CombinedOutput()
				if err != nil || !strings.Contains(string(out), "backing file: "+filepath.Join(l.ContainerDiskDir, "c", "disk.img")) || !strings.Contains(string(out), "virtual size: 32 MiB") {
					t.Errorf("overlay: %v\n%s", err, out)
				}
			},
		},
		{
			name: "containerDisk qcow2 that names a node file as its data file is refused",
			vol:  v1.Volume{Name: "c", VolumeSource: v1.VolumeSource{ContainerDisk: &v1.ContainerDiskSource{Image: "i"}}},
			setup: func(t *testing.T, l Layout) {
				dir := filepath.Join(l.ContainerDiskDir, "c")
				testutil.Must(t, os.MkdirAll(dir, 0o755))
				secret := filepath.Join(t.TempDir(), "secret")
				if err := os.WriteFile(secret, []byte("node secret"), 0o600); err != nil {
					t.Fatal(err)
				}
				out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file="+secret+",data_file_raw=on",
					filepath.Join(dir, diskcopy.QCOW2Name), "1M").CombinedOutput()
				if err != nil {
					t.Fatalf("qemu-img create: %v %s", err, out)
				}
			},
			wantErr: "qcow2 image refused: it",
		},
		{
			name: "containerDisk qcow2 with a backing file is refused",
			vol:  v1.Volume{Name: "c", VolumeSource: v1.VolumeSource{ContainerDisk: &v1.ContainerDiskSource{Image: "i"}}},
			setup: func(t *testing.T, l Layout) {
				dir := filepath.Join(l.ContainerDiskDir, "c")
				testutil.Must(t, os.MkdirAll(dir, 0o755))
				out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b", "/etc/hostname",
					filepath.Join(dir, diskcopy.QCOW2Name), "1M").CombinedOutput()
				if err != nil {
					t.Fatalf("qemu-img create: %v %s", err, out)
				}
			},
			wantErr: "qcow2 image refused: it",
		},
		{
			name: "containerDisk image without a disk: the copier's failure",
			vol:  v1.Volume{Name: "c", VolumeSource: v1.VolumeSource{ContainerDisk: &v1.ContainerDiskSource{Image: "i"}}},
			setup: func(t *testing.T, l Layout) {
				dst := filepath.Join(l.ContainerDiskDir, "c")
				_, err := diskcopy.Copy(filepath.Join(t.TempDir(), "disk"), dst)
				if err == nil {
					t.Fatal("copied a disk that does not exist")
				}
				if err := diskcopy.ReportFailure(dst, "", err); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: "volume c: the containerDisk image's disk: the copy out of the image failed: no disk file: ",
		},
		{
			name:    "containerDisk without its copier's directory",
			vol:     v1.Volume{Name: "c", VolumeSource: v1.VolumeSource{ContainerDisk: &v1.ContainerDiskSource{Image: "i"}}},
			wantErr: "volume c: containerDisk has no directory",
		},
		{
			name: "ephemeral volume gets a qcow2 overlay in the scratch directory over the PVC's disk.img, which a write leaves unchanged",
			vol:  ephemeralVolume(),
			setup: func(t *testing.T, l Layout) {
				writePVCImage(t, l, bytes.Repeat([]byte("golden! "), 4<<20/8))
			},
			check: func(t *testing.T, l Layout, p string) {
				img := filepath.Join(l.PVCDir, "e", "disk.img")
				if filepath.Dir(p) != l.EmptyDiskDir {
					t.Errorf("overlay %s is not in the scratch directory %s", p, l.EmptyDiskDir)
				}
				info := imageInfo(t, p)
				if info.Format != "qcow2" || info.BackingFilename != img || info.BackingFilenameFormat != "raw" || info.VirtualSize != 4<<20 {
					t.Errorf("overlay %+v, want qcow2 over %s (raw, 4 MiB)", info, img)
				}
				before, _ := os.ReadFile(img)
				qemuIO(t, p, "write -P 0x5a 0 64k")
				qemuIO(t, p, "read -P 0x5a 0 64k")
				if after, _ := os.ReadFile(img); !bytes.Equal(before, after) {
					t.Error("a write through the overlay changed the PVC's disk.img")
				}
			},
		},
		{
			name: "ephemeral volume over a PVC without disk.img is refused and none is made",
			vol:  ephemeralVolume(),
			setup: func(t *testing.T, l Layout) {
				testutil.Must(t, os.MkdirAll(filepath.Join(l.PVCDir, "e"), 0o755))
			},
			wantErr: "volume e: PVC golden holds no disk.img for its ephemeral volume",
			check: func(t *testing.T, l Layout, _ string) {
				if _, err := os.Lstat(filepath.Join(l.PVCDir, "e", "disk.img")); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("disk.img was made: %v", err)
				}
			},
		},
		{
			name: "ephemeral volume whose disk.img is a link is refused",
			vol:  ephemeralVolume(),
			setup: func(t *testing.T, l Layout) {
				secret := filepath.Join(t.TempDir(), "secret")
				testutil.Must(t, os.WriteFile(secret, []byte("launcher secret"), 0o600))
				testutil.Must(t, os.MkdirAll(filepath.Join(l.PVCDir, "e"), 0o755))
				testutil.Must(t, os.Symlink(secret, filepath.Join(l.PVCDir, "e", "disk.img")))
			},
			wantErr: "volume e: PVC golden: disk.img is not a regular file",
			check:   noOverlay,
		},
		{
			name: "ephemeral volume whose disk.img is a FIFO is refused",
			vol:  ephemeralVolume(),
			setup: func(t *testing.T, l Layout) {
				testutil.Must(t, os.MkdirAll(filepath.Join(l.PVCDir, "e"), 0o755))
				testutil.Must(t, unix.Mkfifo(filepath.Join(l.PVCDir, "e", "disk.img"), 0o644))
			},
			wantErr: "volume e: PVC golden: disk.img is not a regular file",
			check:   noOverlay,
		},
		{
			name: "ephemeral volume over an empty disk.img is refused",
			vol:  ephemeralVolume(),
			setup: func(t *testing.T, l Layout) {
				writePVCImage(t, l, nil)
			},
			wantErr: "volume e: PVC golden: disk.img is empty",
		},
		{
			name: "ephemeral volume over a disk.img holding a qcow2 with a backing file reads it as raw",
			vol:  ephemeralVolume(),
			setup: func(t *testing.T, l Layout) {
				dir := filepath.Join(l.PVCDir, "e")
				testutil.Must(t, os.MkdirAll(dir, 0o755))
				out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b", "/etc/hostname",
					filepath.Join(dir, "disk.img"), "1M").CombinedOutput()
				if err != nil {
					t.Fatalf("qemu-img create: %v %s", err, out)
				}
			},
			check: func(t *testing.T, l Layout, p string) {
				// The chain is the overlay and disk.img as raw bytes: the file the header
				// names is never opened.
				out, err := exec.Command("qemu-img", "info", "-U", "--backing-chain", "--output=json", p).Output()
				if err != nil {
					t.Fatalf("qemu-img info: %v", err)
				}
				var chain []imgInfo
				testutil.Must(t, json.Unmarshal(out, &chain))
				if len(chain) != 2 || chain[1].Format != "raw" || strings.Contains(string(out), "/etc/hostname") {
					t.Errorf("backing chain %s", out)
				}
			},
		},
		{
			name: "ephemeral volume over a block PVC that is no device is refused",
			vol:  ephemeralVolume(),
			setup: func(t *testing.T, l Layout) {
				testutil.Must(t, os.MkdirAll(l.BlockDir, 0o755))
				testutil.Must(t, os.WriteFile(filepath.Join(l.BlockDir, "e"), []byte("x"), 0o644))
			},
			wantErr: "/dev/e (block PVC golden) is not a block device",
		},
		{
			name:    "ephemeral volume whose PVC is not mounted",
			vol:     ephemeralVolume(),
			wantErr: "volume e: PVC golden is not mounted",
		},
		{
			name: "cloud-init ISO",
			vol:  v1.Volume{Name: "ci", VolumeSource: v1.VolumeSource{CloudInitNoCloud: &v1.CloudInitNoCloudSource{UserData: "#cloud-config\n"}}},
			check: func(t *testing.T, l Layout, p string) {
				b, _ := os.ReadFile(p)
				if len(b) < 17*2048 || string(b[16*2048+40:16*2048+46]) != "cidata" {
					t.Errorf("%s is not a cidata ISO", p)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := testLayout(t)
			if tc.setup != nil {
				tc.setup(t, l)
			}
			p := &Preparer{Layout: l, Runner: execRunner{}, QEMUImg: "qemu-img"}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			vmi := vmiWith(tc.vol)
			if tc.cdrom {
				vmi.Spec.Domain.Devices.Disks[0].CDRom = &v1.CDRomTarget{}
			}
			got, err := p.Prepare(ctx, vmi)
			if tc.wantErr != "" {
				var ve *Error
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.As(err, &ve) || ve.Volume != tc.vol.Name {
					t.Fatalf("error %v, want a volume error with %q", err, tc.wantErr)
				}
				if tc.check != nil {
					tc.check(t, l, "")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			src, ok := got[tc.vol.Name]
			if !ok {
				t.Fatalf("no source for %s", tc.vol.Name)
			}
			if src.Cache != "none" && src.Cache != "writethrough" {
				t.Errorf("cache %q", src.Cache)
			}
			tc.check(t, l, src.Path)
		})
	}
}

func ephemeralVolume() v1.Volume {
	return v1.Volume{Name: "e", VolumeSource: v1.VolumeSource{Ephemeral: &v1.EphemeralVolumeSource{
		PersistentVolumeClaim: v1.PersistentVolumeClaimVolumeSource{ClaimName: "golden", ReadOnly: true},
	}}}
}

// writePVCImage makes the disk.img of volume e's PVC, read-only as the PVC is mounted.
func writePVCImage(t *testing.T, l Layout, data []byte) {
	t.Helper()
	testutil.Must(t, os.MkdirAll(filepath.Join(l.PVCDir, "e"), 0o755))
	testutil.Must(t, os.WriteFile(filepath.Join(l.PVCDir, "e", "disk.img"), data, 0o444))
}

// noOverlay checks that a refused ephemeral volume left no overlay behind.
func noOverlay(t *testing.T, l Layout, _ string) {
	t.Helper()
	if _, err := os.Lstat(filepath.Join(l.EmptyDiskDir, "e.qcow2")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("an overlay was made: %v", err)
	}
}

type imgInfo struct {
	Format                string `json:"format"`
	VirtualSize           int64  `json:"virtual-size"`
	BackingFilename       string `json:"backing-filename"`
	BackingFilenameFormat string `json:"backing-filename-format"`
}

func imageInfo(t *testing.T, p string) imgInfo {
	t.Helper()
	out, err := exec.Command("qemu-img", "info", "-U", "--output=json", p).Output()
	if err != nil {
		t.Fatalf("qemu-img info %s: %v", p, err)
	}
	var info imgInfo
	testutil.Must(t, json.Unmarshal(out, &info))
	return info
}

// qemuIO runs one qemu-io command on the overlay as QEMU would open it: the overlay read-write,
// its backing read-only.
func qemuIO(t *testing.T, overlay, command string) {
	t.Helper()
	out, err := exec.Command("qemu-io", "-f", "qcow2", "-c", command, overlay).CombinedOutput()
	if err != nil || strings.Contains(string(out), "Pattern verification failed") || strings.Contains(string(out), "failed") {
		t.Fatalf("qemu-io %q: %v\n%s", command, err, out)
	}
}

func TestCacheMode(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	testutil.Must(t, os.WriteFile(p, make([]byte, 4096), 0o644))
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECT, 0)
	want := "none"
	if err != nil {
		want = "writethrough"
	} else {
		_ = unix.Close(fd)
	}
	if got := CacheMode(p); got != want {
		t.Errorf("CacheMode = %s, want %s", got, want)
	}
	if got := CacheMode(filepath.Join(dir, "missing")); got != "writethrough" {
		t.Errorf("CacheMode of a missing file = %s", got)
	}
}

// The copier runs next to the launcher: Prepare waits for its copy, and uses it once it is
// renamed into place.
func TestContainerDiskAwaitsTheCopier(t *testing.T) {
	l := testLayout(t)
	dst := filepath.Join(l.ContainerDiskDir, "c")
	if err := os.MkdirAll(dst, 0o755); err != nil { // the pod's emptyDir exists from the start
		t.Fatal(err)
	}
	src := filepath.Join(t.TempDir(), "os.img")
	if err := os.WriteFile(src, []byte("a raw disk"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := &Preparer{Layout: l, Runner: execRunner{}, QEMUImg: "qemu-img"}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	type result struct {
		srcs map[string]domain.DiskSource
		err  error
	}
	done := make(chan result, 1)
	go func() {
		srcs, err := p.Prepare(ctx, vmiWith(v1.Volume{Name: "c", VolumeSource: v1.VolumeSource{ContainerDisk: &v1.ContainerDiskSource{Image: "i"}}}))
		done <- result{srcs, err}
	}()
	select {
	case r := <-done:
		t.Fatalf("Prepare returned before the copy existed: %v %v", r.srcs, r.err)
	case <-time.After(300 * time.Millisecond):
	}
	if _, err := diskcopy.Copy(src, dst); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	out, err := exec.Command("qemu-img", "info", r.srcs["c"].Path).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "backing file: "+filepath.Join(dst, diskcopy.RawName)) {
		t.Errorf("overlay: %v\n%s", err, out)
	}
}

// createFile makes an empty file and returns its path.
func createFile(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Create(path)
	testutil.Must(t, err)
	testutil.Must(t, f.Close())
	return path
}

// The size of an image that fills its volume: Reserve left free, whole MiB, bounded by the
// free space, 0 when nothing fits.
func TestImageSize(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name            string
		vol, free, want int64
	}{
		{"empty volume", 64 * mib, 64 * mib, 63 * mib},
		{"free space bounds it", 64 * mib, 10*mib + Reserve + 5, 10 * mib},
		{"volume not MiB-aligned", 64*mib + 4096, 100 * mib, 63 * mib},
		{"volume exactly Reserve over a MiB", 64*mib + Reserve, 100 * mib, 64 * mib},
		{"too small", Reserve + mib - 1, 100 * mib, 0},
		{"smaller than Reserve", Reserve / 2, 100 * mib, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ImageSize(tc.vol, tc.free); got != tc.want {
				t.Errorf("ImageSize(%d, %d) = %d, want %d", tc.vol, tc.free, got, tc.want)
			}
		})
	}
}
