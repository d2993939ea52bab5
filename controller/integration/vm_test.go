package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/internal/testenv"
)

// playKubelet force-deletes the namespace's terminating pods until the test ends, as a kubelet
// does once it has stopped their containers.
func playKubelet(t *testing.T, ns string) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			var pods corev1.PodList
			if err := env.c.List(ctx, &pods, client.InNamespace(ns)); err == nil {
				for i := range pods.Items {
					if pods.Items[i].DeletionTimestamp != nil {
						_ = env.c.Delete(ctx, &pods.Items[i], client.GracePeriodSeconds(0))
					}
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
}

// runVMI plays the kubelet starting the VMI's pod: scheduled, then the compute container ready.
func runVMI(t *testing.T, ns, name string) *v1.VirtualMachineInstance {
	t.Helper()
	pod := launcherPod(t, ns, name)
	bindPod(t, pod, testNode)
	setPodStatus(t, ns, pod.Name, runningStatus("10.244.1.2"))
	return waitPhase(t, ns, name, v1.Running)
}

// endVMI plays the launcher exiting with code.
func endVMI(t *testing.T, ns, name string, code int32) {
	t.Helper()
	pod := launcherPod(t, ns, name)
	setPodStatus(t, ns, pod.Name, terminatedStatus(code, "Error", fmt.Sprintf("exit %d", code)))
}

func newVM(ns, name string, strategy *v1.VirtualMachineRunStrategy, running *bool) *v1.VirtualMachine {
	vmi := &v1.VirtualMachineInstance{}
	raw, _ := os.ReadFile(filepath.Join(testenv.RepoRoot(), "examples", "vmi-linux.yaml"))
	_ = yaml.Unmarshal(raw, vmi)
	return &v1.VirtualMachine{
		ObjectMeta: objectMeta(ns, name),
		Spec: v1.VirtualMachineSpec{
			RunStrategy: strategy,
			Running:     running,
			Template: v1.VirtualMachineInstanceTemplateSpec{
				ObjectMeta: v1.TemplateObjectMeta{Labels: map[string]string{"kubevirt.io/domain": name}},
				Spec:       vmi.Spec,
			},
		},
	}
}

func getVM(t *testing.T, ns, name string) *v1.VirtualMachine {
	t.Helper()
	vm := &v1.VirtualMachine{}
	if err := env.c.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, vm); err != nil {
		t.Fatalf("get vm %s: %v", name, err)
	}
	return vm
}

func waitVMStatus(t *testing.T, ns, name string, want v1.VirtualMachinePrintableStatus) *v1.VirtualMachine {
	t.Helper()
	var vm *v1.VirtualMachine
	eventually(t, fmt.Sprintf("vm %s %s", name, want), func() (bool, error) {
		vm = getVM(t, ns, name)
		return vm.Status.PrintableStatus == want, fmt.Errorf("printableStatus %q", vm.Status.PrintableStatus)
	})
	return vm
}

// request annotates the VM as a client (slimctl, kubectl annotate) does.
func request(t *testing.T, ns, name, annotation, value string) {
	t.Helper()
	eventually(t, "annotate "+annotation, func() (bool, error) {
		vm := getVM(t, ns, name)
		if vm.Annotations == nil {
			vm.Annotations = map[string]string{}
		}
		vm.Annotations[annotation] = value
		err := env.c.Update(context.Background(), vm)
		return err == nil, err
	})
}

func waitNoVMI(t *testing.T, ns, name string) {
	t.Helper()
	eventually(t, "vmi "+name+" gone", func() (bool, error) {
		err := env.c.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, &v1.VirtualMachineInstance{})
		return apierrors.IsNotFound(err), err
	})
}

// waitNewVMI waits for a VMI that is not the one with uid old.
func waitNewVMI(t *testing.T, ns, name string, old types.UID) *v1.VirtualMachineInstance {
	t.Helper()
	vmi := &v1.VirtualMachineInstance{}
	eventually(t, "a new vmi "+name, func() (bool, error) {
		err := env.c.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, vmi)
		return err == nil && vmi.UID != old && vmi.DeletionTimestamp == nil, err
	})
	return vmi
}

func strategyOf(vm *v1.VirtualMachine) string {
	if vm.Spec.RunStrategy == nil {
		return "<nil>"
	}
	return string(*vm.Spec.RunStrategy)
}

