// Package launchers finds the launcher pods on this node and the files their launchers share
// with the node: the status file and the control socket, in the pod's run directory (an
// emptyDir the kubelet keeps under its pods directory).
package launchers

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"golang.org/x/sys/unix"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	"github.com/slimvirt/slimvirt/runtime/control"
)

// Launcher is one launcher pod on this node and where its run directory is on the host.
type Launcher struct {
	Pod *corev1.Pod
	// RunDir is the host path of the pod's launcherpod.RunDir.
	RunDir string
}

// StatusFile is the host path of the launcher's status file.
func (l Launcher) StatusFile() string {
	return filepath.Join(l.RunDir, filepath.Base(launcherpod.StatusFile))
}

// Call sends one command to the launcher's control socket. The socket's host path is longer
// than a unix socket address may be (108 bytes), so it is reached through an open descriptor
// of the run directory.
func (l Launcher) Call(ctx context.Context, cmd string) (string, error) {
	dir, err := os.OpenFile(l.RunDir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("open the run directory of %s/%s: %w", l.Pod.Namespace, l.Pod.Name, err)
	}
	defer dir.Close()
	sock := fmt.Sprintf("/proc/self/fd/%d/%s", dir.Fd(), filepath.Base(launcherpod.ControlSocket))
	return control.Call(ctx, sock, cmd)
}

// RunDir is where the kubelet keeps a pod's run directory emptyDir.
func RunDir(kubeletDir string, pod *corev1.Pod) string {
	return filepath.Join(kubeletDir, "pods", string(pod.UID), "volumes", "kubernetes.io~empty-dir", launcherpod.RunVolume)
}

// Watcher keeps the launcher pods of one node in a cache fed by a watch.
type Watcher struct {
	kubeletDir string
	lister     listersv1.PodLister
	informer   cache.SharedIndexInformer
	factory    informers.SharedInformerFactory
}

// NewWatcher watches the launcher pods bound to node.
func NewWatcher(cs kubernetes.Interface, node, kubeletDir string) *Watcher {
	f := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", node).String()
		o.LabelSelector = labels.SelectorFromSet(labels.Set{launcherpod.LabelApp: launcherpod.AppLauncher}).String()
	}))
	pods := f.Core().V1().Pods()
	return &Watcher{kubeletDir: kubeletDir, lister: pods.Lister(), informer: pods.Informer(), factory: f}
}

// Start runs the watch until ctx ends and waits for the first list.
func (w *Watcher) Start(ctx context.Context) error {
	w.factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), w.informer.HasSynced) {
		return fmt.Errorf("list the launcher pods of this node: %w", ctx.Err())
	}
	return nil
}

// OnChange calls f whenever a launcher pod is added, changes or goes.
func (w *Watcher) OnChange(f func()) {
	_, _ = w.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { f() },
		UpdateFunc: func(any, any) { f() },
		DeleteFunc: func(any) { f() },
	})
}

// List returns the launcher pods on the node that have started (they have a UID and are not
// finished), sorted by namespace and name.
func (w *Watcher) List() []Launcher {
	pods, _ := w.lister.List(labels.Everything())
	out := make([]Launcher, 0, len(pods))
	for _, p := range pods {
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		out = append(out, Launcher{Pod: p, RunDir: RunDir(w.kubeletDir, p)})
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].Pod, out[j].Pod
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
	return out
}
