package datavolume_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	"github.com/slimvirt/slimvirt/api/subresources"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/controller/datavolume"
	"github.com/slimvirt/slimvirt/csi/driver"
	"github.com/slimvirt/slimvirt/csi/upload"
	"github.com/slimvirt/slimvirt/internal/testutil"
	"github.com/slimvirt/slimvirt/runtime/diskcopy"
)

// registryCase is what the registry subtests share with TestDataVolumes.
type registryCase struct {
	ctx       context.Context
	c         client.Client
	cs        kubernetes.Interface
	d         *driver.Driver
	newDV     func(name string, src v1.DataVolumeSourceSpec, ann map[string]string)
	waitPhase func(name string, want v1.DataVolumePhase) *v1.DataVolume
	diskOf    func(name string) string
	raw       []byte
	size      int64
	// qcow2 is the raw image as qcow2.
	qcow2 string
}

// testRegistry plays the kubelet for registry DataVolumes' importer pods: it reads the pod the
// controller made, sets the states a kubelet would, and runs the copier's send, as the pod's
// container would, against a real upload endpoint in front of the real driver.
func testRegistry(t *testing.T, rc registryCase) {
	ctx, c := rc.ctx, rc.c
	serverName := subresources.UploadService + "." + release + ".svc"
	cert, err := upload.SelfSigned([]string{serverName})
	testutil.Must(t, err)
	keyDER, err := x509.MarshalECPrivateKey(cert.PrivateKey.(*ecdsa.PrivateKey))
	testutil.Must(t, err)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})
	testutil.Must(t, os.WriteFile(certFile, caPEM, 0o600))
	testutil.Must(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600))
	// What the chart makes in slimvirt's namespace: the endpoint's Service and CA.
	testutil.Must(t, c.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: subresources.UploadService, Namespace: release},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "https", Port: 443}}}}))
	testutil.Must(t, c.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: subresources.UploadCAConfigMap, Namespace: release},
		Data: map[string]string{subresources.UploadCAKey: string(caPEM)}}))
	srv, err := upload.New(upload.Config{Client: rc.cs, Volumes: rc.d, CertFile: certFile, KeyFile: keyFile, NodeID: node, KeyNamespace: release,
		Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	testutil.Must(t, err)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	testutil.Must(t, err)
	go func() { _ = srv.Serve(ctx, lis) }() // returns when ctx ends with the test
	endpoint := "https://" + lis.Addr().String()

	// image is a containerDisk's root: /disk/<file>.
	image := func(file string, data []byte) string {
		root := t.TempDir()
		testutil.Must(t, os.MkdirAll(filepath.Join(root, "disk"), 0o755))
		if file != "" {
			testutil.Must(t, os.WriteFile(filepath.Join(root, "disk", file), data, 0o444))
		}
		return filepath.Join(root, "disk")
	}
	// runImporter does what the importer pod's container does: the command the controller
	// wrote, with the endpoint on loopback instead of the Service's cluster IP.
	runImporter := func(t *testing.T, pod *corev1.Pod, src string) error {
		args := pod.Spec.Containers[0].Command
		if len(args) < 2 || args[0] != launcherpod.ContainerDiskCopier || args[1] != "send" {
			t.Fatalf("importer command %v, want %s send ...", args, launcherpod.ContainerDiskCopier)
		}
		flags := map[string]string{}
		for i := 2; i+1 < len(args); i += 2 {
			flags[strings.TrimPrefix(args[i], "--")] = args[i+1]
		}
		sec := &corev1.Secret{}
		testutil.Must(t, c.Get(ctx, types.NamespacedName{Namespace: release, Name: pod.Name}, sec))
		if len(sec.OwnerReferences) != 1 || sec.OwnerReferences[0].UID != pod.UID {
			t.Fatalf("token Secret owners %v, want the pod %s", sec.OwnerReferences, pod.UID)
		}
		if flags["server-name"] != serverName || flags["namespace"] != "vms" || !strings.HasPrefix(flags["url"], "https://") {
			t.Fatalf("importer flags %v", flags)
		}
		return diskcopy.Send(ctx, src, diskcopy.SendOptions{URL: endpoint, ServerName: flags["server-name"], CA: caPEM,
			Token: string(sec.Data["token"]), Namespace: flags["namespace"], Name: flags["name"]})
	}
	setState := func(t *testing.T, pod *corev1.Pod, phase corev1.PodPhase, st corev1.ContainerState) {
		pod.Status.Phase = phase
		pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "importer", Image: pod.Spec.Containers[0].Image, State: st}}
		testutil.Must(t, c.Status().Update(ctx, pod))
	}
	reg := func(ref string) v1.DataVolumeSourceSpec {
		return v1.DataVolumeSourceSpec{Registry: &v1.DataVolumeSourceRegistry{URL: ref}}
	}
	immediate := map[string]string{datavolume.AnnBindImmediate: "true"}

	t.Run("registry import runs the image on the volume's node and takes its disk as an upload", func(t *testing.T) {
		qcow, err := os.ReadFile(rc.qcow2)
		testutil.Must(t, err)
		rc.newDV("reg", reg("docker://kubevirt/cirros-container-disk-demo:latest"), immediate)
		pod := waitImporter(t, c, "reg", "")
		if pod.Spec.NodeName != node || pod.Spec.Containers[0].Image != "kubevirt/cirros-container-disk-demo:latest" ||
			pod.Spec.AutomountServiceAccountToken == nil || *pod.Spec.AutomountServiceAccountToken ||
			pod.Spec.SecurityContext.RunAsUser == nil || *pod.Spec.SecurityContext.RunAsUser == 0 ||
			pod.Spec.Containers[0].Resources.Limits.Name(launcherpod.ResourceSeed, "").Value() != 1 {
			t.Fatalf("importer pod spec: node %q image %q automount %v securityContext %+v limits %v", pod.Spec.NodeName, pod.Spec.Containers[0].Image,
				pod.Spec.AutomountServiceAccountToken, pod.Spec.SecurityContext, pod.Spec.Containers[0].Resources.Limits)
		}
		rc.waitPhase("reg", v1.DataVolumeImportScheduled)
		waitMessage(t, c, "reg", "pulling image kubevirt/cirros-container-disk-demo:latest on node "+node)
		setState(t, pod, corev1.PodPending, corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff", Message: "Back-off pulling image"}})
		dv := waitMessage(t, c, "reg", "ImagePullBackOff: Back-off pulling image")
		if dv.Status.Phase != v1.DataVolumeImportScheduled || runningReason(dv) != "ImagePullFailed" {
			t.Fatalf("while the pull backs off: phase %s reason %s", dv.Status.Phase, runningReason(dv))
		}
		setState(t, pod, corev1.PodRunning, corev1.ContainerState{Running: &corev1.ContainerStateRunning{}})
		testutil.Must(t, runImporter(t, pod, image("disk.qcow2", qcow)))
		rc.waitPhase("reg", v1.DataVolumeSucceeded)
		checkDisk(t, rc.diskOf("reg"), rc.raw, rc.size)
		waitImporterGone(t, c, pod)
	})

	t.Run("registry image without a disk fails the DataVolume and is not run again", func(t *testing.T) {
		rc.newDV("nodisk", reg("docker://example.org/empty:1"), immediate)
		pod := waitImporter(t, c, "nodisk", "")
		err := runImporter(t, pod, image("", nil))
		if err == nil || !strings.Contains(err.Error(), "no regular file") {
			t.Fatalf("send from an image without a disk: %v", err)
		}
		setState(t, pod, corev1.PodFailed, corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			ExitCode: launcherpod.ImporterExitRefused, Reason: "Error", Message: err.Error()}})
		dv := rc.waitPhase("nodisk", v1.DataVolumeFailed)
		if msg := runningMessage(dv); !strings.Contains(msg, "example.org/empty:1") || !strings.Contains(msg, "no regular file") {
			t.Fatalf("failure message %q names neither the image nor the missing disk", msg)
		}
		waitImporterGone(t, c, pod)
		time.Sleep(2 * time.Second)
		if p := importerOf(t, c, "nodisk"); p != nil {
			t.Fatalf("a refused image got another importer pod %s", p.Name)
		}
	})

	t.Run("registry image that is not a disk is refused by the endpoint's checks", func(t *testing.T) {
		rc.newDV("backing", reg("docker://example.org/backing:1"), immediate)
		pod := waitImporter(t, c, "backing", "")
		// A qcow2 that reads a node file through its backing file.
		bad := filepath.Join(t.TempDir(), "bad.qcow2")
		run(t, "qemu-img", "create", "-f", "qcow2", "-F", "raw", "-b", "/etc/hostname", bad, "1M")
		data, err := os.ReadFile(bad)
		testutil.Must(t, err)
		err = runImporter(t, pod, image("disk.qcow2", data))
		if err == nil || !strings.Contains(err.Error(), "backing") {
			t.Fatalf("send of a qcow2 with a backing file: %v", err)
		}
		// The driver failed the volume: the DataVolume fails with its reason, the pod goes.
		dv := rc.waitPhase("backing", v1.DataVolumeFailed)
		if !strings.Contains(runningMessage(dv), "backing file") {
			t.Fatalf("failure message %q", runningMessage(dv))
		}
		waitImporterGone(t, c, pod)
	})

	t.Run("a failed importer is run again with a fresh token, three times at most", func(t *testing.T) {
		rc.newDV("flaky", reg("docker://example.org/flaky:1"), immediate)
		var seen []types.UID
		prev := ""
		for i := 0; i < 3; i++ {
			pod := waitImporter(t, c, "flaky", types.UID(prev))
			seen = append(seen, pod.UID)
			prev = string(pod.UID)
			setState(t, pod, corev1.PodFailed, corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error", Message: "connection reset"}})
		}
		dv := rc.waitPhase("flaky", v1.DataVolumeFailed)
		if msg := runningMessage(dv); !strings.Contains(msg, "failed 3 times") {
			t.Fatalf("after 3 failures: %q", msg)
		}
		if len(seen) != 3 || seen[0] == seen[1] || seen[1] == seen[2] {
			t.Fatalf("importer pods %v", seen)
		}
	})

	t.Run("deleting a registry DataVolume deletes its importer", func(t *testing.T) {
		rc.newDV("gone", reg("docker://example.org/slow:1"), immediate)
		pod := waitImporter(t, c, "gone", "")
		testutil.Must(t, c.Delete(ctx, &v1.DataVolume{ObjectMeta: metav1.ObjectMeta{Namespace: "vms", Name: "gone"}}))
		waitImporterGone(t, c, pod)
	})
}

