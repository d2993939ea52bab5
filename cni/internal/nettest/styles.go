package nettest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/slimvirt/slimvirt/internal/testutil"
)

// Cluster is a simulated cluster network: a "host" netns the reference plugins wire pods into,
// and our plugin chained after them.
type Cluster struct {
	Host      ns.NetNS
	Key       []byte
	KeyFile   string
	StateDir  string
	DataDir   string
	PluginDir string
	// Gateway is the pods' default gateway; Subnet the pod network.
	Gateway, Subnet string
	MTU             int
}

// NewCluster makes the host netns, a signing key and the state directories.
func NewCluster(t testing.TB) *Cluster {
	t.Helper()
	testutil.RequireRoot(t, "network namespaces")
	dir := t.TempDir()
	c := &Cluster{
		Host:      NewNS(t, "host"),
		Key:       []byte("test-signing-key-0123456789abcdef"),
		KeyFile:   filepath.Join(dir, "signing.key"),
		StateDir:  filepath.Join(dir, "state"),
		DataDir:   filepath.Join(dir, "ipam"),
		PluginDir: PluginDir(t),
		Gateway:   "10.99.0.1",
		Subnet:    "10.99.0.0/24",
		MTU:       1400,
	}
	if err := os.WriteFile(c.KeyFile, c.Key, 0o600); err != nil {
		t.Fatal(err)
	}
	return c
}

// Ours is slimvirt's conflist entry.
func (c *Cluster) Ours() string {
	return fmt.Sprintf(`{"type":"slimvirt","signingKeyFile":%q,"stateDir":%q,"capabilities":{"io.kubernetes.cri.pod-annotations":true}}`, c.KeyFile, c.StateDir)
}

// BridgeEntry is the reference bridge plugin with host-local IPAM: a real gateway on a bridge.
func (c *Cluster) BridgeEntry() string {
	return fmt.Sprintf(`{"type":"bridge","bridge":"svbr0","isGateway":true,"mtu":%d,
	  "ipam":{"type":"host-local","subnet":%q,"gateway":%q,"dataDir":%q,"routes":[{"dst":"0.0.0.0/0"}]}}`,
		c.MTU, c.Subnet, c.Gateway, c.DataDir)
}

// PTPEntry is the reference ptp plugin (point-to-point veth, host routes) with host-local.
func (c *Cluster) PTPEntry() string {
	return fmt.Sprintf(`{"type":"ptp","mtu":%d,
	  "ipam":{"type":"host-local","subnet":%q,"dataDir":%q,"routes":[{"dst":"0.0.0.0/0"}]}}`,
		c.MTU, c.Subnet, c.DataDir)
}

// Conflist joins entries into a conflist named svtest.
func Conflist(entries ...string) []byte {
	s := `{"cniVersion":"1.1.0","name":"svtest","plugins":[`
	for i, e := range entries {
		if i > 0 {
			s += ","
		}
		s += e
	}
	return []byte(s + "]}")
}
