// Package nodeplugin assembles slimvirt-csi: the CSI driver, its Kubernetes access (PVC
// sources and progress), the HTTP importer and the upload endpoint, from one Config.
package nodeplugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/slimvirt/slimvirt/csi/driver"
	"github.com/slimvirt/slimvirt/csi/egress"
	"github.com/slimvirt/slimvirt/csi/importer"
	"github.com/slimvirt/slimvirt/csi/kube"
	"github.com/slimvirt/slimvirt/csi/upload"
)

// Config is slimvirt-csi's command line.
type Config struct {
	Endpoint          string
	NodeID            string
	KubeletDir        string
	StateDir          string
	Pools             []driver.Pool
	MaxVolumesPerNode int64
	HealthAddr        string
	NodeExpansionOnly bool
	// RequireQuota makes a pool without project quotas a start-up error.
	RequireQuota bool
	// Kubeconfig is a kubeconfig path; empty means in-cluster, "none" means no API access.
	Kubeconfig string
	UploadAddr string
	UploadCert string
	UploadKey  string
	// ImportAllowCIDRs re-permits addresses the importer refuses by default (loopback,
	// link-local, the node's own addresses): for labs whose image server runs on the node.
	ImportAllowCIDRs []netip.Prefix
	// ImportDenyCIDRs refuses more addresses to imports, for example the cluster's service
	// and pod networks; it wins over ImportAllowCIDRs.
	ImportDenyCIDRs []netip.Prefix
	Log             *slog.Logger
}

// SetImportAllowCIDRs parses the --import-allow-cidrs flag (a comma separated list).
func (c *Config) SetImportAllowCIDRs(v string) error {
	l, err := egress.ParseCIDRs(v)
	if err != nil {
		return fmt.Errorf("--import-allow-cidrs: %w", err)
	}
	c.ImportAllowCIDRs = l
	return nil
}

// SetImportDenyCIDRs parses the --import-deny-cidrs flag (a comma separated list).
func (c *Config) SetImportDenyCIDRs(v string) error {
	l, err := egress.ParseCIDRs(v)
	if err != nil {
		return fmt.Errorf("--import-deny-cidrs: %w", err)
	}
	c.ImportDenyCIDRs = l
	return nil
}

// AddPool parses one NAME=DIR flag value.
func (c *Config) AddPool(v string) error {
	name, dir, ok := strings.Cut(v, "=")
	if !ok || name == "" || dir == "" {
		return fmt.Errorf("pool %q: want NAME=DIR", v)
	}
	c.Pools = append(c.Pools, driver.Pool{Name: name, Dir: dir})
	return nil
}

// Plugin is a configured slimvirt-csi.
type Plugin struct {
	cfg    Config
	driver *driver.Driver
	upload *upload.Server
}

// New checks cfg and builds the plugin.
func New(cfg Config) (*Plugin, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if len(cfg.Pools) == 0 {
		return nil, errors.New("at least one --pool NAME=DIR is required")
	}
	dcfg := driver.Config{
		Endpoint:          cfg.Endpoint,
		NodeID:            cfg.NodeID,
		KubeletDir:        cfg.KubeletDir,
		StateDir:          cfg.StateDir,
		Pools:             cfg.Pools,
		MaxVolumesPerNode: cfg.MaxVolumesPerNode,
		HealthAddr:        cfg.HealthAddr,
		NodeExpansionOnly: cfg.NodeExpansionOnly,
		RequireQuota:      cfg.RequireQuota,
		Log:               cfg.Log,
	}
	egressPolicy := egress.Policy{Allow: cfg.ImportAllowCIDRs, Deny: cfg.ImportDenyCIDRs}
	var cs kubernetes.Interface
	if cfg.Kubeconfig != "none" {
		rc, err := restConfig(cfg.Kubeconfig)
		if err != nil {
			return nil, err
		}
		if cs, err = kubernetes.NewForConfig(rc); err != nil {
			return nil, fmt.Errorf("make Kubernetes client: %w", err)
		}
		cluster := kube.New(cs)
		dcfg.Cluster = cluster
		dcfg.Filler = importer.New(importer.Config{Credentials: cluster, Egress: egressPolicy, Log: cfg.Log})
	} else {
		dcfg.Filler = importer.New(importer.Config{Egress: egressPolicy, Log: cfg.Log})
	}
	d, err := driver.New(dcfg)
	if err != nil {
		return nil, err
	}
	p := &Plugin{cfg: cfg, driver: d}
	if cfg.UploadAddr != "" && cs != nil {
		host, _ := os.Hostname()
		if p.upload, err = upload.New(upload.Config{
			Addr: cfg.UploadAddr, CertFile: cfg.UploadCert, KeyFile: cfg.UploadKey,
			Hosts: []string{cfg.NodeID, host, "slimvirt-upload"}, Client: cs, Volumes: d, NodeID: cfg.NodeID, Log: cfg.Log,
		}); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func restConfig(path string) (*rest.Config, error) {
	if path == "" {
		rc, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster config (use --kubeconfig, or --kubeconfig=none to run without Kubernetes): %w", err)
		}
		return rc, nil
	}
	rc, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig %s: %w", path, err)
	}
	return rc, nil
}

// Run serves until ctx ends or a server fails.
func (p *Plugin) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// No import runs yet: every scratch file in the pools is a leftover.
	dirs := make([]string, len(p.cfg.Pools))
	for i, pool := range p.cfg.Pools {
		dirs[i] = pool.Dir
	}
	importer.RemoveStaleScratch(dirs, p.cfg.Log)
	errc := make(chan error, 2)
	go func() { errc <- p.driver.Run(ctx) }()
	n := 1
	if p.upload != nil {
		n++
		go func() { errc <- p.upload.Run(ctx) }()
	}
	var first error
	for i := 0; i < n; i++ {
		if err := <-errc; err != nil && first == nil {
			first = err
		}
		cancel() // one stopped: stop the other
	}
	return first
}
