package upload_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
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
	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	ctrlclient "sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/slimvirt/slimvirt/api/subresources"
	"github.com/slimvirt/slimvirt/api/uploadtoken"
	v1alpha1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/controller/uploadtokens"
	"github.com/slimvirt/slimvirt/csi/claim"
	"github.com/slimvirt/slimvirt/csi/diskimg"
	"github.com/slimvirt/slimvirt/csi/driver"
	"github.com/slimvirt/slimvirt/csi/kube"
	"github.com/slimvirt/slimvirt/csi/upload"
	"github.com/slimvirt/slimvirt/csi/upload/client"
	"github.com/slimvirt/slimvirt/internal/testenv"
	"github.com/slimvirt/slimvirt/internal/testutil"
)

// uploadKeyNS is where the tests' controller keeps the upload token key.
const uploadKeyNS = "slimvirt"

// TestUpload runs the endpoint against a real kube-apiserver, with upload tokens issued by the
// controller's Issuer (its key in a Secret, the public half in the ConfigMap the endpoint reads)
// for DataVolumes that own their PVCs, as the DataVolume reconciler makes them.
func TestUpload(t *testing.T) {
	env, err := testenv.Start("upload")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { testutil.Must(t, env.Stop()) })
	ctx := context.Background()
	cs := env.Clientset
	testutil.Must(t, env.Namespace(ctx, uploadKeyNS))
	issuer, err := uploadtokens.New(ctx, cs, uploadKeyNS, 0, logr.Discard())
	testutil.Must(t, err)

	// alice may create datavolumes/upload in ns-a: her Kubernetes token is still no upload token.
	alice, err := env.Token(ctx, "ns-a", "alice")
	testutil.Must(t, err)
	testutil.Must(t, env.Namespace(ctx, "ns-b"))
	_, err = cs.RbacV1().Roles("ns-a").Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "uploader"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"slimvirt.io"}, Resources: []string{"datavolumes/upload"}, Verbs: []string{"create"}}}}, metav1.CreateOptions{})
	testutil.Must(t, err)
	_, err = cs.RbacV1().RoleBindings("ns-a").Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "alice-uploads"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "uploader"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: "ns-a", Name: "alice"}}}, metav1.CreateOptions{})
	testutil.Must(t, err)

	// ns-a/disk was deleted and made again: the PVC belongs to the second one.
	dvs := dataVolumes(t, env)
	earlier := dvs.create(t, "ns-a", "disk")
	dvs.remove(t, "ns-a", "disk")
	uid := map[string]types.UID{"ns-a": dvs.create(t, "ns-a", "disk"), "ns-b": dvs.create(t, "ns-b", "disk")}
	if earlier == uid["ns-a"] {
		t.Fatal("the DataVolume made again has the same UID")
	}

	// Two upload PVCs, as the DataVolume reconciler makes them, and their volumes.
	dir := t.TempDir()
	d := startDriver(t, dir, kube.New(cs))
	for _, ns := range []string{"ns-a", "ns-b"} {
		_, err := cs.CoreV1().PersistentVolumeClaims(ns).Create(ctx, uploadPVC("disk", uid[ns], ""), metav1.CreateOptions{})
		testutil.Must(t, err)
		_, err = d.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-" + ns, CapacityRange: &csi.CapacityRange{RequiredBytes: 64 << 20},
			VolumeCapabilities: []*csi.VolumeCapability{{AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
				AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER}}},
			Parameters: map[string]string{"csi.storage.k8s.io/pvc/name": "disk", "csi.storage.k8s.io/pvc/namespace": ns}})
		testutil.Must(t, err)
	}
	waitAnnotation(t, cs, "ns-a", claim.AnnPhase, "Pending")

	srv, err := upload.New(upload.Config{Client: cs, Volumes: d.drv, Hosts: []string{"127.0.0.1"}, KeyNamespace: uploadKeyNS,
		Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	testutil.Must(t, err)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	testutil.Must(t, err)
	sctx, stop := context.WithCancel(ctx)
	t.Cleanup(stop)
	go func() { _ = srv.Serve(sctx, lis) }() // returns when sctx ends
	url := "https://" + lis.Addr().String()

	tok := tokens(t, env, issuer)
	good := tok.issue("ns-a", "disk", uid["ns-a"])
	attacks := []struct{ name, token, ns string }{
		{"user's Kubernetes token", alice, "ns-a"},
		{"signed by another key", tok.forged("ns-a", "disk", uid["ns-a"]), "ns-a"},
		{"expired", tok.expired("ns-a", "disk", uid["ns-a"]), "ns-a"},
		{"another DataVolume's", tok.issue("ns-a", "other", "uid-other"), "ns-a"},
		{"another namespace's", tok.issue("ns-b", "disk", uid["ns-b"]), "ns-a"},
		{"the earlier DataVolume's of the same name", tok.issue("ns-a", "disk", earlier), "ns-a"},
		{"of ns-a used for ns-b", good, "ns-b"},
	}
	wantAttack := map[string]int{"user's Kubernetes token": 401, "signed by another key": 401, "expired": 401}
	for _, a := range attacks {
		t.Run("refused: "+a.name, func(t *testing.T) {
			want := wantAttack[a.name]
			if want == 0 {
				want = 403
			}
			err := client.Upload(ctx, client.Options{URL: url, Token: a.token, Insecure: true}, a.ns, "disk", bytes.NewReader(make([]byte, 1<<20)), 1<<20)
			var ue *client.Error
			if !errors.As(err, &ue) || ue.StatusCode != want {
				t.Fatalf("upload: %v, want HTTP %d", err, want)
			}
			t.Logf("refused: %v", err)
			waitAnnotation(t, cs, a.ns, claim.AnnPhase, "Pending")
		})
	}

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
		{"interrupted half-way", good, "ns-a", goodSum, true, -1, "Failed"},
		{"corrupted upload", good, "ns-a", "sha256:" + strings.Repeat("0", 64), false, 422, "Failed"},
		{"right token", good, "ns-a", goodSum, false, 0, "Ready"},
		{"already uploaded", good, "ns-a", goodSum, false, 409, "Ready"},
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

	// The controller makes a new key: tokens of the new key are taken at once (a signature that
	// does not match makes the endpoint read the key again), tokens of the old one no more.
	t.Run("key rotation", func(t *testing.T) {
		testutil.Must(t, cs.CoreV1().Secrets(uploadKeyNS).Delete(ctx, subresources.UploadTokenKeySecret, metav1.DeleteOptions{}))
		rotated, err := uploadtokens.New(ctx, cs, uploadKeyNS, 0, logr.Discard())
		testutil.Must(t, err)
		if rotated.PublicKey().Equal(issuer.PublicKey()) {
			t.Fatal("no new key")
		}
		time.Sleep(1100 * time.Millisecond) // the endpoint reads the key at most once a second
		fresh := tokens(t, env, rotated).issue("ns-a", "disk", uid["ns-a"])
		for _, c := range []struct {
			name, token string
			want        int
		}{{"new key", fresh, 409}, {"old key", good, 401}} { // 409: let in, and the volume is full
			err := client.Upload(ctx, client.Options{URL: url, Token: c.token, Insecure: true}, "ns-a", "disk", bytes.NewReader([]byte("x")), 1)
			var ue *client.Error
			if !errors.As(err, &ue) || ue.StatusCode != c.want {
				t.Fatalf("%s: upload: %v, want HTTP %d", c.name, err, c.want)
			}
		}
	})
}

// dvClient makes and deletes real DataVolumes, whose UIDs upload tokens carry.
type dvClient struct{ c ctrlclient.Client }

func dataVolumes(t *testing.T, env *testenv.Env) dvClient {
	scheme := runtime.NewScheme()
	testutil.Must(t, v1alpha1.AddToScheme(scheme))
	c, err := ctrlclient.New(env.Config, ctrlclient.Options{Scheme: scheme})
	testutil.Must(t, err)
	return dvClient{c}
}

func (d dvClient) create(t *testing.T, ns, name string) types.UID {
	t.Helper()
	dv := &v1alpha1.DataVolume{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: v1alpha1.DataVolumeSpec{
		Source: v1alpha1.DataVolumeSourceSpec{Upload: &v1alpha1.DataVolumeSourceUpload{}},
		Storage: &v1alpha1.StorageSpec{Resources: v1alpha1.StorageResources{
			Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("64Mi")}}}}}
	testutil.Must(t, d.c.Create(context.Background(), dv))
	return dv.UID
}

