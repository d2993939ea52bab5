package driver_test

import (
	"os"
	"testing"

	"github.com/slimvirt/slimvirt/csi/testclean"
)

// TestMain removes the mounts and loop devices a killed earlier run of these tests left.
func TestMain(m *testing.M) {
	testclean.Mounts("TestSanity", "TestRestart", "TestCloneAndBlock", "TestRegistration", "TestHostile", "TestStats", "TestQuota", "TestRequireQuota")
	os.Exit(m.Run())
}
