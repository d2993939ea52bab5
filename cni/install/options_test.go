package install

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/slimvirt/slimvirt/internal/testutil"
)

// TestAllowCustomMACs: the admin's choice reaches the plugin's entry in the node's conflist, and
// changing it rewrites the entry on the next install.
func TestAllowCustomMACs(t *testing.T) {
	n := newNode(t, map[string]string{"10-flannel.conflist": flannel})
	install := func(allow bool) any {
		t.Helper()
		in, err := New(Config{CNIBinDir: n.bin, CNIConfDir: n.conf, SourceBinary: n.src, StateDir: n.state,
			SigningKeyFile: n.key, AllowCustomMACs: allow, Resync: time.Hour})
		testutil.Must(t, err)
		testutil.Must(t, in.Install())
		b, err := os.ReadFile(filepath.Join(n.conf, "10-flannel.conflist"))
		testutil.Must(t, err)
		var doc struct {
			Plugins []map[string]any `json:"plugins"`
		}
		testutil.Must(t, json.Unmarshal(b, &doc))
		ours := doc.Plugins[len(doc.Plugins)-1]
		if ours["type"] != PluginType {
			t.Fatalf("last plugin %v, want slimvirt", ours)
		}
		return ours["allowCustomMACs"]
	}
	tests := []struct {
		allow bool
		want  any
	}{
		{false, nil},
		{true, true},
		{false, nil},
	}
	for _, tt := range tests {
		if got := install(tt.allow); got != tt.want {
			t.Errorf("AllowCustomMACs %v: entry has allowCustomMACs %v, want %v", tt.allow, got, tt.want)
		}
	}
}
