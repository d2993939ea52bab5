//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crlog "sigs.k8s.io/controller-runtime/pkg/log"

	v1alpha1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/slimctl/command"
)

const storageNS = "e2e-storage"

// storageNamespace creates the tests' namespace and deletes it (with everything in it) when
// the test ends.
func storageNamespace(t *testing.T) {
	t.Helper()
	// A killed earlier run may have left the namespace (and an httpd); remove them first.
	killStaleHTTPD()
	_, _ = kubectl(t, "delete", "ns", storageNS, "--ignore-not-found", "--wait=true", "--timeout=180s")
	eventually(t, 3*time.Minute, "namespace "+storageNS+" free", func() (bool, error) {
		out, err := kubectl(t, "get", "ns", storageNS, "-o", "jsonpath={.status.phase}")
		if err != nil && strings.Contains(out, "NotFound") {
			return true, nil
		}
		return false, fmt.Errorf("namespace is %q", out)
	})
	mustKubectl(t, "create", "ns", storageNS)
	t.Cleanup(func() {
		_, _ = kubectl(t, "delete", "ns", storageNS, "--wait=true", "--timeout=180s")
	})
}

// applyYAML applies manifests given as text.
func applyYAML(t *testing.T, manifest string) {
	t.Helper()
	cmd := exec.Command(cluster.kubectl, "--kubeconfig", cluster.kubeconfig, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(manifest)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kubectl apply: %v\n%s\n%s", err, out, manifest)
	}
}

// waitDV waits for a DataVolume to reach phase; another final phase fails the test.
func waitDV(t *testing.T, name string, phase v1alpha1.DataVolumePhase, timeout time.Duration) *v1alpha1.DataVolume {
	t.Helper()
	dv := &v1alpha1.DataVolume{}
	eventually(t, timeout, "DataVolume "+name+" "+string(phase), func() (bool, error) {
		if err := cluster.client.Get(context.Background(), client.ObjectKey{Namespace: storageNS, Name: name}, dv); err != nil {
			return false, err
		}
		if dv.Status.Phase != phase && (dv.Status.Phase == v1alpha1.DataVolumeFailed || dv.Status.Phase == v1alpha1.DataVolumeSucceeded) {
			t.Fatalf("DataVolume %s ended %s, want %s: %+v", name, dv.Status.Phase, phase, dv.Status.Conditions)
		}
		return dv.Status.Phase == phase, fmt.Errorf("phase %q progress %q", dv.Status.Phase, dv.Status.Progress)
	})
	return dv
}

// vmiYAML is a small VMI of the test guest; disks lists "name: source yaml" pairs in order,
// the first one booting.
func vmiYAML(name string, volumes ...string) string {
	var disks, vols strings.Builder
	for i, v := range volumes {
		vname, src, _ := strings.Cut(v, "=")
		fmt.Fprintf(&disks, "      - name: %s\n        disk: {bus: virtio}\n", vname)
		if i == 0 {
			fmt.Fprintf(&disks, "        bootOrder: 1\n")
		}
		fmt.Fprintf(&vols, "  - name: %s\n    %s\n", vname, src)
	}
	return fmt.Sprintf(`apiVersion: slimvirt.io/v1alpha1
kind: VirtualMachineInstance
metadata: {name: %s, namespace: %s}
spec:
  terminationGracePeriodSeconds: 10
  domain:
    resources: {requests: {memory: 128Mi}}
    devices:
      disks:
%s      interfaces:
      - {name: default, bridge: {}}
  networks:
  - {name: default, pod: {}}
  volumes:
%s`, name, storageNS, disks.String(), vols.String())
}

