//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/bench/series"
)

// Cost benchmarks on the local cluster (make bench-cost): what a VM costs besides its RAM, what
// the control plane costs with and without VMs, and how many small VMs fit on this machine.

const mib = 1 << 20

// costVMI is a containerDisk guest on the pod network with memMi of RAM.
const costVMI = `apiVersion: slimvirt.io/v1alpha1
kind: VirtualMachineInstance
metadata:
  name: %s
  labels: {bench: %s}
spec:
  domain:
    resources: {requests: {memory: %dMi}}
    devices:
      disks:
      - {name: containerdisk, disk: {bus: virtio}}
  volumes:
  - name: containerdisk
    containerDisk: {image: slimvirt.io/guest:dev, imagePullPolicy: IfNotPresent}
`

func benchGate(t *testing.T) {
	t.Helper()
	if os.Getenv("SLIMVIRT_BENCH") == "" {
		t.Skip("set SLIMVIRT_BENCH=1 (make bench-cost)")
	}
}

func applyCostVMI(t *testing.T, dir, name, label string, memMi int) {
	t.Helper()
	applyManifest(t, dir, name, fmt.Sprintf(costVMI, name, label, memMi))
}

// podCgroup is the pod's cgroup directory in a v1 hierarchy (the local cluster's kubelet uses
// cgroupfs under /slimvirt/kubepods).
func podCgroup(t *testing.T, hierarchy string, p *corev1.Pod) string {
	t.Helper()
	root := readClusterEnv("/var/lib/slimvirt-cluster/cluster.env")["CGROUP_ROOT"]
	if root == "" {
		root = "/slimvirt"
	}
	qos := ""
	switch p.Status.QOSClass {
	case corev1.PodQOSBurstable:
		qos = "burstable"
	case corev1.PodQOSBestEffort:
		qos = "besteffort"
	}
	for _, base := range []string{filepath.Join("/sys/fs/cgroup", hierarchy), "/sys/fs/cgroup"} {
		dir := filepath.Join(base, root, "kubepods", qos, "pod"+string(p.UID))
		if _, err := os.Stat(dir); err == nil {
			return dir
		}
	}
	t.Fatalf("no %s cgroup for pod %s", hierarchy, p.Name)
	return ""
}

func readInt(t *testing.T, path string) int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return v
}

// workingSet is the kubelet's figure for a pod's memory: usage less inactive file pages.
func workingSet(t *testing.T, p *corev1.Pod) int64 {
	t.Helper()
	dir := podCgroup(t, "memory", p)
	usage := readInt(t, filepath.Join(dir, "memory.usage_in_bytes"))
	stat, err := os.ReadFile(filepath.Join(dir, "memory.stat"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(stat), "\n") {
		if v, ok := strings.CutPrefix(l, "total_inactive_file "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return usage - n
		}
	}
	return usage
}

// cpuSeconds is the CPU time a pod's processes have used.
func cpuSeconds(t *testing.T, p *corev1.Pod) float64 {
	t.Helper()
	return float64(readInt(t, filepath.Join(podCgroup(t, "cpuacct", p), "cpuacct.usage"))) / 1e9
}

// memByComm sums the RSS and the PSS (shared pages divided among their users, so the sum over
// processes counts them once) of a container's processes by command name ("qemu" for QEMU).
func memByComm(t *testing.T, ns, pod, container string) (rss, pss map[string]int64) {
	t.Helper()
	rss, pss = map[string]int64{}, map[string]int64{}
	field := func(path, key string) int64 {
		b, err := os.ReadFile(path)
		if err != nil {
			return 0
		}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, key); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				return kb * 1024
			}
		}
		return 0
	}
	for _, pid := range containerPIDs(t, ns, pod, container) {
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil {
			continue
		}
		name := strings.TrimSpace(string(comm))
		if strings.HasPrefix(name, "qemu") {
			name = "qemu"
		}
		rss[name] += field(fmt.Sprintf("/proc/%d/status", pid), "VmRSS:")
		pss[name] += field(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss:")
	}
	return rss, pss
}

func getPod(t *testing.T, ns, name string) *corev1.Pod {
	t.Helper()
	p := &corev1.Pod{}
	if err := cluster.client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, p); err != nil {
		t.Fatal(err)
	}
	return p
}

func writeResult(t *testing.T, name, table string) {
	t.Helper()
	fmt.Print(table)
	if err := os.MkdirAll("../bench/results", 0o755); err == nil {
		_ = os.WriteFile(filepath.Join("../bench/results", name), []byte(table), 0o644)
	}
}

func mibs(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/mib) }

