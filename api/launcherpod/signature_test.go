package launcherpod

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"testing"
)

// nameOnlySignature is the scheme before pod UIDs were signed (namespace and name only), which
// a tenant could replay onto a pod made again under the same name.
func nameOnlySignature(key []byte, namespace, pod, interfaces string) string {
	m := hmac.New(sha256.New, key)
	for _, part := range []string{namespace, pod} {
		m.Write([]byte(part))
		m.Write([]byte{0})
	}
	m.Write([]byte(interfaces))
	return hex.EncodeToString(m.Sum(nil))
}

func TestVerifyPod(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	value := `[{"name":"default","binding":"bridge"}]`
	pod := PodRef{Namespace: "default", Name: "virt-launcher-a-x1", UID: "7f1c1d2e-0000-4000-8000-000000000001"}
	sig := SignPod(key, pod, value)
	with := func(f func(*PodRef)) PodRef { p := pod; f(&p); return p }
	tests := []struct {
		name       string
		key        []byte
		pod        PodRef
		value, sig string
		want       error // nil: verifies
	}{
		{"same pod", key, pod, value, sig, nil},
		{"same name, new uid (a replay onto a pod made again)", key, with(func(p *PodRef) { p.UID = "7f1c1d2e-0000-4000-8000-000000000002" }), value, sig, ErrSignatureWrong},
		{"no uid", key, with(func(p *PodRef) { p.UID = "" }), value, sig, ErrNoPodUID},
		{"other pod", key, with(func(p *PodRef) { p.Name = "nginx" }), value, sig, ErrSignatureWrong},
		{"other namespace", key, with(func(p *PodRef) { p.Namespace = "kube-system" }), value, sig, ErrSignatureWrong},
		{"changed value", key, pod, `[{"name":"default","binding":"masquerade"}]`, sig, ErrSignatureWrong},
		{"other key", []byte("another key"), pod, value, sig, ErrSignatureWrong},
		{"no key", nil, pod, value, SignPod(nil, pod, value), ErrNoKey},
		{"not hex", key, pod, value, "zz", ErrBadSignature},
		{"empty signature", key, pod, value, "", ErrBadSignature},
		{"older signature without uid", key, pod, value, nameOnlySignature(key, pod.Namespace, pod.Name, value), ErrSignatureWrong},
		{"fields shifted across the separators", key, PodRef{Namespace: "default", Name: "virt-launcher-a-x1\x007f1c1d2e", UID: "0000"}, value, sig, ErrSignatureWrong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := VerifyPod(tt.key, tt.pod, tt.value, tt.sig)
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("VerifyPod = %v, want %v", err, tt.want)
			}
		})
	}
}

// FuzzVerifyPod: whatever a tenant writes as pod identity, annotation and signature, only the
// signature made with the key for exactly that pod and value verifies.
func FuzzVerifyPod(f *testing.F) {
	key := []byte("0123456789abcdef0123456789abcdef")
	f.Add("default", "virt-launcher-a-x1", "uid-1", `[{"name":"default","binding":"bridge"}]`, "")
	f.Add("default", "virt-launcher-a-x1", "", `[]`, "00")
	f.Add("", "", "", "", SignPod(key, PodRef{}, ""))
	f.Add("a", "b\x00c", "d", "e", "ZZ")
	f.Fuzz(func(t *testing.T, namespace, name, uid, value, sig string) {
		pod := PodRef{Namespace: namespace, Name: name, UID: uid}
		err := VerifyPod(key, pod, value, sig)
		if err == nil && (uid == "" || sig != SignPod(key, pod, value)) {
			t.Fatalf("VerifyPod accepted %q for %+v %q", sig, pod, value)
		}
		good := SignPod(key, pod, value)
		if err := VerifyPod(key, pod, value, good); (err == nil) != (uid != "") {
			t.Fatalf("VerifyPod(SignPod) = %v for %+v", err, pod)
		}
		if err := VerifyPod(key, PodRef{Namespace: namespace, Name: name, UID: uid + "x"}, value, good); err == nil {
			t.Fatalf("signature of uid %q verified for uid %q", uid, uid+"x")
		}
		if err := VerifyPod(nil, pod, value, good); !errors.Is(err, ErrNoKey) {
			t.Fatalf("no key: %v", err)
		}
	})
}