// bootVMI creates the VMI, waits for it to run and for the guest's UP marker, and returns the
// launcher's compute log (the serial console).
func bootVMI(t *testing.T, name, manifest string) string {
	t.Helper()
	start := time.Now()
	applyYAML(t, manifest)
	t.Cleanup(func() { deleteVMI(t, name) })
	var vmi *v1alpha1.VirtualMachineInstance
	eventually(t, 6*time.Minute, "VMI "+name+" Running", func() (bool, error) {
		var err error
		vmi, err = getVMI(t, storageNS, name)
		if err != nil {
			return false, err
		}
		if vmi.Status.Phase.IsFinal() {
			t.Fatalf("VMI %s ended in phase %s: %s: %s", name, vmi.Status.Phase, vmi.Status.Reason, vmi.Status.Message)
		}
		return vmi.Status.Phase == v1alpha1.Running && vmi.Status.LauncherPod != "", fmt.Errorf("phase %s", vmi.Status.Phase)
	})
	var log string
	eventually(t, 4*time.Minute, "SLIMVIRT-GUEST-UP from "+name, func() (bool, error) {
		out, err := kubectl(t, "-n", storageNS, "logs", vmi.Status.LauncherPod, "-c", "compute")
		log = out
		return strings.Contains(out, "SLIMVIRT-GUEST-UP"), err
	})
	t.Logf("VMI %s: create -> guest up %.1fs", name, time.Since(start).Seconds())
	return log
}

func deleteVMI(t *testing.T, name string) {
	_, _ = kubectl(t, "-n", storageNS, "delete", "vmi", name, "--ignore-not-found", "--wait=true", "--timeout=120s")
	eventually(t, 2*time.Minute, "launcher pods of "+name+" gone", func() (bool, error) {
		out, err := kubectl(t, "-n", storageNS, "get", "pods", "-o", "name")
		return err == nil && !strings.Contains(out, name), err
	})
}

// guestImage is the test guest's qcow2 disk and its sha256.
func guestImage(t *testing.T) (string, string) {
	t.Helper()
	p, err := filepath.Abs("../_output/guest/disk.qcow2")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatalf("the test guest is needed (make guest): %v", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return p, hex.EncodeToString(h.Sum(nil))
}

// The e2e image server lives in a network namespace of its own, joined to the node's
// namespace by a veth pair on a /30: imports refuse the node's own addresses, so the server
// must be another host as far as the node can tell. The root namespace is never touched: the
// pair is made inside the node namespace and its other end moved into the server's.
const (
	imagesNetns    = "slimvirt-e2e-images"
	imagesNodeLink = "sve2e-node" // in the node namespace
	imagesLink     = "sve2e-img"  // in the image server's namespace
	imagesNodeIP   = "10.251.0.1"
	imagesIP       = "10.251.0.2"
)

// serveImages serves dir over HTTP from the image server's namespace, which it creates (and
// removes when the test ends), and returns the base URL, reachable from the node's namespace.
func serveImages(t *testing.T, dir string) string {
	t.Helper()
	nodeNetns := readClusterEnv("/var/lib/slimvirt-cluster/cluster.env")["NETNS_PATH"]
	if nodeNetns == "" {
		t.Fatal("no local cluster netns (cluster.env has no NETNS_PATH)")
	}
	removeImagesNetns(nodeNetns)
	t.Cleanup(func() { removeImagesNetns(nodeNetns) })
	imagesPath := "/var/run/netns/" + imagesNetns
	for _, args := range [][]string{
		{"ip", "netns", "add", imagesNetns},
		{"nsenter", "--net=" + nodeNetns, "ip", "link", "add", imagesNodeLink, "type", "veth", "peer", "name", imagesLink, "netns", imagesNetns},
		{"nsenter", "--net=" + nodeNetns, "ip", "addr", "add", imagesNodeIP + "/30", "dev", imagesNodeLink},
		{"nsenter", "--net=" + nodeNetns, "ip", "link", "set", imagesNodeLink, "up"},
		{"nsenter", "--net=" + imagesPath, "ip", "addr", "add", imagesIP + "/30", "dev", imagesLink},
		{"nsenter", "--net=" + imagesPath, "ip", "link", "set", imagesLink, "up"},
		{"nsenter", "--net=" + imagesPath, "ip", "link", "set", "lo", "up"},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	port := 18000 + os.Getpid()%1000
	addr := fmt.Sprintf("%s:%d", imagesIP, port)
	cmd := exec.Command("nsenter", "--net="+imagesPath, "busybox", "httpd", "-f", "-p", addr, "-h", dir)
	out := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start httpd in %s: %v", imagesPath, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// Registered after the namespace's cleanup, so it runs first.
	t.Cleanup(func() { _ = cmd.Process.Kill(); t.Logf("httpd stopped: %v", <-exited) })
	// httpd only fails to start when the port is taken; give it a moment to say so.
	select {
	case err := <-exited:
		exited <- err
		t.Fatalf("httpd on %s exited: %v %s", addr, err, out)
	case <-time.After(300 * time.Millisecond):
	}
	return "http://" + addr
}

// removeImagesNetns removes the image server's namespace (and with it both ends of the veth
// pair), and the node's end should the namespace be gone already; a killed earlier run may
// have left either. Its httpd is stopped first.
func removeImagesNetns(nodeNetns string) {
	killStaleHTTPD()
	_ = exec.Command("ip", "netns", "del", imagesNetns).Run()
	_ = exec.Command("nsenter", "--net="+nodeNetns, "ip", "link", "del", imagesNodeLink).Run()
}

// killStaleHTTPD stops the busybox httpd a killed earlier run of these tests left behind: it
// listens on the image server's address, or (older runs) serves a TestStorage temp directory.
func killStaleHTTPD() {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(data), "\x00")
		if len(args) < 2 || filepath.Base(args[0]) != "busybox" || args[1] != "httpd" ||
			!strings.Contains(string(data), imagesIP+":") && !strings.Contains(string(data), filepath.Join(os.TempDir(), "TestStorage")) {
			continue
		}
		var pid int
		if _, err := fmt.Sscanf(filepath.Base(filepath.Dir(p)), "%d", &pid); err == nil && pid != os.Getpid() {
			if proc, err := os.FindProcess(pid); err == nil {
				_ = proc.Kill()
			}
		}
	}
}

