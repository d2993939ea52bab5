package upload_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/slimvirt/slimvirt/csi/claim"
	"github.com/slimvirt/slimvirt/csi/diskimg"
	"github.com/slimvirt/slimvirt/csi/driver"
	"github.com/slimvirt/slimvirt/csi/kube"
	"github.com/slimvirt/slimvirt/csi/upload"
	"github.com/slimvirt/slimvirt/csi/upload/client"
	"github.com/slimvirt/slimvirt/internal/testenv"
	"github.com/slimvirt/slimvirt/internal/testutil"
)

// TestUpload runs the endpoint against a real kube-apiserver: the caller's token is reviewed
// (TokenReview) and their right to upload checked (SubjectAccessReview) by the API server.
func TestUpload(t *testing.T) {
	env, err := testenv.Start("upload")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.Stop() })
	ctx := context.Background()
	cs := env.Clientset

	// alice may upload in ns-a; bob may do nothing.
	alice, err := env.Token(ctx, "ns-a", "alice")
	testutil.Must(t, err)
	bob, err := env.Token(ctx, "ns-a", "bob")
	testutil.Must(t, err)
	testutil.Must(t, env.Namespace(ctx, "ns-b"))
	_, err = cs.RbacV1().Roles("ns-a").Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "uploader"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"slimvirt.io"}, Resources: []string{"datavolumes/upload"}, Verbs: []string{"create"}}}}, metav1.CreateOptions{})
	testutil.Must(t, err)
	_, err = cs.RbacV1().RoleBindings("ns-a").Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "alice-uploads"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "uploader"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: "ns-a", Name: "alice"}}}, metav1.CreateOptions{})
	testutil.Must(t, err)

	// Two upload PVCs, as the DataVolume reconciler makes them, and their volumes.
	dir := t.TempDir()
	d := startDriver(t, dir, kube.New(cs))
	for _, ns := range []string{"ns-a", "ns-b"} {
		_, err := cs.CoreV1().PersistentVolumeClaims(ns).Create(ctx, &corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: "disk", Annotations: map[string]string{claim.AnnSource: claim.SourceUpload}},
			Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("64Mi")}}},
		}, metav1.CreateOptions{})
		testutil.Must(t, err)
		_, err = d.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-" + ns, CapacityRange: &csi.CapacityRange{RequiredBytes: 64 << 20},
			VolumeCapabilities: []*csi.VolumeCapability{{AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
				AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER}}},
			Parameters: map[string]string{"csi.storage.k8s.io/pvc/name": "disk", "csi.storage.k8s.io/pvc/namespace": ns}})
		testutil.Must(t, err)
	}
	waitAnnotation(t, cs, "ns-a", claim.AnnPhase, "Pending")

	srv, err := upload.New(upload.Config{Client: cs, Volumes: d.drv, Hosts: []string{"127.0.0.1"},
		Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	testutil.Must(t, err)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	testutil.Must(t, err)
	sctx, stop := context.WithCancel(ctx)
	t.Cleanup(stop)
	go srv.Serve(sctx, lis)
	url := "https://" + lis.Addr().String()

	raw := make([]byte, 6<<20)
	rand.Read(raw[:2<<20])
	rand.Read(raw[4<<20:])
	img := filepath.Join(dir, "img.raw")
	testutil.Must(t, os.WriteFile(img, raw, 0o644))
	if out, err := exec.Command("qemu-img", "convert", "-O", "qcow2", img, img+".qcow2").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v %s", err, out)
	}
	qcow, err := os.ReadFile(img + ".qcow2")
	testutil.Must(t, err)
	sum := sha256.Sum256(qcow)
	goodSum := "sha256:" + hex.EncodeToString(sum[:])

	tests := []struct {
		name, token, ns, checksum string
		cut                       bool // the connection drops half-way through the body
		wantCode                  int  // 0: success, -1: the request fails without a reply
		wantPhase                 string
	}{
		{"no token", "", "ns-a", "", false, 401, "Pending"},
		{"not a token", "garbage", "ns-a", "", false, 401, "Pending"},
		{"no permission", bob, "ns-a", "", false, 403, "Pending"},
		{"another namespace", alice, "ns-b", "", false, 403, "Pending"},
		{"interrupted half-way", alice, "ns-a", goodSum, true, -1, "Failed"},
		{"corrupted upload", alice, "ns-a", "sha256:" + strings.Repeat("0", 64), false, 422, "Failed"},
		{"right credentials", alice, "ns-a", goodSum, false, 0, "Ready"},
		{"already uploaded", alice, "ns-a", goodSum, false, 409, "Ready"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var sent int64
			o := client.Options{URL: url, Token: tt.token, Insecure: true, Checksum: tt.checksum,
				Progress: func(s, total int64) { sent = s }}
			if tt.token == "" {
				o.Token = "x" // the client insists on a token; send an empty header below
				o.HTTPClient = noAuthClient()
			}
			var body io.Reader = bytes.NewReader(qcow)
			if tt.cut {
				body = io.MultiReader(bytes.NewReader(qcow[:len(qcow)/2]), iotest.ErrReader(errors.New("connection dropped")))
			}
			err := client.Upload(ctx, o, tt.ns, "disk", body, int64(len(qcow)))
			var ue *client.Error
			switch {
			case tt.wantCode == 0 && err != nil:
				t.Fatalf("upload: %v", err)
			case tt.wantCode == -1 && err == nil:
				t.Fatal("an upload cut half-way succeeded")
			case tt.wantCode > 0 && (!errors.As(err, &ue) || ue.StatusCode != tt.wantCode):
				t.Fatalf("upload: %v, want HTTP %d", err, tt.wantCode)
			}
			waitAnnotation(t, cs, tt.ns, claim.AnnPhase, tt.wantPhase)
			if tt.cut {
				noScratch(t, filepath.Join(dir, "pool", ".scratch"))
			}
			if tt.wantCode == 0 {
				if sent != int64(len(qcow)) {
					t.Fatalf("progress reported %d of %d bytes", sent, len(qcow))
				}
				v, err := d.drv.VolumeForClaim("ns-a", "disk")
				testutil.Must(t, err)
				got, err := os.ReadFile(filepath.Join(v.Dir, diskimg.Name))
				testutil.Must(t, err)
				if len(got) != 64<<20 || !bytes.Equal(got[:len(raw)], raw) {
					t.Fatal("disk.img does not hold the uploaded image")
				}
				waitAnnotation(t, cs, "ns-a", claim.AnnProgress, "100.0%")
			}
		})
	}
}

