// Package testenv starts a real kube-apiserver and etcd for tests (controller-runtime's
// envtest), with slimvirt's CRDs installed, and helps tests act as users (service-account
// tokens), write kubeconfigs for the processes they start and run kube-controller-manager's
// controllers. It finds the Kubernetes binaries the build pins (paths.go) and stops what a
// killed run left behind (stale.go).
package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// Env is a running API server.
type Env struct {
	Config    *rest.Config
	Clientset kubernetes.Interface
	te        *envtest.Environment
	binDir    string
}

// Start runs kube-apiserver (from K8sBinDir) and etcd ($ETCD or /usr/bin/etcd) with the
// chart's CRDs. name marks this test package's processes, so a later run can find and stop
// those a killed run left behind.
func Start(name string) (*Env, error) {
	prefix := markerPrefix + name + "-"
	RemoveStale(prefix)
	binDir, err := binaryDir(prefix)
	if err != nil {
		return nil, err
	}
	te := &envtest.Environment{
		BinaryAssetsDirectory: binDir,
		CRDDirectoryPaths:     []string{filepath.Join(RepoRoot(), "charts", "slimvirt", "crds")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := te.Start()
	if err != nil {
		// Start may fail after the control plane is up (installing the CRDs): stop it.
		_ = te.Stop()
		os.RemoveAll(binDir)
		return nil, fmt.Errorf("start kube-apiserver and etcd: %w", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		_ = te.Stop()
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

// Dir is a directory that lives as long as the environment, for the tests' own files.
func (e *Env) Dir() string { return e.binDir }

// KubeConfig is the admin kubeconfig of the API server.
func (e *Env) KubeConfig() []byte { return e.te.KubeConfig }

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
	tr, err := e.Clientset.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{ExpirationSeconds: ptr.To(int64(3600))},
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

// WriteKubeconfig writes the admin credentials as a kubeconfig file, for other processes.
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

// StartVolumeBinder runs kube-controller-manager with only its PersistentVolume binder: it
// marks claims for their provisioner (also after a late-binding claim gets its node) and binds
// provisioned volumes to their claims, as in a real cluster. It stops with ctx.
func (e *Env) StartVolumeBinder(ctx context.Context, dir string) error {
	return e.StartControllers(ctx, dir, "persistentvolume-binder-controller", "--pvclaimbinder-sync-period=2s")
}

// StartGarbageCollector runs kube-controller-manager with only its garbage collector: objects
// go with their owners, as in a real cluster. It stops with ctx.
func (e *Env) StartGarbageCollector(ctx context.Context, dir string) error {
	return e.StartControllers(ctx, dir, "garbage-collector-controller")
}

// StartControllers runs kube-controller-manager with only the named controllers (its
// --controllers list) and extra flags, logging to dir/<controllers>.log. It stops with ctx.
func (e *Env) StartControllers(ctx context.Context, dir, controllers string, args ...string) error {
	bin, err := K8sBinDir()
	if err != nil {
		return err
	}
	kubeconfig := filepath.Join(dir, controllers+".kubeconfig")
	if err := e.WriteKubeconfig(kubeconfig); err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(dir, controllers+".log"))
	if err != nil {
		return fmt.Errorf("create kube-controller-manager log: %w", err)
	}
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "kube-controller-manager"), append([]string{
		"--kubeconfig=" + kubeconfig, "--controllers=" + controllers,
		"--leader-elect=false", "--secure-port=0", "--v=1"}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start kube-controller-manager (%s): %w", controllers, err)
	}
	go func() {
		_ = cmd.Wait()
		logf.Close()
	}()
	return nil
}
