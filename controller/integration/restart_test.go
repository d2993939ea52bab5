package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// TestControllerRestartDuringRollout stops the controller in the middle of a 10-VM rollout
// and starts a new one (empty caches, as a restarted pod has), twice; every VM must end with
// exactly one VMI and every VMI with exactly one launcher pod, the one its status names.
func TestControllerRestartDuringRollout(t *testing.T) {
	needController(t)
	ctx := context.Background()
	ns := newNamespace(t)
	const n = 10
	always := v1.RunStrategyAlways
	for i := range n {
		if err := env.c.Create(ctx, newVM(ns, fmt.Sprintf("rollout-%d", i), &always, nil)); err != nil {
			t.Fatal(err)
		}
		if i == 3 || i == 7 {
			waitPods(t, ns, i/2)
			env.stopController()
			if err := env.startController(); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitPods(t, ns, n)
	// Let the controller settle, then count again: a duplicate would show up here.
	time.Sleep(2 * time.Second)
	var pods corev1.PodList
	if err := env.c.List(ctx, &pods, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != n {
		t.Fatalf("%d launcher pods for %d VMs", len(pods.Items), n)
	}
	var vmis v1.VirtualMachineInstanceList
	if err := env.c.List(ctx, &vmis, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if len(vmis.Items) != n {
		t.Fatalf("%d VMIs for %d VMs", len(vmis.Items), n)
	}
	t.Logf("%d VMs, %d VMIs, %d launcher pods after two controller restarts", n, len(vmis.Items), len(pods.Items))
	perVMI := map[string]int{}
	for _, p := range pods.Items {
		perVMI[p.Labels[launcherpod.LabelVMI]]++
	}
	for i := range n {
		name := fmt.Sprintf("rollout-%d", i)
		if perVMI[name] != 1 {
			t.Errorf("vmi %s has %d pods", name, perVMI[name])
		}
		vmi := getVMI(t, ns, name)
		pods := podsOf(t, ns, name)
		if len(pods) == 1 && vmi.Status.LauncherPod != pods[0].Name {
			t.Errorf("vmi %s status.launcherPod = %q, its pod is %q", name, vmi.Status.LauncherPod, pods[0].Name)
		}
	}
}

func waitPods(t *testing.T, ns string, atLeast int) {
	t.Helper()
	eventually(t, fmt.Sprintf("%d launcher pods", atLeast), func() (bool, error) {
		var pods corev1.PodList
		if err := env.c.List(context.Background(), &pods, client.InNamespace(ns)); err != nil {
			return false, err
		}
		return len(pods.Items) >= atLeast, fmt.Errorf("%d pods", len(pods.Items))
	})
}
