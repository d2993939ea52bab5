package command

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/slimvirt/slimvirt/api/subresources"
	"github.com/slimvirt/slimvirt/csi/upload"
	uploadclient "github.com/slimvirt/slimvirt/csi/upload/client"
	"github.com/slimvirt/slimvirt/internal/testenv"
	"github.com/slimvirt/slimvirt/internal/testutil"
)

func TestUploadTarget(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		dv, pvc string
		want    string
		wantErr bool
	}{
		{name: "dv positional", args: []string{"dv", "fedora"}, want: "fedora"},
		{name: "pvc positional", args: []string{"pvc", "fedora"}, want: "fedora"},
		{name: "--dv flag", dv: "fedora", want: "fedora"},
		{name: "--pvc-name flag", pvc: "fedora", want: "fedora"},
		{name: "same name twice", args: []string{"dv", "fedora"}, dv: "fedora", want: "fedora"},
		{name: "two names", args: []string{"dv", "a"}, pvc: "b", wantErr: true},
		{name: "nothing", wantErr: true},
		{name: "unknown kind", args: []string{"vm", "x"}, wantErr: true},
		{name: "one arg", args: []string{"fedora"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := uploadTarget(tt.args, tt.dv, tt.pvc)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("uploadTarget = %q, %v; want %q, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestProgressLine(t *testing.T) {
	tests := []struct {
		sent, total int64
		want        string
	}{
		{0, 100 << 20, "[>         ]   0.00% 0 B / 100.0 MiB"},
		{50 << 20, 100 << 20, "[=====>    ]  50.00% 50.0 MiB / 100.0 MiB"},
		{100 << 20, 100 << 20, "[==========] 100.00% 100.0 MiB / 100.0 MiB"},
		{3 << 30, 2 << 30, "[==========] 100.00% 3.0 GiB / 2.0 GiB"},
		{2048, -1, "2.0 KiB sent"},
	}
	for _, tt := range tests {
		if got := progressLine(tt.sent, tt.total, 10); got != tt.want {
			t.Errorf("progressLine(%d, %d) = %q, want %q", tt.sent, tt.total, got, tt.want)
		}
	}
}

func TestNewUploadDataVolume(t *testing.T) {
	tests := []struct {
		name    string
		o       uploadOptions
		wantErr bool
	}{
		{name: "no size", o: uploadOptions{}, wantErr: true},
		{name: "bad size", o: uploadOptions{size: "lots"}, wantErr: true},
		{name: "bad volume mode", o: uploadOptions{size: "1Gi", volumeMode: "Disk"}, wantErr: true},
		{name: "all set", o: uploadOptions{size: "5Gi", storageClass: "fast", accessMode: "ReadWriteOnce", volumeMode: "Block"}},
		{name: "size only", o: uploadOptions{size: "512Mi"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dv, err := newUploadDataVolume("ns", "disk", tt.o)
			if (err != nil) != tt.wantErr {
				t.Fatalf("error %v, want error %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if dv.Namespace != "ns" || dv.Name != "disk" || dv.Spec.Source.Upload == nil {
				t.Fatalf("wrong DataVolume: %+v", dv)
			}
			s := dv.Spec.Storage
			if q := s.Resources.Requests[corev1.ResourceStorage]; q.Cmp(resource.MustParse(tt.o.size)) != 0 {
				t.Errorf("size %s, want %s", q.String(), tt.o.size)
			}
			if (s.StorageClassName != nil) != (tt.o.storageClass != "") || (s.StorageClassName != nil && *s.StorageClassName != tt.o.storageClass) {
				t.Errorf("storage class %v, want %q", s.StorageClassName, tt.o.storageClass)
			}
			if (s.VolumeMode != nil) != (tt.o.volumeMode != "") || (s.VolumeMode != nil && string(*s.VolumeMode) != tt.o.volumeMode) {
				t.Errorf("volume mode %v, want %q", s.VolumeMode, tt.o.volumeMode)
			}
			if (len(s.AccessModes) == 1) != (tt.o.accessMode != "") {
				t.Errorf("access modes %v, want %q", s.AccessModes, tt.o.accessMode)
			}
		})
	}
}

// aggregatedStandIn plays slimvirt's aggregated API server behind the real kube-apiserver: it
// answers discovery and issues "token-for-<user>" to the user the kube-apiserver says it
// authenticated (X-Remote-User), so a token that reaches the upload endpoint proves it came
// through the kube-apiserver for that user.
func aggregatedStandIn(t *testing.T) *httptest.Server {
	gv := "/apis/" + subresources.Group + "/" + subresources.Version
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+gv, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(metav1.APIResourceList{TypeMeta: metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"}, GroupVersion: subresources.Group + "/" + subresources.Version,
			APIResources: []metav1.APIResource{{Name: subresources.DataVolumes + "/" + subresources.UploadToken, Namespaced: true, Kind: "UploadTokenResponse", Verbs: []string{"create"}}}})
	})
	mux.HandleFunc("POST "+subresources.APIPath(subresources.DataVolumes, "{ns}", "{name}", subresources.UploadToken), func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			t.Errorf("the user's credentials reached the aggregated server")
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(subresources.UploadTokenResponse{
			Token:   "token-for-" + r.Header.Get("X-Remote-User") + "-" + r.PathValue("ns") + "-" + r.PathValue("name"),
			Expires: time.Now().Add(5 * time.Minute).UTC().Format(time.RFC3339),
		})
	})
	srv := httptest.NewTLSServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// register makes the kube-apiserver route the aggregated group to srv: an APIService whose
// Service is an ExternalName for 127.0.0.1, as the aggregator resolves it without a cluster.
func register(t *testing.T, env *testenv.Env, srv *httptest.Server) {
	ctx := context.Background()
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	testutil.Must(t, env.Namespace(ctx, "slimvirt"))
	_, err := env.Clientset.CoreV1().Services("slimvirt").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: subresources.ServiceName},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "localhost"}}, metav1.CreateOptions{})
	testutil.Must(t, err)
	dyn, err := dynamic.NewForConfig(env.Config)
	testutil.Must(t, err)
	apiService := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
		"metadata": map[string]any{"name": subresources.APIServiceName},
		"spec": map[string]any{"group": subresources.Group, "version": subresources.Version, "insecureSkipTLSVerify": true,
			"groupPriorityMinimum": int64(1000), "versionPriority": int64(15),
			"service": map[string]any{"namespace": "slimvirt", "name": subresources.ServiceName, "port": int64(port)}},
	}}
	res := dyn.Resource(schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"})
	_, err = res.Create(ctx, apiService, metav1.CreateOptions{})
	testutil.Must(t, err)
	testutil.WaitFor(t, 60*time.Second, "APIService "+subresources.APIServiceName+" Available", func() bool {
		a, err := res.Get(ctx, subresources.APIServiceName, metav1.GetOptions{})
		if err != nil {
			return false
		}
		conds, _, _ := unstructured.NestedSlice(a.Object, "status", "conditions")
		for _, c := range conds {
			if m, ok := c.(map[string]any); ok && m["type"] == "Available" && m["status"] == "True" {
				return true
			}
		}
		return false
	})
}

