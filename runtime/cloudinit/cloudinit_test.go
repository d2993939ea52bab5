package cloudinit

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	corev1 "k8s.io/api/core/v1"
)

func TestResolve(t *testing.T) {
	secrets := t.TempDir()
	if err := os.WriteFile(filepath.Join(secrets, UserDataKey), []byte("from-secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name          string
		vol           v1.Volume
		secretDir     string
		wantUser      string
		wantNet       string
		wantErr       string
		wantConfigDrv bool
	}{
		{name: "inline", vol: v1.Volume{VolumeSource: v1.VolumeSource{CloudInitNoCloud: &v1.CloudInitNoCloudSource{UserData: "u", NetworkData: "n"}}}, wantUser: "u", wantNet: "n"},
		{name: "base64", vol: v1.Volume{VolumeSource: v1.VolumeSource{CloudInitConfigDrive: &v1.CloudInitConfigDriveSource{UserDataBase64: "aGVsbG8=", NetworkDataBase64: "bmV0"}}}, wantUser: "hello", wantNet: "net", wantConfigDrv: true},
		{name: "secret", vol: v1.Volume{VolumeSource: v1.VolumeSource{CloudInitNoCloud: &v1.CloudInitNoCloudSource{UserDataSecretRef: &corev1.LocalObjectReference{Name: "s"}}}}, secretDir: secrets, wantUser: "from-secret"},
		{name: "secret not mounted", vol: v1.Volume{VolumeSource: v1.VolumeSource{CloudInitNoCloud: &v1.CloudInitNoCloudSource{NetworkDataSecretRef: &corev1.LocalObjectReference{Name: "s"}}}}, secretDir: secrets, wantErr: "not mounted"},
		{name: "bad base64", vol: v1.Volume{VolumeSource: v1.VolumeSource{CloudInitNoCloud: &v1.CloudInitNoCloudSource{UserDataBase64: "!!"}}}, wantErr: "base64"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src, cd, ok := FromVolume(tc.vol)
			if !ok || cd != tc.wantConfigDrv {
				t.Fatalf("FromVolume ok=%v configDrive=%v", ok, cd)
			}
			u, n, err := Resolve(src, tc.secretDir)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || string(u) != tc.wantUser || string(n) != tc.wantNet {
				t.Fatalf("got %q %q %v", u, n, err)
			}
		})
	}
}

func TestFiles(t *testing.T) {
	d := Data{UserData: []byte("ud"), NetworkData: []byte("nd"), InstanceID: "vm.ns", Hostname: "host", UUID: "uid"}
	nc := NoCloudFiles(d)
	if len(nc) != 3 || nc[1].Path != "meta-data" || string(nc[1].Data) != "instance-id: vm.ns\nlocal-hostname: host\n" || nc[2].Path != "network-config" {
		t.Errorf("NoCloud files %+v", nc)
	}
	cd, err := ConfigDriveFiles(d)
	if err != nil {
		t.Fatal(err)
	}
	var meta map[string]string
	if err := json.Unmarshal(cd[0].Data, &meta); err != nil || meta["hostname"] != "host" || meta["uuid"] != "uid" || meta["instance_id"] != "vm.ns" {
		t.Errorf("meta_data.json %s (%v)", cd[0].Data, err)
	}
	if cd[2].Path != "openstack/latest/network_data.json" {
		t.Errorf("ConfigDrive files %+v", cd)
	}
}
