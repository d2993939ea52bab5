//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// stopVMI is a guest that, when ignoreACPI is set, stops its ACPI daemon once up, so the power
// button does nothing and only the grace period ends it.
const stopVMI = `apiVersion: slimvirt.io/v1alpha1
kind: VirtualMachineInstance
metadata:
  name: %s
  labels: {bench: stop}
spec:
  terminationGracePeriodSeconds: %d
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
    cloudInitNoCloud:
      userData: |
        #!/bin/sh
        %s
        echo SLIMVIRT-STOP-READY
`

// TestBenchStop measures kubectl delete vmi -> launcher pod gone, for a guest that powers off
// on ACPI's power button and for one that ignores it (then the grace period decides), with
// KubeVirt's default grace period, 30 s.
func TestBenchStop(t *testing.T) {
	if os.Getenv("SLIMVIRT_BENCH") == "" {
		t.Skip("set SLIMVIRT_BENCH=1 (make bench-stop)")
	}
	runs := 3
	if v, err := strconv.Atoi(os.Getenv("SLIMVIRT_BENCH_STOP_RUNS")); err == nil && v > 0 {
		runs = v
	}
	const grace = 30
	dir := t.TempDir()
	_, _ = kubectl(t, "delete", "vmi", "-l", "bench=stop", "--wait=true")
	cases := []struct {
		name, script string
		times        []time.Duration
	}{
		{name: "guest powers off on ACPI", script: "true"},
		{name: "guest ignores ACPI", script: "killall acpid"},
	}
	for i := range cases {
		for r := 0; r < runs; r++ {
			name := fmt.Sprintf("bench-stop-%d-%d", i, r)
			file := filepath.Join(dir, name+".yaml")
			if err := os.WriteFile(file, []byte(fmt.Sprintf(stopVMI, name, grace, cases[i].script)), 0o644); err != nil {
				t.Fatal(err)
			}
			mustKubectl(t, "apply", "-f", file)
			pod := waitStopReady(t, name)
			settle(t)
			start := time.Now()
			mustKubectl(t, "delete", "vmi", name, "--wait=false")
			eventually(t, 3*time.Minute, "launcher pod "+pod+" gone", func() (bool, error) {
				err := cluster.client.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: pod}, &corev1.Pod{})
				return apierrors.IsNotFound(err), err
			})
			cases[i].times = append(cases[i].times, time.Since(start))
			t.Logf("%s: delete -> pod gone %.1fs", cases[i].name, time.Since(start).Seconds())
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "| stop: kubectl delete vmi -> launcher pod gone (this machine: 2 cores, QEMU TCG; terminationGracePeriodSeconds %d) | n | P50 | max |\n|---|---|---|---|\n", grace)
	for _, c := range cases {
		fmt.Fprintf(&b, "| %s | %d | %s | %s |\n", c.name, len(c.times), pct(c.times, 50), pct(c.times, 100))
	}
	fmt.Fprintf(&b, "| KubeVirt's default grace period for a VMI (a guest that ignores ACPI is killed after it) | - | 30 s | - |\n")
	fmt.Print(b.String())
	if err := os.MkdirAll("../bench/results", 0o755); err == nil {
		_ = os.WriteFile("../bench/results/stop.md", []byte(b.String()), 0o644)
	}
}

// waitStopReady waits for the guest's marker (its user-data ran) and returns the launcher pod.
func waitStopReady(t *testing.T, name string) string {
	t.Helper()
	var pod string
	eventually(t, 4*time.Minute, "VMI "+name+" guest ready", func() (bool, error) {
		vmi, err := getVMI(t, "default", name)
		if err != nil || vmi.Status.LauncherPod == "" {
			return false, err
		}
		pod = vmi.Status.LauncherPod
		out, err := kubectl(t, "logs", pod, "-c", "compute")
		// The console echoes the script; the marker alone on a line is the guest's.
		for _, l := range strings.Split(out, "\n") {
			if strings.TrimSpace(l) == "SLIMVIRT-STOP-READY" {
				return true, nil
			}
		}
		return false, err
	})
	return pod
}
