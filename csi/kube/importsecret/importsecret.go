// Package importsecret is the per-volume Secret that carries a PVC's import credentials from
// the controller to the volume's node. The controller copies what a tenant's Secret and CA
// ConfigMap hold into one Secret in slimvirt's own (release) namespace, named from the PVC's
// UID; the node may read Secrets of that namespace only, so a node never needs, nor gets, read
// access to a tenant's namespace, and a tenant cannot point a node at anything else.
package importsecret

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
)

// serviceAccountNamespace is where a pod finds its own namespace.
const serviceAccountNamespace = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// PodNamespace is the namespace this process runs in, where the controller writes per-volume
// Secrets and the node reads them (POD_NAMESPACE, else the service account's namespace file);
// empty outside a pod.
func PodNamespace() string {
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns
	}
	b, err := os.ReadFile(serviceAccountNamespace)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

const (
	// Prefix starts every per-volume Secret's name; the PVC's UID follows.
	Prefix = "slimvirt-import-"

	// KeyUser and KeyPassword hold basic-auth credentials, under CDI's key names.
	KeyUser     = "accessKeyId"
	KeyPassword = "secretKey"
	// KeyCA holds the PEM certificates of the CA ConfigMap, every key of it in key order.
	KeyCA = "ca.crt"

	// LabelComponent marks the per-volume Secrets, so an admin can list them.
	LabelComponent = "app.kubernetes.io/component"
	component      = "import-credentials"
	// LabelNamespace and LabelUID say which PVC a Secret is for; the node checks both.
	LabelNamespace = "import.slimvirt.io/pvc-namespace"
	LabelUID       = "import.slimvirt.io/pvc-uid"
	// AnnName is the PVC's name, for people.
	AnnName = "import.slimvirt.io/pvc-name"

	// MaxCA bounds the CA bundle copied from a tenant's ConfigMap: a few hundred certificates.
	MaxCA = 512 << 10
)

// Name is the per-volume Secret of the PVC with this UID.
func Name(uid types.UID) string { return Prefix + string(uid) }

// UIDOf returns the PVC UID a per-volume Secret name is for, and refuses any other name: the
// node reads nothing else in its namespace.
func UIDOf(name string) (types.UID, error) {
	uid, ok := strings.CutPrefix(name, Prefix)
	if !ok || uid == "" || len(validation.IsDNS1123Label(uid)) != 0 {
		return "", fmt.Errorf("%q is not a per-volume import Secret (want %s<pvc-uid>)", name, Prefix)
	}
	return types.UID(uid), nil
}

// Build makes the per-volume Secret for pvc, in namespace ns, from the tenant's Secret (nil:
// none) and CA ConfigMap (nil: none). Only the keys the importer uses are copied.
func Build(ns string, pvc *corev1.PersistentVolumeClaim, secret *corev1.Secret, ca *corev1.ConfigMap) (*corev1.Secret, error) {
	if pvc.UID == "" {
		return nil, errors.New("the PVC has no UID yet")
	}
	out := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name: Name(pvc.UID), Namespace: ns,
			Labels: map[string]string{
				"app.kubernetes.io/managed-by": "slimvirt",
				LabelComponent:                 component,
				LabelNamespace:                 pvc.Namespace,
				LabelUID:                       string(pvc.UID),
			},
			Annotations: map[string]string{AnnName: pvc.Name},
		},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{},
	}
	if secret != nil {
		user, pass, err := BasicAuth(secret)
		if err != nil {
			return nil, err
		}
		out.Data[KeyUser], out.Data[KeyPassword] = []byte(user), []byte(pass)
	}
	if ca != nil {
		pem, err := CABundle(ca)
		if err != nil {
			return nil, err
		}
		out.Data[KeyCA] = pem
	}
	return out, nil
}

// BasicAuth reads a tenant's credentials Secret: CDI's keys (accessKeyId, secretKey) first, so a
// CDI Secret works unchanged, else username and password.
func BasicAuth(s *corev1.Secret) (user, password string, err error) {
	for _, keys := range [][2]string{{KeyUser, KeyPassword}, {"username", "password"}} {
		if u, ok := s.Data[keys[0]]; ok {
			return string(u), string(s.Data[keys[1]]), nil
		}
	}
	return "", "", fmt.Errorf("secret %s has neither %s/%s nor username/password", s.Name, KeyUser, KeyPassword)
}

// CABundle joins every key of a CA ConfigMap, in key order, into one PEM bundle.
func CABundle(cm *corev1.ConfigMap) ([]byte, error) {
	keys := make([]string, 0, len(cm.Data))
	n := 0
	for k, v := range cm.Data {
		keys = append(keys, k)
		n += len(v) + 1
	}
	if n > MaxCA {
		return nil, fmt.Errorf("configmap %s holds %d bytes, more than the %d a CA bundle may have", cm.Name, n, MaxCA)
	}
	sort.Strings(keys)
	pem := make([]byte, 0, n)
	for _, k := range keys {
		pem = append(pem, cm.Data[k]...)
		pem = append(pem, '\n')
	}
	return pem, nil
}

// Check says whether s is the per-volume Secret of the PVC with this UID in namespace ns: the
// node trusts only a Secret whose labels the controller wrote for that very PVC.
func Check(s *corev1.Secret, ns string, uid types.UID) error {
	if s.Name != Name(uid) || s.Labels[LabelUID] != string(uid) || s.Labels[LabelNamespace] != ns || s.Labels[LabelComponent] != component {
		return fmt.Errorf("secret %s/%s is not the import Secret of a PVC %s in namespace %s", s.Namespace, s.Name, uid, ns)
	}
	return nil
}
