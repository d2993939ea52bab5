//go:build e2e

package e2e

import (
	"bufio"
	"context"
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

// startTimes creates VMIs with create and measures, from start, the time each takes to reach
// phase Running and for its guest to print the lease marker. Running comes from one watch of
// the VMIs, set up before create, and the marker from following each launcher's log: nothing
// polls, so the measurement does not load the machine it measures (KubeVirt's density test
// reads the VMIs' own transition times for the same reason).
func startTimes(t *testing.T, names []string, start time.Time, create func()) (running, lease []time.Duration) {
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
	create()
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	cs := kubernetes.NewForConfigOrDie(cluster.config)
	type leased struct {
		took time.Duration
		err  error
	}
	leases := make(chan leased, len(names))
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
			running = append(running, time.Since(start))
			delete(want, vmi.Name)
			go func(name, pod string) {
				took, err := followToMarker(ctx, cs, pod, start)
				if err != nil {
					err = fmt.Errorf("%s: %w", name, err)
				}
				leases <- leased{took, err}
			}(vmi.Name, vmi.Status.LauncherPod)
		case <-ctx.Done():
			t.Fatalf("VMIs not Running: %v", want)
		}
	}
	for range names {
		l := <-leases
		if l.err != nil {
			t.Fatal(l.err)
		}
		lease = append(lease, l.took)
	}
	return running, lease
}

// followToMarker follows the compute container's log until the guest's lease marker.
func followToMarker(ctx context.Context, cs kubernetes.Interface, pod string, start time.Time) (time.Duration, error) {
	var last error
	for ctx.Err() == nil {
		rc, err := cs.CoreV1().Pods("default").GetLogs(pod, &corev1.PodLogOptions{Container: "compute", Follow: true}).Stream(ctx)
		if err != nil {
			last = err
			time.Sleep(time.Second)
			continue
		}
		sc := bufio.NewScanner(rc)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "SLIMVIRT-GUEST-UP") {
				rc.Close()
				return time.Since(start), nil
			}
		}
		last = sc.Err()
		rc.Close()
	}
	return 0, fmt.Errorf("no lease marker in %s's log (last error: %v)", pod, last)
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
		var file string
		r, l := startTimes(t, []string{name}, time.Now(), func() { file = applyBenchVMI(t, dir, name) })
		sRun, sLease = append(sRun, r...), append(sLease, l...)
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
	bRun, bLease := startTimes(t, names, time.Now(), func() { mustKubectl(t, "apply", "-f", batchFile) })
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
