//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/slimvirt/slimvirt/api/subresources"
	"github.com/slimvirt/slimvirt/api/uploadtoken"
	v1alpha1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/csi/upload"
	uploadclient "github.com/slimvirt/slimvirt/csi/upload/client"
)

// uploadTokenRefusals: the upload endpoint, reached through the upload Service with its
// certificate verified, refuses a token issued for another DataVolume, an expired token signed
// with the cluster's own key, and a user's Kubernetes token; userToken is a namespace editor's.
func uploadTokenRefusals(t *testing.T, port, userToken string) {
	ctx := context.Background()
	for _, name := range []string{"tok-a", "tok-b"} {
		applyYAML(t, fmt.Sprintf(`apiVersion: slimvirt.io/v1alpha1
kind: DataVolume
metadata: {name: %s, namespace: %s}
spec:
  source: {upload: {}}
  storage: {resources: {requests: {storage: 16Mi}}}
`, name, storageNS))
		waitDV(t, name, v1alpha1.DataVolumeUploadReady, 2*time.Minute)
	}
	cfg := rest.AnonymousClientConfig(cluster.config)
	cfg.BearerToken = userToken
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tokA, exp, err := uploadclient.RequestToken(ctx, cs.CoreV1().RESTClient(), storageNS, "tok-a")
	if err != nil {
		t.Fatalf("an editor's upload token: %v", err)
	}
	t.Logf("upload token for tok-a: %d bytes, expires in %s", len(tokA), time.Until(exp).Round(time.Second))

	ca := &corev1.ConfigMap{}
	if err := cluster.client.Get(ctx, client.ObjectKey{Namespace: "slimvirt", Name: "slimvirt-upload-ca"}, ca); err != nil {
		t.Fatalf("the upload CA: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(ca.Data["ca.crt"])) {
		t.Fatal("the upload CA ConfigMap holds no certificate")
	}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	post := func(dv, token string) (int, string) {
		url := "https://localhost:" + port + upload.PathPrefix + storageNS + "/datavolumes/" + dv + "/upload"
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(strings.Repeat("\x00", 4096)))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("upload to %s (TLS verified with the published CA): %v", dv, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return resp.StatusCode, string(b)
	}

	if code, body := post("tok-b", tokA); code != http.StatusForbidden {
		t.Errorf("tok-a's token on tok-b: %d %s, want 403", code, body)
	}
	if code, body := post("tok-a", userToken); code != http.StatusUnauthorized {
		t.Errorf("the user's own Kubernetes token: %d %s, want 401", code, body)
	}
	// An expired token, signed with the cluster's own key (read here as the admin), for the
	// right DataVolume and UID: only its expiry is wrong.
	keySecret := &corev1.Secret{}
	if err := cluster.client.Get(ctx, client.ObjectKey{Namespace: "slimvirt", Name: subresources.UploadTokenKeySecret}, keySecret); err != nil {
		t.Fatalf("the upload-token key: %v", err)
	}
	key, err := uploadtoken.ParsePrivateKey(keySecret.Data[uploadtoken.PrivateKeyData])
	if err != nil {
		t.Fatal(err)
	}
	dvA := &v1alpha1.DataVolume{}
	if err := cluster.client.Get(ctx, client.ObjectKey{Namespace: storageNS, Name: "tok-a"}, dvA); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	expired, err := uploadtoken.Sign(key, uploadtoken.Claims{Namespace: storageNS, DataVolume: "tok-a", UID: dvA.UID,
		IssuedAt: now.Add(-10 * time.Minute), Expires: now.Add(-5 * time.Minute), Audience: uploadtoken.Audience})
	if err != nil {
		t.Fatal(err)
	}
	if code, body := post("tok-a", expired); code != http.StatusUnauthorized || !strings.Contains(body, "expired") {
		t.Errorf("an expired token: %d %s, want 401 saying it expired", code, body)
	}
	// The same claims, not expired, are taken: the refusals above are about the token alone.
	fresh, err := uploadtoken.Sign(key, uploadtoken.Claims{Namespace: storageNS, DataVolume: "tok-a", UID: dvA.UID,
		IssuedAt: now, Expires: now.Add(time.Minute), Audience: uploadtoken.Audience})
	if err != nil {
		t.Fatal(err)
	}
	if code, body := post("tok-a", fresh); code/100 != 2 {
		t.Errorf("a good token for tok-a: %d %s, want success", code, body)
	}
}
