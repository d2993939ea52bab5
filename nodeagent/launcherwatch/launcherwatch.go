// Package launcherwatch finds the launcher pods on this node (pods a VMI names as its launcher,
// not merely pods with the launcher label) and reads what their launchers share with the
// node: the status file and the control socket, in the pod's run directory (an emptyDir the
// kubelet keeps under its pods directory, which the pod can write), without following links
// and within bounds.
package launcherwatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"golang.org/x/sys/unix"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/runtime/control"
)

// Launcher is one launcher pod on this node and where its run directory is on the host.
type Launcher struct {
	Pod *corev1.Pod
	// RunDir is the host path of the pod's launcherpod.RunDir.
	RunDir string
	// VMI is the name of the VMI that controls the pod (in the pod's namespace).
	VMI string
}

// StatusFile is the host path of the launcher's status file.
func (l Launcher) StatusFile() string {
	return filepath.Join(l.RunDir, statusName)
}

var (
	statusName  = filepath.Base(launcherpod.StatusFile)
	controlName = filepath.Base(launcherpod.ControlSocket)
)

// The sockets in the run directory that the node agent connects clients to (Dial).
const (
	// ConsoleSocket is the console multiplexer's client socket (runtime/console): each client
	// gets the guest's serial output from the moment it attaches, and what it writes is typed.
	ConsoleSocket = "console.sock"
	// VNCSocket is QEMU's VNC display (launcherpod.VNCSocket); it takes several clients.
	VNCSocket = "vnc"
)

// The run directory is an emptyDir the pod writes: anyone who may exec into the pod can put a
// FIFO, a device node, a huge file or a symbolic link to a node file where the launcher keeps
// its status file and control socket, and the node agent acts on them as root. So every file
// there is opened from the directory without following any link, its type is checked before it
// is opened for real, and what is read from it is bounded.

// ReadStatus reads the launcher's status file as launcherpod.ReadStatusFile does: a regular
// file in the run directory itself, of at most launcherpod.MaxStatusSize bytes.
func (l Launcher) ReadStatus() (launcherpod.Status, error) {
	f, err := l.openRegular(statusName)
	if err != nil {
		return launcherpod.Status{}, err
	}
	defer f.Close()
	return launcherpod.ReadStatusFile(f)
}

// Call sends one command to the launcher's control socket (see control.Call for its bounds).
// The socket's host path is longer than a unix socket address may be (108 bytes), and it must
// be the socket in the run directory, not one a link there points to (the kubelet's, the
// container runtime's), so it is reached through a descriptor of the socket itself.
func (l Launcher) Call(ctx context.Context, cmd string) (string, error) {
	fd, err := l.openPath(controlName, unix.S_IFSOCK)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	return control.Call(ctx, fmt.Sprintf("/proc/self/fd/%d", fd), cmd)
}

// Dial connects to the unix socket name (ConsoleSocket, VNCSocket) directly in the run
// directory, reached as Call reaches the control socket: through a descriptor of the socket
// itself, so that a link, a FIFO or a regular file planted in its place is refused with
// ErrNotOwnFile and nothing it points to is opened.
func (l Launcher) Dial(ctx context.Context, name string) (net.Conn, error) {
	if name != filepath.Base(name) || name == "." || name == ".." {
		return nil, fmt.Errorf("dial %s: %w: not a name in the run directory", name, ErrNotOwnFile)
	}
	fd, err := l.openPath(name, unix.S_IFSOCK)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", filepath.Join(l.RunDir, name), err)
	}
	return c, nil
}

// openRegular opens name in the run directory for reading; it must be a regular file. Its
// type is checked on an O_PATH descriptor, which opens nothing: opening a FIFO could block,
// and opening some devices (a watchdog, a tape) acts on them.
func (l Launcher) openRegular(name string) (*os.File, error) {
	fd, err := l.openPath(name, unix.S_IFREG)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	path := filepath.Join(l.RunDir, name)
	// The same inode, opened for reading through the descriptor: no path is looked up again.
	rfd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", fd), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return os.NewFile(uintptr(rfd), path), nil
}

// openPath returns an O_PATH descriptor of name, which must be directly in the run directory,
// reached without any symbolic link or mount crossing, and of file type typ (unix.S_IFREG,
// unix.S_IFSOCK).
func (l Launcher) openPath(name string, typ uint32) (int, error) {
	path := filepath.Join(l.RunDir, name)
	dir, err := unix.Open(l.RunDir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: l.RunDir, Err: err}
	}
	defer unix.Close(dir)
	fd, err := unix.Openat2(dir, name, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
	if err != nil {
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EXDEV) {
			return -1, fmt.Errorf("open %s: %w (a link or a mount)", path, ErrNotOwnFile)
		}
		return -1, &os.PathError{Op: "open", Path: path, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		_ = unix.Close(fd) // an O_PATH descriptor: closing it cannot lose anything
		return -1, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT != typ {
		_ = unix.Close(fd) // an O_PATH descriptor: closing it cannot lose anything
		return -1, fmt.Errorf("open %s: %w: it is %s, not %s", path, ErrNotOwnFile, fileType(st.Mode), fileType(typ))
	}
	return fd, nil
}

// ErrNotOwnFile is returned for a file in a launcher's run directory that is not what the
// launcher puts there: a symbolic link, a FIFO, a device, a directory.
var ErrNotOwnFile = errors.New("not the launcher's own file")

func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "a regular file"
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFLNK:
		return "a symbolic link"
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFCHR, unix.S_IFBLK:
		return "a device"
	}
	return "of an unknown type"
}