// TestBenchOverhead measures one 128 MiB VMI's launcher pod once the guest is up and idle: the
// pod's working set (cgroup) less the guest's RAM, and the RSS of the launcher's own processes
// (slimvirt-launcher and libvirtd) and of QEMU.
func TestBenchOverhead(t *testing.T) {
	benchGate(t)
	const guestMi = 128
	dir := t.TempDir()
	_, _ = kubectl(t, "delete", "vmi", "-l", "bench=overhead", "--wait=true")
	applyCostVMI(t, dir, "bench-overhead", "overhead", guestMi)
	t.Cleanup(func() { _, _ = kubectl(t, "delete", "vmi", "-l", "bench=overhead", "--wait=true", "--timeout=120s") })
	vmi := waitVMIRunning(t, "default", "bench-overhead", "")
	vmiLog(t, vmi, "SLIMVIRT-GUEST-UP")
	time.Sleep(15 * time.Second) // let the guest settle
	pod := getPod(t, "default", vmi.Status.LauncherPod)
	ws := workingSet(t, pod)
	rss, pss := memByComm(t, "default", pod.Name, "compute")
	ownPSS := pss["slimvirt-launch"] + pss["libvirtd"]
	// The pod's request: the compute container's and the containerDisk copier's.
	req := resource.Quantity{}
	for _, c := range pod.Spec.Containers {
		req.Add(c.Resources.Requests[corev1.ResourceMemory])
	}
	copierRSS, _ := memByComm(t, "default", pod.Name, "container-disk-containerdisk")
	running := vmisRunning(t)
	table := fmt.Sprintf(`| per-VM overhead, %d MiB guest, idle after boot (this machine: QEMU TCG) | slimvirt | KubeVirt |
|---|---|---|
| launcher pod working set (cgroup) | %s | - |
| working set less guest RAM (includes QEMU's own overhead) | %s | 240 MiB reserved per VM besides guest RAM |
| launcher's own processes, PSS (slimvirt-launcher + libvirtd) | %s (%s + %s) | reserve for the same processes: 190 MiB |
| launcher's own processes, RSS (shared libraries counted in each) | %s (%s + %s) | 115-230 MiB measured in user reports |
| QEMU PSS (guest RAM it touched + QEMU's own) | %s | - |
| containerDisk copier, RSS (it sleeps once the disk is copied) | %s | - |
| pod memory request (guest + --launcher-memory-overhead + the copier's 8Mi) | %s | guest + ~240 MiB |
`, guestMi, mibs(ws), mibs(ws-guestMi*mib), mibs(ownPSS), mibs(pss["slimvirt-launch"]), mibs(pss["libvirtd"]),
		mibs(rss["slimvirt-launch"]+rss["libvirtd"]), mibs(rss["slimvirt-launch"]), mibs(rss["libvirtd"]), mibs(pss["qemu"]),
		mibs(copierRSS["slimvirt-diskco"]), req.String())
	writeResult(t, "overhead.md", table)
	writeSeries(t, series.VMMemoryFile, func(path string) error {
		return series.WriteVMMemory(path, []series.VMMemory{{Running: running, VMI: vmi.Name, Guest: guestMi * mib,
			WorkingSet: ws, LauncherPSS: ownPSS, QEMUPSS: pss["qemu"]}})
	})
}

// vmisRunning counts the VMIs in phase Running on the cluster, whoever made them.
func vmisRunning(t *testing.T) int {
	t.Helper()
	list := &v1alpha1.VirtualMachineInstanceList{}
	if err := cluster.client.List(context.Background(), list); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, v := range list.Items {
		if v.Status.Phase == v1alpha1.Running {
			n++
		}
	}
	return n
}

// writeSeries writes a raw series file beside the tables, for the plots.
func writeSeries(t *testing.T, name string, write func(path string) error) {
	t.Helper()
	if err := write(filepath.Join("../bench/results", name)); err != nil {
		t.Error(err)
	}
}

// componentCost is a component pod's CPU use over a window and its working set at the end.
func componentCost(t *testing.T, component string, window time.Duration) (cores float64, ws int64) {
	t.Helper()
	p := componentPod(t, component)
	c0 := cpuSeconds(t, &p)
	time.Sleep(window)
	p2 := componentPod(t, component)
	return (cpuSeconds(t, &p2) - c0) / window.Seconds(), workingSet(t, &p2)
}

