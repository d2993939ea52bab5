package datavolume_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/controller/datavolume"
	"github.com/slimvirt/slimvirt/controller/manager"
	"github.com/slimvirt/slimvirt/controller/uploadtokens"
	"github.com/slimvirt/slimvirt/csi/diskimg"
	"github.com/slimvirt/slimvirt/csi/driver"
	"github.com/slimvirt/slimvirt/csi/egress"
	"github.com/slimvirt/slimvirt/csi/importer"
	"github.com/slimvirt/slimvirt/csi/kube"
	"github.com/slimvirt/slimvirt/csi/kube/importsecret"
	"github.com/slimvirt/slimvirt/csi/testclean"
	"github.com/slimvirt/slimvirt/internal/testenv"
	"github.com/slimvirt/slimvirt/internal/testutil"
)

const (
	node = "node-a"
	// release is slimvirt's namespace, where the per-volume import Secrets go.
	release = "slimvirt"
)

// TestDataVolumes runs the whole storage path on a real API server: the DataVolume reconciler
// makes PVCs, the real external-provisioner (node-deployment mode, as deployed) calls
// slimvirt-csi, which imports, clones or waits for an upload and reports on the PVC, and the
// reconciler turns that into DataVolume phases. The test plays the scheduler and the kubelet:
// it selects the node for a late-binding PVC and registers the node's CSINode.
func TestDataVolumes(t *testing.T) {
	provisioner := os.Getenv("CSI_PROVISIONER")
	if provisioner == "" {
		provisioner = "/var/cache/slimvirt/csi-sidecars/csi-provisioner-v6.4.0/csi-provisioner"
	}
	if _, err := os.Stat(provisioner); err != nil {
		t.Fatalf("the external-provisioner is needed (make csi-sidecars): %v", err)
	}
	testclean.Processes("--csi-address="+os.TempDir()+"/TestDataVolumes", "--kubeconfig="+os.TempDir()+"/TestDataVolumes")
	testclean.Mounts("TestDataVolumes")
	env, err := testenv.Start("datavolume")
	testutil.Must(t, err)
	t.Cleanup(func() { testutil.Must(t, env.Stop()) })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctrl.SetLogger(logr.FromSlogHandler(log.Handler()))

	scheme := runtime.NewScheme()
	testutil.Must(t, clientgoscheme.AddToScheme(scheme))
	testutil.Must(t, v1.AddToScheme(scheme))
	c, err := client.New(env.Config, client.Options{Scheme: scheme})
	testutil.Must(t, err)

	// What kubelet and the chart would have made.
	testutil.Must(t, c.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node, Labels: map[string]string{driver.TopologyKey: node}}}))
	testutil.Must(t, c.Create(ctx, &storagev1.CSINode{ObjectMeta: metav1.ObjectMeta{Name: node}, Spec: storagev1.CSINodeSpec{Drivers: []storagev1.CSINodeDriver{
		{Name: driver.DefaultName, NodeID: node, TopologyKeys: []string{driver.TopologyKey}}}}}))
	testutil.Must(t, c.Create(ctx, &storagev1.StorageClass{
		ObjectMeta:  metav1.ObjectMeta{Name: "slimvirt", Annotations: map[string]string{"storageclass.kubernetes.io/is-default-class": "true"}},
		Provisioner: driver.DefaultName, VolumeBindingMode: ptr.To(storagev1.VolumeBindingWaitForFirstConsumer), AllowVolumeExpansion: ptr.To(true),
		Parameters: map[string]string{driver.ParamPool: "default"},
	}))
	testutil.Must(t, env.Namespace(ctx, "vms"))
	testutil.Must(t, env.Namespace(ctx, release))

	// slimvirt-csi, in-process, with its Kubernetes access and importer.
	sock := filepath.Join(dir, "csi.sock")
	cluster := kube.NewInNamespace(env.Clientset, release)
	d, err := driver.New(driver.Config{Endpoint: "unix://" + sock, NodeID: node, StateDir: filepath.Join(dir, "state"),
		Pools: []driver.Pool{{Name: "default", Dir: filepath.Join(dir, "pool")}}, Cluster: cluster,
		Filler: importer.New(importer.Config{Credentials: cluster, Log: log,
			// The test's image servers listen on loopback, which imports refuse by default.
			Egress: egress.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}}), Log: log, PublishWait: 500 * time.Millisecond})
	testutil.Must(t, err)
	lis, err := net.Listen("unix", sock)
	testutil.Must(t, err)
	go func() { _ = d.Serve(ctx, lis) }() // returns when ctx ends with the test

	// kube-controller-manager's volume binder, as in a real cluster.
	testutil.Must(t, env.StartVolumeBinder(ctx, dir))
	// and its garbage collector: a deleted DataVolume's PVC goes with it.
	testutil.Must(t, env.StartGarbageCollector(ctx, dir))

	// The external-provisioner as the chart runs it, one per node.
	kubeconfig := filepath.Join(dir, "kubeconfig")
	testutil.Must(t, env.WriteKubeconfig(kubeconfig))
	cmd := exec.CommandContext(ctx, provisioner, "--csi-address="+sock, "--kubeconfig="+kubeconfig,
		"--node-deployment", "--strict-topology", "--immediate-topology=false", "--extra-create-metadata",
		"--timeout=30s", "--worker-threads=4", "--http-endpoint=", "--v=2",
		"--enable-capacity", "--capacity-ownerref-level=-1", "--capacity-poll-interval=2s")
	cmd.Env = append(os.Environ(), "NODE_NAME="+node, "NAMESPACE=default", "POD_NAME=slimvirt-node-test")
	plog, err := os.Create(filepath.Join(dir, "provisioner.log"))
	testutil.Must(t, err)
	cmd.Stdout, cmd.Stderr = plog, plog
	testutil.Must(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // stopping it is the point; it exits killed
		_ = cmd.Wait()
		if t.Failed() {
			out, _ := os.ReadFile(plog.Name())
			t.Logf("provisioner log (tail):\n%s", tail(string(out), 4000))
		}
	})

	// The external-resizer, as the chart runs it.
	resizer := os.Getenv("CSI_RESIZER")
	if resizer == "" {
		resizer = "/var/cache/slimvirt/csi-sidecars/csi-resizer-v2.3.0/csi-resizer"
	}
	if _, err := os.Stat(resizer); err == nil {
		rcmd := exec.CommandContext(ctx, resizer, "--csi-address="+sock, "--kubeconfig="+kubeconfig, "--leader-election=false", "--timeout=30s", "--v=2")
		rlog, err := os.Create(filepath.Join(dir, "resizer.log"))
		testutil.Must(t, err)
		rcmd.Stdout, rcmd.Stderr = rlog, rlog
		testutil.Must(t, rcmd.Start())
		t.Cleanup(func() { _ = rcmd.Process.Kill(); _ = rcmd.Wait() }) // it exits killed
	}

	// The reconciler under test.
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{Scheme: scheme, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
		// The controller's own cache: only the pods it makes.
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{&corev1.Pod{}: {Label: manager.CachedPods}}},
		// Each test of the package runs its own manager with the same controllers.
		Controller: ctrlconfig.Controller{SkipNameValidation: ptr.To(true)}})
	testutil.Must(t, err)
	tokens, err := uploadtokens.New(ctx, env.Clientset, release, datavolume.ImporterTokenTTL, logr.Discard())
	testutil.Must(t, err)
	testutil.Must(t, datavolume.SetupWithManager(mgr, datavolume.Options{Namespace: release, Tokens: tokens}))
	go func() { _ = mgr.Start(ctx) }() // returns when ctx ends with the test

	// Images on a local server.
	raw := make([]byte, 10<<20)
	rand.Read(raw[:3<<20])
	rand.Read(raw[7<<20:])
	img := t.TempDir()
	testutil.Must(t, os.WriteFile(filepath.Join(img, "disk.raw"), raw, 0o644))
	run(t, "qemu-img", "convert", "-O", "qcow2", filepath.Join(img, "disk.raw"), filepath.Join(img, "disk.qcow2"))
	run(t, "xz", "-0", "-k", filepath.Join(img, "disk.qcow2"))
	mux := http.NewServeMux()
	mux.Handle("/", http.FileServer(http.Dir(img)))
	mux.HandleFunc("/slow/disk.raw", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(raw)))
		for off := 0; off < len(raw); off += 1 << 20 {
			_, _ = w.Write(raw[off : off+1<<20])
			w.(http.Flusher).Flush()
			time.Sleep(600 * time.Millisecond)
		}
	})
	// Behind basic auth: a slow copy, so the import can be watched while it runs.
	mux.HandleFunc("/auth/slow/disk.raw", func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "tenant-user" || p != "tenant-pass" {
			w.Header().Set("WWW-Authenticate", `Basic realm="images"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(raw)))
		for off := 0; off < len(raw); off += 1 << 20 {
			_, _ = w.Write(raw[off : off+1<<20])
			w.(http.Flusher).Flush()
			time.Sleep(300 * time.Millisecond)
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	testutil.Must(t, err)
	t.Cleanup(func() { conn.Close() })
	nodeClient := csi.NewNodeClient(conn)
	publish := func(name, target string) error {
		waitBound(t, c, name) // kubelet publishes only bound claims
		pvc := &corev1.PersistentVolumeClaim{}
		testutil.Must(t, c.Get(ctx, types.NamespacedName{Namespace: "vms", Name: name}, pvc))
		pv := &corev1.PersistentVolume{}
		testutil.Must(t, c.Get(ctx, types.NamespacedName{Name: pvc.Spec.VolumeName}, pv))
		_, err := nodeClient.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: pv.Spec.CSI.VolumeHandle, TargetPath: target,
			VolumeCapability: &csi.VolumeCapability{AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
				AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER}}})
		if err == nil {
			t.Cleanup(func() {
				_, _ = nodeClient.NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{VolumeId: pv.Spec.CSI.VolumeHandle, TargetPath: target})
			})
		}
		return err
	}
	qcowXZ, err := os.ReadFile(filepath.Join(img, "disk.qcow2.xz"))
	testutil.Must(t, err)
	sum := sha256.Sum256(qcowXZ)

	get := func(name string) *v1.DataVolume {
		dv := &v1.DataVolume{}
		testutil.Must(t, c.Get(ctx, types.NamespacedName{Namespace: "vms", Name: name}, dv))
		return dv
	}
	waitPhase := func(name string, want v1.DataVolumePhase) *v1.DataVolume {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for {
			dv := get(name)
			if dv.Status.Phase == want {
				return dv
			}
			if time.Now().After(deadline) {
				t.Fatalf("DataVolume %s is %s (%+v), want %s", name, dv.Status.Phase, dv.Status.Conditions, want)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	diskOf := func(name string) string {
		waitBound(t, c, name)
		pvc := &corev1.PersistentVolumeClaim{}
		testutil.Must(t, c.Get(ctx, types.NamespacedName{Namespace: "vms", Name: name}, pvc))
		pv := &corev1.PersistentVolume{}
		testutil.Must(t, c.Get(ctx, types.NamespacedName{Name: pvc.Spec.VolumeName}, pv))
		return filepath.Join(dir, "pool", pv.Spec.CSI.VolumeHandle, diskimg.Name)
	}
	size := resource.MustParse("64Mi")
	newDV := func(name string, src v1.DataVolumeSourceSpec, ann map[string]string) {
		testutil.Must(t, c.Create(ctx, &v1.DataVolume{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "vms", Annotations: ann},
			Spec: v1.DataVolumeSpec{Source: src, Storage: &v1.StorageSpec{
				Resources: v1.StorageResources{Requests: corev1.ResourceList{corev1.ResourceStorage: size}}}},
		}))
	}

	t.Run("http import waits for its consumer, then fills on its node", func(t *testing.T) {
		newDV("fedora", v1.DataVolumeSourceSpec{HTTP: &v1.DataVolumeSourceHTTP{URL: srv.URL + "/disk.qcow2.xz", Checksum: "sha256:" + hex.EncodeToString(sum[:])}}, nil)
		waitPhase("fedora", v1.DataVolumeWaitForFirstConsumer)
		// The scheduler places the first pod that mounts the PVC on node-a.
		pvc := &corev1.PersistentVolumeClaim{}
		testutil.Must(t, c.Get(ctx, types.NamespacedName{Namespace: "vms", Name: "fedora"}, pvc))
		patch := client.MergeFrom(pvc.DeepCopy())
		pvc.Annotations["volume.kubernetes.io/selected-node"] = node
		testutil.Must(t, c.Patch(ctx, pvc, patch))
		waitPhase("fedora", v1.DataVolumeSucceeded)
		waitBound(t, c, "fedora")
		dv := get("fedora")
		if dv.Status.Progress != "100.0%" || dv.Status.ClaimName != "fedora" {
			t.Fatalf("status %+v", dv.Status)
		}
		checkDisk(t, diskOf("fedora"), raw, size.Value())
		waitEvent(t, c, "fedora", "ImportSucceeded")
	})

	t.Run("wrong checksum fails the DataVolume", func(t *testing.T) {
		newDV("bad", v1.DataVolumeSourceSpec{HTTP: &v1.DataVolumeSourceHTTP{URL: srv.URL + "/disk.qcow2.xz", Checksum: "sha256:" + strings.Repeat("1", 64)}},
			map[string]string{datavolume.AnnBindImmediate: "true"})
		dv := waitPhase("bad", v1.DataVolumeFailed)
		if msg := runningMessage(dv); !strings.Contains(msg, "checksum mismatch") {
			t.Fatalf("Failed without saying why: %q", msg)
		}
		alloc, _ := diskimg.Allocated(diskOf("bad"))
		if alloc > 1<<20 {
			t.Fatalf("a failed import keeps %d bytes", alloc)
		}
		if err := publish("bad", filepath.Join(dir, "pods", "bad")); status.Code(err) != codes.FailedPrecondition {
			t.Fatalf("publishing a failed volume: %v, want FailedPrecondition", err)
		}
	})

	t.Run("a volume is published only once its import is complete", func(t *testing.T) {
		testutil.RequireRoot(t, "publishing bind-mounts volumes")
		newDV("slow", v1.DataVolumeSourceSpec{HTTP: &v1.DataVolumeSourceHTTP{URL: srv.URL + "/slow/disk.raw"}},
			map[string]string{datavolume.AnnBindImmediate: "true"})
		dv := waitPhase("slow", v1.DataVolumeImportInProgress)
		target := filepath.Join(dir, "pods", "slow")
		err := publish("slow", target)
		if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "being filled") {
			t.Fatalf("publishing a volume being imported: %v, want Unavailable", err)
		}
		var seen []string
		for dv.Status.Phase != v1.DataVolumeSucceeded {
			if p := dv.Status.Progress; p != "N/A" && (len(seen) == 0 || seen[len(seen)-1] != p) {
				seen = append(seen, p)
			}
			time.Sleep(100 * time.Millisecond)
			dv = get("slow")
		}
		if len(seen) < 2 {
			t.Fatalf("progress seen during the import: %v", seen)
		}
		testutil.Must(t, publish("slow", target))
		got, err := os.ReadFile(filepath.Join(target, diskimg.Name))
		testutil.Must(t, err)
		if !bytes.Equal(got[:len(raw)], raw) {
			t.Fatal("the published disk.img does not hold the image")
		}
	})

	t.Run("blank", func(t *testing.T) {
		newDV("scratch", v1.DataVolumeSourceSpec{Blank: &v1.DataVolumeBlankImage{}}, map[string]string{datavolume.AnnBindImmediate: "true"})
		waitPhase("scratch", v1.DataVolumeSucceeded)
		checkDisk(t, diskOf("scratch"), nil, size.Value())
	})

	t.Run("expansion grows disk.img", func(t *testing.T) {
		if _, err := os.Stat(resizer); err != nil {
			t.Skip("no csi-resizer (make csi-sidecars)")
		}
		waitBound(t, c, "scratch")
		pvc := &corev1.PersistentVolumeClaim{}
		testutil.Must(t, c.Get(ctx, types.NamespacedName{Namespace: "vms", Name: "scratch"}, pvc))
		patch := client.MergeFrom(pvc.DeepCopy())
		pvc.Spec.Resources.Requests[corev1.ResourceStorage] = resource.MustParse("96Mi")
		testutil.Must(t, c.Patch(ctx, pvc, patch))
		for i := 0; ; i++ {
			pv := &corev1.PersistentVolume{}
			testutil.Must(t, c.Get(ctx, types.NamespacedName{Name: pvc.Spec.VolumeName}, pv))
			if q := pv.Spec.Capacity[corev1.ResourceStorage]; q.Value() == 96<<20 {
				break
			}
			if i > 150 {
				t.Fatalf("PV capacity still %v", pv.Spec.Capacity)
			}
			time.Sleep(200 * time.Millisecond)
		}
		fi, err := os.Stat(diskOf("scratch"))
		testutil.Must(t, err)
		if fi.Size() != 96<<20 {
			t.Fatalf("disk.img is %d bytes after expansion to 96Mi", fi.Size())
		}
	})

	t.Run("clone of the imported disk", func(t *testing.T) {
		newDV("fedora-copy", v1.DataVolumeSourceSpec{PVC: &v1.DataVolumeSourcePVC{Name: "fedora"}}, nil)
		waitPhase("fedora-copy", v1.DataVolumeSucceeded)
		checkDisk(t, diskOf("fedora-copy"), raw, size.Value())
	})

	t.Run("upload is ready for its data", func(t *testing.T) {
		newDV("upload", v1.DataVolumeSourceSpec{Upload: &v1.DataVolumeSourceUpload{}}, nil)
		waitPhase("upload", v1.DataVolumeUploadReady)
	})

	t.Run("storage capacity is published per node", func(t *testing.T) {
		for i := 0; ; i++ {
			var caps storagev1.CSIStorageCapacityList
			testutil.Must(t, c.List(ctx, &caps, client.InNamespace("default")))
			for _, sc := range caps.Items {
				if sc.StorageClassName == "slimvirt" && sc.NodeTopology != nil && sc.NodeTopology.MatchLabels[driver.TopologyKey] == node &&
					sc.Capacity != nil && sc.Capacity.Value() > 0 {
					return
				}
			}
			if i > 100 {
				t.Fatalf("no CSIStorageCapacity for node %s: %+v", node, caps.Items)
			}
			time.Sleep(200 * time.Millisecond)
		}
	})

	t.Run("credentials reach the node as a per-volume copy, deleted when the import ends", func(t *testing.T) {
		creds := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "image-creds", Namespace: "vms"},
			Data: map[string][]byte{"accessKeyId": []byte("tenant-user"), "secretKey": []byte("tenant-pass"), "unrelated": []byte("not copied")}}
		testutil.Must(t, c.Create(ctx, creds))
		newDV("private", v1.DataVolumeSourceSpec{HTTP: &v1.DataVolumeSourceHTTP{URL: srv.URL + "/auth/slow/disk.raw", SecretRef: "image-creds"}},
			map[string]string{datavolume.AnnBindImmediate: "true"})
		pvc := waitPVC(t, c, "private")
		copied := waitSecret(t, c, importsecret.Name(pvc.UID), true)
		want := map[string]string{"accessKeyId": "tenant-user", "secretKey": "tenant-pass"}
		if len(copied.Data) != len(want) || string(copied.Data["accessKeyId"]) != want["accessKeyId"] || string(copied.Data["secretKey"]) != want["secretKey"] {
			t.Fatalf("per-volume Secret holds %v, want exactly %v", keysOf(copied.Data), want)
		}
		if copied.Labels[importsecret.LabelUID] != string(pvc.UID) || copied.Labels[importsecret.LabelNamespace] != "vms" || len(copied.OwnerReferences) != 0 {
			t.Fatalf("per-volume Secret labels %v owners %v", copied.Labels, copied.OwnerReferences)
		}
		waitPhase("private", v1.DataVolumeImportInProgress)
		waitPhase("private", v1.DataVolumeSucceeded)
		checkDisk(t, diskOf("private"), raw, size.Value())
		waitSecret(t, c, importsecret.Name(pvc.UID), false)
		testutil.Must(t, c.Get(ctx, types.NamespacedName{Namespace: "vms", Name: "private"}, pvc))
		if slices.Contains(pvc.Finalizers, datavolume.CredentialsFinalizer) {
			t.Fatalf("PVC keeps finalizer %s after its import ended", datavolume.CredentialsFinalizer)
		}
	})

	t.Run("the per-volume copy goes with its DataVolume", func(t *testing.T) {
		// Late binding and no pod: the import never starts, the copy waits for it.
		newDV("abandoned", v1.DataVolumeSourceSpec{HTTP: &v1.DataVolumeSourceHTTP{URL: srv.URL + "/auth/slow/disk.raw", SecretRef: "image-creds"}}, nil)
		waitPhase("abandoned", v1.DataVolumeWaitForFirstConsumer)
		pvc := waitPVC(t, c, "abandoned")
		waitSecret(t, c, importsecret.Name(pvc.UID), true)
		testutil.Must(t, c.Delete(ctx, get("abandoned")))
		waitSecret(t, c, importsecret.Name(pvc.UID), false)
	})

	t.Run("a hand-written PVC's credentials are copied too", func(t *testing.T) {
		pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "by-hand", Namespace: "vms", Annotations: map[string]string{
			"import.slimvirt.io/source": "http", "import.slimvirt.io/endpoint": srv.URL + "/auth/slow/disk.raw",
			"import.slimvirt.io/secret": "image-creds", "volume.kubernetes.io/selected-node": node}},
			Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, StorageClassName: ptr.To("slimvirt"),
				Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: size}}}}
		testutil.Must(t, c.Create(ctx, pvc))
		waitSecret(t, c, importsecret.Name(pvc.UID), true)
		for i := 0; ; i++ {
			testutil.Must(t, c.Get(ctx, types.NamespacedName{Namespace: "vms", Name: "by-hand"}, pvc))
			if pvc.Annotations["import.slimvirt.io/phase"] == "Ready" {
				break
			}
			if i > 450 {
				t.Fatalf("hand-written PVC not filled: %v", pvc.Annotations)
			}
			time.Sleep(200 * time.Millisecond)
		}
		checkDisk(t, diskOf("by-hand"), raw, size.Value())
		waitSecret(t, c, importsecret.Name(pvc.UID), false)
	})

	t.Run("a Secret of another namespace is not copied", func(t *testing.T) {
		testutil.Must(t, env.Namespace(ctx, "other-tenant"))
		testutil.Must(t, c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "theirs", Namespace: "other-tenant"},
			Data: map[string][]byte{"accessKeyId": []byte("tenant-user"), "secretKey": []byte("tenant-pass")}}))
		newDV("borrowed", v1.DataVolumeSourceSpec{HTTP: &v1.DataVolumeSourceHTTP{URL: srv.URL + "/auth/slow/disk.raw", SecretRef: "theirs"}},
			map[string]string{datavolume.AnnBindImmediate: "true"})
		pvc := waitPVC(t, c, "borrowed")
		var dv *v1.DataVolume
		for i := 0; ; i++ {
			dv = get("borrowed")
			if runningReason(dv) == "ImportSecretNotFound" {
				break
			}
			if i > 150 {
				t.Fatalf("DataVolume status %+v, want reason ImportSecretNotFound", dv.Status)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if msg := runningMessage(dv); !strings.Contains(msg, "Secret theirs not found in namespace vms") {
			t.Fatalf("message %q does not say which Secret is missing where", msg)
		}
		if dv.Status.Phase != v1.DataVolumeImportScheduled {
			t.Fatalf("phase %s, want ImportScheduled (waiting for the Secret)", dv.Status.Phase)
		}
		var all corev1.SecretList
		testutil.Must(t, c.List(ctx, &all, client.InNamespace(release), client.MatchingLabels{importsecret.LabelUID: string(pvc.UID)}))
		if len(all.Items) != 0 {
			t.Fatalf("a per-volume Secret was made from another namespace's Secret: %v", all.Items[0].Name)
		}
		time.Sleep(3 * time.Second) // the provisioner has had its chance
		testutil.Must(t, c.Get(ctx, types.NamespacedName{Namespace: "vms", Name: "borrowed"}, pvc))
		if pvc.Status.Phase == corev1.ClaimBound || pvc.Annotations["import.slimvirt.io/phase"] != "" {
			t.Fatalf("the node provisioned a volume without credentials: %s %v", pvc.Status.Phase, pvc.Annotations)
		}
	})

	t.Run("registry", func(t *testing.T) {
		testRegistry(t, registryCase{ctx: ctx, c: c, cs: env.Clientset, d: d, newDV: newDV, waitPhase: waitPhase, diskOf: diskOf,
			raw: raw, size: size.Value(), qcow2: filepath.Join(img, "disk.qcow2")})
	})

	t.Run("cross-namespace clone is refused", func(t *testing.T) {
		newDV("other", v1.DataVolumeSourceSpec{PVC: &v1.DataVolumeSourcePVC{Namespace: "default", Name: "x"}}, nil)
		dv := waitPhase("other", v1.DataVolumeFailed)
		if !strings.Contains(runningMessage(dv), "namespace") {
			t.Fatalf("message %q", runningMessage(dv))
		}
	})
}

func waitPVC(t *testing.T, c client.Client, name string) *corev1.PersistentVolumeClaim {
	t.Helper()
	pvc := &corev1.PersistentVolumeClaim{}
	for i := 0; ; i++ {
		err := c.Get(context.Background(), types.NamespacedName{Namespace: "vms", Name: name}, pvc)
		if err == nil {
			return pvc
		}
		if i > 150 {
			t.Fatalf("no PVC %s: %v", name, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitSecret waits for the per-volume Secret to exist (or to be gone) in the release namespace.
func waitSecret(t *testing.T, c client.Client, name string, exist bool) *corev1.Secret {
	t.Helper()
	s := &corev1.Secret{}
	for i := 0; ; i++ {
		err := c.Get(context.Background(), types.NamespacedName{Namespace: release, Name: name}, s)
		if exist && err == nil || !exist && apierrors.IsNotFound(err) {
			return s
		}
		if i > 300 {
			t.Fatalf("Secret %s/%s: exists %v, want %v (%v)", release, name, err == nil, exist, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func keysOf(m map[string][]byte) []string { return slices.Sorted(maps.Keys(m)) }

func runningReason(dv *v1.DataVolume) string {
	for _, c := range dv.Status.Conditions {
		if c.Type == v1.DataVolumeRunning {
			return c.Reason
		}
	}
	return ""
}

func waitBound(t *testing.T, c client.Client, name string) {
	t.Helper()
	for i := 0; i < 150; i++ {
		pvc := &corev1.PersistentVolumeClaim{}
		testutil.Must(t, c.Get(context.Background(), types.NamespacedName{Namespace: "vms", Name: name}, pvc))
		if pvc.Status.Phase == corev1.ClaimBound {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("PVC %s not bound", name)
}

func runningMessage(dv *v1.DataVolume) string {
	for _, c := range dv.Status.Conditions {
		if c.Type == v1.DataVolumeRunning {
			return c.Message
		}
	}
	return ""
}

func checkDisk(t *testing.T, disk string, want []byte, size int64) {
	t.Helper()
	got, err := os.ReadFile(disk)
	testutil.Must(t, err)
	if int64(len(got)) != size {
		t.Fatalf("disk.img is %d bytes, want exactly %d", len(got), size)
	}
	if !bytes.Equal(got[:len(want)], want) || !bytes.Equal(got[len(want):], make([]byte, len(got)-len(want))) {
		t.Fatal("disk.img does not hold the image followed by zeros")
	}
}

func waitEvent(t *testing.T, c client.Client, name, reason string) {
	t.Helper()
	for i := 0; i < 50; i++ {
		var evs corev1.EventList
		testutil.Must(t, c.List(context.Background(), &evs, client.InNamespace("vms")))
		for _, e := range evs.Items {
			if e.InvolvedObject.Name == name && e.Reason == reason {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("no %s event for %s", reason, name)
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v: %s", name, args, err, out)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
