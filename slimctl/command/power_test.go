package command

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestVMINameTakesVMAndVMI(t *testing.T) {
	for _, kind := range []string{"vm", "VMI", "virtualmachine", "virtualmachineinstance"} {
		name, err := vmiName("pause", []string{kind, "x"})
		if err != nil || name != "x" {
			t.Errorf("%s x: got %q, %v", kind, name, err)
		}
	}
	_, err := vmiName("pause", []string{"pod", "x"})
	if err == nil || err.Error() != `cannot pause "pod": the kind must be vm or vmi` {
		t.Errorf("pod x: got %v", err)
	}
}

// TestTerminalJSONDisarmsGuestStrings: a guest's strings cannot carry terminal escapes to the
// user (CSI as C1 0x9b, ESC, DEL, invalid UTF-8), and the output is still the same JSON.
func TestTerminalJSONDisarmsGuestStrings(t *testing.T) {
	hostile := []byte("{\"hostname\":\"a\u009b2Jb\\u001b[31m\x7fc\xffd\",\"os\":{\"name\":\"Fedora\"}}")
	out, err := terminalJSON(hostile)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"\u009b", "\x1b", "\x7f", "\xff"} {
		if strings.Contains(string(out), bad) {
			t.Errorf("output %q carries %q", out, bad)
		}
	}
	var v struct {
		Hostname string
		OS       struct{ Name string }
	}
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("output %q is not JSON: %v", out, err)
	}
	if v.Hostname != "a\u009b2Jb\x1b[31m\x7fc\ufffdd" || v.OS.Name != "Fedora" {
		t.Errorf("decoded %+v", v)
	}
	if !strings.Contains(string(out), "\n  \"os\": {\n    \"name\": \"Fedora\"") {
		t.Errorf("not indented: %s", out)
	}
	if _, err := terminalJSON([]byte("\x1b]0;pwned\x07")); err == nil {
		t.Error("a non-JSON answer was accepted")
	}
}
