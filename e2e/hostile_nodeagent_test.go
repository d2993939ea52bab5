//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/slimvirt/slimvirt/api/launcherpod"
)

// hostileLauncherPod is a tenant's pod dressed as a launcher: the launcher label, the readiness
// gate the node agent sets, and an emptyDir named as the launcher's run directory, in which
// script leaves what the node agent would read as the status file.
const hostileLauncherPod = `apiVersion: v1
kind: Pod
metadata:
  name: %[1]s
  labels: {%[2]s: %[3]s, %[4]s: %[1]s}
spec:
  nodeName: %[5]s
  terminationGracePeriodSeconds: 1
  readinessGates: [{conditionType: %[6]s}]
  containers:
  - name: fake
    image: slimvirt.io/toolbox:dev
    imagePullPolicy: IfNotPresent
    command: [sh, -c, '%[7]s && exec sleep 3600']
    volumeMounts: [{name: %[8]s, mountPath: %[9]s}]
  volumes: [{name: %[8]s, emptyDir: {}}]
`

// TestHostileNodeAgentFakeLaunchers: a tenant with only the edit role labels its own pods as
// launchers, one with a FIFO as its status file (which hung the node agent's reporting for the
// whole node) and one with a 1 GiB status file (which the agent read whole); the tenant's real
// VMI on the same node still reaches Running, the agent is neither restarted nor OOM-killed,
// the fake pods' readiness gates are never touched, and the per-VM metrics still scrape.
func TestHostileNodeAgentFakeLaunchers(t *testing.T) {
	const ns, name = "hostile-agent", "agent-victim"
	ctx := context.Background()
	tn := newTenant(t, ns, "")
	agent := componentPod(t, "node")
	before := restarts(agent, "node")

	fakes := map[string]string{
		"fake-fifo": "mkfifo " + launcherpod.StatusFile,
		"fake-huge": "truncate -s 1G " + launcherpod.StatusFile,
	}
	for pod, script := range fakes {
		tn.apply(t, fmt.Sprintf(hostileLauncherPod, pod, launcherpod.LabelApp, launcherpod.AppLauncher, launcherpod.LabelVMI,
			agent.Spec.NodeName, launcherpod.ConditionDomainRunning, script, launcherpod.RunVolume, launcherpod.RunDir))
	}
	for pod := range fakes {
		eventually(t, 2*time.Minute, "fake launcher "+pod+" running its script", func() (bool, error) {
			out, err := tn.kubectl("exec", pod, "--", "ls", "-l", launcherpod.StatusFile)
			if err != nil {
				return false, fmt.Errorf("%w: %s", err, out)
			}
			return true, nil
		})
		out, _ := tn.kubectl("exec", pod, "--", "ls", "-l", launcherpod.StatusFile)
		t.Logf("%s: %s", pod, strings.TrimSpace(out))
	}
	// Give the agent a few passes over them before the real VMI starts.
	time.Sleep(3 * time.Second)

	tn.apply(t, strings.Replace(fmt.Sprintf(benchVMI, name), "bench: start-latency", "test: hostile-node-agent", 1))
	t.Cleanup(func() { _, _ = tn.kubectl("delete", "vmi", name, "--ignore-not-found", "--wait=true", "--timeout=90s") })
	start := time.Now()
	vmi := waitVMIRunning(t, ns, name, "")
	t.Logf("VMI %s Running %.1fs after it was created, beside the fake launchers", name, time.Since(start).Seconds())
	if vmi.Status.NodeName != agent.Spec.NodeName {
		t.Fatalf("VMI ran on %s, the fake launchers on %s", vmi.Status.NodeName, agent.Spec.NodeName)
	}

	now := componentPod(t, "node")
	if now.UID != agent.UID || restarts(now, "node") != before {
		t.Fatalf("node agent restarted: pod %s (was %s), restarts %d (were %d)", now.Name, agent.Name, restarts(now, "node"), before)
	}
	for pod := range fakes {
		p := &corev1.Pod{}
		if err := tn.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: pod}, p); err != nil {
			t.Fatal(err)
		}
		for _, c := range p.Status.Conditions {
			if c.Type == launcherpod.ConditionDomainRunning {
				t.Errorf("the node agent set %s on %s, a pod no VMI owns: %+v", c.Type, pod, c)
			}
		}
	}
	waitMetric(t, fmt.Sprintf(`slimvirt_vmi_info{name=%q,namespace=%q`, name, ns))
	if strings.Contains(nodeMetrics(t), `name="fake-`) {
		t.Error("the node agent serves metrics for a fake launcher")
	}
}
