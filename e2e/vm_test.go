//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// slimctl runs the CLI built by make build against the cluster.
func slimctl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	bin, err := filepath.Abs("../_output/bin/slimctl")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, append([]string{"--kubeconfig", cluster.kubeconfig}, args...)...).CombinedOutput()
	return string(out), err
}

func mustSlimctl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := slimctl(t, args...)
	if err != nil {
		t.Fatalf("slimctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// waitVMIRunning waits for a VMI to run and returns it; with notUID it waits for a VMI other
// than that one (a restart replaces the VMI).
func waitVMIRunning(t *testing.T, ns, name, notUID string) *v1alpha1.VirtualMachineInstance {
	t.Helper()
	var vmi *v1alpha1.VirtualMachineInstance
	eventually(t, 4*time.Minute, "VMI "+name+" Running", func() (bool, error) {
		var err error
		vmi, err = getVMI(t, ns, name)
		if err != nil {
			return false, client.IgnoreNotFound(err)
		}
		return string(vmi.UID) != notUID && vmi.Status.Phase == v1alpha1.Running, nil
	})
	return vmi
}

func waitVMIGone(t *testing.T, ns, name string) {
	t.Helper()
	eventually(t, 3*time.Minute, "VMI "+name+" gone", func() (bool, error) {
		_, err := getVMI(t, ns, name)
		return err != nil && client.IgnoreNotFound(err) == nil, client.IgnoreNotFound(err)
	})
}

func launcherPods(t *testing.T, ns, vmi string) int {
	t.Helper()
	pods := &corev1.PodList{}
	if err := cluster.client.List(context.Background(), pods, client.InNamespace(ns), client.MatchingLabels{"slimvirt.io/vmi": vmi}); err != nil {
		t.Fatal(err)
	}
	return len(pods.Items)
}

// TestVMLifecycle drives a masqueraded VM with slimctl: reach it by its IP and through a
// Service made by `slimctl expose`, restart it, stop it, start it, delete it.
func TestVMLifecycle(t *testing.T) {
	const ns, name = "default", "testvm"
	ctx := context.Background()
	_, _ = kubectl(t, "delete", "-f", "../examples/vm-linux.yaml", "--ignore-not-found", "--wait=true")
	_, _ = kubectl(t, "delete", "service", "testvm-http", "--ignore-not-found")
	mustKubectl(t, "apply", "-f", "../examples/vm-linux.yaml")
	t.Cleanup(func() {
		_, _ = kubectl(t, "delete", "-f", "../examples/vm-linux.yaml", "--ignore-not-found", "--wait=true", "--timeout=90s")
		_, _ = kubectl(t, "delete", "service", "testvm-http", "--ignore-not-found")
	})

	vmi := waitVMIRunning(t, ns, name, "")
	ip := vmi.Status.Interfaces[0].IP
	header := mustKubectl(t, "get", "vmi", name)
	for _, col := range []string{"AGE", "PHASE", "IP", "NODENAME", "READY"} {
		if !strings.Contains(header, col) {
			t.Errorf("kubectl get vmi lacks column %s:\n%s", col, header)
		}
	}

	mustSlimctl(t, "expose", "vm", name, "--name", "testvm-http", "--port", "8080", "--target-port", "80")
	svc := &corev1.Service{}
	if err := cluster.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "testvm-http"}, svc); err != nil {
		t.Fatalf("slimctl expose made no Service: %v", err)
	}
	page := runClientPod(t, ns, "testvm-client",
		"for i in $(seq 1 40); do timeout 5 wget -q -O- http://"+ip+"/ && timeout 5 wget -q -O- http://"+svc.Spec.ClusterIP+":8080/ && exit 0; sleep 2; done; exit 1")
	if strings.Count(page, "slimvirt guest testvm") != 2 {
		t.Fatalf("masqueraded guest not reached by pod IP and Service: %q", page)
	}

	mustSlimctl(t, "restart", name)
	restarted := waitVMIRunning(t, ns, name, string(vmi.UID))
	t.Logf("restart replaced VMI %s with %s", vmi.UID, restarted.UID)

	mustSlimctl(t, "stop", name)
	waitVMIGone(t, ns, name)
	vm := &v1alpha1.VirtualMachine{}
	if err := cluster.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, vm); err != nil {
		t.Fatal(err)
	}
	if vm.Spec.RunStrategy == nil || *vm.Spec.RunStrategy != v1alpha1.RunStrategyHalted {
		t.Fatalf("stop on Always should leave runStrategy Halted, got %v", vm.Spec.RunStrategy)
	}

	mustSlimctl(t, "start", name)
	waitVMIRunning(t, ns, name, "")

	mustKubectl(t, "delete", "vm", name, "--wait=true", "--timeout=120s")
	waitVMIGone(t, ns, name)
	eventually(t, 2*time.Minute, "launcher pods of "+name+" gone", func() (bool, error) {
		return launcherPods(t, ns, name) == 0, nil
	})
	if out, err := slimctl(t, "start", "no-such-vm"); err == nil || !strings.Contains(out, "start VM default/no-such-vm: not found") {
		t.Errorf("slimctl start of a missing VM: %v %q", err, out)
	}
}

