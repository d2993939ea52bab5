package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/nodeagent/launcherwatch"
	"github.com/slimvirt/slimvirt/nodeagent/vmimetrics"
	"github.com/slimvirt/slimvirt/nodeagent/vmistatus"
)

// vmiConfig is what the agent needs to watch the VMIs of its node.
type vmiConfig struct {
	node, kubeletDir, metricsAddr string
}

// serveVMIs reports the launchers' status to their VMIs and serves the per-VM metrics until
// ctx ends. Without an API to talk to (the agent run by hand) it does nothing.
func serveVMIs(ctx context.Context, cfg *rest.Config, vc vmiConfig, log *slog.Logger) error {
	if cfg == nil {
		log.Warn("no in-cluster API: VMI status reporting and per-VM metrics are off")
		return nil
	}
	if vc.node == "" {
		return errors.New("no node name: set NODE_NAME or --node-name")
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("make a clientset: %w", err)
	}
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	v1.AddToSchemeOrDie(scheme)
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return fmt.Errorf("make a client: %w", err)
	}
	w := launcherwatch.New(cs, vc.node, vc.kubeletDir)
	if err := w.Start(ctx); err != nil {
		return err
	}
	if vc.metricsAddr != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(&vmimetrics.Collector{Source: w, Node: vc.node, Log: log},
			collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		srv := &http.Server{Addr: vc.metricsAddr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			<-ctx.Done()
			_ = srv.Close()
		}()
		go func() {
			if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics server stopped", "addr", vc.metricsAddr, "err", err)
			}
		}()
		log.Info("serving per-VM metrics", "addr", vc.metricsAddr)
	}
	(&vmistatus.Reporter{Client: c, Launchers: w, Log: log}).Run(ctx)
	return nil
}
