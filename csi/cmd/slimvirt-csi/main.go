// Command slimvirt-csi is the csi.slimvirt.io CSI driver (Identity, Controller and Node in one
// process, one per node), with kubelet plugin registration, a health endpoint, HTTP imports
// and the upload endpoint.
package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/slimvirt/slimvirt/csi/nodeplugin"
)

func main() {
	var cfg nodeplugin.Config
	flag.StringVar(&cfg.Endpoint, "endpoint", "unix:///var/lib/kubelet/plugins/csi.slimvirt.io/csi.sock", "CSI socket")
	flag.StringVar(&cfg.NodeID, "node-id", os.Getenv("NODE_NAME"), "this node's name (topology and volume placement)")
	flag.StringVar(&cfg.KubeletDir, "kubelet-dir", "/var/lib/kubelet", "kubelet root; registration is served in its plugins_registry (empty: off)")
	flag.StringVar(&cfg.StateDir, "state-dir", "/var/lib/slimvirt/csi", "where the driver keeps its state file")
	flag.Func("pool", "storage pool NAME=DIR (repeatable; the first is the default)", cfg.AddPool)
	flag.Int64Var(&cfg.MaxVolumesPerNode, "max-volumes-per-node", 0, "volumes the scheduler may place on this node (0: no limit)")
	flag.BoolVar(&cfg.NodeExpansionOnly, "node-expansion-only", false, "grow volumes on their node only (multi-node clusters; expansion needs a pod using the volume)")
	flag.BoolVar(&cfg.RequireQuota, "require-quota", false, "refuse to start when a pool's filesystem does not enforce project quotas (XFS prjquota, ext4 project+quota)")
	flag.StringVar(&cfg.HealthAddr, "health-addr", ":9808", "liveness endpoint, serves /healthz (empty: off)")
	flag.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "kubeconfig for imports and uploads (default: in-cluster; 'none': no Kubernetes access)")
	flag.StringVar(&cfg.UploadAddr, "upload-addr", ":8443", "HTTPS upload endpoint (empty: off)")
	flag.StringVar(&cfg.UploadCert, "upload-tls-cert", "", "upload endpoint certificate (default: self-signed)")
	flag.StringVar(&cfg.UploadKey, "upload-tls-key", "", "upload endpoint key")
	flag.Func("import-allow-cidrs", "comma separated CIDRs imports may reach although they are the node's own (loopback, link-local, node addresses); for labs", cfg.SetImportAllowCIDRs)
	flag.Func("import-deny-cidrs", "comma separated CIDRs imports may not reach, e.g. the service and pod networks (wins over --import-allow-cidrs)", cfg.SetImportDenyCIDRs)
	flag.Parse()

	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	cfg.Log = log
	n, err := nodeplugin.New(cfg)
	if err != nil {
		log.Error("invalid configuration", "err", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err = n.Run(ctx)
	stop()
	if err != nil {
		log.Error("slimvirt-csi stopped", "err", err)
		os.Exit(1)
	}
}
