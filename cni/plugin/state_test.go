package plugin

import "testing"

func TestIsFileToken(t *testing.T) {
	tests := map[string]bool{
		"0f3c9a7e2b1d": true, "k8s-pod-network": true, "my_net.v2": true, "eth0": true,
		"": false, "..": false, "../etc": false, "a/b": false, ".hidden": false, "-x": false,
		"a..b": false, "with space": false, string(make([]byte, 300)): false,
	}
	for s, want := range tests {
		if got := isFileToken(s); got != want {
			t.Errorf("isFileToken(%q) = %v, want %v", s, got, want)
		}
	}
}