func TestVMAlwaysStopStartRestart(t *testing.T) {
	needController(t)
	ns := newNamespace(t)
	playKubelet(t, ns)
	always := v1.RunStrategyAlways
	if err := env.c.Create(context.Background(), newVM(ns, "web", &always, nil)); err != nil {
		t.Fatal(err)
	}
	vmi := runVMI(t, ns, "web")
	if vmi.Labels["kubevirt.io/domain"] != "web" || vmi.OwnerReferences[0].Kind != "VirtualMachine" {
		t.Errorf("vmi labels %v owners %v", vmi.Labels, vmi.OwnerReferences)
	}
	vm := waitVMStatus(t, ns, "web", v1.PrintableRunning)
	if !vm.Status.Ready || !vm.Status.Created {
		t.Errorf("running vm: ready=%v created=%v", vm.Status.Ready, vm.Status.Created)
	}

	request(t, ns, "web", v1.AnnotationStopRequested, "now")
	waitNoVMI(t, ns, "web")
	vm = waitVMStatus(t, ns, "web", v1.PrintableStopped)
	if strategyOf(vm) != "Halted" || vm.Annotations[v1.AnnotationStopRequested] != "" {
		t.Errorf("after stop: runStrategy %s, annotations %v", strategyOf(vm), vm.Annotations)
	}

	request(t, ns, "web", v1.AnnotationStartRequested, "now")
	vmi = waitNewVMI(t, ns, "web", "")
	vm = getVM(t, ns, "web")
	if strategyOf(vm) != "Always" {
		t.Errorf("after start: runStrategy %s", strategyOf(vm))
	}
	runVMI(t, ns, "web")

	if hasVMCondition(getVM(t, ns, "web"), v1.VMRestartRequired) {
		t.Error("RestartRequired on a VM whose VMI matches its template")
	}
	eventually(t, "a template change", func() (bool, error) {
		vm := getVM(t, ns, "web")
		vm.Spec.Template.Spec.Hostname = "web-2"
		err := env.c.Update(context.Background(), vm)
		return err == nil, err
	})
	eventually(t, "RestartRequired", func() (bool, error) {
		return hasVMCondition(getVM(t, ns, "web"), v1.VMRestartRequired), nil
	})

	request(t, ns, "web", v1.AnnotationRestartRequested, "now")
	restarted := waitNewVMI(t, ns, "web", vmi.UID)
	if restarted.Spec.Hostname != "web-2" {
		t.Errorf("the restarted VMI has hostname %q, want the new template's web-2", restarted.Spec.Hostname)
	}
	eventually(t, "RestartRequired to clear", func() (bool, error) {
		return !hasVMCondition(getVM(t, ns, "web"), v1.VMRestartRequired), nil
	})
	eventually(t, "the restart request to clear", func() (bool, error) {
		_, ok := getVM(t, ns, "web").Annotations[v1.AnnotationRestartRequested]
		return !ok, nil
	})
	if got := getVMI(t, ns, "web"); got.UID != restarted.UID {
		t.Errorf("restart replaced the VMI more than once: %s then %s", restarted.UID, got.UID)
	}

	// A guest shutdown under Always starts a new VMI.
	runVMI(t, ns, "web")
	endVMI(t, ns, "web", 0)
	waitNewVMI(t, ns, "web", restarted.UID)
}

func TestVMLegacyRunning(t *testing.T) {
	needController(t)
	ns := newNamespace(t)
	playKubelet(t, ns)
	if err := env.c.Create(context.Background(), newVM(ns, "legacy", nil, ptr.To(true))); err != nil {
		t.Fatal(err)
	}
	runVMI(t, ns, "legacy")
	request(t, ns, "legacy", v1.AnnotationStopRequested, "now")
	waitNoVMI(t, ns, "legacy")
	vm := waitVMStatus(t, ns, "legacy", v1.PrintableStopped)
	if vm.Spec.Running == nil || *vm.Spec.Running || vm.Spec.RunStrategy != nil {
		t.Errorf("stop on running=true: running %v, runStrategy %s; want running=false and no runStrategy", vm.Spec.Running, strategyOf(vm))
	}
}

func TestVMManual(t *testing.T) {
	needController(t)
	ns := newNamespace(t)
	playKubelet(t, ns)
	manual := v1.RunStrategyManual
	if err := env.c.Create(context.Background(), newVM(ns, "manual", &manual, nil)); err != nil {
		t.Fatal(err)
	}
	waitVMStatus(t, ns, "manual", v1.PrintableStopped)
	request(t, ns, "manual", v1.AnnotationStartRequested, "now")
	vmi := runVMI(t, ns, "manual")
	// The guest shuts down: Manual leaves it stopped.
	endVMI(t, ns, "manual", 0)
	waitPhase(t, ns, "manual", v1.Succeeded)
	waitVMStatus(t, ns, "manual", v1.PrintableStopped)
	// Start replaces the finished VMI.
	request(t, ns, "manual", v1.AnnotationStartRequested, "now")
	waitNewVMI(t, ns, "manual", vmi.UID)
	runVMI(t, ns, "manual")
	request(t, ns, "manual", v1.AnnotationStopRequested, "now")
	waitNoVMI(t, ns, "manual")
	vm := waitVMStatus(t, ns, "manual", v1.PrintableStopped)
	if strategyOf(vm) != "Manual" || len(vm.Annotations) != 0 {
		t.Errorf("after stop: runStrategy %s, annotations %v", strategyOf(vm), vm.Annotations)
	}
}

