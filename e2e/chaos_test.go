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
	drillVMs(t, drill)
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

// chaosDataVM is a VM whose guest writes a token to a blank DataVolume on its first boot and
// finds it on the next (the console echoes the script, so markers are built at run time).
const chaosDataVM = `apiVersion: slimvirt.io/v1alpha1
kind: VirtualMachine
metadata:
  name: %[1]s
  labels: {drill: %[2]s}
spec:
  runStrategy: %[3]s
  dataVolumeTemplates:
  - metadata: {name: %[1]s-data}
    spec:
      source: {blank: {}}
      storage: {resources: {requests: {storage: 32Mi}}}
  template:
    metadata:
      labels: {drill: %[2]s}
    spec:
      terminationGracePeriodSeconds: 5
      domain:
        resources: {requests: {memory: 96Mi}}
        devices:
          disks:
          - {name: containerdisk, disk: {bus: virtio}}
          - {name: data, disk: {bus: virtio}}
          - {name: cloudinit, disk: {bus: virtio}}
      volumes:
      - name: containerdisk
        containerDisk: {image: slimvirt.io/guest:dev, imagePullPolicy: IfNotPresent}
      - name: data
        dataVolume: {name: %[1]s-data}
      - name: cloudinit
        cloudInitNoCloud:
          userData: |
            #!/bin/sh
            T=%[4]s
            got=$(dd if=/dev/vdb bs=1 count=${#T} 2>/dev/null)
            if [ "$got" = "$T" ]; then echo "FOUND""-$T"; else printf %%s "$T" | dd of=/dev/vdb 2>/dev/null; sync; echo "WROTE""-$T"; fi
`

func applyManifest(t *testing.T, dir, name, manifest string) {
	t.Helper()
	file := filepath.Join(dir, name+".yaml")
	if err := os.WriteFile(file, []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	mustKubectl(t, "apply", "-f", file)
}

// vmiLog waits until the running VMI's console shows marker and returns the console.
func vmiLog(t *testing.T, vmi *v1alpha1.VirtualMachineInstance, marker string) string {
	t.Helper()
	var out string
	eventually(t, 4*time.Minute, vmi.Name+" console shows "+marker, func() (bool, error) {
		var err error
		out, err = kubectl(t, "logs", vmi.Status.LauncherPod, "-c", "compute")
		return strings.Contains(out, marker), err
	})
	return out
}

// failedEvent returns the message of the "VMI failed" event of a VMI, by its UID.
func failedEvent(t *testing.T, uid string) string {
	t.Helper()
	var msg string
	eventually(t, time.Minute, "the VMI's failure event", func() (bool, error) {
		out, err := kubectl(t, "get", "events", "--field-selector", "involvedObject.uid="+uid, "-o", "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}")
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "VMI failed") {
				msg = l
				return true, nil
			}
		}
		return false, err
	})
	return msg
}

// TestChaosQEMUKilled kills QEMU inside running launchers: the VMI goes Failed; VMs with
// Always and RerunOnFailure get a new VMI, and the Always one finds on its DataVolume what the
// first boot wrote; a Manual VM stays down.
func TestChaosQEMUKilled(t *testing.T) {
	const drill = "qemu-kill"
	dir := t.TempDir()
	drillVMs(t, drill)
	token := fmt.Sprintf("tok%d", time.Now().UnixNano())
	applyManifest(t, dir, "qk-always", fmt.Sprintf(chaosDataVM, "qk-always", drill, "Always", token))
	applyChaosVM(t, dir, "qk-rerun", drill, "RerunOnFailure")
	applyChaosVM(t, dir, "qk-manual", drill, "Manual")
	mustSlimctl(t, "start", "qk-manual")

	first := map[string]*v1alpha1.VirtualMachineInstance{}
	for _, name := range []string{"qk-always", "qk-rerun", "qk-manual"} {
		first[name] = waitVMIRunning(t, "default", name, "")
	}
	vmiLog(t, first["qk-always"], "WROTE-"+token)
	for name, vmi := range first {
		if killIn(t, "default", vmi.Status.LauncherPod, "compute", "qemu") != 1 {
			t.Fatalf("%s: no QEMU process killed", name)
		}
	}
	for name, vmi := range first {
		if msg := failedEvent(t, string(vmi.UID)); msg == "" {
			t.Errorf("%s: no failure reported", name)
		} else {
			t.Logf("%s: %s", name, msg)
		}
	}
	again := waitVMIRunning(t, "default", "qk-always", string(first["qk-always"].UID))
	vmiLog(t, again, "FOUND-"+token)
	waitVMIRunning(t, "default", "qk-rerun", string(first["qk-rerun"].UID))
	// Manual: the failed VMI stays, and no new one is made.
	time.Sleep(15 * time.Second)
	vmi, err := getVMI(t, "default", "qk-manual")
	if err != nil || vmi.UID != first["qk-manual"].UID || vmi.Status.Phase != v1alpha1.Failed {
		t.Errorf("Manual VM: VMI %v phase %s (err %v), want the first VMI, Failed", vmi.UID, vmi.Status.Phase, err)
	}
	t.Logf("QEMU killed: Always and RerunOnFailure restarted (Always found its token), Manual stayed down")
}