// importerOf is the DataVolume's importer pod, nil if there is none.
func importerOf(t *testing.T, c client.Client, dv string) *corev1.Pod {
	t.Helper()
	var pods corev1.PodList
	testutil.Must(t, c.List(context.Background(), &pods, client.InNamespace(release)))
	for i := range pods.Items {
		if pods.Items[i].Annotations["import.slimvirt.io/datavolume"] == "vms/"+dv && pods.Items[i].DeletionTimestamp == nil {
			return &pods.Items[i]
		}
	}
	return nil
}

// waitImporter waits for an importer pod of dv other than the one with UID not.
func waitImporter(t *testing.T, c client.Client, dv string, not types.UID) *corev1.Pod {
	t.Helper()
	for i := 0; ; i++ {
		if p := importerOf(t, c, dv); p != nil && p.UID != not {
			return p
		}
		if i > 300 {
			t.Fatalf("no importer pod for DataVolume %s", dv)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func waitImporterGone(t *testing.T, c client.Client, pod *corev1.Pod) {
	t.Helper()
	for i := 0; ; i++ {
		err := c.Get(context.Background(), types.NamespacedName{Namespace: pod.Namespace, Name: pod.Name}, &corev1.Pod{})
		if apierrors.IsNotFound(err) {
			return
		}
		// Without a kubelet, a deleted pod with a node stays until its grace period is over.
		p := &corev1.Pod{}
		if c.Get(context.Background(), types.NamespacedName{Namespace: pod.Namespace, Name: pod.Name}, p) == nil && p.DeletionTimestamp != nil {
			return
		}
		if i > 150 {
			t.Fatalf("importer pod %s still there: %v", pod.Name, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func waitMessage(t *testing.T, c client.Client, name, want string) *v1.DataVolume {
	t.Helper()
	for i := 0; ; i++ {
		dv := &v1.DataVolume{}
		testutil.Must(t, c.Get(context.Background(), types.NamespacedName{Namespace: "vms", Name: name}, dv))
		if strings.Contains(runningMessage(dv), want) {
			return dv
		}
		if i > 150 {
			t.Fatalf("DataVolume %s: phase %s message %q, want %q", name, dv.Status.Phase, runningMessage(dv), want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