// importDV writes an http DataVolume of the guest image; immediate binds it without a consumer.
func importDV(t *testing.T, name, url, checksum string, immediate bool) {
	t.Helper()
	ann := ""
	if immediate {
		ann = `  annotations: {cdi.kubevirt.io/storage.bind.immediate.requested: "true"}` + "\n"
	}
	applyYAML(t, fmt.Sprintf(`apiVersion: slimvirt.io/v1alpha1
kind: DataVolume
metadata:
  name: %s
  namespace: %s
%sspec:
  source: {http: {url: "%s", checksum: "sha256:%s"}}
  storage: {resources: {requests: {storage: 128Mi}}}
`, name, storageNS, ann, url, checksum))
}

// guestServer copies the guest image into a fresh directory served by the image server.
func guestServer(t *testing.T) (url, sum string) {
	t.Helper()
	img, sum := guestImage(t)
	dir := t.TempDir()
	data, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "disk.qcow2"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	return serveImages(t, dir) + "/disk.qcow2", sum
}

// TestStorageHTTPImportBoots imports the guest's qcow2 over HTTP into a DataVolume, boots a
// VMI from it, and sees a wrong checksum fail the import.
func TestStorageHTTPImportBoots(t *testing.T) {
	storageNamespace(t)
	url, sum := guestServer(t)

	start := time.Now()
	importDV(t, "imported", url, sum, false)
	log := bootVMI(t, "vm-imported", vmiYAML("vm-imported", "rootdisk=dataVolume: {name: imported}"))
	dv := waitDV(t, "imported", v1alpha1.DataVolumeSucceeded, time.Minute)
	t.Logf("import + boot %.1fs, progress %s", time.Since(start).Seconds(), dv.Status.Progress)
	if !strings.Contains(log, "SLIMVIRT-GUEST-UP") {
		t.Fatal("no UP marker")
	}

	bad := strings.Repeat("0", 64)
	importDV(t, "badsum", url, bad, true)
	dv = waitDV(t, "badsum", v1alpha1.DataVolumeFailed, 3*time.Minute)
	msg := ""
	for _, c := range dv.Status.Conditions {
		msg += c.Message + " "
	}
	if !strings.Contains(msg, "checksum") {
		t.Errorf("failed DataVolume does not say checksum: %q", msg)
	}
}

