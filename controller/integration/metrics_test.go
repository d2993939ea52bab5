package integration

import (
	"context"
	"testing"

	dto "github.com/prometheus/client_model/go"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// TestMetrics: the controller exports VMIs per phase and the create-to-running latency.
func TestMetrics(t *testing.T) {
	needController(t)
	ns := newNamespace(t)
	vmi := loadExampleVMI(t, ns)
	if err := env.c.Create(context.Background(), vmi); err != nil {
		t.Fatal(err)
	}
	runVMI(t, ns, vmi.Name)
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*dto.MetricFamily{}
	for _, f := range families {
		byName[f.GetName()] = f
	}
	lat := byName["slimvirt_vmi_create_to_running_seconds"]
	if lat == nil || lat.Metric[0].GetHistogram().GetSampleCount() < 1 {
		t.Errorf("no create-to-running observation: %v", lat)
	}
	running := -1.0
	if f := byName["slimvirt_vmis"]; f != nil {
		for _, m := range f.Metric {
			if m.GetLabel()[0].GetValue() == string(v1.Running) {
				running = m.GetGauge().GetValue()
			}
		}
	}
	if running < 1 {
		t.Errorf("slimvirt_vmis{phase=Running} = %v, want at least 1", running)
	}
}
