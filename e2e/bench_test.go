//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/bench/series"
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

// startTimes creates VMIs with create and measures, from the moment create begins, the time each takes to reach
// phase Running and for its guest to print the lease marker (both in the order of names). Running comes from one
// watch of the VMIs, set up before create; the marker's time is the container runtime's timestamp of
// that log line, read once the VMIs run. Nothing polls or streams while they start, so the
// measurement does not load the machine it measures (KubeVirt's density test reads the VMIs'
// own transition times for the same reason).
func startTimes(t *testing.T, names []string, create func()) (running, lease []time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	ctrllog.SetLogger(logr.Discard())
	wc, err := client.NewWithWatch(cluster.config, client.Options{Scheme: cluster.client.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	newWatch := func() watch.Interface {
		w, err := wc.Watch(ctx, &v1alpha1.VirtualMachineInstanceList{}, client.InNamespace("default"), client.MatchingLabels{"bench": "start-latency"})
		if err != nil {
			t.Fatalf("watch VMIs: %v", err)
		}
		return w
	}
	w := newWatch()
	defer func() { w.Stop() }()
	start := time.Now()
	create()
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	pods, runningAt := map[string]string{}, map[string]time.Duration{}
	for len(want) > 0 {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				// The API server may end a watch at any time; a new one lists the VMIs again.
				w = newWatch()
				continue
			}
			vmi, isVMI := ev.Object.(*v1alpha1.VirtualMachineInstance)
			if !isVMI || !want[vmi.Name] || vmi.Status.Phase != v1alpha1.Running {
				continue
			}
			runningAt[vmi.Name] = time.Since(start)
			delete(want, vmi.Name)
			pods[vmi.Name] = vmi.Status.LauncherPod
		case <-ctx.Done():
			t.Fatalf("VMIs not Running: %v", want)
		}
	}
	cs := kubernetes.NewForConfigOrDie(cluster.config)
	for _, name := range names {
		at, err := markerTime(ctx, cs, pods[name])
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		running = append(running, runningAt[name])
		lease = append(lease, at.Sub(start))
	}
	return running, lease
}

// markerTime waits for the guest's lease marker in the compute container's log and returns
// the time the container runtime stamped on that line.
func markerTime(ctx context.Context, cs kubernetes.Interface, pod string) (time.Time, error) {
	var last error
	for {
		out, err := cs.CoreV1().Pods("default").GetLogs(pod, &corev1.PodLogOptions{Container: "compute", Timestamps: true}).DoRaw(ctx)
		if err == nil {
			for _, line := range strings.Split(string(out), "\n") {
				if stamp, text, ok := strings.Cut(line, " "); ok && strings.Contains(text, "SLIMVIRT-GUEST-UP") {
					return time.Parse(time.RFC3339Nano, stamp)
				}
			}
		}
		last = err
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("no lease marker in %s's log: %w", pod, errors.Join(ctx.Err(), last))
		case <-time.After(3 * time.Second):
		}
	}
}

// settle waits until this machine (the local cluster's node) has been at least 85% idle for
// two seconds, at most a minute: a VMI deleted just before is gone from the API before the
// kubelet and containerd have finished cleaning up after it, and that work must not count
// against the next start.
func settle(t *testing.T) {
	t.Helper()
	busy := func() (used, all uint64) {
		b, err := os.ReadFile("/proc/stat")
		if err != nil {
			t.Fatal(err)
		}
		f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])[1:]
		for i, v := range f {
			n, _ := strconv.ParseUint(v, 10, 64)
			all += n
			if i != 3 && i != 4 { // idle, iowait
				used += n
			}
		}
		return used, all
	}
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		u0, a0 := busy()
		time.Sleep(2 * time.Second)
		u1, a1 := busy()
		if a1 > a0 && float64(u1-u0)/float64(a1-a0) <= 0.15 {
			return
		}
	}
	t.Log("the node did not settle within a minute; measuring anyway")
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
	var perVMI []series.StartLatency
	for i := 0; i < singles; i++ {
		name := fmt.Sprintf("bench-single-%d", i)
		settle(t)
		var file string
		r, l := startTimes(t, []string{name}, func() { file = applyBenchVMI(t, dir, name) })
		sRun, sLease = append(sRun, r...), append(sLease, l...)
		perVMI = append(perVMI, series.StartLatency{Shape: series.ShapeSingle, Together: 1, VMI: name, Running: r[0], Lease: l[0]})
		mustKubectl(t, "delete", "-f", file, "--wait=true", "--timeout=120s")
	}
	// The batch is one kubectl apply of ten VMIs, as a user creates them together; each is
	// timed from the start of that apply.
	var docs, names []string
	for i := 0; i < batch; i++ {
		names = append(names, fmt.Sprintf("bench-batch-%d", i))
		docs = append(docs, fmt.Sprintf(benchVMI, names[i]))
	}
	batchFile := filepath.Join(dir, "batch.yaml")
	if err := os.WriteFile(batchFile, []byte(strings.Join(docs, "---\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	settle(t)
	bRun, bLease := startTimes(t, names, func() { mustKubectl(t, "apply", "-f", batchFile) })
	for i, name := range names {
		perVMI = append(perVMI, series.StartLatency{Shape: series.ShapeBatch, Together: batch, VMI: name, Running: bRun[i], Lease: bLease[i]})
	}
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
	// Every VMI's times, for the plot of their distribution.
	writeSeries(t, series.StartLatencyFile, func(path string) error { return series.WriteStartLatency(path, perVMI) })
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