// TestStorageDataSurvivesRestart writes a token to a blank DataVolume from the guest, and
// reads it back from a new VMI on the same volume.
func TestStorageDataSurvivesRestart(t *testing.T) {
	storageNamespace(t)
	blankDV(t, "data", "64Mi")
	token := fmt.Sprintf("tok%d", time.Now().UnixNano())
	// The console echoes the script, so the markers are built at run time: FOUND-<token> and
	// WROTE-<token> never appear in the script's text.
	script := `#!/bin/sh
T=` + token + `
got=$(dd if=/dev/vdb bs=1 count=${#T} 2>/dev/null)
if [ "$got" = "$T" ]; then echo "FOUND""-$T"; else printf %s "$T" | dd of=/dev/vdb 2>/dev/null; sync; echo "WROTE""-$T"; fi
`
	ud := "cloudInitNoCloud:\n      userData: |\n" + indent(script, "        ")
	manifest := vmiYAML("vm-data", "containerdisk=containerDisk: {image: slimvirt.io/guest:dev, imagePullPolicy: IfNotPresent}",
		"datadisk=dataVolume: {name: data}", "cloudinitdisk="+ud)

	log := bootVMI(t, "vm-data", manifest)
	if !strings.Contains(log, "WROTE-"+token) {
		t.Fatalf("first boot did not write the token:\n%s", tail(log))
	}
	deleteVMI(t, "vm-data")
	log = bootVMI(t, "vm-data", manifest)
	if !strings.Contains(log, "FOUND-"+token) {
		t.Fatalf("second boot did not find the token on the disk:\n%s", tail(log))
	}
}

// blankDV makes a blank DataVolume of size in the storage namespace.
func blankDV(t *testing.T, name, size string) {
	t.Helper()
	applyYAML(t, fmt.Sprintf(`apiVersion: slimvirt.io/v1alpha1
kind: DataVolume
metadata: {name: %s, namespace: %s}
spec:
  source: {blank: {}}
  storage: {resources: {requests: {storage: %s}}}
`, name, storageNS, size))
}

// TestStorageClone clones an imported DataVolume and boots from the clone.
func TestStorageClone(t *testing.T) {
	storageNamespace(t)
	url, sum := guestServer(t)
	importDV(t, "golden", url, sum, true)
	waitDV(t, "golden", v1alpha1.DataVolumeSucceeded, 3*time.Minute)
	start := time.Now()
	applyYAML(t, fmt.Sprintf(`apiVersion: slimvirt.io/v1alpha1
kind: DataVolume
metadata: {name: clone, namespace: %s}
spec:
  source: {pvc: {name: golden, namespace: %s}}
  storage: {}
`, storageNS, storageNS))
	waitDV(t, "clone", v1alpha1.DataVolumeSucceeded, 3*time.Minute)
	t.Logf("clone Succeeded after %.1fs", time.Since(start).Seconds())
	bootVMI(t, "vm-clone", vmiYAML("vm-clone", "rootdisk=dataVolume: {name: clone}"))
}

// TestStorageUpload uploads the guest image with slimctl image-upload through a port-forward
// to the upload Service, as a namespace editor, and boots from it.
func TestStorageUpload(t *testing.T) {
	// slimctl's client is made late in this process; give controller-runtime a logger so it
	// does not warn about a missing one.
	crlog.SetLogger(logr.Discard())
	storageNamespace(t)
	img, _ := guestImage(t)
	mustKubectl(t, "-n", storageNS, "create", "serviceaccount", "uploader")
	mustKubectl(t, "-n", storageNS, "create", "rolebinding", "uploader-edit", "--clusterrole=edit", "--serviceaccount="+storageNS+":uploader")
	token := strings.TrimSpace(mustKubectl(t, "-n", storageNS, "create", "token", "uploader"))

	port := portForward(t, "slimvirt", "svc/slimvirt-upload", "443")

	slimctl := func(args ...string) (string, string, error) {
		var out, errb bytes.Buffer
		root := command.New("slimctl", strings.NewReader(""), &out, &errb)
		root.SetArgs(append([]string{"--kubeconfig", cluster.kubeconfig, "-n", storageNS, "--token", token}, args...))
		err := root.ExecuteContext(context.Background())
		return out.String(), errb.String(), err
	}
	// Errors a user sees.
	if _, _, err := slimctl("image-upload", "dv", "missing", "--no-create", "--image-path", img, "--uploadproxy-url", "https://localhost:"+port); err == nil ||
		!strings.Contains(err.Error(), "DataVolume missing not found in namespace "+storageNS) {
		t.Errorf("--no-create of a missing DataVolume: %v", err)
	}
	if _, _, err := slimctl("image-upload", "dv", "x", "--size", "128Mi", "--image-path", "/nonexistent.qcow2", "--uploadproxy-url", "https://localhost:"+port); err == nil ||
		!strings.Contains(err.Error(), "image file /nonexistent.qcow2 not found") {
		t.Errorf("missing image: %v", err)
	}
	if _, _, err := slimctl("image-upload", "dv", "x", "--size", "128Mi", "--image-path", img); err == nil ||
		!strings.Contains(err.Error(), "--uploadproxy-url is needed") {
		t.Errorf("no --uploadproxy-url: %v", err)
	}

	start := time.Now()
	// localhost is in the endpoint certificate's names: the CA from the ConfigMap verifies it.
	out, stderr, err := slimctl("image-upload", "dv", "uploaded", "--size", "128Mi", "--image-path", img,
		"--uploadproxy-url", "https://localhost:"+port, "--wait-secs", "180")
	if err != nil {
		t.Fatalf("slimctl image-upload: %v\nstdout: %s\nstderr: %s", err, out, stderr)
	}
	t.Logf("image-upload %.1fs; stderr ends %q", time.Since(start).Seconds(), tail(stderr))
	if !strings.Contains(stderr, "100.00%") {
		t.Errorf("progress bar never reached 100.00%%: %q", stderr)
	}
	waitDV(t, "uploaded", v1alpha1.DataVolumeSucceeded, 10*time.Second)
	if _, _, err := slimctl("image-upload", "dv", "uploaded", "--no-create", "--image-path", img, "--uploadproxy-url", "https://localhost:"+port, "--wait-secs", "20"); err == nil ||
		!strings.Contains(err.Error(), "already holds its upload") {
		t.Errorf("second upload into a Succeeded DataVolume: %v", err)
	}
	uploadTokenRefusals(t, port, token)
	bootVMI(t, "vm-uploaded", vmiYAML("vm-uploaded", "rootdisk=dataVolume: {name: uploaded}"))
}