func (d dvClient) remove(t *testing.T, ns, name string) {
	t.Helper()
	testutil.Must(t, d.c.Delete(context.Background(), &v1alpha1.DataVolume{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}))
}

// uploadPVC is the PVC the DataVolume reconciler makes for an upload DataVolume with that UID.
func uploadPVC(name string, dvUID types.UID, volumeName string) *corev1.PersistentVolumeClaim {
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{claim.AnnSource: claim.SourceUpload},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: v1alpha1.GroupVersion.String(), Kind: "DataVolume", Name: name, UID: dvUID,
				Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}}},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, VolumeName: volumeName,
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("64Mi")}}},
	}
}

// tokenMaker issues tokens as the aggregated API does, and makes the ones an attacker has.
type tokenMaker struct {
	t      *testing.T
	issuer *uploadtokens.Issuer
	key    ed25519.PrivateKey // the controller's, read from its Secret
}

func tokens(t *testing.T, env *testenv.Env, issuer *uploadtokens.Issuer) tokenMaker {
	s, err := env.Clientset.CoreV1().Secrets(uploadKeyNS).Get(context.Background(), subresources.UploadTokenKeySecret, metav1.GetOptions{})
	testutil.Must(t, err)
	key, err := uploadtoken.ParsePrivateKey(s.Data[uploadtoken.PrivateKeyData])
	testutil.Must(t, err)
	return tokenMaker{t: t, issuer: issuer, key: key}
}

