package uploadtokens

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/slimvirt/slimvirt/api/subresources"
	"github.com/slimvirt/slimvirt/api/uploadtoken"
	"github.com/slimvirt/slimvirt/internal/testenv"
	"github.com/slimvirt/slimvirt/internal/testutil"
)

// env is the real kube-apiserver every test shares; set once by TestMain.
var env *testenv.Env

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	var err error
	if env, err = testenv.Start("uploadtokens"); err != nil {
		fmt.Fprintln(os.Stderr, "these tests need kube-apiserver and etcd:", err)
		return 1
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop kube-apiserver and etcd:", err)
		}
	}()
	return m.Run()
}

func publishedKey(t *testing.T, cs kubernetes.Interface, ns string) ed25519.PublicKey {
	t.Helper()
	cm, err := cs.CoreV1().ConfigMaps(ns).Get(context.Background(), subresources.UploadTokenPublicConfigMap, metav1.GetOptions{})
	testutil.Must(t, err)
	pub, err := uploadtoken.ParsePublicKey([]byte(cm.Data[uploadtoken.PublicKeyData]))
	testutil.Must(t, err)
	return pub
}

// TestIssuer: the first Issuer makes the key and publishes its public half; a second one (a
// restarted controller) uses the same key; its tokens verify with the published key for their
// DataVolume only, and expire after the TTL.
func TestIssuer(t *testing.T) {
	ctx := context.Background()
	cs := env.Clientset
	testutil.Must(t, env.Namespace(ctx, "slimvirt"))
	first, err := New(ctx, cs, "slimvirt", 0, logr.Discard())
	testutil.Must(t, err)
	s, err := cs.CoreV1().Secrets("slimvirt").Get(ctx, subresources.UploadTokenKeySecret, metav1.GetOptions{})
	testutil.Must(t, err)
	if !strings.HasPrefix(string(s.Data[uploadtoken.PrivateKeyData]), "-----BEGIN PRIVATE KEY-----") {
		t.Fatalf("Secret data: %v", s.Data)
	}
	pub := publishedKey(t, cs, "slimvirt")
	if !pub.Equal(first.PublicKey()) {
		t.Fatal("the ConfigMap does not hold the Issuer's public key")
	}

	second, err := New(ctx, cs, "slimvirt", time.Minute, logr.Discard())
	testutil.Must(t, err)
	if !second.PublicKey().Equal(first.PublicKey()) {
		t.Fatal("a second Issuer made a new key instead of using the stored one")
	}
	s2, err := cs.CoreV1().Secrets("slimvirt").Get(ctx, subresources.UploadTokenKeySecret, metav1.GetOptions{})
	testutil.Must(t, err)
	if s2.ResourceVersion != s.ResourceVersion {
		t.Fatal("the Secret was rewritten by the second Issuer")
	}

	before := time.Now()
	tok, exp, err := second.Issue(ctx, "vms", "disk", "uid-1")
	testutil.Must(t, err)
	if d := exp.Sub(before); d < 58*time.Second || d > 61*time.Second {
		t.Fatalf("token expires in %s, want a minute", d)
	}
	c, err := uploadtoken.Verify(pub, tok, time.Now(), "vms", "disk")
	testutil.Must(t, err)
	if c.UID != "uid-1" || !c.Expires.Equal(exp) {
		t.Fatalf("claims %+v", c)
	}
	if _, err := uploadtoken.Verify(pub, tok, time.Now(), "vms", "other"); err == nil {
		t.Fatal("the token verified for another DataVolume")
	}
	if _, err := uploadtoken.Verify(pub, tok, exp.Add(uploadtoken.ClockSkew+time.Second), "vms", "disk"); err == nil {
		t.Fatal("the token verified after it expired")
	}
	tok5, exp5, err := first.Issue(ctx, "vms", "disk", "uid-1")
	testutil.Must(t, err)
	if d := time.Until(exp5); d < 4*time.Minute || d > 5*time.Minute+time.Second {
		t.Fatalf("default TTL token expires in %s", d)
	}
	testutil.Must(t, func() error { _, err := uploadtoken.Verify(pub, tok5, time.Now(), "vms", "disk"); return err }())
	if _, _, err := first.Issue(ctx, "vms", "disk", ""); err == nil {
		t.Fatal("a token without UID was issued")
	}
}

// TestIssuerRace: controllers starting at once end up with one key.
func TestIssuerRace(t *testing.T) {
	ctx := context.Background()
	testutil.Must(t, env.Namespace(ctx, "race"))
	const n = 6
	issuers := make([]*Issuer, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			issuers[i], errs[i] = New(ctx, env.Clientset, "race", 0, logr.Discard())
		}()
	}
	wg.Wait()
	pub := publishedKey(t, env.Clientset, "race")
	for i := range n {
		testutil.Must(t, errs[i])
		if !issuers[i].PublicKey().Equal(pub) {
			t.Fatalf("issuer %d signs with a key other than the published one", i)
		}
	}
}

// TestIssuerRepublishes: a ConfigMap holding another public key is set back to the Secret's.
func TestIssuerRepublishes(t *testing.T) {
	ctx := context.Background()
	cs := env.Clientset
	testutil.Must(t, env.Namespace(ctx, "repub"))
	i, err := New(ctx, cs, "repub", 0, logr.Discard())
	testutil.Must(t, err)
	other, _, _ := ed25519.GenerateKey(rand.Reader)
	otherPEM, _ := uploadtoken.MarshalPublicKey(other)
	cm, err := cs.CoreV1().ConfigMaps("repub").Get(ctx, subresources.UploadTokenPublicConfigMap, metav1.GetOptions{})
	testutil.Must(t, err)
	cm.Data[uploadtoken.PublicKeyData] = string(otherPEM)
	_, err = cs.CoreV1().ConfigMaps("repub").Update(ctx, cm, metav1.UpdateOptions{})
	testutil.Must(t, err)
	_, err = New(ctx, cs, "repub", 0, logr.Discard())
	testutil.Must(t, err)
	if !publishedKey(t, cs, "repub").Equal(i.PublicKey()) {
		t.Fatal("the ConfigMap still holds the other key")
	}
}

// TestIssuerDamagedSecret: a Secret without a valid key stops the Issuer and is left as found.
func TestIssuerDamagedSecret(t *testing.T) {
	ctx := context.Background()
	cs := env.Clientset
	testutil.Must(t, env.Namespace(ctx, "damaged"))
	_, err := cs.CoreV1().Secrets("damaged").Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: subresources.UploadTokenKeySecret},
		Data:       map[string][]byte{uploadtoken.PrivateKeyData: []byte("not a key")},
	}, metav1.CreateOptions{})
	testutil.Must(t, err)
	_, err = New(ctx, cs, "damaged", 0, logr.Discard())
	if err == nil || !strings.Contains(err.Error(), "damaged/"+subresources.UploadTokenKeySecret) || !strings.Contains(err.Error(), "no PEM block") {
		t.Fatalf("New with a damaged Secret: %v", err)
	}
	s, err := cs.CoreV1().Secrets("damaged").Get(ctx, subresources.UploadTokenKeySecret, metav1.GetOptions{})
	testutil.Must(t, err)
	if string(s.Data[uploadtoken.PrivateKeyData]) != "not a key" {
		t.Fatal("the damaged Secret was replaced")
	}
}
