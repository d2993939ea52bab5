// Package manager wires slimvirt's reconcilers into one controller-runtime manager: the
// controller binary's whole runtime, and what the integration tests start and stop.
package manager

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"

	"github.com/go-logr/logr"
	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/controller/datavolume"
	"github.com/slimvirt/slimvirt/controller/metrics"
	"github.com/slimvirt/slimvirt/controller/vm"
	"github.com/slimvirt/slimvirt/controller/vmi"
	"github.com/slimvirt/slimvirt/controller/vmirs"
	"github.com/slimvirt/slimvirt/controller/webconsole"
)

// minKeyLen is the shortest signing key accepted: an HMAC-SHA256 key should have 256 bits.
const minKeyLen = 32

// Config is everything the controller is told at start.
type Config struct {
	// RestConfig reaches the API server.
	RestConfig *rest.Config
	// LauncherImage runs every launcher pod's compute container.
	LauncherImage string
	// SigningKeyFile holds the key that signs launcher pods' interfaces annotation.
	SigningKeyFile string
	// AllowEmulation lets launchers fall back to TCG where KVM is missing.
	AllowEmulation bool
	// AllowHostDisk lets VMIs mount node files through hostDisk volumes.
	AllowHostDisk bool
	// HostDiskDirs are the node directories hostDisk images may lie under; hostDisks are
	// refused elsewhere. Empty means vmi.DefaultHostDiskDir.
	HostDiskDirs []string
	// AllowCustomMACs lets a VMI's bridge interface use a MAC that is not locally administered.
	AllowCustomMACs bool
	// LauncherMemoryOverhead is added to each launcher pod's memory request.
	LauncherMemoryOverhead resource.Quantity
	// CPUAllocationRatio sets the CPU a launcher pod requests per vCPU when its VMI asks for none.
	CPUAllocationRatio int
	// MetricsBindAddress and HealthProbeBindAddress are "0" to turn the endpoints off.
	MetricsBindAddress     string
	HealthProbeBindAddress string
	LeaderElect            bool
	// LeaderElectionNamespace is where the lease lives; the pod's namespace when empty.
	LeaderElectionNamespace string
	// CrashLoopBackoff is how VMs whose VMIs keep failing wait; KubeVirt's 10 s to 5 min when zero.
	CrashLoopBackoff vm.Backoff
	// SubresourcesPort is where the aggregated API subresources.slimvirt.io listens; 0 turns
	// it (and the certificates and upload-token key it needs) off.
	SubresourcesPort int
	// NodeAccessPort is the node agents' access endpoint, which the aggregated API calls.
	NodeAccessPort int
	// Namespace is the controller's own: its certificates and keys live there.
	Namespace string
	// Deployment is the controller's Deployment in Namespace: it owns the certificates and keys
	// the controller makes, so they go when it goes. None when empty.
	Deployment string
	// WebConsoleAddr is where the in-cluster web console listens; empty turns it off. It acts
	// only with the signed-in user's token, never the controller's.
	WebConsoleAddr string
}

// Controller is a configured manager, ready to run.
type Controller struct {
	mgr ctrl.Manager
}

// New validates cfg and builds the manager with every reconciler registered.
func New(cfg Config) (*Controller, error) {
	if cfg.RestConfig == nil {
		return nil, errors.New("no API server configuration")
	}
	if cfg.LauncherImage == "" {
		return nil, errors.New("--launcher-image is empty")
	}
	key, err := readKey(cfg.SigningKeyFile)
	if err != nil {
		return nil, err
	}
	if len(cfg.HostDiskDirs) == 0 {
		cfg.HostDiskDirs = []string{vmi.DefaultHostDiskDir}
	}
	if err := vmi.CheckHostDiskDirs(cfg.HostDiskDirs); err != nil {
		return nil, fmt.Errorf("--host-disk-dirs: %w", err)
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("register core types: %w", err)
	}
	if err := v1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("register slimvirt types: %w", err)
	}
	if err := snapv1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("register volume snapshot types: %w", err)
	}
	mgr, err := ctrl.NewManager(cfg.RestConfig, ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 metricsserver.Options{BindAddress: cfg.MetricsBindAddress},
		HealthProbeBindAddress:  cfg.HealthProbeBindAddress,
		LeaderElection:          cfg.LeaderElect,
		LeaderElectionID:        "slimvirt-controller.slimvirt.io",
		LeaderElectionNamespace: cfg.LeaderElectionNamespace,
		// The next leader may start at once: our reconcilers are safe to interrupt anywhere.
		LeaderElectionReleaseOnCancel: true,
		// Only launcher and importer pods are cached; the controller never lists other pods.
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			&corev1.Pod{}: {Label: CachedPods},
		}},
		// Tests run several managers in one process, one after the other.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		return nil, fmt.Errorf("create manager: %w", err)
	}
	if err := setup(mgr, cfg, key); err != nil {
		return nil, err
	}
	return &Controller{mgr: mgr}, nil
}

