// Package metrics holds the controller's Prometheus metrics: VMIs per phase, the time from a
// VMI's creation to Running, and reconcile errors per controller.
package metrics

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// Metrics are the collectors the reconcilers update.
type Metrics struct {
	// StartLatency observes seconds from a VMI's creation to its first Running.
	StartLatency prometheus.Histogram
	// ReconcileErrors counts failed reconciles by controller.
	ReconcileErrors *prometheus.CounterVec
}

// New registers the metrics in reg. VMIs per phase are counted at scrape time from reader (the
// manager's cache), so they are right after deletions and controller restarts. Registering
// twice in one process (tests start several managers) keeps the first histogram and counter.
func New(reg prometheus.Registerer, reader client.Reader) (*Metrics, error) {
	m := &Metrics{
		StartLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "slimvirt_vmi_create_to_running_seconds",
			Help:    "Seconds from a VirtualMachineInstance's creation to its first Running phase.",
			Buckets: []float64{1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600},
		}),
		ReconcileErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "slimvirt_reconcile_errors_total",
			Help: "Reconciles that ended in an error, by controller.",
		}, []string{"controller"}),
	}
	var err error
	if m.StartLatency, err = register(reg, m.StartLatency); err != nil {
		return nil, err
	}
	if m.ReconcileErrors, err = register(reg, m.ReconcileErrors); err != nil {
		return nil, err
	}
	// The phase collector reads one manager's cache: a new manager's replaces the old one.
	phases := &phaseCollector{reader: reader}
	err = reg.Register(phases)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		reg.Unregister(are.ExistingCollector)
		err = reg.Register(phases)
	}
	if err != nil {
		return nil, err
	}
	return m, nil
}

func register[T prometheus.Collector](reg prometheus.Registerer, c T) (T, error) {
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(T); ok {
			return existing, nil
		}
		return c, nil
	}
	return c, err
}

var phaseDesc = prometheus.NewDesc("slimvirt_vmis", "VirtualMachineInstances by phase.", []string{"phase"}, nil)

// phaseCollector counts VMIs per phase when scraped.
type phaseCollector struct {
	reader client.Reader
}

func (c *phaseCollector) Describe(ch chan<- *prometheus.Desc) { ch <- phaseDesc }

func (c *phaseCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var list v1.VirtualMachineInstanceList
	if err := c.reader.List(ctx, &list); err != nil {
		ch <- prometheus.NewInvalidMetric(phaseDesc, err)
		return
	}
	counts := CountPhases(list.Items)
	for _, p := range []v1.VirtualMachineInstancePhase{v1.Pending, v1.Scheduling, v1.Scheduled, v1.Running, v1.Succeeded, v1.Failed, v1.Unknown} {
		ch <- prometheus.MustNewConstMetric(phaseDesc, prometheus.GaugeValue, float64(counts[p]), string(p))
	}
}

// CountPhases counts VMIs per phase; a VMI without a phase yet counts as Pending.
func CountPhases(vmis []v1.VirtualMachineInstance) map[v1.VirtualMachineInstancePhase]int {
	counts := map[v1.VirtualMachineInstancePhase]int{}
	for _, vmi := range vmis {
		p := vmi.Status.Phase
		if p == "" {
			p = v1.Pending
		}
		counts[p]++
	}
	return counts
}