func (m tokenMaker) issue(ns, dv string, uid types.UID) string {
	tok, _, err := m.issuer.Issue(context.Background(), ns, dv, uid)
	testutil.Must(m.t, err)
	return tok
}

// expired is signed with the right key but ran out a minute ago (beyond the clock skew allowed).
func (m tokenMaker) expired(ns, dv string, uid types.UID) string {
	now := time.Now()
	tok, err := uploadtoken.Sign(m.key, uploadtoken.Claims{Namespace: ns, DataVolume: dv, UID: uid,
		IssuedAt: now.Add(-6 * time.Minute), Expires: now.Add(-time.Minute)})
	testutil.Must(m.t, err)
	return tok
}

// forged is well formed and names the right DataVolume, signed by a key of the attacker's.
func (m tokenMaker) forged(ns, dv string, uid types.UID) string {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	testutil.Must(m.t, err)
	now := time.Now()
	tok, err := uploadtoken.Sign(key, uploadtoken.Claims{Namespace: ns, DataVolume: dv, UID: uid, IssuedAt: now, Expires: now.Add(time.Minute)})
	testutil.Must(m.t, err)
	return tok
}

// TestUploadForwarded: an upload sent to the endpoint of another node is passed to the
// endpoint on the volume's node (found through the PV's node affinity and the node's
// InternalIP), which checks the upload token again and writes the image. Both endpoints share one
// certificate, as the chart deploys them; node-a listens on 127.0.0.1, node-b on 127.0.0.2.
func TestUploadForwarded(t *testing.T) {
	env, err := testenv.Start("upload-forward")
	testutil.Must(t, err)
	t.Cleanup(func() { testutil.Must(t, env.Stop()) })
	ctx := context.Background()
	cs := env.Clientset
	testutil.Must(t, env.Namespace(ctx, uploadKeyNS))
	testutil.Must(t, env.Namespace(ctx, "ns-a"))
	issuer, err := uploadtokens.New(ctx, cs, uploadKeyNS, 0, logr.Discard())
	testutil.Must(t, err)
	dvUID := dataVolumes(t, env).create(t, "ns-a", "disk")
	tok := tokens(t, env, issuer)

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
	_, err = cs.CoreV1().PersistentVolumeClaims("ns-a").Create(ctx, uploadPVC("disk", dvUID, "pv-disk"), metav1.CreateOptions{})
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
		srv, err := upload.New(upload.Config{Client: cs, Volumes: n.d.drv, NodeID: n.id, PeerPort: port, CertFile: certFile, KeyFile: keyFile,
			KeyNamespace: uploadKeyNS, Log: log})
		testutil.Must(t, err)
		go func() { _ = srv.Serve(sctx, n.lis) }() // returns when sctx ends
	}

	raw := make([]byte, 3<<20)
	rand.Read(raw)
	caPEM, _ := os.ReadFile(certFile)
	// The client talks to node-b, and verifies the shared certificate. A token of an earlier
	// DataVolume of the same name is refused on node-b already; the right one goes through.
	nodeB := client.Options{URL: "https://" + lisB.Addr().String(), CA: caPEM}
	nodeB.Token = tok.issue("ns-a", "disk", "uid-of-an-earlier-disk")
	err = client.Upload(ctx, nodeB, "ns-a", "disk", bytes.NewReader(raw), int64(len(raw)))
	var ue *client.Error
	if !errors.As(err, &ue) || ue.StatusCode != 403 {
		t.Fatalf("upload with an earlier DataVolume's token: %v, want HTTP 403", err)
	}
	nodeB.Token = tok.issue("ns-a", "disk", dvUID)
	testutil.Must(t, client.Upload(ctx, nodeB, "ns-a", "disk", bytes.NewReader(raw), int64(len(raw))))
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