// CachedPods selects the pods the controller caches, those it makes: launchers and registry
// importers.
var CachedPods = func() labels.Selector {
	req, err := labels.NewRequirement(launcherpod.LabelApp, selection.In, []string{launcherpod.AppLauncher, launcherpod.AppImporter})
	if err != nil {
		panic(err) // constant input
	}
	return labels.NewSelector().Add(*req)
}()

func setup(mgr ctrl.Manager, cfg Config, key []byte) error {
	m, err := metrics.New(ctrlmetrics.Registry, mgr.GetCache())
	if err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}
	rec := mgr.GetEventRecorder("slimvirt-controller")
	vmiR := &vmi.Reconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Recorder: rec, Metrics: m,
		AllowCustomMACs: cfg.AllowCustomMACs,
		Pod:             vmi.PodConfig{LauncherImage: cfg.LauncherImage, SigningKey: key, AllowEmulation: cfg.AllowEmulation, MemoryOverhead: cfg.LauncherMemoryOverhead, CPUAllocationRatio: cfg.CPUAllocationRatio, AllowHostDisk: cfg.AllowHostDisk, HostDiskDirs: cfg.HostDiskDirs},
	}
	if err := vmiR.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up vmi controller: %w", err)
	}
	vmR := &vm.Reconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Recorder: rec, Metrics: m, Backoff: cfg.CrashLoopBackoff}
	if err := vmR.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up vm controller: %w", err)
	}
	rsR := &vmirs.Reconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Recorder: rec, Metrics: m}
	if err := rsR.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up vmirs controller: %w", err)
	}
	tokens, err := importerTokens(cfg, mgr.GetLogger().WithName("importer-tokens"))
	if err != nil {
		return err
	}
	if err := datavolume.SetupWithManager(mgr, datavolume.Options{Namespace: cfg.Namespace, Tokens: tokens}); err != nil {
		return fmt.Errorf("set up datavolume controller: %w", err)
	}
	if err := setupSnapshots(mgr, cfg, rec); err != nil {
		return err
	}
	if cfg.SubresourcesPort != 0 {
		if err := addAggregatedAPI(mgr, cfg); err != nil {
			return err
		}
	}
	if cfg.WebConsoleAddr != "" {
		wc, err := webconsole.New(webconsole.Config{APIServer: cfg.RestConfig, Addr: cfg.WebConsoleAddr,
			Log: slog.New(logr.ToSlogHandler(ctrl.Log.WithName("webconsole")))})
		if err != nil {
			return fmt.Errorf("configure the web console: %w", err)
		}
		if err := mgr.Add(wc); err != nil {
			return fmt.Errorf("add the web console: %w", err)
		}
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return fmt.Errorf("add health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("cache", func(req *http.Request) error {
		if !mgr.GetCache().WaitForCacheSync(req.Context()) {
			return errors.New("cache not synced")
		}
		return nil
	}); err != nil {
		return fmt.Errorf("add ready check: %w", err)
	}
	return nil
}

// readKey reads the signing key from its (Secret-mounted) file; surrounding whitespace is not
// part of the key, so a key written with a trailing newline works.
func readKey(path string) ([]byte, error) {
	if path == "" {
		return nil, errors.New("--signing-key-file is empty: launcher pods must be signed")
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read signing key: %w", err)
	}
	key := []byte(strings.TrimSpace(string(raw)))
	if len(key) < minKeyLen {
		return nil, fmt.Errorf("signing key in %s has %d bytes, want at least %d", path, len(key), minKeyLen)
	}
	return key, nil
}

// Run runs the reconcilers until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	if err := c.mgr.Start(ctx); err != nil {
		return fmt.Errorf("run manager: %w", err)
	}
	return nil
}
