package integration

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// snapshotterModule carries the VolumeSnapshot CRDs (config/crd) that a cluster gets with the
// snapshot-controller.
const snapshotterModule = "github.com/kubernetes-csi/external-snapshotter/client/v8"

// installSnapshotCRDs installs VolumeSnapshot, VolumeSnapshotContent and VolumeSnapshotClass
// from the module the controller is built with, before the controller starts: it turns its
// snapshot reconcilers on only when they are served.
func installSnapshotCRDs(cfg *rest.Config) error {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", snapshotterModule).Output()
	if err != nil {
		return fmt.Errorf("find %s: %w", snapshotterModule, err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "config", "crd")
	var files []string
	for _, kind := range []string{"volumesnapshots", "volumesnapshotcontents", "volumesnapshotclasses"} {
		files = append(files, filepath.Join(dir, "snapshot.storage.k8s.io_"+kind+".yaml"))
	}
	if _, err := envtest.InstallCRDs(cfg, envtest.CRDInstallOptions{Paths: files, ErrorIfPathMissing: true}); err != nil {
		return fmt.Errorf("install the VolumeSnapshot CRDs: %w", err)
	}
	return nil
}
