package vmimetrics

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseStats(t *testing.T) {
	many := func(n int, dup bool) string {
		var b strings.Builder
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			name := fmt.Sprintf("d%d", i)
			if dup {
				name = "d"
			}
			fmt.Fprintf(&b, `{"name":%q}`, name)
		}
		return `{"state":"running","disks":[` + b.String() + `]}`
	}
	for _, tc := range []struct {
		name, in, err string
	}{
		{"as the launcher sends it", `{"state":"running","cpuTimeNanos":5,"vcpus":1,"memoryBytes":134217728,"disks":[{"name":"containerdisk","readBytes":9}],"interfaces":[{"name":"default","rxBytes":1}]}`, ""},
		{"paused", `{"state":"paused"}`, ""},
		{"as many disks as allowed", many(maxDevices, false), ""},
		{"unknown state", `{"state":"exploded"}`, "domain state"},
		{"no state", `{}`, "domain state"},
		{"trailing data", `{"state":"running"} {}`, "data after"},
		{"not JSON", `running`, "parse stats"},
		{"too many disks", many(maxDevices+1, false), "more than"},
		{"same disk twice", many(2, true), "twice"},
		{"disk without a name", `{"state":"running","disks":[{}]}`, "empty"},
		{"interface twice", `{"state":"running","interfaces":[{"name":"a"},{"name":"a"}]}`, "twice"},
		{"long name", `{"state":"running","interfaces":[{"name":"` + strings.Repeat("n", maxName+1) + `"}]}`, "too long"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseStats([]byte(tc.in))
			if tc.err == "" && err != nil {
				t.Fatal(err)
			}
			if tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("ParseStats: %v, want an error with %q", err, tc.err)
			}
		})
	}
}

// FuzzParseStats: a reply either gives stats the collector can turn into metrics as they are
// (a known state, few distinct valid names) or is refused; nothing panics.
func FuzzParseStats(f *testing.F) {
	for _, s := range []string{
		`{"state":"running","cpuTimeNanos":5,"vcpus":1,"memoryBytes":1,"disks":[{"name":"root","readBytes":1}],"interfaces":[{"name":"default"}]}`,
		`{"state":"paused","disks":[{"name":"a"},{"name":"a"}]}`,
		`{"state":"shutoff","interfaces":[{"name":"\xff"}]}`,
		`{"state":"running","vcpus":-1}`,
		`{"state":"running","memoryBytes":1e30}`,
		`null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := ParseStats(b)
		if err != nil {
			return
		}
		if !slices.Contains(domainStates, st.State) {
			t.Fatalf("accepted state %q", st.State)
		}
		if len(st.Disks) > maxDevices || len(st.Interfaces) > maxDevices {
			t.Fatalf("accepted %d disks and %d interfaces", len(st.Disks), len(st.Interfaces))
		}
		seen := map[string]bool{}
		for _, d := range st.Disks {
			if d.Name == "" || !utf8.ValidString(d.Name) || seen["d"+d.Name] {
				t.Fatalf("accepted disk name %q", d.Name)
			}
			seen["d"+d.Name] = true
		}
		for _, n := range st.Interfaces {
			if n.Name == "" || !utf8.ValidString(n.Name) || seen["n"+n.Name] {
				t.Fatalf("accepted interface name %q", n.Name)
			}
			seen["n"+n.Name] = true
		}
	})
}