func TestVMRerunOnFailure(t *testing.T) {
	needController(t)
	ns := newNamespace(t)
	playKubelet(t, ns)
	rerun := v1.RunStrategyRerunOnFailure
	if err := env.c.Create(context.Background(), newVM(ns, "rerun", &rerun, nil)); err != nil {
		t.Fatal(err)
	}
	first := runVMI(t, ns, "rerun")
	endVMI(t, ns, "rerun", 1)
	second := waitNewVMI(t, ns, "rerun", first.UID)
	runVMI(t, ns, "rerun")
	endVMI(t, ns, "rerun", 0)
	waitPhase(t, ns, "rerun", v1.Succeeded)
	waitVMStatus(t, ns, "rerun", v1.PrintableStopped)
	time.Sleep(time.Second)
	if got := getVMI(t, ns, "rerun"); got.UID != second.UID {
		t.Errorf("RerunOnFailure replaced a VMI whose guest shut down")
	}
}

func TestVMOnce(t *testing.T) {
	needController(t)
	ns := newNamespace(t)
	playKubelet(t, ns)
	once := v1.RunStrategyOnce
	if err := env.c.Create(context.Background(), newVM(ns, "once", &once, nil)); err != nil {
		t.Fatal(err)
	}
	runVMI(t, ns, "once")
	endVMI(t, ns, "once", 1)
	waitNoVMI(t, ns, "once")
	vm := waitVMStatus(t, ns, "once", v1.PrintableStopped)
	if strategyOf(vm) != "Halted" {
		t.Errorf("after its run: runStrategy %s, want Halted", strategyOf(vm))
	}
}

// TestVMCrashLoopBackOff: a VM whose VMIs keep failing waits longer before each new one.
func TestVMCrashLoopBackOff(t *testing.T) {
	needController(t)
	ns := newNamespace(t)
	playKubelet(t, ns)
	always := v1.RunStrategyAlways
	if err := env.c.Create(context.Background(), newVM(ns, "crashy", &always, nil)); err != nil {
		t.Fatal(err)
	}
	var last types.UID
	for range 2 {
		vmi := waitNewVMI(t, ns, "crashy", last)
		last = vmi.UID
		endVMI(t, ns, "crashy", 2)
	}
	vm := waitVMStatus(t, ns, "crashy", v1.PrintableCrashLoopBackOff)
	sf := vm.Status.StartFailure
	if sf == nil || sf.ConsecutiveFailCount != 2 || sf.RetryAfterTimestamp == nil {
		t.Fatalf("startFailure = %+v, want 2 failures and a retry time", sf)
	}
	// After the back-off (2 s in these tests) the VM tries again.
	waitNewVMI(t, ns, "crashy", last)
}

// TestVMDeletion: deleting a VM deletes its VMI and pod, and nothing is left.
func TestVMDeletion(t *testing.T) {
	needController(t)
	ctx := context.Background()
	ns := newNamespace(t)
	playKubelet(t, ns)
	always := v1.RunStrategyAlways
	vm := newVM(ns, "doomed", &always, nil)
	if err := env.c.Create(ctx, vm); err != nil {
		t.Fatal(err)
	}
	runVMI(t, ns, "doomed")
	if err := env.c.Delete(ctx, vm); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the vm to be gone", func() (bool, error) {
		err := env.c.Get(ctx, client.ObjectKeyFromObject(vm), &v1.VirtualMachine{})
		return apierrors.IsNotFound(err), err
	})
	if n := len(podsOf(t, ns, "doomed")); n != 0 {
		t.Errorf("%d pods left", n)
	}
	var vmis v1.VirtualMachineInstanceList
	if err := env.c.List(ctx, &vmis, client.InNamespace(ns)); err != nil || len(vmis.Items) != 0 {
		t.Errorf("vmis left: %d (%v)", len(vmis.Items), err)
	}
}

