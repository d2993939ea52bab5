package launcher

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// TestReadVMIFile: the launcher takes a VMI larger than one environment string from its
// pod's VMI file, and refuses the file when it is not what the controller wrote.
func TestReadVMIFile(t *testing.T) {
	vmi := &v1.VirtualMachineInstance{ObjectMeta: metav1.ObjectMeta{Name: "big", Namespace: "ns"}}
	vmi.Spec.Volumes = []v1.Volume{{Name: "ci", VolumeSource: v1.VolumeSource{CloudInitNoCloud: &v1.CloudInitNoCloudSource{
		UserData: "#cloud-config\n# " + strings.Repeat("x", 200<<10) + "\n"}}}}
	raw, err := json.Marshal(vmi)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(raw)
	file := filepath.Join(t.TempDir(), "vmi.json")
	if err := os.WriteFile(file, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	sha := hex.EncodeToString(sum[:])
	got, err := ReadVMI("", file, sha)
	if err != nil {
		t.Fatalf("a %d-byte VMI: %v", len(raw), err)
	}
	if got.Name != "big" || len(got.Spec.Volumes[0].CloudInitNoCloud.UserData) < 200<<10 {
		t.Errorf("parsed VMI %s with %d bytes of user data", got.Name, len(got.Spec.Volumes[0].CloudInitNoCloud.UserData))
	}
	if err := os.WriteFile(file, []byte(strings.Replace(string(raw), `"big"`, `"bug"`, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadVMI("", file, sha); err == nil || !strings.Contains(err.Error(), "changed after the pod was made") {
		t.Errorf("an edited VMI file: err = %v, want a refusal", err)
	}
}
