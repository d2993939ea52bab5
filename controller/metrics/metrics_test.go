package metrics

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// listReader is a client.Reader that lists a fixed set of VMIs: the collector's only need.
type listReader struct {
	client.Reader
	vmis []v1.VirtualMachineInstance
}

func (r listReader) List(_ context.Context, list client.ObjectList, _ ...client.ListOption) error {
	list.(*v1.VirtualMachineInstanceList).Items = r.vmis
	return nil
}

func vmiIn(p v1.VirtualMachineInstancePhase) v1.VirtualMachineInstance {
	var vmi v1.VirtualMachineInstance
	vmi.Status.Phase = p
	return vmi
}

// TestRegisterTwice: a second manager in the same process keeps the counters and replaces the
// phase collector, so phases come from the live cache.
func TestRegisterTwice(t *testing.T) {
	reg := prometheus.NewRegistry()
	m1, err := New(reg, listReader{vmis: []v1.VirtualMachineInstance{vmiIn(v1.Running)}})
	if err != nil {
		t.Fatal(err)
	}
	m1.ReconcileErrors.WithLabelValues("vmi").Inc()
	m2, err := New(reg, listReader{vmis: []v1.VirtualMachineInstance{vmiIn(v1.Failed), vmiIn(v1.Failed), vmiIn("")}})
	if err != nil {
		t.Fatal(err)
	}
	var c dto.Metric
	if err := m2.ReconcileErrors.WithLabelValues("vmi").Write(&c); err != nil {
		t.Fatal(err)
	}
	if got := c.GetCounter().GetValue(); got != 1 {
		t.Errorf("reconcile errors after re-registering = %v, want 1", got)
	}
	for phase, want := range map[string]float64{"Failed": 2, "Pending": 1, "Running": 0} {
		if got := gauge(t, reg, phase); got != want {
			t.Errorf("slimvirt_vmis{phase=%s} = %v, want %v", phase, got, want)
		}
	}
}

func gauge(t *testing.T, reg *prometheus.Registry, phase string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "slimvirt_vmis" {
			continue
		}
		for _, m := range f.Metric {
			if m.GetLabel()[0].GetValue() == phase {
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("no slimvirt_vmis{phase=%s}", phase)
	return 0
}