// TestVMIReplicaSetScale applies KubeVirt user guide's replica set as written (apiVersion
// aside: examples/vmirs-linux.yaml) and scales it with kubectl scale, up and down to zero.
func TestVMIReplicaSetScale(t *testing.T) {
	const ns, name = "default", "testreplicaset"
	ctx := context.Background()
	_, _ = kubectl(t, "delete", "-f", "../examples/vmirs-linux.yaml", "--ignore-not-found", "--wait=true")
	mustKubectl(t, "apply", "-f", "../examples/vmirs-linux.yaml")
	t.Cleanup(func() {
		_, _ = kubectl(t, "delete", "-f", "../examples/vmirs-linux.yaml", "--ignore-not-found", "--wait=true", "--timeout=90s")
	})
	running := func(want int) func() (bool, error) {
		return func() (bool, error) {
			list := &v1alpha1.VirtualMachineInstanceList{}
			if err := cluster.client.List(ctx, list, client.InNamespace(ns), client.MatchingLabels{"myvmi": "myvmi"}); err != nil {
				return false, err
			}
			n := 0
			for _, v := range list.Items {
				if v.Status.Phase == v1alpha1.Running {
					n++
				}
			}
			return n == want && len(list.Items) == want, fmt.Errorf("%d of %d VMIs Running", n, len(list.Items))
		}
	}
	eventually(t, 5*time.Minute, "the guide's 2 Running VMIs", running(2))
	eventually(t, time.Minute, "replica set status 2/2 ready", func() (bool, error) {
		out, err := kubectl(t, "get", "vmirs", name, "-o", "jsonpath={.status.readyReplicas}/{.status.replicas}")
		return err == nil && strings.TrimSpace(out) == "2/2", fmt.Errorf("ready/replicas %q", out)
	})
	mustKubectl(t, "scale", "vmirs", name, "--replicas=3")
	eventually(t, 5*time.Minute, "3 Running VMIs", running(3))
	mustKubectl(t, "scale", "vmirs", name, "--replicas=0")
	eventually(t, 3*time.Minute, "no VMIs", running(0))
	eventually(t, 2*time.Minute, "no launcher pods", func() (bool, error) {
		pods := &corev1.PodList{}
		err := cluster.client.List(ctx, pods, client.InNamespace(ns), client.MatchingLabels{"myvmi": "myvmi"})
		return err == nil && len(pods.Items) == 0, err
	})
}

// TestSeedWindowsVMAccepted: the seed guide's Windows VM (only apiVersion changed) is accepted
// by the API server.
func TestSeedWindowsVMAccepted(t *testing.T) {
	mustKubectl(t, "apply", "--dry-run=server", "-f", "../examples/vm-windows.yaml")
}
