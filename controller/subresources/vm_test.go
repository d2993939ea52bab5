package subresources

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	api "github.com/slimvirt/slimvirt/api/subresources"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

func TestVMRequestsAnnotateTheVM(t *testing.T) {
	const ns = "power"
	env.vm(t, ns, "manual", v1.RunStrategyManual)
	token := env.user(t, ns, "operator", allow("update", "virtualmachines/start", "virtualmachines/stop", "virtualmachines/restart"))
	put := func(name, action string) (int, []byte) {
		return env.do(t, token, http.MethodPut, api.APIPath(api.VMs, ns, name, action), nil)
	}

	// A stopped Manual VM: stop and restart make no sense, start does.
	code, body := put("manual", api.Stop)
	if st := expectStatus(t, http.StatusConflict, code, body); !strings.Contains(st.Message, "VM is not running") {
		t.Errorf("stop of a stopped VM: %s", st.Message)
	}
	code, body = put("manual", api.Restart)
	expectStatus(t, http.StatusConflict, code, body)
	if code, body = put("manual", api.Start); code != http.StatusAccepted {
		t.Fatalf("start: %d %s", code, body)
	}
	ann := env.getVM(t, ns, "manual").Annotations
	if _, err := time.Parse(time.RFC3339Nano, ann[v1.AnnotationStartRequested]); err != nil {
		t.Fatalf("start annotation %q: %v", ann[v1.AnnotationStartRequested], err)
	}

	// Once its VMI runs: start conflicts, restart names the VMI, stop withdraws the start.
	vmi := env.vmi(t, ns, "manual", v1.Running, "node-a")
	code, body = put("manual", api.Start)
	if st := expectStatus(t, http.StatusConflict, code, body); !strings.Contains(st.Message, "VM is already running") {
		t.Errorf("start of a running VM: %s", st.Message)
	}
	if code, body = put("manual", api.Restart); code != http.StatusAccepted {
		t.Fatalf("restart: %d %s", code, body)
	}
	if got := env.getVM(t, ns, "manual").Annotations[v1.AnnotationRestartRequested]; got != string(vmi.UID) {
		t.Errorf("restart annotation %q, want the VMI's UID %s", got, vmi.UID)
	}
	if code, body = put("manual", api.Stop); code != http.StatusAccepted {
		t.Fatalf("stop: %d %s", code, body)
	}
	ann = env.getVM(t, ns, "manual").Annotations
	if ann[v1.AnnotationStopRequested] == "" || ann[v1.AnnotationStartRequested] != "" || ann[v1.AnnotationRestartRequested] != "" {
		t.Errorf("annotations after stop: %v", ann)
	}

	code, body = put("absent", api.Start)
	expectStatus(t, http.StatusNotFound, code, body)

	// A user allowed only to start may not stop.
	starter := env.user(t, ns, "starter", allow("update", "virtualmachines/start"))
	code, body = env.do(t, starter, http.MethodPut, api.APIPath(api.VMs, ns, "manual", api.Stop), nil)
	expectStatus(t, http.StatusForbidden, code, body)
}

func TestMigrateIsNotImplemented(t *testing.T) {
	const ns = "migrate"
	env.vm(t, ns, "vm1", v1.RunStrategyAlways)
	token := env.user(t, ns, "u", allow("update", "virtualmachines/migrate"))
	code, body := env.do(t, token, http.MethodPut, api.APIPath(api.VMs, ns, "vm1", api.Migrate), nil)
	st := expectStatus(t, http.StatusNotImplemented, code, body)
	if st.Message != "live migration is not available in this slimvirt release" {
		t.Errorf("message: %s", st.Message)
	}
}

func TestUploadToken(t *testing.T) {
	const ns = "upload"
	up := env.dv(t, ns, "up", v1.DataVolumeSourceSpec{Upload: &v1.DataVolumeSourceUpload{}})
	env.dv(t, ns, "blank", v1.DataVolumeSourceSpec{Blank: &v1.DataVolumeBlankImage{}})
	done := env.dv(t, ns, "done", v1.DataVolumeSourceSpec{Upload: &v1.DataVolumeSourceUpload{}})
	done.Status.Phase = v1.DataVolumeSucceeded
	if err := env.c.Status().Update(t.Context(), done); err != nil {
		t.Fatal(err)
	}
	token := env.user(t, ns, "uploader", allow("create", "datavolumes/uploadtoken"))
	post := func(name string) (int, []byte) {
		return env.do(t, token, http.MethodPost, api.APIPath(api.DataVolumes, ns, name, api.UploadToken), nil)
	}

	code, body := post("up")
	var resp api.UploadTokenResponse
	if code != http.StatusOK || json.Unmarshal(body, &resp) != nil {
		t.Fatalf("uploadtoken: %d %s", code, body)
	}
	if resp.Token != "token-upload-up-"+string(up.UID) || resp.Expires != "2030-01-02T03:04:05Z" {
		t.Errorf("answer %+v", resp)
	}

	code, body = post("blank")
	if st := expectStatus(t, http.StatusBadRequest, code, body); !strings.Contains(st.Message, "has no upload source") {
		t.Errorf("blank: %s", st.Message)
	}
	code, body = post("done")
	if st := expectStatus(t, http.StatusConflict, code, body); !strings.Contains(st.Message, "already filled") {
		t.Errorf("done: %s", st.Message)
	}
	code, body = post("absent")
	expectStatus(t, http.StatusNotFound, code, body)

	// Reading DataVolumes is not asking for their tokens.
	reader := env.user(t, ns, "reader", allow("get", "datavolumes/uploadtoken"))
	code, body = env.do(t, reader, http.MethodPost, api.APIPath(api.DataVolumes, ns, "up", api.UploadToken), nil)
	expectStatus(t, http.StatusForbidden, code, body)
}