// TestChaosLibvirtdKilled kills libvirtd inside a running launcher: the launcher ends the VM
// and says libvirtd died; the VM (Always) gets a new VMI.
func TestChaosLibvirtdKilled(t *testing.T) {
	const drill = "libvirtd-kill"
	dir := t.TempDir()
	drillVMs(t, drill)
	applyChaosVM(t, dir, "lk-always", drill, "Always")
	vmi := waitVMIRunning(t, "default", "lk-always", "")
	if killIn(t, "default", vmi.Status.LauncherPod, "compute", "libvirtd") != 1 {
		t.Fatal("no libvirtd process killed")
	}
	msg := failedEvent(t, string(vmi.UID))
	if !strings.Contains(msg, "libvirtd") {
		t.Errorf("the failure does not name libvirtd: %q", msg)
	}
	t.Logf("reported: %s", msg)
	waitVMIRunning(t, "default", "lk-always", string(vmi.UID))
}

// TestChaosNodeAgentKilled kills every container of the node agent's pod while a VM runs: QEMU
// keeps running (same PID), the VMI stays Running, and once the agent is back it reports what
// happened meanwhile (the guest was paused), and its device plugins and CNI chaining work
// again: a second VM boots.
func TestChaosNodeAgentKilled(t *testing.T) {
	const drill = "node-agent-kill"
	dir := t.TempDir()
	drillVMs(t, drill)
	applyChaosVM(t, dir, "na-1", drill, "Always")
	vmi := waitVMIRunning(t, "default", "na-1", "")
	qemu := qemuPID(t, vmi)
	node := componentPod(t, "node")
	for _, c := range node.Spec.Containers {
		if killIn(t, "slimvirt", node.Name, c.Name, "") != 1 {
			t.Fatalf("node agent container %s: nothing killed", c.Name)
		}
	}
	// The guest is paused while the agent is down (through the launcher itself: slimctl's
	// power actions go through the agent): the agent reports it when it is back.
	mustKubectl(t, "-n", "default", "exec", vmi.Status.LauncherPod, "-c", "compute", "--", "/usr/bin/slimvirt-launcher", "ctl", "pause")
	eventually(t, 2*time.Minute, "node agent containers restarted and ready", func() (bool, error) {
		cur := componentPod(t, "node")
		for _, c := range cur.Spec.Containers {
			if restarts(cur, c.Name) <= restarts(node, c.Name) {
				return false, nil
			}
		}
		for _, s := range cur.Status.ContainerStatuses {
			if !s.Ready {
				return false, nil
			}
		}
		return true, nil
	})
	waitPaused(t, "default", "na-1", true)
	mustSlimctl(t, "unpause", "vmi", "na-1")
	waitPaused(t, "default", "na-1", false)
	assertSurvived(t, vmi, qemu)
	applyChaosVM(t, dir, "na-2", drill, "Always")
	second := waitVMIRunning(t, "default", "na-2", "")
	vmiLog(t, second, "SLIMVIRT-GUEST-UP")
	assertSurvived(t, vmi, qemu)
	t.Logf("QEMU pid %d kept running through the node agent's restart; a new VM booted after it", qemu)
}

// drillVMs removes the drill's VMs a killed earlier run left, and removes this run's at the end.
func drillVMs(t *testing.T, drill string) {
	t.Helper()
	del := func() { _, _ = kubectl(t, "delete", "vm", "-l", "drill="+drill, "--wait=true", "--timeout=180s") }
	del()
	t.Cleanup(del)
}

// assertSurvived checks that a VMI's QEMU is still the process it was and the VMI is still the
// same one, Running.
func assertSurvived(t *testing.T, vmi *v1alpha1.VirtualMachineInstance, qemu int) {
	t.Helper()
	if err := syscall.Kill(qemu, 0); err != nil {
		t.Fatalf("QEMU (pid %d) of %s did not survive: %v", qemu, vmi.Name, err)
	}
	if now, err := getVMI(t, vmi.Namespace, vmi.Name); err != nil || now.UID != vmi.UID || now.Status.Phase != v1alpha1.Running {
		t.Fatalf("VMI %s did not stay Running: %v", vmi.Name, err)
	}
	if qemuPID(t, vmi) != qemu {
		t.Fatalf("the QEMU of %s changed", vmi.Name)
	}
}

func qemuPID(t *testing.T, vmi *v1alpha1.VirtualMachineInstance) int {
	t.Helper()
	for _, pid := range containerPIDs(t, "default", vmi.Status.LauncherPod, "compute") {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil && strings.HasPrefix(string(b), "qemu") {
			return pid
		}
	}
	t.Fatalf("no QEMU in %s", vmi.Status.LauncherPod)
	return 0
}

