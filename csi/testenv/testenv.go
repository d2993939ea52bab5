// Package testenv starts a real kube-apiserver and etcd for slimvirt-csi's and the DataVolume
// reconciler's tests (controller-runtime's envtest), with slimvirt's CRDs installed, and
// helps tests act as users (service-account tokens) and write kubeconfigs for sidecars.
package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/slimvirt/slimvirt/csi/testclean"
)

// Env is a running API server.
type Env struct {
	Config    *rest.Config
	Clientset kubernetes.Interface
	te        *envtest.Environment
	binDir    string
}

// Start runs kube-apiserver (from $K8S_BIN or the pinned cache) and etcd ($ETCD or
// /usr/bin/etcd) with the chart's CRDs. name marks this test package's processes, so a later
// run can find and stop those a killed run left behind.
func Start(name string) (*Env, error) {
	testclean.Processes(markerPrefix + name + "-")
	binDir, err := binaryDir(name)
	if err != nil {
		return nil, err
	}
	te := &envtest.Environment{
		BinaryAssetsDirectory: binDir,
		CRDDirectoryPaths:     []string{filepath.Join(repoRoot(), "charts", "slimvirt", "crds")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := te.Start()
	if err != nil {
		os.RemoveAll(binDir)
		return nil, fmt.Errorf("start kube-apiserver and etcd: %w", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		te.Stop()
		os.RemoveAll(binDir)
		return nil, fmt.Errorf("make clientset: %w", err)
	}
	return &Env{Config: cfg, Clientset: cs, te: te, binDir: binDir}, nil
}

// Stop stops the API server and etcd and removes their files.
func (e *Env) Stop() error {
	err := e.te.Stop()
	os.RemoveAll(e.binDir)
	return err
}

// Token returns a bearer token of a service account, creating the account (and its
// namespace) if needed.
func (e *Env) Token(ctx context.Context, namespace, name string) (string, error) {
	if err := e.Namespace(ctx, namespace); err != nil {
		return "", err
	}
	_, err := e.Clientset.CoreV1().ServiceAccounts(namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !isAlreadyExists(err) {
		return "", fmt.Errorf("create service account %s/%s: %w", namespace, name, err)
	}
	exp := int64(3600)
	tr, err := e.Clientset.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{ExpirationSeconds: &exp},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("create token for %s/%s: %w", namespace, name, err)
	}
	return tr.Status.Token, nil
}

// Namespace creates a namespace if it does not exist.
func (e *Env) Namespace(ctx context.Context, name string) error {
	_, err := e.Clientset.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !isAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", name, err)
	}
	return nil
}

func isAlreadyExists(err error) bool {
	var s interface{ Status() metav1.Status }
	return errors.As(err, &s) && s.Status().Reason == metav1.StatusReasonAlreadyExists
}

// WriteKubeconfig writes the admin credentials as a kubeconfig file, for sidecar processes.
func (e *Env) WriteKubeconfig(path string) error {
	c := e.Config
	kc := clientcmdapi.NewConfig()
	kc.Clusters["env"] = &clientcmdapi.Cluster{Server: c.Host, CertificateAuthorityData: c.CAData}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: c.CertData, ClientKeyData: c.KeyData, Token: c.BearerToken}
	kc.Contexts["env"] = &clientcmdapi.Context{Cluster: "env", AuthInfo: "admin"}
	kc.CurrentContext = "env"
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	return nil
}

// markerPrefix starts the name of the directory the API server and etcd run from.
const markerPrefix = "slimvirt-csi-envtest-"

func binaryDir(name string) (string, error) {
	k8sBin := os.Getenv("K8S_BIN")
	if k8sBin == "" {
		k8sBin = "/var/cache/slimvirt/k8s/v1.37.2/bin"
	}
	etcd := os.Getenv("ETCD")
	if etcd == "" {
		etcd = "/usr/bin/etcd"
	}
	dir, err := os.MkdirTemp("", markerPrefix+name+"-")
	if err != nil {
		return "", err
	}
	for name, target := range map[string]string{"kube-apiserver": filepath.Join(k8sBin, "kube-apiserver"), "etcd": etcd} {
		if _, err := os.Stat(target); err != nil {
			os.RemoveAll(dir)
			return "", fmt.Errorf("%s is needed: %w", name, err)
		}
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			os.RemoveAll(dir)
			return "", err
		}
	}
	return dir, nil
}

// repoRoot is found from this file's place in the repository.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// StartVolumeBinder runs kube-controller-manager with only its PersistentVolume binder: it
// marks claims for their provisioner (also after a late-binding claim gets its node) and binds
// provisioned volumes to their claims, as in a real cluster. It stops with ctx.
func (e *Env) StartVolumeBinder(ctx context.Context, dir string) error {
	k8sBin := os.Getenv("K8S_BIN")
	if k8sBin == "" {
		k8sBin = "/var/cache/slimvirt/k8s/v1.37.2/bin"
	}
	kubeconfig := filepath.Join(dir, "kcm.kubeconfig")
	if err := e.WriteKubeconfig(kubeconfig); err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(dir, "kube-controller-manager.log"))
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, filepath.Join(k8sBin, "kube-controller-manager"),
		"--kubeconfig="+kubeconfig, "--controllers=persistentvolume-binder-controller",
		"--leader-elect=false", "--secure-port=0", "--pvclaimbinder-sync-period=2s", "--v=1")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start kube-controller-manager: %w", err)
	}
	go func() {
		cmd.Wait()
		logf.Close()
	}()
	return nil
}
