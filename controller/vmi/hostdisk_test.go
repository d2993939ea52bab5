package vmi

import (
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/ptr"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

func TestPlaceHostDisk(t *testing.T) {
	dirs := []string{"/var/lib/slimvirt/hostdisks", "/srv/vm"}
	tests := []struct {
		path    string
		want    hostDiskPlace
		wantErr string
	}{
		{path: "/var/lib/slimvirt/hostdisks/a.img", want: hostDiskPlace{0, "/var/lib/slimvirt/hostdisks", "a.img"}},
		{path: "/srv/vm/team/b.img", want: hostDiskPlace{1, "/srv/vm", "team/b.img"}},
		{path: "/etc/x.img", wantErr: "/etc/x.img is not below a directory this cluster allows hostDisks in (allowed: /var/lib/slimvirt/hostdisks, /srv/vm;"},
		{path: "/var/lib/slimvirt/hostdisks/../../../etc/x.img", wantErr: "must be absolute and clean"},
		{path: "/srv/vm/./a.img", wantErr: "must be absolute and clean"},
		{path: "/srv/vm//a.img", wantErr: "must be absolute and clean"},
		{path: "/srv/vmx/a.img", wantErr: "is not below"},
		{path: "/srv/vm", wantErr: "is not below"},
		{path: "/srv/vm/", wantErr: "must be absolute and clean"},
		{path: "srv/vm/a.img", wantErr: "must be absolute and clean"},
		{path: "/srv/vm/a\x00.img", wantErr: "NUL"},
		{path: "/srv/vm/" + strings.Repeat("a", 5000) + ".img", wantErr: "more than 4096"},
	}
	for _, tt := range tests {
		t.Run(tt.path[:min(len(tt.path), 60)], func(t *testing.T) {
			got, err := placeHostDisk(tt.path, dirs)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("placeHostDisk = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

// TestHostDiskProblem: the VMI says why its hostDisk is refused, naming the path and the
// directories the cluster allows.
func TestHostDiskProblem(t *testing.T) {
	vol := v1.Volume{Name: "data", VolumeSource: v1.VolumeSource{HostDisk: &v1.HostDisk{Path: "/etc/x.img", Type: v1.HostDiskExists}}}
	cfg := PodConfig{AllowHostDisk: true, HostDiskDirs: []string{DefaultHostDiskDir}}
	p := hostDiskProblem(cfg, vol)
	if p == nil || p.Reason != ReasonHostDiskNotAllowed || !strings.Contains(p.Message, "volume data: hostDisk path /etc/x.img is not below") ||
		!strings.Contains(p.Message, DefaultHostDiskDir) {
		t.Errorf("problem = %+v", p)
	}
	cfg.AllowHostDisk = false
	if p := hostDiskProblem(cfg, vol); p == nil || !strings.Contains(p.Message, "turned off") {
		t.Errorf("hostDisks turned off: problem = %+v", p)
	}
	vol.HostDisk.Path = DefaultHostDiskDir + "/x.img"
	cfg.AllowHostDisk = true
	if p := hostDiskProblem(cfg, vol); p != nil {
		t.Errorf("an image in the allowed directory: problem = %+v", p)
	}
	if _, err := BuildPod(testConfig(), &v1.VirtualMachineInstance{Spec: v1.VirtualMachineInstanceSpec{
		Domain: baseVMI().Spec.Domain, Volumes: []v1.Volume{{Name: "data", VolumeSource: v1.VolumeSource{HostDisk: &v1.HostDisk{Path: "/etc/x.img", Type: v1.HostDiskExists}}}},
	}}, "p", VolumeFacts{}); err == nil {
		t.Error("BuildPod made a pod for a hostDisk outside the allowed directories")
	}
}

// TestHostDiskPodMountsTheImage: a hostDisk pod mounts the image, never a node directory the
// cluster's owner did not list; the allowed directory goes, read-only, to the owner container
// only.
func TestHostDiskPodMountsTheImage(t *testing.T) {
	vmi := baseVMI()
	vmi.Spec.Volumes = []v1.Volume{
		{Name: "a", VolumeSource: v1.VolumeSource{HostDisk: &v1.HostDisk{Path: "/data/a.img", Type: v1.HostDiskExists}}},
		{Name: "b", VolumeSource: v1.VolumeSource{HostDisk: &v1.HostDisk{Path: "/data/sub/b.img", Type: v1.HostDiskExistsOrCreate, Capacity: ptr.To(resource.MustParse("2Gi"))}}},
	}
	pod := mustBuild(t, vmi, VolumeFacts{})
	allowed := map[string]bool{"/srv/disks": true, "/data": true}
	hostPaths := map[string]corev1.HostPathType{}
	for _, v := range pod.Spec.Volumes {
		if v.HostPath != nil {
			hostPaths[v.HostPath.Path] = *v.HostPath.Type
		}
	}
	want := map[string]corev1.HostPathType{"/data/a.img": corev1.HostPathFile, "/data/sub/b.img": corev1.HostPathFileOrCreate, "/data": corev1.HostPathDirectoryOrCreate}
	if len(hostPaths) != len(want) {
		t.Errorf("hostPath volumes %v, want %v", hostPaths, want)
	}
	for p, typ := range want {
		if hostPaths[p] != typ {
			t.Errorf("hostPath %s of type %q, want %q", p, hostPaths[p], typ)
		}
		if typ == corev1.HostPathDirectoryOrCreate && !allowed[p] {
			t.Errorf("directory %s mounted, not an allowed one", p)
		}
	}
	owner := pod.Spec.InitContainers[0]
	args := owner.Command[len(owner.Command)-8:]
	if strings.Join(args, " ") != launcherpod.HostDiskDir+"/a/a.img "+hostDiskDirsMount+"/1 a.img 0 "+
		launcherpod.HostDiskDir+"/b/b.img "+hostDiskDirsMount+"/1 sub/b.img 2147483648" {
		t.Errorf("hostdisk-owner arguments %q", args)
	}
	for _, m := range owner.VolumeMounts {
		if filepath.Dir(m.MountPath) == hostDiskDirsMount && !m.ReadOnly {
			t.Errorf("the owner container may write the allowed directory: %+v", m)
		}
	}
	for _, m := range computeOf(t, pod).VolumeMounts {
		if filepath.Dir(m.MountPath) == hostDiskDirsMount {
			t.Errorf("compute mounts an allowed directory: %+v", m)
		}
	}
}

// FuzzPlaceHostDisk: a path placed below an allowed directory is clean, absolute and strictly
// below it; anything else is an error.
func FuzzPlaceHostDisk(f *testing.F) {
	for _, p := range []string{"/data/a.img", "/data/../etc/x.img", "/data", "/data/", "//data/a.img", "/data/./a", "/datax/a", "rel", ""} {
		f.Add(p)
	}
	dirs := []string{"/data", "/var/lib/slimvirt/hostdisks"}
	f.Fuzz(func(t *testing.T, p string) {
		got, err := placeHostDisk(p, dirs)
		if err != nil {
			return
		}
		full := filepath.Join(got.Dir, got.Rel)
		if full != p || filepath.Clean(p) != p || !filepath.IsAbs(p) || got.Rel == "" || got.Rel == ".." || strings.HasPrefix(got.Rel, "../") ||
			!strings.HasPrefix(p, dirs[got.Index]+"/") || strings.ContainsRune(p, 0) {
			t.Fatalf("placed %q as %+v", p, got)
		}
	})
}
