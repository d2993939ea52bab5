package manager

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/go-logr/logr"
	"k8s.io/client-go/kubernetes"
	aggregator "k8s.io/kube-aggregator/pkg/client/clientset_generated/clientset"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/slimvirt/slimvirt/controller/certs"
	"github.com/slimvirt/slimvirt/controller/subresources"
	"github.com/slimvirt/slimvirt/controller/uploadtokens"
)

// aggregatedAPI serves subresources.slimvirt.io in the controller's process: the certificates
// it needs come first, then the upload-token key, then the server. Every replica serves it;
// none of it waits for leader election.
type aggregatedAPI struct {
	cfg   Config
	cs    kubernetes.Interface
	c     client.Client
	certs *certs.Manager
	log   logr.Logger
}

// addAggregatedAPI registers the certificate manager and the aggregated server with mgr.
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
	log := ctrl.Log.WithName("subresources")
	cm, err := certs.New(certs.Config{Client: cs, Aggregator: agg, Namespace: cfg.Namespace, Log: slog.New(logr.ToSlogHandler(log.WithName("certs")))})
	if err != nil {
		return fmt.Errorf("configure certificates: %w", err)
	}
	// Reads go to the API server, not the cache: the server gets single objects (a VMI, its
	// node) and the controller's rights on nodes are get only.
	c, err := client.New(cfg.RestConfig, client.Options{Scheme: mgr.GetScheme()})
	if err != nil {
		return fmt.Errorf("make a client: %w", err)
	}
	if err := mgr.Add(cm); err != nil {
		return fmt.Errorf("add the certificate manager: %w", err)
	}
	if err := mgr.Add(&aggregatedAPI{cfg: cfg, cs: cs, c: c, certs: cm, log: log}); err != nil {
		return fmt.Errorf("add the aggregated API: %w", err)
	}
	return nil
}

// NeedLeaderElection is false: the APIService's Service sends requests to every replica.
func (a *aggregatedAPI) NeedLeaderElection() bool { return false }

// Start serves until ctx ends.
func (a *aggregatedAPI) Start(ctx context.Context) error {
	if err := a.certs.Ready(ctx); err != nil {
		return fmt.Errorf("wait for the aggregated API's certificates: %w", err)
	}
	tokens, err := uploadtokens.New(ctx, a.cs, a.cfg.Namespace, uploadtokens.DefaultTTL, a.log.WithName("uploadtokens"))
	if err != nil {
		return fmt.Errorf("set up upload tokens: %w", err)
	}
	srv, err := subresources.New(subresources.Config{
		Client:      a.c,
		ServingCert: a.certs.ServingCert(),
		NodeTLS:     a.certs.NodeClientTLS,
		NodePort:    a.cfg.NodeAccessPort,
		Tokens:      tokens,
		Port:        a.cfg.SubresourcesPort,
		Log:         slog.New(logr.ToSlogHandler(a.log)),
	})
	if err != nil {
		return fmt.Errorf("configure the aggregated API: %w", err)
	}
	a.log.Info("serving the aggregated API", "group", "subresources.slimvirt.io", "port", a.cfg.SubresourcesPort)
	return srv.Start(ctx)
}