func indent(s, prefix string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString(prefix + l + "\n")
	}
	return b.String()
}

// portForward forwards a free local port to target's port (kubectl port-forward, stopped when
// the test ends) and returns the local port.
func portForward(t *testing.T, ns, target, remote string) string {
	t.Helper()
	pf := exec.Command(cluster.kubectl, "--kubeconfig", cluster.kubeconfig, "-n", ns, "port-forward", target, ":"+remote)
	stdout, err := pf.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	pf.Stderr = os.Stderr
	if err := pf.Start(); err != nil {
		t.Fatalf("start port-forward: %v", err)
	}
	t.Cleanup(func() { _ = pf.Process.Kill(); _ = pf.Wait() })
	ports := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`127\.0\.0\.1:(\d+) ->`)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case ports <- m[1]:
				default:
				}
			}
		}
	}()
	var port string
	select {
	case port = <-ports:
	case <-time.After(30 * time.Second):
		t.Fatal("kubectl port-forward did not say its port")
	}
	return port
}

func tail(s string) string {
	if len(s) > 3000 {
		return s[len(s)-3000:]
	}
	return s
}

// TestStorageContainerDiskWithoutDisk: a containerDisk whose path the image does not have. The
// copier container says so; the launcher, which waits for the copy, fails the VMI with that
// message instead of waiting forever.
func TestStorageContainerDiskWithoutDisk(t *testing.T) {
	storageNamespace(t)
	applyYAML(t, vmiYAML("vm-nodisk", "containerdisk=containerDisk: {image: slimvirt.io/guest:dev, imagePullPolicy: IfNotPresent, path: /no-such-disk}"))
	t.Cleanup(func() { deleteVMI(t, "vm-nodisk") })
	vmi := waitStorageVMIFailed(t, "vm-nodisk")
	if vmi.Status.Reason != "SetupFailed" || !strings.Contains(vmi.Status.Message, "/no-such-disk does not exist in the image") {
		t.Errorf("failed VMI: reason %q, message %q; want SetupFailed with the copier's message", vmi.Status.Reason, vmi.Status.Message)
	}
}

// waitStorageVMIFailed waits for the storage namespace's VMI name to fail and returns it.
func waitStorageVMIFailed(t *testing.T, name string) *v1alpha1.VirtualMachineInstance {
	t.Helper()
	var vmi *v1alpha1.VirtualMachineInstance
	eventually(t, 3*time.Minute, "VMI "+name+" Failed", func() (bool, error) {
		var err error
		vmi, err = getVMI(t, storageNS, name)
		if err != nil {
			return false, err
		}
		return vmi.Status.Phase == v1alpha1.Failed, fmt.Errorf("phase %s", vmi.Status.Phase)
	})
	return vmi
}
