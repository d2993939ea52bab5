package diskresize

import (
	"reflect"
	"testing"

	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/runtime/domain"
)

const mib = 1 << 20

func TestGuestSize(t *testing.T) {
	tests := []struct {
		name       string
		size, want int64
	}{
		{"empty", 0, 0},
		{"less than a sector", 511, 0},
		{"one sector", 512, 512},
		{"a tail is left out", 10*mib + 100, 10 * mib},
		{"sector-aligned, not MiB-aligned (a CSI volume of 1 GB)", 1_000_000_000, 1_000_000_000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := GuestSize(tc.size); got != tc.want {
				t.Errorf("GuestSize(%d) = %d, want %d", tc.size, got, tc.want)
			}
		})
	}
}

func TestDisks(t *testing.T) {
	pvc := func(name string, ro bool) v1.Volume {
		return v1.Volume{Name: name, VolumeSource: v1.VolumeSource{PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: name, ReadOnly: ro}}}
	}
	file := func(p string) domain.DiskSource { return domain.DiskSource{Path: p, Format: "raw"} }
	tests := []struct {
		name    string
		disks   []v1.Disk
		volumes []v1.Volume
		sources map[string]domain.DiskSource
		want    []Disk
	}{
		{
			name:    "filesystem PVC",
			disks:   []v1.Disk{{Name: "data", Disk: &v1.DiskTarget{Bus: "virtio"}}},
			volumes: []v1.Volume{pvc("data", false)},
			sources: map[string]domain.DiskSource{"data": file("/pvc/data/disk.img")},
			want:    []Disk{{Volume: "data", Path: "/pvc/data/disk.img"}},
		},
		{
			name:    "block PVC, disk with no device given",
			disks:   []v1.Disk{{Name: "data"}},
			volumes: []v1.Volume{pvc("data", false)},
			sources: map[string]domain.DiskSource{"data": {Block: true, Path: "/dev/slimvirt/data", Format: "raw"}},
			want:    []Disk{{Volume: "data", Path: "/dev/slimvirt/data", Block: true}},
		},
		{
			name:  "DataVolume",
			disks: []v1.Disk{{Name: "root"}},
			volumes: []v1.Volume{{Name: "root", VolumeSource: v1.VolumeSource{
				DataVolume: &v1.DataVolumeSource{Name: "root-dv"},
			}}},
			sources: map[string]domain.DiskSource{"root": file("/pvc/root/disk.img")},
			want:    []Disk{{Volume: "root", Path: "/pvc/root/disk.img"}},
		},
		{
			name:    "read-only PVC",
			disks:   []v1.Disk{{Name: "data"}},
			volumes: []v1.Volume{pvc("data", true)},
			sources: map[string]domain.DiskSource{"data": {Path: "/pvc/data/disk.img", Format: "raw", ReadOnly: true}},
		},
		{
			name:    "read-only disk",
			disks:   []v1.Disk{{Name: "data", Disk: &v1.DiskTarget{ReadOnly: true}}},
			volumes: []v1.Volume{pvc("data", false)},
			sources: map[string]domain.DiskSource{"data": file("/pvc/data/disk.img")},
		},
		{
			name:    "CD-ROM",
			disks:   []v1.Disk{{Name: "iso", CDRom: &v1.CDRomTarget{}}},
			volumes: []v1.Volume{pvc("iso", false)},
			sources: map[string]domain.DiskSource{"iso": file("/pvc/iso/disk.img")},
		},
		{
			name:    "LUN",
			disks:   []v1.Disk{{Name: "lun", LUN: &v1.LunTarget{}}},
			volumes: []v1.Volume{pvc("lun", false)},
			sources: map[string]domain.DiskSource{"lun": {Block: true, Path: "/dev/slimvirt/lun", Format: "raw"}},
		},
		{
			name:  "not a PVC: containerDisk overlay and emptyDisk",
			disks: []v1.Disk{{Name: "root"}, {Name: "scratch"}},
			volumes: []v1.Volume{
				{Name: "root", VolumeSource: v1.VolumeSource{ContainerDisk: &v1.ContainerDiskSource{Image: "x"}}},
				{Name: "scratch", VolumeSource: v1.VolumeSource{EmptyDisk: &v1.EmptyDiskSource{}}},
			},
			sources: map[string]domain.DiskSource{
				"root":    {Path: "/empty/root.qcow2", Format: "qcow2"},
				"scratch": file("/empty/scratch.img"),
			},
		},
		{
			name:    "not prepared",
			disks:   []v1.Disk{{Name: "data"}},
			volumes: []v1.Volume{pvc("data", false)},
			sources: map[string]domain.DiskSource{},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			vmi := &v1.VirtualMachineInstance{}
			vmi.Spec.Domain.Devices.Disks = tc.disks
			vmi.Spec.Volumes = tc.volumes
			if got := Disks(vmi, tc.sources); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Disks = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// A disk's life as a sequence of looks: what is grown and what the guest is given after each.
func TestStep(t *testing.T) {
	type want struct{ growTo, resizeTo int64 }
	tests := []struct {
		name     string
		capacity int64
		looks    []look
		want     []want
	}{
		{
			name:     "a CSI volume: the image grows, the guest follows, in sectors",
			capacity: 64 * mib,
			looks:    []look{{size: 64 * mib}, {size: 64 * mib}, {size: 1_000_000_000}, {size: 1_000_000_000}},
			want:     []want{{}, {}, {resizeTo: 1_000_000_000}, {}},
		},
		{
			name:     "grown while the domain started: resized at the first look",
			capacity: 64 * mib,
			looks:    []look{{size: 128 * mib}},
			want:     []want{{resizeTo: 128 * mib}},
		},
		{
			name:     "never shrinks",
			capacity: 128 * mib,
			looks:    []look{{size: 128 * mib}, {size: 64 * mib}, {size: 100 * mib}},
			want:     []want{{}, {}, {}},
		},
		{
			name:     "a block device that grew by less than a sector",
			capacity: 64 * mib,
			looks:    []look{{size: 64 * mib}, {size: 64*mib + 100}},
			want:     []want{{}, {}},
		},
		{
			name:     "an image filling its filesystem grows with it once the room is seen twice",
			capacity: 63 * mib,
			looks: []look{
				{size: 63 * mib, fill: 63 * mib},
				{size: 63 * mib, fill: 127 * mib},
				{size: 63 * mib, fill: 127 * mib},
				{size: 127 * mib, fill: 127 * mib},
			},
			want: []want{{}, {}, {growTo: 127 * mib, resizeTo: 127 * mib}, {}},
		},
		{
			name:     "room that changes between looks waits for the next",
			capacity: 63 * mib,
			looks: []look{
				{size: 63 * mib, fill: 63 * mib},
				{size: 63 * mib, fill: 100 * mib},
				{size: 63 * mib, fill: 127 * mib},
				{size: 63 * mib, fill: 127 * mib},
			},
			want: []want{{}, {}, {}, {growTo: 127 * mib, resizeTo: 127 * mib}},
		},
		{
			name:     "an image smaller than its filesystem is not the filesystem's (a shared pool, a quota)",
			capacity: 64 * mib,
			looks:    []look{{size: 64 * mib, fill: 10 << 30}, {size: 64 * mib, fill: 20 << 30}, {size: 64 * mib, fill: 20 << 30}},
			want:     []want{{}, {}, {}},
		},
		{
			name:     "storage that grows the image itself, right after its filesystem, is left to it",
			capacity: 8 * mib,
			looks: []look{
				{size: 8 * mib, fill: 8 * mib},
				{size: 8 * mib, fill: 17 * mib},  // the quota grew first
				{size: 16 * mib, fill: 17 * mib}, // then the image: someone else sizes it
				{size: 16 * mib, fill: 17 * mib},
			},
			want: []want{{}, {}, {resizeTo: 16 * mib}, {}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := start(tc.capacity, tc.looks[0])
			for i, l := range tc.looks {
				var g want
				s, g.growTo, g.resizeTo = step(s, l)
				if g != tc.want[i] {
					t.Fatalf("look %d (%+v): grow to %d, resize to %d; want %+v", i, l, g.growTo, g.resizeTo, tc.want[i])
				}
			}
		})
	}
}

// A size libvirt refused is not asked again until the backing grows further.
func TestStepAfterRefusal(t *testing.T) {
	s := start(64*mib, look{size: 64 * mib})
	s, _, r := step(s, look{size: 128 * mib})
	if r != 128*mib {
		t.Fatalf("resize to %d", r)
	}
	s.capacity, s.failed = 64*mib, r // as check does when libvirt refuses
	if _, _, r = step(s, look{size: 128 * mib}); r != 0 {
		t.Errorf("asked again for the refused %d", r)
	}
	if _, _, r = step(s, look{size: 129 * mib}); r != 129*mib {
		t.Errorf("resize to %d after more growth, want %d", r, 129*mib)
	}
}