// TestUploadForwarded: an upload sent to the endpoint of another node is passed to the
// endpoint on the volume's node (found through the PV's node affinity and the node's
// InternalIP), which checks the caller again and writes the image. Both endpoints share one
// certificate, as the chart deploys them; node-a listens on 127.0.0.1, node-b on 127.0.0.2.
func TestUploadForwarded(t *testing.T) {
	env, err := testenv.Start("upload-forward")
	testutil.Must(t, err)
	t.Cleanup(func() { env.Stop() })
	ctx := context.Background()
	cs := env.Clientset
	admin, err := env.Token(ctx, "ns-a", "admin")
	testutil.Must(t, err)
	_, err = cs.RbacV1().RoleBindings("ns-a").Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "admin"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "cluster-admin"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: "ns-a", Name: "admin"}}}, metav1.CreateOptions{})
	testutil.Must(t, err)

	// Shared certificate.
	dir := t.TempDir()
	cert, err := upload.SelfSigned([]string{"127.0.0.1", "127.0.0.2"})
	testutil.Must(t, err)
	keyDER, err := x509.MarshalECPrivateKey(cert.PrivateKey.(*ecdsa.PrivateKey))
	testutil.Must(t, err)
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	testutil.Must(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o600))
	testutil.Must(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600))

	// node-a holds the volume; PV and nodes as the provisioner and kubelet make them.
	lisA, err := net.Listen("tcp", "127.0.0.1:0")
	testutil.Must(t, err)
	port := lisA.Addr().(*net.TCPAddr).Port
	lisB, err := net.Listen("tcp", fmt.Sprintf("127.0.0.2:%d", port))
	if err != nil {
		t.Skipf("127.0.0.2:%d is taken: %v", port, err)
	}
	for name, ip := range map[string]string{"node-a": "127.0.0.1", "node-b": "127.0.0.2"} {
		n, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
		testutil.Must(t, err)
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}
		_, err = cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
		testutil.Must(t, err)
	}
	_, err = cs.CoreV1().PersistentVolumes().Create(ctx, &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pv-disk"},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:               corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("64Mi")},
			AccessModes:            []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: driver.DefaultName, VolumeHandle: "x"}},
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: driver.TopologyKey, Operator: corev1.NodeSelectorOpIn, Values: []string{"node-a"}}}}}}},
		}}, metav1.CreateOptions{})
	testutil.Must(t, err)
	_, err = cs.CoreV1().PersistentVolumeClaims("ns-a").Create(ctx, &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "disk", Annotations: map[string]string{claim.AnnSource: claim.SourceUpload}},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, VolumeName: "pv-disk",
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("64Mi")}}},
	}, metav1.CreateOptions{})
	testutil.Must(t, err)
	a := startDriver(t, filepath.Join(dir, "a"), kube.New(cs))
	b := startDriver(t, filepath.Join(dir, "b"), kube.New(cs))
	_, err = a.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-disk", CapacityRange: &csi.CapacityRange{RequiredBytes: 64 << 20},
		VolumeCapabilities: []*csi.VolumeCapability{{AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER}}},
		Parameters: map[string]string{"csi.storage.k8s.io/pvc/name": "disk", "csi.storage.k8s.io/pvc/namespace": "ns-a"}})
	testutil.Must(t, err)

	sctx, stop := context.WithCancel(ctx)
	t.Cleanup(stop)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	for _, n := range []struct {
		id  string
		d   *driverHarness
		lis net.Listener
	}{{"node-a", a, lisA}, {"node-b", b, lisB}} {
		srv, err := upload.New(upload.Config{Client: cs, Volumes: n.d.drv, NodeID: n.id, PeerPort: port, CertFile: certFile, KeyFile: keyFile, Log: log})
		testutil.Must(t, err)
		go srv.Serve(sctx, n.lis)
	}

	raw := make([]byte, 3<<20)
	rand.Read(raw)
	caPEM, _ := os.ReadFile(certFile)
	// The client talks to node-b, and verifies the shared certificate.
	err = client.Upload(ctx, client.Options{URL: "https://" + lisB.Addr().String(), Token: admin, CA: caPEM},
		"ns-a", "disk", bytes.NewReader(raw), int64(len(raw)))
	testutil.Must(t, err)
	v, err := a.drv.VolumeForClaim("ns-a", "disk")
	testutil.Must(t, err)
	got, err := os.ReadFile(filepath.Join(v.Dir, diskimg.Name))
	testutil.Must(t, err)
	if !bytes.Equal(got[:len(raw)], raw) {
		t.Fatal("the volume on node-a does not hold the image uploaded through node-b")
	}
	waitAnnotation(t, cs, "ns-a", claim.AnnPhase, "Ready")
}

