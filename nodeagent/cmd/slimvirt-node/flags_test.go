package main

import (
	"testing"

	"github.com/slimvirt/slimvirt/nodeagent/deviceplugin"
)

func TestParseFlags(t *testing.T) {
	t.Setenv("POD_NAMESPACE", "slimvirt")
	t.Setenv("NODE_NAME", "node-1")
	cfg := parseFlags(nil)
	if cfg.Namespace != "slimvirt" || cfg.NodeName != "node-1" || cfg.CNI.StateDir != "/var/lib/slimvirt" ||
		cfg.DevicePlugins.Dir != deviceplugin.DefaultDir || cfg.MetricsAddr != ":9650" || cfg.RemovalDaemonSet != "" ||
		cfg.AccessAddr != ":8186" || cfg.AccessCertDir != DefaultAccessCertDir {
		t.Errorf("defaults: %+v", cfg)
	}
	cfg = parseFlags([]string{"--state-dir=/state", "--node-name=n2", "--uninstall-when-removed=slimvirt-node",
		"--uninstall-on-exit", "--allow-custom-macs", "--device-count=3", "--metrics-addr=", "--kubelet-dir=/k",
		"--access-addr=", "--access-cert-dir=/certs"})
	if cfg.CNI.StateDir != "/state" || cfg.NodeName != "n2" || cfg.RemovalDaemonSet != "slimvirt-node" ||
		!cfg.CNI.UninstallOnExit || !cfg.CNI.AllowCustomMACs || cfg.DevicePlugins.DeviceCount != 3 ||
		cfg.MetricsAddr != "" || cfg.KubeletDir != "/k" || cfg.AccessAddr != "" || cfg.AccessCertDir != "/certs" {
		t.Errorf("flags not taken: %+v", cfg)
	}
}