// TestBenchControlPlane measures the controller's and the node agent's CPU (mean over a minute)
// and working set with no VMI and with 20 VMIs running.
func TestBenchControlPlane(t *testing.T) {
	benchGate(t)
	const n = 20
	window := time.Minute
	dir := t.TempDir()
	_, _ = kubectl(t, "delete", "vmi", "-l", "bench=control-plane", "--wait=true", "--timeout=180s")
	t.Cleanup(func() {
		_, _ = kubectl(t, "delete", "vmi", "-l", "bench=control-plane", "--wait=true", "--timeout=300s")
	})
	type cost struct {
		cores float64
		ws    int64
	}
	measure := func() (ctl, node cost) {
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); ctl.cores, ctl.ws = componentCost(t, "controller", window) }()
		go func() { defer wg.Done(); node.cores, node.ws = componentCost(t, "node", window) }()
		wg.Wait()
		return ctl, node
	}
	running0 := vmisRunning(t)
	ctl0, node0 := measure()
	for i := 0; i < n; i++ {
		applyCostVMI(t, dir, fmt.Sprintf("bench-cp-%d", i), "control-plane", 64)
	}
	eventually(t, 10*time.Minute, fmt.Sprintf("%d VMIs Running", n), func() (bool, error) {
		list := &v1alpha1.VirtualMachineInstanceList{}
		if err := cluster.client.List(context.Background(), list, client.MatchingLabels{"bench": "control-plane"}); err != nil {
			return false, err
		}
		running := 0
		for _, v := range list.Items {
			if v.Status.Phase == v1alpha1.Running {
				running++
			}
		}
		return running == n, nil
	})
	time.Sleep(20 * time.Second)
	running1 := vmisRunning(t)
	ctl1, node1 := measure()
	table := fmt.Sprintf(`| control plane (this machine: 2 cores; CPU = mean over %s) | 0 VMIs | %d VMIs Running |
|---|---|---|
| controller CPU | %.3f cores | %.3f cores |
| controller working set | %s | %s |
| node agent pod CPU (CNI installer, device plugins, VMI status and metrics; CSI driver, provisioner, resizer) | %.3f cores | %.3f cores |
| node agent pod working set | %s | %s |
`, window, n, ctl0.cores, ctl1.cores, mibs(ctl0.ws), mibs(ctl1.ws), node0.cores, node1.cores, mibs(node0.ws), mibs(node1.ws))
	writeResult(t, "control-plane.md", table)
	var rows []series.ControlPlane
	for _, m := range []struct {
		running   int
		ctl, node cost
	}{{running0, ctl0, node0}, {running1, ctl1, node1}} {
		rows = append(rows,
			series.ControlPlane{Running: m.running, Component: "controller", CPU: m.ctl.cores, WorkingSet: m.ctl.ws, Window: window},
			series.ControlPlane{Running: m.running, Component: "node agent", CPU: m.node.cores, WorkingSet: m.node.ws, Window: window})
	}
	writeSeries(t, series.ControlPlaneFile, func(path string) error { return series.WriteControlPlane(path, rows) })
}

// TestBenchDensity starts 64 MiB VMIs in waves of 10 until a wave does not fully reach Running
// within 5 minutes, a VMI fails, or SLIMVIRT_DENSITY_MAX (default 60) is reached, and reports
// how many ran and what stopped it.
func TestBenchDensity(t *testing.T) {
	benchGate(t)
	maxVMIs := 60
	if v, err := strconv.Atoi(os.Getenv("SLIMVIRT_DENSITY_MAX")); err == nil && v > 0 {
		maxVMIs = v
	}
	const wave = 10
	dir := t.TempDir()
	_, _ = kubectl(t, "delete", "vmi", "-l", "bench=density", "--wait=true", "--timeout=300s")
	t.Cleanup(func() { _, _ = kubectl(t, "delete", "vmi", "-l", "bench=density", "--wait=true", "--timeout=600s") })
	ctx := context.Background()
	running, stop := 0, ""
	for made := 0; made < maxVMIs && stop == ""; {
		start := time.Now()
		for i := 0; i < wave && made < maxVMIs; i++ {
			applyCostVMI(t, dir, fmt.Sprintf("bench-density-%d", made), "density", 64)
			made++
		}
		deadline := time.Now().Add(5 * time.Minute)
		for {
			list := &v1alpha1.VirtualMachineInstanceList{}
			if err := cluster.client.List(ctx, list, client.MatchingLabels{"bench": "density"}); err != nil {
				t.Fatal(err)
			}
			running = 0
			for _, v := range list.Items {
				switch {
				case v.Status.Phase == v1alpha1.Running:
					running++
				case v.Status.Phase.IsFinal():
					stop = fmt.Sprintf("VMI %s %s: %s", v.Name, v.Status.Phase, v.Status.Reason)
				}
			}
			if running == made || stop != "" {
				break
			}
			if time.Now().After(deadline) {
				stop = fmt.Sprintf("%d of %d VMIs not Running after 5 min: %s", made-running, made, pendingReason(t))
				break
			}
			time.Sleep(2 * time.Second)
		}
		t.Logf("%d VMIs Running (wave took %.0f s)", running, time.Since(start).Seconds())
	}
	if stop == "" {
		stop = fmt.Sprintf("the cap (SLIMVIRT_DENSITY_MAX=%d); nothing failed", maxVMIs)
	}
	table := fmt.Sprintf(`| density: 64 MiB VMIs in waves of 10 (this machine: 2 cores, 24 GiB, QEMU TCG) | |
|---|---|
| VMIs Running at once | %d |
| what stopped it | %s |
`, running, stop)
	writeResult(t, "density.md", table)
}

// pendingReason says why the first launcher pod that is not running waits, from its conditions.
func pendingReason(t *testing.T) string {
	t.Helper()
	pods := &corev1.PodList{}
	if err := cluster.client.List(context.Background(), pods, client.MatchingLabels{"bench": "density"}); err != nil {
		return err.Error()
	}
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodRunning {
			continue
		}
		for _, c := range p.Status.Conditions {
			if c.Status != corev1.ConditionTrue && c.Message != "" {
				return fmt.Sprintf("pod %s: %s", p.Name, c.Message)
			}
		}
		return fmt.Sprintf("pod %s is %s", p.Name, p.Status.Phase)
	}
	return "all launcher pods run; their VMIs are not Running yet"
}