// RunDir is where the kubelet keeps a pod's run directory emptyDir.
func RunDir(kubeletDir string, pod *corev1.Pod) string {
	return filepath.Join(kubeletDir, "pods", string(pod.UID), "volumes", "kubernetes.io~empty-dir", launcherpod.RunVolume)
}

// Watcher keeps the launcher pods of one node in a cache fed by a watch.
//
// The label that marks launcher pods is no proof: anyone who may create pods in a namespace
// can set it. A pod counts as a launcher only when a VMI controls it (its controller
// reference, checked here from the cache) and that VMI names it as its launcher in its status
// with the same UID, which only the controller writes; the reporter checks that with the VMI
// it reads anyway and tells the Watcher (Confirm). Other labelled pods are ignored.
type Watcher struct {
	kubeletDir string
	lister     listersv1.PodLister
	informer   cache.SharedIndexInformer
	factory    informers.SharedInformerFactory
	// Log gets one debug line for each labelled pod that is ignored; slog.Default() when nil.
	Log *slog.Logger

	mu sync.Mutex
	// verdicts says, for each pod the reporter asked its VMI about, whether the VMI (the
	// pod's controller then, by UID) names it.
	verdicts map[types.UID]verdict
	// ignored are the pods already logged as ignored.
	ignored map[types.UID]bool
}

type verdict struct {
	owner types.UID
	names bool
}

// New watches the launcher pods bound to node.
func New(cs kubernetes.Interface, node, kubeletDir string) *Watcher {
	f := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", node).String()
		o.LabelSelector = labels.SelectorFromSet(labels.Set{launcherpod.LabelApp: launcherpod.AppLauncher}).String()
	}))
	pods := f.Core().V1().Pods()
	return &Watcher{kubeletDir: kubeletDir, lister: pods.Lister(), informer: pods.Informer(), factory: f,
		verdicts: map[types.UID]verdict{}, ignored: map[types.UID]bool{}}
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

// List returns the launchers on the node that have started (they are not finished) and
// whose VMI names them, sorted by namespace and name. Only they may be asked anything.
func (w *Watcher) List() []Launcher {
	return w.list(true)
}

// Candidates returns the pods on the node that have started and that a VMI controls, but
// that are not known to be other than its launcher: List and the pods still to Confirm.
func (w *Watcher) Candidates() []Launcher {
	return w.list(false)
}

// Confirm records whether vmi, as just read from the API server (nil when it is gone), names
// pod as its launcher, and says so. A pod that it does not name is no longer a candidate.
func (w *Watcher) Confirm(pod *corev1.Pod, vmi *v1.VirtualMachineInstance) bool {
	owner := vmiOwner(pod)
	if owner == nil {
		return false
	}
	names := vmi != nil && Names(vmi, pod)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.verdicts[pod.UID] = verdict{owner: owner.UID, names: names}
	if !names && !w.ignored[pod.UID] {
		w.ignored[pod.UID] = true
		w.log().Debug("ignoring a pod labelled as a launcher: its VMI does not name it", "pod", pod.Namespace+"/"+pod.Name, "vmi", owner.Name)
	}
	return names
}

// Named says whether pod's VMI (its controller now) has been seen to name it.
func (w *Watcher) Named(pod *corev1.Pod) bool {
	owner := vmiOwner(pod)
	if owner == nil {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	v, ok := w.verdicts[pod.UID]
	return ok && v.names && v.owner == owner.UID
}

// Names says whether vmi names pod as its launcher: it controls the pod, by UID, and its
// status records the pod's name.
func Names(vmi *v1.VirtualMachineInstance, pod *corev1.Pod) bool {
	return vmi.Namespace == pod.Namespace && vmi.Status.LauncherPod == pod.Name && metav1.IsControlledBy(pod, vmi)
}

func (w *Watcher) list(confirmedOnly bool) []Launcher {
	pods, _ := w.lister.List(labels.Everything())
	out := make([]Launcher, 0, len(pods))
	w.mu.Lock()
	defer w.mu.Unlock()
	here := make(map[types.UID]bool, len(pods))
	for _, p := range pods {
		here[p.UID] = true
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		owner := vmiOwner(p)
		if owner == nil {
			if !w.ignored[p.UID] {
				w.ignored[p.UID] = true
				w.log().Debug("ignoring a pod labelled as a launcher: no VMI controls it", "pod", p.Namespace+"/"+p.Name)
			}
			continue
		}
		// A verdict holds for the controller it was made for; a pod's owner references can
		// be edited, so another one is asked about again.
		v, known := w.verdicts[p.UID]
		if known && v.owner != owner.UID {
			known = false
		}
		if (known && !v.names) || (confirmedOnly && !known) {
			continue
		}
		out = append(out, Launcher{Pod: p, RunDir: RunDir(w.kubeletDir, p), VMI: owner.Name})
	}
	for uid := range w.verdicts {
		if !here[uid] {
			delete(w.verdicts, uid)
		}
	}
	for uid := range w.ignored {
		if !here[uid] {
			delete(w.ignored, uid)
		}
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

// vmiOwner is the controller reference of pod when it is a slimvirt VMI, nil otherwise.
func vmiOwner(pod *corev1.Pod) *metav1.OwnerReference {
	ref := metav1.GetControllerOf(pod)
	if ref == nil || ref.Kind != "VirtualMachineInstance" || ref.Name == "" || ref.UID == "" {
		return nil
	}
	if gv, err := schema.ParseGroupVersion(ref.APIVersion); err != nil || gv.Group != v1.GroupVersion.Group {
		return nil
	}
	return ref
}

func (w *Watcher) log() *slog.Logger {
	if w.Log != nil {
		return w.Log
	}
	return slog.Default()
}
