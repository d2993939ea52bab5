package charttest

import (
	"maps"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestUpgradeKeepsSecrets renders the chart as an upgrade does, where the templates' lookup
// finds the Secrets of the first install: the signing key and the upload certificate must be
// kept (launcher pods' annotations are signed with the key; clients trust the certificate),
// the controller's pods not restarted for them, and every object still accepted.
func TestUpgradeKeepsSecrets(t *testing.T) {
	ctx := t.Context()
	r := prepare(t, valueSet{namespace: "slimvirt-upgrade"})
	r.lookup = true
	first, err := cluster.helm.template(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	var installed []corev1.Secret
	for _, name := range []string{"slimvirt-signing-key", "slimvirt-upload-tls"} {
		var s corev1.Secret
		rendered(first).convert(t, "Secret", name, &s)
		_, err := cluster.env.Clientset.CoreV1().Secrets(r.namespace).Create(ctx, &s, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
		installed = append(installed, s)
	}

	second, err := cluster.helm.template(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range installed {
		var got corev1.Secret
		rendered(second).convert(t, "Secret", want.Name, &got)
		if !maps.EqualFunc(got.Data, want.Data, func(a, b []byte) bool { return string(a) == string(b) }) {
			t.Errorf("Secret %s changed on upgrade", want.Name)
		}
	}
	var ca corev1.ConfigMap
	rendered(second).convert(t, "ConfigMap", "slimvirt-upload-ca", &ca)
	if crt := installed[1].Data["tls.crt"]; ca.Data["ca.crt"] != string(crt) || len(crt) == 0 {
		t.Errorf("ConfigMap slimvirt-upload-ca holds %q, want the installed certificate %q", ca.Data["ca.crt"], crt)
	}
	checksum := func(objs []object) string {
		return rendered(objs).deployment(t).Spec.Template.Annotations["checksum/signing-key"]
	}
	if a, b := checksum(first), checksum(second); a != b {
		t.Errorf("controller pod annotation checksum/signing-key %s became %s: the upgrade restarts the controller", a, b)
	}

	d, err := cluster.dryRunner()
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range second {
		if err := d.dryRun(ctx, o); err != nil {
			t.Errorf("%s: %v", o, err)
		}
	}
	t.Logf("%d objects of the upgrade dry-run", len(second))
}
