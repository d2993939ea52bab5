//go:build e2e

package e2e

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestStorageOnlineExpansion grows the PVC under a running VM's data disk: the guest sees the
// new size without a restart (the same boot, the same launcher pod), as KubeVirt's users
// expect of a PVC whose StorageClass allows expansion.
func TestStorageOnlineExpansion(t *testing.T) {
	storageNamespace(t)
	blankDV(t, "grow", "64Mi")
	// The guest prints the data disk's size in sectors every second; the console echoes the
	// script, so the marker is built at run time.
	script := "#!/bin/sh\n(while :; do echo \"SIZE\"\"-$(cat /sys/block/vdb/size)-\"; sleep 1; done) &\n"
	ud := "cloudInitNoCloud:\n      userData: |\n" + indent(script, "        ")
	manifest := vmiYAML("vm-grow", "containerdisk=containerDisk: {image: slimvirt.io/guest:dev, imagePullPolicy: IfNotPresent}",
		"datadisk=dataVolume: {name: grow}", "cloudinitdisk="+ud)
	log := bootVMI(t, "vm-grow", manifest)
	vmi, err := getVMI(t, storageNS, "vm-grow")
	if err != nil {
		t.Fatal(err)
	}
	pod := vmi.Status.LauncherPod
	sizes := regexp.MustCompile(`SIZE-(\d+)-`)
	last := func(log string) int64 {
		m := sizes.FindAllStringSubmatch(log, -1)
		if len(m) == 0 {
			return -1
		}
		n, _ := strconv.ParseInt(m[len(m)-1][1], 10, 64)
		return n
	}
	eventually(t, time.Minute, "the guest's first size report", func() (bool, error) {
		out, err := kubectl(t, "-n", storageNS, "logs", pod, "-c", "compute")
		log = out
		return last(out) > 0, err
	})
	before := last(log)
	if before*512 > 64<<20 {
		t.Fatalf("the guest sees %d bytes of a 64Mi volume", before*512)
	}

	start := time.Now()
	mustKubectl(t, "-n", storageNS, "patch", "pvc", "grow", "--type=merge", "-p", `{"spec":{"resources":{"requests":{"storage":"128Mi"}}}}`)
	var after int64
	eventually(t, 2*time.Minute, "the guest sees its data disk grow to 128Mi", func() (bool, error) {
		out, err := kubectl(t, "-n", storageNS, "logs", pod, "-c", "compute")
		log = out
		after = last(out)
		return after*512 == 128<<20, fmt.Errorf("the guest sees %d sectors: %w", after, err)
	})
	t.Logf("the guest saw its data disk grow from %d to %d bytes %s after the PVC was patched", before*512, after*512, time.Since(start).Round(100*time.Millisecond))
	if n := strings.Count(log, "SLIMVIRT-GUEST-UP"); n != 1 {
		t.Errorf("the guest booted %d times, want once: the disk grew under a running guest", n)
	}
	out := mustKubectl(t, "-n", storageNS, "get", "pod", pod, "-o", `jsonpath={.status.containerStatuses[?(@.name=="compute")].restartCount}`)
	if strings.TrimSpace(out) != "0" {
		t.Errorf("launcher pod %s's compute container restarted %s times", pod, out)
	}
}