func hasVMCondition(vm *v1.VirtualMachine, t v1.VirtualMachineConditionType) bool {
	for _, c := range vm.Status.Conditions {
		if c.Type == t && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// TestVMDataVolumeTemplates: a VM makes its DataVolumes, waits for them (Provisioning), then
// runs its VMI on them; deleting the VM deletes them. The DataVolume controller runs in the
// same manager and makes the PVC; the test binds it.
func TestVMDataVolumeTemplates(t *testing.T) {
	needController(t)
	ctx := context.Background()
	ns := newNamespace(t)
	playKubelet(t, ns)
	always := v1.RunStrategyAlways
	vm := newVM(ns, "withdv", &always, nil)
	vm.Spec.Template.Spec.Volumes[1] = v1.Volume{Name: "emptydisk", VolumeSource: v1.VolumeSource{DataVolume: &v1.DataVolumeSource{Name: "withdv-root"}}}
	vm.Spec.DataVolumeTemplates = []v1.DataVolumeTemplateSpec{{
		ObjectMeta: v1.TemplateObjectMeta{Name: "withdv-root"},
		Spec: v1.DataVolumeTemplateData{
			Source:  v1.DataVolumeSourceSpec{Blank: &v1.DataVolumeBlankImage{}},
			Storage: &v1.StorageSpec{Resources: v1.StorageResources{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}},
		},
	}}
	if err := env.c.Create(ctx, vm); err != nil {
		t.Fatal(err)
	}
	dv := &v1.DataVolume{}
	eventually(t, "the datavolume", func() (bool, error) {
		err := env.c.Get(ctx, types.NamespacedName{Namespace: ns, Name: "withdv-root"}, dv)
		return err == nil, err
	})
	if len(dv.OwnerReferences) != 1 || dv.OwnerReferences[0].Name != "withdv" {
		t.Errorf("datavolume owners = %+v", dv.OwnerReferences)
	}
	waitVMStatus(t, ns, "withdv", v1.PrintableProvisioning)
	if err := env.c.Get(ctx, types.NamespacedName{Namespace: ns, Name: "withdv"}, &v1.VirtualMachineInstance{}); !apierrors.IsNotFound(err) {
		t.Fatalf("a VMI was made before its DataVolume was ready: %v", err)
	}

	// The DataVolume controller makes the PVC; the test plays the volume binder. A bound blank
	// volume is complete, so the DataVolume succeeds and the VM makes its VMI.
	eventually(t, "the datavolume's pvc to bind", func() (bool, error) {
		pvc := &corev1.PersistentVolumeClaim{}
		if err := env.c.Get(ctx, types.NamespacedName{Namespace: ns, Name: "withdv-root"}, pvc); err != nil {
			return false, err
		}
		pvc.Status.Phase = corev1.ClaimBound
		err := env.c.Status().Update(ctx, pvc)
		return err == nil, err
	})
	pod := launcherPod(t, ns, "withdv")
	var mounted bool
	for _, m := range computeOf(t, pod).VolumeMounts {
		mounted = mounted || m.MountPath == "/var/run/slimvirt/pvcs/emptydisk"
	}
	if !mounted {
		t.Errorf("the DataVolume's PVC is not mounted: %+v", computeOf(t, pod).VolumeMounts)
	}
	runVMI(t, ns, "withdv")
	waitVMStatus(t, ns, "withdv", v1.PrintableRunning)

	if err := env.c.Delete(ctx, getVM(t, ns, "withdv")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the datavolume to go with its VM", func() (bool, error) {
		err := env.c.Get(ctx, client.ObjectKeyFromObject(dv), &v1.DataVolume{})
		return apierrors.IsNotFound(err), err
	})
}

// TestVMImagePullError: a VMI whose image cannot be pulled shows as ErrImagePull on its VM.
func TestVMImagePullError(t *testing.T) {
	needController(t)
	ns := newNamespace(t)
	always := v1.RunStrategyAlways
	if err := env.c.Create(context.Background(), newVM(ns, "nopull", &always, nil)); err != nil {
		t.Fatal(err)
	}
	pod := launcherPod(t, ns, "nopull")
	bindPod(t, pod, testNode)
	setPodStatus(t, ns, pod.Name, func(st *corev1.PodStatus) {
		st.Phase = corev1.PodPending
		st.ContainerStatuses = []corev1.ContainerStatus{{Name: "container-disk-containerdisk", Image: "slimvirt.io/guest:dev",
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ErrImagePull", Message: "pull access denied"}}}}
	})
	waitVMStatus(t, ns, "nopull", v1.PrintableErrImagePull)
	c := condition(getVMI(t, ns, "nopull"), v1.VMIReady)
	if c == nil || c.Reason != "ErrImagePull" || !strings.Contains(c.Message, "pull access denied") {
		t.Errorf("VMI Ready condition = %+v", c)
	}
}
