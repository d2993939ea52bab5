//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// The fault drills (make chaos; the controller drill also runs in make e2e). Each kills a real
// process of the local cluster by its PID, found through containerd, and asserts what survives.

// chaosVM is a VM that keeps a containerDisk guest running (runStrategy %s).
const chaosVM = `apiVersion: slimvirt.io/v1alpha1
kind: VirtualMachine
metadata:
  name: %s
  labels: {drill: %s}
spec:
  runStrategy: %s
  template:
    metadata:
      labels: {drill: %s}
    spec:
      domain:
        resources: {requests: {memory: 96Mi}}
        devices:
          disks:
          - {name: containerdisk, disk: {bus: virtio}}
      volumes:
      - name: containerdisk
        containerDisk: {image: slimvirt.io/guest:dev, imagePullPolicy: IfNotPresent}
`

func applyChaosVM(t *testing.T, dir, name, drill, strategy string) string {
	t.Helper()
	file := filepath.Join(dir, name+".yaml")
	if err := os.WriteFile(file, []byte(fmt.Sprintf(chaosVM, name, drill, strategy, drill)), 0o644); err != nil {
		t.Fatal(err)
	}
	mustKubectl(t, "apply", "-f", file)
	return file
}

// containerPIDs lists the host PIDs of the processes in a pod's container, from containerd.
func containerPIDs(t *testing.T, ns, pod, container string) []int {
	t.Helper()
	p := &corev1.Pod{}
	if err := cluster.client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: pod}, p); err != nil {
		t.Fatalf("get pod %s: %v", pod, err)
	}
	var id string
	for _, s := range append(p.Status.ContainerStatuses, p.Status.InitContainerStatuses...) {
		if s.Name == container && s.State.Running != nil {
			id = strings.TrimPrefix(s.ContainerID, "containerd://")
		}
	}
	if id == "" {
		t.Fatalf("container %s of pod %s is not running", container, pod)
	}
	sock := readClusterEnv("/var/lib/slimvirt-cluster/cluster.env")["CONTAINERD_SOCK"]
	out, err := exec.Command("ctr", "--address", sock, "-n", "k8s.io", "task", "ps", id).CombinedOutput()
	if err != nil {
		t.Fatalf("ctr task ps %s: %v\n%s", id, err, out)
	}
	var pids []int
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 0 {
			if pid, err := strconv.Atoi(f[0]); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	if len(pids) == 0 {
		t.Fatalf("no process in container %s of pod %s:\n%s", container, pod, out)
	}
	return pids
}

// killIn sends SIGKILL to the processes of a container whose command name starts with comm
// ("" kills the container's first process, its PID 1) and returns how many it killed.
func killIn(t *testing.T, ns, pod, container, comm string) int {
	t.Helper()
	n := 0
	for i, pid := range containerPIDs(t, ns, pod, container) {
		if comm == "" && i > 0 {
			break
		}
		if comm != "" {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			if err != nil || !strings.HasPrefix(strings.TrimSpace(string(b)), comm) {
				continue
			}
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill %d in %s/%s: %v", pid, pod, container, err)
		}
		t.Logf("killed pid %d (%s) in pod %s container %s", pid, comm, pod, container)
		n++
	}
	return n
}

// componentPod returns the running pod of a slimvirt component (controller or node).
func componentPod(t *testing.T, component string) corev1.Pod {
	t.Helper()
	var found corev1.Pod
	eventually(t, 2*time.Minute, component+" pod running", func() (bool, error) {
		pods := &corev1.PodList{}
		if err := cluster.client.List(context.Background(), pods, client.InNamespace("slimvirt"),
			client.MatchingLabels{"app.kubernetes.io/component": component}); err != nil {
			return false, err
		}
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning {
				found = p
				return true, nil
			}
		}
		return false, nil
	})
	return found
}

func restarts(p corev1.Pod, container string) int32 {
	for _, s := range p.Status.ContainerStatuses {
		if s.Name == container {
			return s.RestartCount
		}
	}
	return -1
}