// noAuthClient strips the Authorization header, to send a request without credentials.
func noAuthClient() *http.Client {
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // test server
	return &http.Client{Transport: roundTripper(func(r *http.Request) (*http.Response, error) {
		r.Header.Del("Authorization")
		return tr.RoundTrip(r)
	})}
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func waitAnnotation(t *testing.T, cs kubernetes.Interface, ns, key, want string) {
	t.Helper()
	var got string
	for i := 0; i < 100; i++ {
		pvc, err := cs.CoreV1().PersistentVolumeClaims(ns).Get(context.Background(), "disk", metav1.GetOptions{})
		testutil.Must(t, err)
		if got = pvc.Annotations[key]; got == want {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("PVC %s/disk annotation %s = %q, want %q", ns, key, got, want)
}

type driverHarness struct {
	drv  *driver.Driver
	ctrl csi.ControllerClient
}

func startDriver(t *testing.T, dir string, cluster driver.Cluster) *driverHarness {
	sock := filepath.Join(dir, "csi.sock")
	d, err := driver.New(driver.Config{Endpoint: "unix://" + sock, NodeID: "node-a", StateDir: filepath.Join(dir, "state"),
		Pools: []driver.Pool{{Name: "default", Dir: filepath.Join(dir, "pool")}}, Cluster: cluster,
		Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	testutil.Must(t, err)
	lis, err := net.Listen("unix", sock)
	testutil.Must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Serve(ctx, lis) }()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	testutil.Must(t, err)
	t.Cleanup(func() { conn.Close(); cancel(); <-done })
	return &driverHarness{drv: d, ctrl: csi.NewControllerClient(conn)}
}

// noScratch waits until no file is left in the scratch directory and no descriptor of this
// process (where the endpoint runs) still holds a scratch file: its space is back in the pool.
func noScratch(t *testing.T, dir string) {
	t.Helper()
	var held []string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		held = nil
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			held = append(held, e.Name())
		}
		fds, _ := os.ReadDir("/proc/self/fd")
		for _, fd := range fds {
			if l, err := os.Readlink("/proc/self/fd/" + fd.Name()); err == nil && strings.HasPrefix(l, dir+"/") {
				held = append(held, l)
			}
		}
		if len(held) == 0 {
			return
		}
	}
	t.Fatalf("scratch left after an interrupted upload: %v", held)
}
