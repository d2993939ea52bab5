package agent

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
	"github.com/slimvirt/slimvirt/nodeagent/vmiaccess"
	"github.com/slimvirt/slimvirt/nodeagent/vmimetrics"
	"github.com/slimvirt/slimvirt/nodeagent/vmistatus"
)

// serveVMIs reports the launchers' status to their VMIs, serves the per-VM metrics and the
// VMI access endpoint until ctx ends. Without an API to talk to (the agent run by hand) it does nothing.
func (a *Agent) serveVMIs(ctx context.Context, api *rest.Config, cs kubernetes.Interface) error {
	if api == nil {
		a.log.Warn("no in-cluster API: VMI status reporting, per-VM metrics and VMI access are off")
		return nil
	}
	if a.cfg.NodeName == "" {
		return errors.New("no node name: set NODE_NAME or --node-name")
	}
	c, err := vmiClient(api)
	if err != nil {
		return err
	}
	w := launcherwatch.New(cs, a.cfg.NodeName, a.cfg.KubeletDir)
	if err := w.Start(ctx); err != nil {
		return err
	}
	if a.cfg.MetricsAddr != "" {
		serveMetrics(ctx, a.cfg.MetricsAddr, metricsHandler(w, a.cfg.NodeName, a.log), a.log)
	}
	defer a.serveAccess(ctx, w)()
	(&vmistatus.Reporter{Client: c, Launchers: w, Log: a.log}).Run(ctx)
	return nil
}

// accessRetry is how often the agent looks again for the access endpoint's certificates:
// the controller makes their Secret, which may come after the agent starts.
const accessRetry = 2 * time.Second

// serveAccess starts the VMI access endpoint for the launchers w lists, to serve until ctx
// ends, once it is configured and its certificates are there (it waits for them, logging
// why). The returned function waits for it to stop.
func (a *Agent) serveAccess(ctx context.Context, w *launcherwatch.Watcher) (wait func()) {
	if a.cfg.AccessAddr == "" {
		a.log.Info("VMI access endpoint off: no address")
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s, err := vmiaccess.New(vmiaccess.Config{Addr: a.cfg.AccessAddr, CertDir: a.cfg.AccessCertDir, Node: a.cfg.NodeName, Launchers: w, Log: a.log})
		if err != nil {
			a.log.Warn("VMI access endpoint waits for its certificates: console, VNC and power actions cannot reach this node's VMIs yet", "err", err)
		}
		for err != nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(accessRetry):
			}
			s, err = vmiaccess.New(vmiaccess.Config{Addr: a.cfg.AccessAddr, CertDir: a.cfg.AccessCertDir, Node: a.cfg.NodeName, Launchers: w, Log: a.log})
		}
		if err := s.Run(ctx); err != nil {
			a.log.Error("VMI access endpoint stopped", "err", err)
		}
	}()
	return func() { <-done }
}

// vmiClient is a client that knows slimvirt's types besides Kubernetes' own.
func vmiClient(api *rest.Config) (client.Client, error) {
	scheme := runtime.NewScheme()
	if err := errors.Join(clientgoscheme.AddToScheme(scheme), v1.AddToScheme(scheme)); err != nil {
		return nil, fmt.Errorf("make a scheme: %w", err)
	}
	c, err := client.New(api, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("make a client: %w", err)
	}
	return c, nil
}

// metricsHandler serves, at /metrics, the per-VM metrics of the launchers src lists and the
// agent's own process and Go metrics.
func metricsHandler(src vmimetrics.Source, node string, log *slog.Logger) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(&vmimetrics.Collector{Source: src, Node: node, Log: log},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return mux
}

// serveMetrics serves h on addr until ctx ends. The agent goes on without metrics when the
// address cannot be served; that is logged.
func serveMetrics(ctx context.Context, addr string, h http.Handler, log *slog.Logger) {
	srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	go func() {
		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "addr", addr, "err", err)
		}
	}()
	log.Info("serving per-VM metrics", "addr", addr)
}