func TestDecideVMRequest(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	vmi := func(phase v1.VirtualMachineInstancePhase) *v1.VirtualMachineInstance {
		v := &v1.VirtualMachineInstance{}
		v.UID, v.Status.Phase = "11111111-2222-3333-4444-555555555555", phase
		return v
	}
	for _, tc := range []struct {
		action   string
		strategy v1.VirtualMachineRunStrategy
		vmi      *v1.VirtualMachineInstance
		set      string // the annotation set, "" when the request conflicts
		conflict string
	}{
		{api.Start, v1.RunStrategyHalted, nil, v1.AnnotationStartRequested, ""},
		{api.Start, v1.RunStrategyManual, vmi(v1.Succeeded), v1.AnnotationStartRequested, ""},
		{api.Start, v1.RunStrategyManual, vmi(v1.Running), "", "VM is already running"},
		{api.Start, v1.RunStrategyManual, vmi(v1.Scheduling), "", "VM is already running"},
		{api.Start, v1.RunStrategyAlways, nil, "", "runStrategy Always does not support manual start requests"},
		{api.Start, v1.RunStrategyOnce, nil, "", "runStrategy Once does not support manual start requests"},
		{api.Start, v1.RunStrategyRerunOnFailure, vmi(v1.Failed), "", "from the failed state"},
		{api.Start, v1.RunStrategyRerunOnFailure, vmi(v1.Succeeded), v1.AnnotationStartRequested, ""},
		{api.Stop, v1.RunStrategyHalted, nil, "", "VM is not running"},
		{api.Stop, v1.RunStrategyHalted, vmi(v1.Running), v1.AnnotationStopRequested, ""},
		{api.Stop, v1.RunStrategyManual, vmi(v1.Failed), "", "VM is not running"},
		{api.Stop, v1.RunStrategyRerunOnFailure, nil, "", "VM is not running"},
		{api.Stop, v1.RunStrategyAlways, nil, v1.AnnotationStopRequested, ""},
		{api.Stop, v1.RunStrategyOnce, vmi(v1.Running), v1.AnnotationStopRequested, ""},
		{api.Restart, v1.RunStrategyHalted, vmi(v1.Running), "", "runStrategy Halted does not support manual restart requests"},
		{api.Restart, v1.RunStrategyOnce, vmi(v1.Running), "", "runStrategy Once does not support"},
		{api.Restart, v1.RunStrategyAlways, nil, "", "VM is not running"},
		{api.Restart, v1.RunStrategyAlways, vmi(v1.Running), v1.AnnotationRestartRequested, ""},
		{api.Restart, v1.RunStrategyManual, vmi(v1.Failed), v1.AnnotationRestartRequested, ""},
		{api.Migrate, v1.RunStrategyAlways, vmi(v1.Running), "", "unknown VM request"},
	} {
		name := tc.action + "/" + string(tc.strategy)
		if tc.vmi != nil {
			name += "/" + string(tc.vmi.Status.Phase)
		}
		t.Run(name, func(t *testing.T) {
			vm := &v1.VirtualMachine{Spec: v1.VirtualMachineSpec{RunStrategy: ptr.To(tc.strategy)}}
			edit, err := decideVMRequest(tc.action, vm, tc.vmi, now)
			if tc.conflict != "" {
				if err == nil || !strings.Contains(err.Error(), tc.conflict) {
					t.Fatalf("got %v %v, want conflict %q", edit, err, tc.conflict)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := "2026-01-01T00:00:00Z"
			if tc.action == api.Restart {
				want = string(tc.vmi.UID)
			}
			if len(edit.set) != 1 || edit.set[tc.set] != want {
				t.Errorf("set %v, want %s=%s", edit.set, tc.set, want)
			}
		})
	}
}

// TestVMRequestWhileTheVMChanges: the controller writes a VM often (its status, its
// finalizer); here the VM is written every 20 ms. A start that meets such a write between its
// read and its patch is judged again on the VM as it is now, not refused with "try again".
func TestVMRequestWhileTheVMChanges(t *testing.T) {
	const ns = "busy"
	env.vm(t, ns, "busy", v1.RunStrategyManual)
	token := env.user(t, ns, "operator", allow("update", "virtualmachines/start", "virtualmachines/stop"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() {
		writes := 0
		defer func() { done <- writes }()
		for i := 0; ctx.Err() == nil; i++ {
			vm := env.getVM(t, ns, "busy")
			patch := client.MergeFrom(vm.DeepCopy())
			vm.Labels = map[string]string{"tick": strconv.Itoa(i)}
			if env.c.Patch(ctx, vm, patch) == nil {
				writes++
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	for i := 0; i < 30; i++ {
		action := api.Start // the VM has no VMI: each start is accepted, the latest wins
		code, body := env.do(t, token, http.MethodPut, api.APIPath(api.VMs, ns, "busy", action), nil)
		if code != http.StatusAccepted {
			cancel()
			t.Fatalf("%s #%d while the VM changes: %d %s", action, i, code, body)
		}
	}
	cancel()
	t.Logf("30 requests accepted while the VM was written %d times", <-done)
}
