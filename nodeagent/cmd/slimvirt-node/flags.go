package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/slimvirt/slimvirt/api/subresources"

	"github.com/slimvirt/slimvirt/nodeagent/agent"
	"github.com/slimvirt/slimvirt/nodeagent/deviceplugin"
)

// DefaultAccessCertDir is where the chart mounts the Secret subresources.NodeAccessSecret.
const DefaultAccessCertDir = "/etc/slimvirt/node-access"

// parseFlags reads the agent's configuration from args; the namespace and, by default, the
// node name come from the pod's environment.
func parseFlags(args []string) agent.Config {
	cfg := agent.Config{Namespace: os.Getenv("POD_NAMESPACE")}
	fs := flag.NewFlagSet("slimvirt-node", flag.ExitOnError)
	fs.StringVar(&cfg.CNI.CNIBinDir, "cni-bin-dir", "/opt/cni/bin", "CNI plugin directory of the node")
	fs.StringVar(&cfg.CNI.CNIConfDir, "cni-conf-dir", "/etc/cni/net.d", "CNI configuration directory of the node")
	fs.StringVar(&cfg.CNI.SourceBinary, "cni-binary", "/opt/slimvirt/cni/slimvirt-cni", "plugin binary to install")
	fs.StringVar(&cfg.CNI.StateDir, "state-dir", "/var/lib/slimvirt", "host directory for slimvirt's state")
	fs.StringVar(&cfg.CNI.SigningKeyFile, "signing-key-file", "", "mounted Secret with the annotation signing key")
	fs.BoolVar(&cfg.CNI.AllowCustomMACs, "allow-custom-macs", false, "let VMs on the bridge binding use MACs that are not locally administered (the controller's flag of the same name must agree)")
	fs.StringVar(&cfg.CNI.Conflist, "cni-conflist", "", "conflist to chain into (default: the one the runtime uses)")
	fs.BoolVar(&cfg.CNI.UninstallOnExit, "uninstall-on-exit", false, "remove slimvirt from the node on SIGTERM")
	fs.StringVar(&cfg.RemovalDaemonSet, "uninstall-when-removed", "", "DaemonSet (in $POD_NAMESPACE) of this agent: on SIGTERM, remove slimvirt from the node when it is deleted (helm uninstall)")
	fs.StringVar(&cfg.DevicePlugins.Dir, "device-plugin-dir", deviceplugin.DefaultDir, "kubelet's device plugin directory (kubelet.sock)")
	fs.IntVar(&cfg.DevicePlugins.DeviceCount, "device-count", deviceplugin.DefaultDeviceCount, "pods per node that can hold /dev/kvm and /dev/net/tun at once (and 8 times as many containers the seed)")
	fs.StringVar(&cfg.NodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name")
	fs.StringVar(&cfg.KubeletDir, "kubelet-dir", "/var/lib/kubelet", "kubelet's root directory (pods/<uid>/volumes hold the launchers' status files and control sockets)")
	fs.StringVar(&cfg.MetricsAddr, "metrics-addr", ":9650", "address to serve per-VM Prometheus metrics on (/metrics); empty turns them off")
	fs.StringVar(&cfg.AccessAddr, "access-addr", fmt.Sprintf(":%d", subresources.DefaultNodePort), "address to serve VMI access on (console, VNC, power actions; for the aggregated API server only, mutual TLS); empty turns it off")
	fs.StringVar(&cfg.AccessCertDir, "access-cert-dir", DefaultAccessCertDir, "mounted Secret "+subresources.NodeAccessSecret+" (tls.crt, tls.key, ca.crt) of the VMI access endpoint; it is off while they are missing")
	_ = fs.Parse(args)
	return cfg
}
