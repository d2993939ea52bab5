//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// TestVMIReplicaSetHPA puts a HorizontalPodAutoscaler on CPU over a VMI replica set whose guest
// burns a CPU, as KubeVirt's user guide does: the launcher pods request CPU (100m per vCPU by
// default, none given in the VMI), metrics-server measures them, and the autoscaler scales the
// replica set through its scale subresource from one VMI to two.
func TestVMIReplicaSetHPA(t *testing.T) {
	const ns, name = "default", "burner"
	ctx := context.Background()
	burn := "cloudInitNoCloud:\n          userData: |\n" + indent("#!/bin/sh\n(while :; do :; done) &\necho BURNING\n", "            ")
	manifest := fmt.Sprintf(`apiVersion: slimvirt.io/v1alpha1
kind: VirtualMachineInstanceReplicaSet
metadata: {name: %[1]s, namespace: %[2]s}
spec:
  replicas: 1
  selector:
    matchLabels: {app: %[1]s}
  template:
    metadata:
      labels: {app: %[1]s}
    spec:
      domain:
        resources: {requests: {memory: 128Mi}}
        devices:
          disks:
          - {name: containerdisk, disk: {bus: virtio}}
          - {name: cloudinitdisk, disk: {bus: virtio}}
      volumes:
      - name: containerdisk
        containerDisk: {image: slimvirt.io/guest:dev, imagePullPolicy: IfNotPresent}
      - name: cloudinitdisk
        %[3]s
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: %[1]s, namespace: %[2]s}
spec:
  scaleTargetRef: {apiVersion: slimvirt.io/v1alpha1, kind: VirtualMachineInstanceReplicaSet, name: %[1]s}
  minReplicas: 1
  maxReplicas: 2
  metrics:
  - type: Resource
    resource: {name: cpu, target: {type: Utilization, averageUtilization: 200}}
`, name, ns, burn)
	applyYAML(t, manifest)
	t.Cleanup(func() {
		_, _ = kubectl(t, "-n", ns, "delete", "hpa", name, "--ignore-not-found")
		_, _ = kubectl(t, "-n", ns, "delete", "vmirs", name, "--ignore-not-found", "--wait=true", "--timeout=90s")
	})

	// The launcher pod carries the CPU request the autoscaler measures against.
	var first corev1.Pod
	eventually(t, 3*time.Minute, "a launcher pod of "+name, func() (bool, error) {
		pods := &corev1.PodList{}
		if err := cluster.client.List(ctx, pods, client.InNamespace(ns), client.MatchingLabels{"app": name}); err != nil || len(pods.Items) == 0 {
			return false, err
		}
		first = pods.Items[0]
		return true, nil
	})
	for _, c := range first.Spec.Containers {
		if _, ok := c.Resources.Requests[corev1.ResourceCPU]; !ok {
			t.Errorf("container %s of launcher pod %s requests no CPU: the autoscaler cannot measure it", c.Name, first.Name)
		}
		if c.Name == "compute" {
			if got := c.Resources.Requests.Cpu().MilliValue(); got != 100 {
				t.Errorf("compute container requests %dm CPU, want 100m (one vCPU at the chart's cpuAllocationRatio 10)", got)
			}
		}
	}

	// metrics-server reports the pod, then the autoscaler sees it over the target and scales.
	eventually(t, 4*time.Minute, "metrics for "+first.Name, func() (bool, error) {
		out, err := kubectl(t, "get", "--raw", "/apis/metrics.k8s.io/v1beta1/namespaces/"+ns+"/pods/"+first.Name)
		return err == nil && strings.Contains(out, `"cpu"`), fmt.Errorf("%s: %w", out, err)
	})
	var hpa autoscalingv2.HorizontalPodAutoscaler
	eventually(t, 6*time.Minute, "the autoscaler asks for 2 replicas", func() (bool, error) {
		out, err := kubectl(t, "-n", ns, "get", "hpa", name, "-o", "json")
		if err != nil {
			return false, err
		}
		if err := json.Unmarshal([]byte(out), &hpa); err != nil {
			return false, err
		}
		return hpa.Status.DesiredReplicas == 2, fmt.Errorf("desired %d, conditions %+v", hpa.Status.DesiredReplicas, hpa.Status.Conditions)
	})
	var util int32
	for _, m := range hpa.Status.CurrentMetrics {
		if m.Resource != nil && m.Resource.Current.AverageUtilization != nil {
			util = *m.Resource.Current.AverageUtilization
		}
	}
	if util <= 200 {
		t.Errorf("the autoscaler scaled at %d%% CPU, want over the 200%% target", util)
	}
	t.Logf("CPU utilization of the burning VMI's pod: %d%% of its request", util)
	eventually(t, 5*time.Minute, "2 Running VMIs of "+name, func() (bool, error) {
		out, err := kubectl(t, "-n", ns, "get", "vmirs", name, "-o", "jsonpath={.spec.replicas} {.status.readyReplicas}")
		return strings.TrimSpace(out) == "2 2", fmt.Errorf("replicas/ready %q: %w", out, err)
	})
}
