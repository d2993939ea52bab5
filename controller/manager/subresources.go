package manager

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	aggregator "k8s.io/kube-aggregator/pkg/client/clientset_generated/clientset"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/slimvirt/slimvirt/controller/certs"
	"github.com/slimvirt/slimvirt/controller/datavolume"
	"github.com/slimvirt/slimvirt/controller/subresources"
	"github.com/slimvirt/slimvirt/controller/uploadtokens"
)

// aggregatedAPI serves subresources.slimvirt.io in the controller's process: the certificates
// it needs come first, then the upload-token key, then the server. Every replica serves it;
// none of it waits for leader election.
type aggregatedAPI struct {
	cfg Config
	cs  kubernetes.Interface
	agg aggregator.Interface
	c   client.Client
	log logr.Logger
}

// addAggregatedAPI registers the aggregated API (with its certificates) with mgr.
func addAggregatedAPI(mgr ctrl.Manager, cfg Config) error {
	if cfg.Namespace == "" {
		return errors.New("the aggregated API needs the controller's namespace (POD_NAMESPACE)")
	}
	cs, err := kubernetes.NewForConfig(cfg.RestConfig)
	if err != nil {
		return fmt.Errorf("make a clientset: %w", err)
	}
	agg, err := aggregator.NewForConfig(cfg.RestConfig)
	if err != nil {
		return fmt.Errorf("make an aggregator client: %w", err)
	}
	// Reads go to the API server, not the cache: the server gets single objects (a VMI, its
	// node) and the controller's rights on nodes are get only.
	c, err := client.New(cfg.RestConfig, client.Options{Scheme: mgr.GetScheme()})
	if err != nil {
		return fmt.Errorf("make a client: %w", err)
	}
	if err := mgr.Add(&aggregatedAPI{cfg: cfg, cs: cs, agg: agg, c: c, log: ctrl.Log.WithName("subresources")}); err != nil {
		return fmt.Errorf("add the aggregated API: %w", err)
	}
	return nil
}

// NeedLeaderElection is false: the APIService's Service sends requests to every replica.
func (a *aggregatedAPI) NeedLeaderElection() bool { return false }

// Start serves until ctx ends.
func (a *aggregatedAPI) Start(ctx context.Context) error {
	owners, err := a.owners(ctx)
	if err != nil {
		return err
	}
	cm, err := certs.New(certs.Config{Client: a.cs, Aggregator: a.agg, Namespace: a.cfg.Namespace, Owners: owners,
		Log: slog.New(logr.ToSlogHandler(a.log.WithName("certs")))})
	if err != nil {
		return fmt.Errorf("configure certificates: %w", err)
	}
	certsDone := make(chan error, 1)
	go func() { certsDone <- cm.Start(ctx) }()
	if err := cm.Ready(ctx); err != nil {
		return fmt.Errorf("wait for the aggregated API's certificates: %w", err)
	}
	tokens, err := uploadtokens.New(ctx, a.cs, a.cfg.Namespace, uploadtokens.DefaultTTL, a.log.WithName("uploadtokens"), owners...)
	if err != nil {
		return fmt.Errorf("set up upload tokens: %w", err)
	}
	srv, err := subresources.New(subresources.Config{
		Client:      a.c,
		ServingCert: cm.ServingCert(),
		NodeTLS:     cm.NodeClientTLS,
		NodePort:    a.cfg.NodeAccessPort,
		Tokens:      tokens,
		Port:        a.cfg.SubresourcesPort,
		Log:         slog.New(logr.ToSlogHandler(a.log)),
	})
	if err != nil {
		return fmt.Errorf("configure the aggregated API: %w", err)
	}
	a.log.Info("serving the aggregated API", "group", "subresources.slimvirt.io", "port", a.cfg.SubresourcesPort)
	return errors.Join(srv.Start(ctx), <-certsDone)
}

// owners is the controller's Deployment as the owner of the Secrets and ConfigMap the
// aggregated API makes, so that helm uninstall (which deletes the Deployment) removes them
// through the garbage collector; none without Config.Deployment.
func (a *aggregatedAPI) owners(ctx context.Context) ([]metav1.OwnerReference, error) {
	return deploymentOwners(ctx, a.cs, a.cfg)
}

func deploymentOwners(ctx context.Context, cs kubernetes.Interface, cfg Config) ([]metav1.OwnerReference, error) {
	if cfg.Deployment == "" {
		return nil, nil
	}
	d, err := cs.AppsV1().Deployments(cfg.Namespace).Get(ctx, cfg.Deployment, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("get the controller's Deployment %s/%s: %w", cfg.Namespace, cfg.Deployment, err)
	}
	return []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: d.Name, UID: d.UID}}, nil
}

// importerTokens signs the upload tokens of registry DataVolumes' importer pods with the
// aggregated API's key, read (or made) on first use.
func importerTokens(cfg Config, log logr.Logger) (datavolume.TokenIssuer, error) {
	if cfg.Namespace == "" {
		return nil, nil
	}
	cs, err := kubernetes.NewForConfig(cfg.RestConfig)
	if err != nil {
		return nil, fmt.Errorf("make a clientset: %w", err)
	}
	return &datavolume.LazyIssuer{New: func(ctx context.Context) (datavolume.TokenIssuer, error) {
		owners, err := deploymentOwners(ctx, cs, cfg)
		if err != nil {
			return nil, err
		}
		return uploadtokens.New(ctx, cs, cfg.Namespace, datavolume.ImporterTokenTTL, log, owners...)
	}}, nil
}
