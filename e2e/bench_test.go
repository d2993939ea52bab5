//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
)

// benchVMI is the example VMI without cloud-init: a containerDisk guest on the pod network.
const benchVMI = `apiVersion: slimvirt.io/v1alpha1
kind: VirtualMachineInstance
metadata:
  name: %s
  labels: {bench: start-latency}
spec:
  domain:
    resources: {requests: {memory: 128Mi}}
    devices:
      disks:
      - {name: containerdisk, disk: {bus: virtio}}
  volumes:
  - name: containerdisk
    containerDisk: {image: slimvirt.io/guest:dev, imagePullPolicy: IfNotPresent}
`

// startTimes waits for a VMI created at start to reach Running and its guest to print the
// lease marker. Both are read in-process (no kubectl per poll), so ten waiters do not load
// the machine they measure.
func startTimes(t *testing.T, name string, start time.Time) (running, lease time.Duration) {
	t.Helper()
	vmi := waitVMIRunning(t, "default", name, "")
	running = time.Since(start)
	cs := kubernetes.NewForConfigOrDie(cluster.config)
	deadline := time.Now().Add(5 * time.Minute)
	for {
		out, err := cs.CoreV1().Pods("default").GetLogs(vmi.Status.LauncherPod, &corev1.PodLogOptions{Container: "compute"}).DoRaw(context.Background())
		if err == nil && strings.Contains(string(out), "SLIMVIRT-GUEST-UP") {
			return running, time.Since(start)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no lease marker after 5m (last error: %v)", name, err)
		}
		time.Sleep(time.Second)
	}
}

func applyBenchVMI(t *testing.T, dir, name string) string {
	t.Helper()
	file := filepath.Join(dir, name+".yaml")
	if err := os.WriteFile(file, []byte(fmt.Sprintf(benchVMI, name)), 0o644); err != nil {
		t.Fatal(err)
	}
	mustKubectl(t, "apply", "-f", file)
	return file
}

// TestBenchStartLatency measures kubectl apply -> Running and -> guest DHCP lease for single
// VMIs one after another and for a batch created together (make bench-start).
func TestBenchStartLatency(t *testing.T) {
	if os.Getenv("SLIMVIRT_BENCH") == "" {
		t.Skip("set SLIMVIRT_BENCH=1 (make bench-start)")
	}
	singles, batch := 20, 10
	if v, err := strconv.Atoi(os.Getenv("SLIMVIRT_BENCH_SINGLES")); err == nil {
		singles = v // fewer single VMIs for a quick look; the table says how many
	}
	dir := t.TempDir()
	_, _ = kubectl(t, "delete", "vmi", "-l", "bench=start-latency", "--wait=true")
	var sRun, sLease []time.Duration
	for i := 0; i < singles; i++ {
		name := fmt.Sprintf("bench-single-%d", i)
		start := time.Now()
		file := applyBenchVMI(t, dir, name)
		r, l := startTimes(t, name, start)
		sRun, sLease = append(sRun, r), append(sLease, l)
		mustKubectl(t, "delete", "-f", file, "--wait=true", "--timeout=120s")
	}
	// The batch is one kubectl apply of ten VMIs, as a user creates them together; each is
	// timed from the start of that apply.
	var docs []string
	for i := 0; i < batch; i++ {
		docs = append(docs, fmt.Sprintf(benchVMI, fmt.Sprintf("bench-batch-%d", i)))
	}
	batchFile := filepath.Join(dir, "batch.yaml")
	if err := os.WriteFile(batchFile, []byte(strings.Join(docs, "---\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var bRun, bLease []time.Duration
	var wg sync.WaitGroup
	start := time.Now()
	mustKubectl(t, "apply", "-f", batchFile)
	for i := 0; i < batch; i++ {
		name := fmt.Sprintf("bench-batch-%d", i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, l := startTimes(t, name, start)
			mu.Lock()
			bRun, bLease = append(bRun, r), append(bLease, l)
			mu.Unlock()
		}()
	}
	wg.Wait()
	_, _ = kubectl(t, "delete", "vmi", "-l", "bench=start-latency", "--wait=true", "--timeout=180s")

	table := fmt.Sprintf(`| start latency (this machine: 2 cores, QEMU TCG) | n | Running P50 | Running P95 | lease P50 | lease P95 |
|---|---|---|---|---|---|
| single VMIs, one after another | %d | %s | %s | %s | %s |
| batch created together | %d | %s | %s | %s | %s |
| KubeVirt density test, 100 VMIs 100 ms apart (PR #14876; KVM) | 100 | 22.6 s | 29.7 s | - | - |
`, singles, pct(sRun, 50), pct(sRun, 95), pct(sLease, 50), pct(sLease, 95),
		batch, pct(bRun, 50), pct(bRun, 95), pct(bLease, 50), pct(bLease, 95))
	fmt.Print(table)
	if err := os.MkdirAll("../bench/results", 0o755); err == nil {
		_ = os.WriteFile("../bench/results/start-latency.md", []byte(table), 0o644)
	}
}

func pct(ds []time.Duration, p int) string {
	if len(ds) == 0 {
		return "-"
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := (p*len(s) + 99) / 100
	if i > 0 {
		i--
	}
	return fmt.Sprintf("%.1f s", s[i].Seconds())
}
