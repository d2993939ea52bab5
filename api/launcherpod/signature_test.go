package launcherpod

import "testing"

func TestVerify(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	value := `[{"name":"default","binding":"bridge"}]`
	sig := Sign(key, "default", "virt-launcher-a-x1", value)
	tests := []struct {
		name                        string
		key                         []byte
		namespace, pod, value, sign string
		want                        bool
	}{
		{"same pod", key, "default", "virt-launcher-a-x1", value, sig, true},
		{"other pod", key, "default", "nginx", value, sig, false},
		{"other namespace", key, "kube-system", "virt-launcher-a-x1", value, sig, false},
		{"changed value", key, "default", "virt-launcher-a-x1", `[{"name":"default","binding":"masquerade"}]`, sig, false},
		{"other key", []byte("another key"), "default", "virt-launcher-a-x1", value, sig, false},
		{"no key", nil, "default", "virt-launcher-a-x1", value, Sign(nil, "default", "virt-launcher-a-x1", value), false},
		{"not hex", key, "default", "virt-launcher-a-x1", value, "zz", false},
		{"empty signature", key, "default", "virt-launcher-a-x1", value, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Verify(tt.key, tt.namespace, tt.pod, tt.value, tt.sign); got != tt.want {
				t.Fatalf("Verify = %v, want %v", got, tt.want)
			}
		})
	}
}
