package driver_test

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	. "github.com/onsi/ginkgo/v2"
	"github.com/onsi/ginkgo/v2/types"
	. "github.com/onsi/gomega"

	"github.com/slimvirt/slimvirt/csi/driver"
	"github.com/slimvirt/slimvirt/internal/testutil"
)

// TestSanity runs csi-sanity against a real driver on a unix socket, once with filesystem
// (mount) volumes and once with block volumes (loop devices). It needs root for bind mounts
// and losetup. csi-sanity skips the specs of a capability the driver does not announce: every
// snapshot spec must run, but the one that needs SNAPSHOT_ACCESSIBILITY_CONSTRAINTS (see
// GetPluginCapabilities).
func TestSanity(t *testing.T) {
	testutil.RequireRoot(t, "csi-sanity publishes volumes with bind mounts and loop devices")
	dir := t.TempDir()
	sock := filepath.Join(dir, "csi.sock")
	d, err := driver.New(driver.Config{
		Endpoint:          "unix://" + sock,
		NodeID:            "sanity-node",
		StateDir:          filepath.Join(dir, "state"),
		Pools:             []driver.Pool{{Name: "default", Dir: filepath.Join(dir, "pool")}},
		MaxVolumesPerNode: 100,
		Log:               slog.New(slog.NewTextHandler(GinkgoWriter, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Serve(ctx, lis) }()
	t.Cleanup(func() { cancel(); testutil.Must(t, <-done) })

	configs := map[string]*sanity.TestConfig{}
	for _, accessType := range []string{"mount", "block"} {
		cfg := sanity.NewTestConfig()
		cfg.Address = "unix://" + sock
		cfg.TargetPath = filepath.Join(dir, accessType, "target")
		cfg.StagingPath = filepath.Join(dir, accessType, "staging")
		if err := os.MkdirAll(filepath.Join(dir, accessType), 0o750); err != nil {
			t.Fatal(err)
		}
		cfg.TestVolumeSize = 16 << 20
		cfg.TestVolumeExpandSize = 32 << 20
		cfg.TestVolumeAccessType = accessType
		cfg.TestNodeVolumeAttachLimit = true
		cfg.IdempotentCount = 3
		cfg.TestVolumeParameters = map[string]string{driver.ParamPool: "default"}
		configs[accessType] = &cfg
	}
	var contexts []*sanity.TestContext
	for _, accessType := range []string{"mount", "block"} {
		Describe(accessType, func() {
			contexts = append(contexts, sanity.GinkgoTest(configs[accessType]))
		})
	}
	ReportAfterSuite("every snapshot spec ran", func(r Report) {
		ran := 0
		for _, s := range r.SpecReports {
			name := s.FullText()
			if !strings.Contains(name, "napshot") || strings.Contains(name, "GroupSnapshot") || s.LeafNodeType != types.NodeTypeIt {
				continue
			}
			if s.State == types.SpecStateSkipped && !strings.Contains(name, "accessibility requirements") {
				t.Errorf("snapshot spec skipped: %s", name)
			}
			if s.State == types.SpecStatePassed {
				ran++
			}
		}
		t.Logf("snapshot specs passed: %d", ran)
	})
	RegisterFailHandler(Fail)
	RunSpecs(t, "slimvirt-csi sanity")
	for _, sc := range contexts {
		sc.Finalize()
	}
}