// countByLabel counts the drill's VMIs and launcher pods per VMI name.
func countByLabel(t *testing.T, drill string) (vmis map[string]int, pods map[string]int, running int) {
	t.Helper()
	ctx := context.Background()
	vmis, pods = map[string]int{}, map[string]int{}
	vl := &v1alpha1.VirtualMachineInstanceList{}
	if err := cluster.client.List(ctx, vl, client.InNamespace("default"), client.MatchingLabels{"drill": drill}); err != nil {
		t.Fatal(err)
	}
	for _, v := range vl.Items {
		vmis[v.Name]++
		if v.Status.Phase == v1alpha1.Running {
			running++
		}
	}
	pl := &corev1.PodList{}
	if err := cluster.client.List(ctx, pl, client.InNamespace("default"), client.MatchingLabels{"drill": drill}); err != nil {
		t.Fatal(err)
	}
	for _, p := range pl.Items {
		pods[p.Labels["slimvirt.io/vmi"]]++
	}
	return vmis, pods, running
}

// TestChaosControllerKilledDuringRollout creates 10 VMs at once and kills the controller twice
// while they start (SIGKILL of its process: no chance to hand over the lease). Asserted: all 10
// VMIs reach Running, each VM has exactly one VMI and each VMI exactly one launcher pod.
func TestChaosControllerKilledDuringRollout(t *testing.T) {
	const drill, n = "controller-kill", 10
	dir := t.TempDir()
	_, _ = kubectl(t, "delete", "vm", "-l", "drill="+drill, "--wait=true", "--timeout=180s")
	t.Cleanup(func() {
		_, _ = kubectl(t, "delete", "vm", "-l", "drill="+drill, "--wait=true", "--timeout=180s")
	})
	before := componentPod(t, "controller")
	startRestarts := restarts(before, "controller")
	start := time.Now()
	for i := 0; i < n; i++ {
		applyChaosVM(t, dir, fmt.Sprintf("rollout-%d", i), drill, "Always")
	}
	// First kill while the VMIs and pods are being made, second while the first VMIs start.
	for _, at := range []time.Duration{2 * time.Second, 25 * time.Second} {
		time.Sleep(time.Until(start.Add(at)))
		p := componentPod(t, "controller")
		if killIn(t, "slimvirt", p.Name, "controller", "") != 1 {
			t.Fatal("the controller process was not killed")
		}
		eventually(t, time.Minute, "controller container restarted", func() (bool, error) {
			cur := componentPod(t, "controller")
			return restarts(cur, "controller") > restarts(p, "controller"), nil
		})
		_, _, running := countByLabel(t, drill)
		t.Logf("after kill at %s: %d of %d VMIs Running", at, running, n)
	}
	eventually(t, 6*time.Minute, "all VMIs of the rollout Running", func() (bool, error) {
		_, _, running := countByLabel(t, drill)
		return running == n, nil
	})
	t.Logf("all %d Running %.1f s after the first apply, with the controller killed twice", n, time.Since(start).Seconds())
	// Let any duplicate a restarted controller might make show up before counting.
	time.Sleep(10 * time.Second)
	vmis, pods, running := countByLabel(t, drill)
	if len(vmis) != n || running != n {
		t.Errorf("%d VMIs (%d Running), want %d", len(vmis), running, n)
	}
	for name, c := range vmis {
		if c != 1 || pods[name] != 1 {
			t.Errorf("VMI %s: %d objects and %d launcher pods, want 1 and 1", name, c, pods[name])
		}
	}
	if extra := len(pods) - len(vmis); extra != 0 {
		t.Errorf("%d launcher pods belong to no VMI of the rollout: %v", extra, pods)
	}
	after := componentPod(t, "controller")
	if got := restarts(after, "controller") - startRestarts; got < 2 {
		t.Errorf("controller restarted %d times, want 2", got)
	}
	t.Logf("counted: %d VMs, %d VMIs, %d launcher pods, controller restarts +%d", n, len(vmis), len(pods), restarts(after, "controller")-startRestarts)
}