// TestUploadToken runs slimctl's side of an upload against a real kube-apiserver: the token is
// asked for through the kube-apiserver with the user's credentials, and only that token goes to
// the upload endpoint, whose certificate is verified.
func TestUploadToken(t *testing.T) {
	env, err := testenv.Start("slimctl-upload")
	testutil.Must(t, err)
	t.Cleanup(func() { testutil.Must(t, env.Stop()) })
	ctx := context.Background()
	cs := env.Clientset

	// alice may ask for upload tokens in vms; mallory may not.
	alice, err := env.Token(ctx, "vms", "alice")
	testutil.Must(t, err)
	mallory, err := env.Token(ctx, "vms", "mallory")
	testutil.Must(t, err)
	_, err = cs.RbacV1().Roles("vms").Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "uploader"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{subresources.Group}, Resources: []string{subresources.DataVolumes + "/" + subresources.UploadToken}, Verbs: []string{"create"}}}}, metav1.CreateOptions{})
	testutil.Must(t, err)
	_, err = cs.RbacV1().RoleBindings("vms").Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "alice-uploads"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "uploader"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: "vms", Name: "alice"}}}, metav1.CreateOptions{})
	testutil.Must(t, err)
	restFor := func(token string) rest.Interface {
		cfg := rest.AnonymousClientConfig(env.Config)
		cfg.BearerToken = token
		k, err := kubernetes.NewForConfig(cfg)
		testutil.Must(t, err)
		return k.CoreV1().RESTClient()
	}

	// The upload endpoint: records what it was sent. The handler is done before its answer
	// reaches the client, but the race detector cannot see that through the socket: a lock.
	var mu sync.Mutex
	var got []http.Header
	endpoint := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		defer mu.Unlock()
		got = append(got, r.Header.Clone())
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintln(w, `{"phase":"Ready"}`)
	}))
	t.Cleanup(endpoint.Close)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: endpoint.Certificate().Raw})
	image := []byte("an image")

	t.Run("no aggregated API", func(t *testing.T) {
		err := sendImage(ctx, restFor(alice), uploadclient.Options{URL: endpoint.URL, CA: ca}, "vms", "disk", bytes.NewReader(image), int64(len(image)))
		if err == nil || !strings.Contains(err.Error(), "kubectl get apiservice "+subresources.APIServiceName) {
			t.Fatalf("sendImage without the aggregated API: %v", err)
		}
		t.Log(err)
		if len(got) != 0 {
			t.Fatal("the endpoint was called without a token")
		}
	})

	register(t, env, aggregatedStandIn(t))

	t.Run("the issued token and nothing else", func(t *testing.T) {
		got = nil
		testutil.Must(t, sendImage(ctx, restFor(alice), uploadclient.Options{URL: endpoint.URL, CA: ca}, "vms", "disk", bytes.NewReader(image), int64(len(image))))
		if len(got) != 1 {
			t.Fatalf("%d requests reached the endpoint", len(got))
		}
		if a := got[0].Get("Authorization"); a != "Bearer token-for-system:serviceaccount:vms:alice-vms-disk" {
			t.Fatalf("Authorization sent to the endpoint: %q", a)
		}
		for k, vs := range got[0] {
			for _, v := range vs {
				if strings.Contains(v, alice) {
					t.Fatalf("the user's Kubernetes token went to the endpoint in %s", k)
				}
			}
		}
	})

	t.Run("not allowed", func(t *testing.T) {
		got = nil
		err := sendImage(ctx, restFor(mallory), uploadclient.Options{URL: endpoint.URL, CA: ca}, "vms", "disk", bytes.NewReader(image), int64(len(image)))
		if err == nil || !strings.Contains(err.Error(), "uploading needs create on datavolumes/uploadtoken") || len(got) != 0 {
			t.Fatalf("sendImage as a user without the right: %v (%d requests reached the endpoint)", err, len(got))
		}
	})

	t.Run("endpoint certificate verified", func(t *testing.T) {
		got = nil
		// httptest's servers all share one certificate: make another one.
		other, err := upload.SelfSigned([]string{"127.0.0.1"})
		testutil.Must(t, err)
		wrongCA := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: other.Certificate[0]})
		err = sendImage(ctx, restFor(alice), uploadclient.Options{URL: endpoint.URL, CA: wrongCA}, "vms", "disk", bytes.NewReader(image), int64(len(image)))
		if err == nil || !strings.Contains(err.Error(), "certificate") || len(got) != 0 {
			t.Fatalf("upload to an endpoint the CA did not sign: %v (%d requests reached it)", err, len(got))
		}
	})

	t.Run("upload CA", func(t *testing.T) {
		if _, err := uploadCA(ctx, cs); err == nil || !strings.Contains(err.Error(), "ConfigMap slimvirt/slimvirt-upload-ca") {
			t.Fatalf("uploadCA without the ConfigMap: %v", err)
		}
		_, err := cs.CoreV1().ConfigMaps("slimvirt").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "slimvirt-upload-ca"},
			Data: map[string]string{"ca.crt": string(ca)}}, metav1.CreateOptions{})
		testutil.Must(t, err)
		b, err := uploadCA(ctx, cs)
		if err != nil || !bytes.Equal(b, ca) {
			t.Fatalf("uploadCA = %q, %v", b, err)
		}
	})
}