// TestChaosNodeRuntimeRestarted restarts containerd and then the kubelet (SIGTERM and start
// again, as a node's service manager does) while a VM runs: QEMU keeps its PID, the VMI stays
// Running, and the cluster still starts VMs.
func TestChaosNodeRuntimeRestarted(t *testing.T) {
	const drill = "runtime-restart"
	dir := t.TempDir()
	drillVMs(t, drill)
	applyChaosVM(t, dir, "rr-1", drill, "Always")
	vmi := waitVMIRunning(t, "default", "rr-1", "")
	qemu := qemuPID(t, vmi)
	for _, c := range []string{"containerd", "kubelet"} {
		if out, err := exec.Command("bash", "../cluster/restart.sh", c).CombinedOutput(); err != nil {
			t.Fatalf("restart %s: %v\n%s", c, err, out)
		}
	}
	time.Sleep(10 * time.Second)
	assertSurvived(t, vmi, qemu)
	applyChaosVM(t, dir, "rr-2", drill, "Always")
	vmiLog(t, waitVMIRunning(t, "default", "rr-2", ""), "SLIMVIRT-GUEST-UP")
	assertSurvived(t, vmi, qemu)
}

// leftovers lists what remains of a VM named name: the VM, its VMI, launcher pods, DataVolumes,
// PVCs and their PVs.
func leftovers(t *testing.T, name string) []string {
	t.Helper()
	var left []string
	for _, kind := range []string{"vm", "vmi", "datavolume", "pvc"} {
		out, _ := kubectl(t, "get", kind, "-o", "name")
		for _, l := range strings.Fields(out) {
			if strings.HasSuffix(l, "/"+name) || strings.Contains(l, "/"+name+"-") {
				left = append(left, l)
			}
		}
	}
	if launcherPods(t, "default", name) > 0 {
		left = append(left, "launcher pod of "+name)
	}
	out, _ := kubectl(t, "get", "pv", "-o", "jsonpath={range .items[*]}{.spec.claimRef.namespace}/{.spec.claimRef.name}{\"\\n\"}{end}")
	for _, l := range strings.Fields(out) {
		if strings.HasPrefix(l, "default/"+name+"-") {
			left = append(left, "pv of "+l)
		}
	}
	return left
}

// TestChaosDeleteVMMidway deletes VMs while their DataVolume imports, while their VMI starts and
// while they stop: everything each made is removed.
func TestChaosDeleteVMMidway(t *testing.T) {
	const drill = "delete-midway"
	dir := t.TempDir()
	url, sum := guestServer(t)
	importing := fmt.Sprintf(`apiVersion: slimvirt.io/v1alpha1
kind: VirtualMachine
metadata: {name: dm-importing, labels: {drill: %s}}
spec:
  runStrategy: Always
  dataVolumeTemplates:
  - metadata: {name: dm-importing-root}
    spec:
      source: {http: {url: "%s", checksum: "sha256:%s"}}
      storage: {resources: {requests: {storage: 128Mi}}}
  template:
    metadata: {labels: {drill: %s}}
    spec:
      domain:
        resources: {requests: {memory: 96Mi}}
        devices: {disks: [{name: root, disk: {bus: virtio}}]}
      volumes: [{name: root, dataVolume: {name: dm-importing-root}}]
`, drill, url, sum, drill)
	t.Cleanup(func() { _, _ = kubectl(t, "delete", "vm", "-l", "drill="+drill, "--wait=true", "--timeout=180s") })

	applyManifest(t, dir, "dm-importing", importing)
	eventually(t, time.Minute, "the import to start", func() (bool, error) {
		out, err := kubectl(t, "get", "datavolume", "dm-importing-root", "-o", "jsonpath={.status.phase}")
		return out != "" && out != "Succeeded", err
	})
	mustKubectl(t, "delete", "vm", "dm-importing", "--wait=false")

	applyChaosVM(t, dir, "dm-starting", drill, "Always")
	eventually(t, time.Minute, "a launcher pod to exist", func() (bool, error) {
		return launcherPods(t, "default", "dm-starting") > 0, nil
	})
	mustKubectl(t, "delete", "vm", "dm-starting", "--wait=false")

	applyChaosVM(t, dir, "dm-stopping", drill, "Always")
	waitVMIRunning(t, "default", "dm-stopping", "")
	mustSlimctl(t, "stop", "dm-stopping")
	mustKubectl(t, "delete", "vm", "dm-stopping", "--wait=false")

	for _, name := range []string{"dm-importing", "dm-starting", "dm-stopping"} {
		eventually(t, 3*time.Minute, "nothing left of "+name, func() (bool, error) {
			left := leftovers(t, name)
			return len(left) == 0, fmt.Errorf("left: %v", left)
		})
	}
}
