//go:build e2e

package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestHelmUninstallRestoresNode uninstalls the chart from the local cluster and checks that
// the node's CNI conflist is back to its original bytes, the plugin binary, the device plugin
// sockets and every object of the release are gone (the CRDs stay, as Helm keeps crds/ on
// uninstall so VMs are not deleted with the chart); then installs it again and boots a VM.
func TestHelmUninstallRestoresNode(t *testing.T) {
	ce := readClusterEnv("/var/lib/slimvirt-cluster/cluster.env")
	confDir, binDir, state := ce["CNI_CONF_DIR"], ce["CNI_BIN_DIR"], ce["STATE_DIR"]
	if confDir == "" || state == "" {
		t.Skip("not the local cluster")
	}
	conflist := ce["CNI_CONFLIST"]
	original, err := os.ReadFile(filepath.Join(state, "slimvirt", "cni-original", filepath.Base(conflist)))
	if err != nil {
		t.Fatalf("the node agent kept no original of %s: %v", conflist, err)
	}
	if chained, _ := os.ReadFile(conflist); !bytes.Contains(chained, []byte(`"slimvirt"`)) {
		t.Fatalf("slimvirt is not chained in %s before the test:\n%s", conflist, chained)
	}
	helm := func(args ...string) string { return helmRun(t, args...) }
	reinstall := func() { localInstall(t, "") }
	defer func() {
		if t.Failed() {
			reinstall() // leave the cluster usable for the tests after this one
		}
	}()

	// The node agent's seed init container left the launchers' seed: the copier and QEMU's
	// capabilities, probed once for the node.
	seed := filepath.Join(state, "slimvirt", "launcher")
	if !fileExists(filepath.Join(seed, "slimvirt-diskcopy")) {
		t.Errorf("no containerDisk copier in the launchers' seed %s", seed)
	}
	if caps, _ := filepath.Glob(filepath.Join(seed, "qemu-caps", "*.xml")); len(caps) == 0 {
		t.Errorf("no QEMU capabilities in the launchers' seed %s", seed)
	}

	start := time.Now()
	helm("uninstall", "slimvirt", "--namespace", "slimvirt", "--wait", "--timeout", "3m")
	eventually(t, 2*time.Minute, "the conflist restored", func() (bool, error) {
		got, err := os.ReadFile(conflist)
		return bytes.Equal(got, original), err
	})
	t.Logf("helm uninstall -> conflist restored byte for byte: %.1f s", time.Since(start).Seconds())
	if _, err := os.Stat(filepath.Join(binDir, "slimvirt")); !os.IsNotExist(err) {
		t.Errorf("the CNI plugin binary is still in %s (%v)", binDir, err)
	}
	if _, err := os.Stat(filepath.Join(state, "slimvirt", "launcher")); !os.IsNotExist(err) {
		t.Errorf("the launchers' seed (copier, QEMU capabilities) is still on the node (%v)", err)
	}
	for _, sock := range []string{"slimvirt-kvm.sock", "slimvirt-tun.sock"} {
		if _, err := os.Stat(filepath.Join("/var/lib/kubelet/device-plugins", sock)); !os.IsNotExist(err) {
			t.Errorf("device plugin socket %s left behind (%v)", sock, err)
		}
	}
	eventually(t, 2*time.Minute, "no object of the release", func() (bool, error) {
		var left []string
		for _, q := range [][]string{
			// Everything in the release's namespace but what every namespace has. Leader-election
			// Leases are made at run time by the controller and the resizer, not by the chart;
			// they go with the namespace (helm does not delete a namespace it did not make).
			{"-n", "slimvirt", "get", "all,secrets,configmaps,serviceaccounts,roles,rolebindings,csistoragecapacities", "-o", "name"},
			// Cluster-wide: what carries the chart's labels.
			{"get", "clusterroles,clusterrolebindings,csidrivers,storageclasses", "-l", "app.kubernetes.io/name=slimvirt", "-o", "name"},
		} {
			out, err := kubectl(t, q...)
			if err != nil {
				return false, err
			}
			for _, l := range strings.Fields(out) {
				if !strings.HasSuffix(l, "/default") && l != "configmap/kube-root-ca.crt" {
					left = append(left, l)
				}
			}
		}
		return len(left) == 0, fmt.Errorf("left: %v", left)
	})
	crds := mustKubectl(t, "get", "crd", "-o", "name")
	t.Logf("kept by Helm's policy for crds/: %s", strings.Join(strings.Fields(crds), " "))

	reinstall()
	if chained, _ := os.ReadFile(conflist); !bytes.Contains(chained, []byte(`"slimvirt"`)) {
		t.Fatalf("not chained again after helm install:\n%s", chained)
	}
	dir := t.TempDir()
	applyChaosVM(t, dir, "helm-again", "helm", "Always")
	t.Cleanup(func() { _, _ = kubectl(t, "delete", "vm", "helm-again", "--wait=true", "--timeout=120s") })
	vmiLog(t, waitVMIRunning(t, "default", "helm-again", ""), "SLIMVIRT-GUEST-UP")
}

// helmRun runs the helm the project installs (or the one on PATH) against the local cluster.
func helmRun(t *testing.T, args ...string) string {
	t.Helper()
	bin := "helm"
	if p := filepath.Join(os.Getenv("SLIMVIRT_CACHE"), "tools", "bin", "helm"); fileExists(p) {
		bin = p
	}
	cmd := exec.Command(bin, append(args, "--kubeconfig", cluster.kubeconfig)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// localInstall installs (or upgrades) the chart as make local-install does; modules is
// hack/local-install.sh's SLIMVIRT_MODULES: "" or all, csi (the CSI driver alone) or cni (the
// CNI plugin alone).
func localInstall(t *testing.T, modules string) {
	t.Helper()
	cmd := exec.Command("bash", "hack/local-install.sh")
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "SLIMVIRT_MODULES="+modules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("local-install (modules %q): %v\n%s", modules, err, out)
	}
}
