package importsecret

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

func TestBuild(t *testing.T) {
	pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "disk", Namespace: "tenant", UID: "0b3c3d1e-7a4e-4e0e-9d57-5f0a3f1e2a10"}}
	tests := []struct {
		name    string
		secret  *corev1.Secret
		ca      *corev1.ConfigMap
		want    map[string]string
		wantErr string
	}{
		{"CDI keys, others dropped", &corev1.Secret{Data: map[string][]byte{"accessKeyId": []byte("u"), "secretKey": []byte("p"), "token": []byte("t")}}, nil,
			map[string]string{KeyUser: "u", KeyPassword: "p"}, ""},
		{"username and password", &corev1.Secret{Data: map[string][]byte{"username": []byte("u"), "password": []byte("p")}}, nil,
			map[string]string{KeyUser: "u", KeyPassword: "p"}, ""},
		{"CA only, keys in order", nil, &corev1.ConfigMap{Data: map[string]string{"b.crt": "B", "a.crt": "A"}},
			map[string]string{KeyCA: "A\nB\n"}, ""},
		{"no credential keys", &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s"}, Data: map[string][]byte{"token": []byte("t")}}, nil, nil, "neither"},
		{"huge CA refused", nil, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "big"}, Data: map[string]string{"a": strings.Repeat("x", MaxCA)}}, nil, "more than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Build("slimvirt", pvc, tt.secret, tt.ca)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(s.Data) != len(tt.want) {
				t.Fatalf("data keys %d, want %v", len(s.Data), tt.want)
			}
			for k, v := range tt.want {
				if string(s.Data[k]) != v {
					t.Fatalf("%s = %q, want %q", k, s.Data[k], v)
				}
			}
			if err := Check(s, "tenant", pvc.UID); err != nil {
				t.Fatal(err)
			}
			if err := Check(s, "other", pvc.UID); err == nil {
				t.Fatal("a copy made for namespace tenant passed the check for namespace other")
			}
		})
	}
}

func TestUIDOf(t *testing.T) {
	for name, ok := range map[string]bool{
		Name("0b3c3d1e-7a4e-4e0e-9d57-5f0a3f1e2a10"): true,
		"creds": false, Prefix: false, Prefix + "../x": false, Prefix + "A": false,
	} {
		if _, err := UIDOf(name); (err == nil) != ok {
			t.Errorf("UIDOf(%q): %v, want ok=%v", name, err, ok)
		}
	}
}

// FuzzBuild feeds tenant-written Secret and ConfigMap contents to the copy: it never panics,
// copies only the importer's keys, keeps the CA bundle bounded, and its result passes Check.
func FuzzBuild(f *testing.F) {
	f.Add("accessKeyId", "u", "secretKey", "p", "ca.crt", "PEM")
	f.Add("username", "u", "password", "", "", "")
	f.Add("token", "t", "x", "y", "a", strings.Repeat("z", 1000))
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2, caKey, caVal string) {
		pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "d", Namespace: "n", UID: types.UID("u1")}}
		secret := &corev1.Secret{Data: map[string][]byte{k1: []byte(v1), k2: []byte(v2)}}
		cm := &corev1.ConfigMap{Data: map[string]string{caKey: caVal}}
		s, err := Build("slimvirt", pvc, secret, cm)
		if err != nil {
			return
		}
		for k := range s.Data {
			if k != KeyUser && k != KeyPassword && k != KeyCA {
				t.Fatalf("copied key %q", k)
			}
		}
		if len(s.Data[KeyCA]) > MaxCA {
			t.Fatalf("CA bundle of %d bytes", len(s.Data[KeyCA]))
		}
		if err := Check(s, "n", "u1"); err != nil {
			t.Fatal(err)
		}
		if _, err := UIDOf(s.Name); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzUIDOf: any accepted name is exactly a per-volume Secret name.
func FuzzUIDOf(f *testing.F) {
	f.Add(Name("0b3c3d1e-7a4e-4e0e-9d57-5f0a3f1e2a10"))
	f.Add("creds")
	f.Add(Prefix + "../../x")
	f.Fuzz(func(t *testing.T, name string) {
		uid, err := UIDOf(name)
		if err != nil {
			return
		}
		if Name(uid) != name || uid == "" || strings.ContainsAny(string(uid), "/.") {
			t.Fatalf("accepted %q as UID %q", name, uid)
		}
	})
}
