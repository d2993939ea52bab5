package launcherpod

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/slimvirt/slimvirt/internal/testutil"
)

func TestParseStatus(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     Status
		err      string
	}{
		{name: "as the launcher writes it", in: `{"phase":"Running","accelerator":"kvm","guestMAC":"02:00:00:00:00:01","guestIP":"10.244.0.9","agentConnected":true,"guestOS":{"name":"Debian GNU/Linux"}}` + "\n",
			want: Status{Phase: PhaseRunning, Accelerator: "kvm", GuestMAC: "02:00:00:00:00:01", GuestIP: "10.244.0.9", AgentConnected: true}},
		{name: "a field of a newer launcher", in: `{"phase":"Starting","later":{"x":1}}`, want: Status{Phase: PhaseStarting}},
		{name: "IPv6 lease", in: `{"phase":"Running","guestIP":"fd00::9"}`, want: Status{Phase: PhaseRunning, GuestIP: "fd00::9"}},
		{name: "empty", in: ``, err: "EOF"},
		{name: "null", in: `null`, err: "phase"},
		{name: "no phase", in: `{}`, err: `phase ""`},
		{name: "unknown phase", in: `{"phase":"Migrating"}`, err: `phase "Migrating"`},
		{name: "not an object", in: `["Running"]`, err: "cannot unmarshal"},
		{name: "two objects", in: `{"phase":"Running"}{"phase":"Paused"}`, err: "data after"},
		{name: "trailing garbage", in: `{"phase":"Running"} x`, err: "data after"},
		{name: "bad MAC", in: `{"phase":"Running","guestMAC":"not-a-mac"}`, err: "guestMAC"},
		{name: "long MAC", in: `{"phase":"Running","guestMAC":"00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01"}`, err: "guestMAC"},
		{name: "bad IP", in: `{"phase":"Running","guestIP":"10.0.0.300"}`, err: "guestIP"},
		{name: "IP with a zone", in: `{"phase":"Running","guestIP":"fe80::1%eth0"}`, err: "guestIP"},
		{name: "bad accelerator", in: `{"phase":"Running","accelerator":"hvf"}`, err: "accelerator"},
		{name: "disks that grew", in: `{"phase":"Running","diskSizes":{"rootdisk":2147483648,"data-1":1048576}}`,
			want: Status{Phase: PhaseRunning, DiskSizes: map[string]int64{"rootdisk": 2 << 30, "data-1": 1 << 20}}},
		{name: "largest disk", in: `{"phase":"Running","diskSizes":{"d":9007199254740992}}`,
			want: Status{Phase: PhaseRunning, DiskSizes: map[string]int64{"d": MaxDiskSize}}},
		{name: "disk over the bound", in: `{"phase":"Running","diskSizes":{"d":9007199254740993}}`, err: "not between 1 and"},
		{name: "disk size past int64", in: `{"phase":"Running","diskSizes":{"d":99999999999999999999}}`, err: "cannot unmarshal"},
		{name: "negative disk size", in: `{"phase":"Running","diskSizes":{"d":-1}}`, err: "not between 1 and"},
		{name: "zero disk size", in: `{"phase":"Running","diskSizes":{"d":0}}`, err: "not between 1 and"},
		{name: "fractional disk size", in: `{"phase":"Running","diskSizes":{"d":1.5}}`, err: "cannot unmarshal"},
		{name: "disk size as a string", in: `{"phase":"Running","diskSizes":{"d":"1Gi"}}`, err: "cannot unmarshal"},
		{name: "volume name with a slash", in: `{"phase":"Running","diskSizes":{"../etc":1024}}`, err: "not a DNS label"},
		{name: "volume name upper case", in: `{"phase":"Running","diskSizes":{"Root":1024}}`, err: "not a DNS label"},
		{name: "empty volume name", in: `{"phase":"Running","diskSizes":{"":1024}}`, err: "not a DNS label"},
		{name: "volume name of 64 bytes", in: `{"phase":"Running","diskSizes":{"` + strings.Repeat("a", 64) + `":1024}}`, err: "not a DNS label"},
		{name: "volume name with a NUL", in: `{"phase":"Running","diskSizes":{"a\u0000b":1024}}`, err: "not a DNS label"},
		{name: "disk targets", in: `{"phase":"Running","diskTargets":{"rootdisk":"vda","cdrom-1":"sda","old":"hdc","many":"vdaab"}}`,
			want: Status{Phase: PhaseRunning, DiskTargets: map[string]string{"rootdisk": "vda", "cdrom-1": "sda", "old": "hdc", "many": "vdaab"}}},
		{name: "disk target with a path", in: `{"phase":"Running","diskTargets":{"d":"../vda"}}`, err: "is not vd, sd or hd"},
		{name: "disk target of another kind", in: `{"phase":"Running","diskTargets":{"d":"nvme0n1"}}`, err: "is not vd, sd or hd"},
		{name: "disk target too long", in: `{"phase":"Running","diskTargets":{"d":"vdaaaa"}}`, err: "is not vd, sd or hd"},
		{name: "disk target upper case", in: `{"phase":"Running","diskTargets":{"d":"VDA"}}`, err: "is not vd, sd or hd"},
		{name: "disk target prefix alone", in: `{"phase":"Running","diskTargets":{"d":"vd"}}`, err: "is not vd, sd or hd"},
		{name: "disk target volume name bad", in: `{"phase":"Running","diskTargets":{"A":"vda"}}`, err: "not a DNS label"},
		{name: "too large", in: `{"phase":"Running","reason":"` + strings.Repeat("x", MaxStatusSize) + `"}`, err: "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := ParseStatus([]byte(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ParseStatus = %+v, %v; want an error with %q", st, err, tc.err)
				}
				if !reflect.DeepEqual(st, Status{}) {
					t.Errorf("refused status comes with a value: %+v", st)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			st.GuestOS = nil
			if !reflect.DeepEqual(st, tc.want) {
				t.Errorf("ParseStatus = %+v, want %+v", st, tc.want)
			}
		})
	}
}

// TestReadStatusRefuses: what a pod can put in its status file's place is refused at once, with
// an error that says why, and never read: a FIFO (which would block a reader forever), a
// symbolic link to a node file, a directory, and a file far over the bound (sparse here, so the
// test itself is cheap).
func TestReadStatusRefuses(t *testing.T) {
	dir := t.TempDir()
	nodeFile := filepath.Join(dir, "node-secret")
	testutil.Must(t, os.WriteFile(nodeFile, []byte(`{"phase":"Running"}`), 0o600))
	for _, tc := range []struct {
		name string
		make func(path string) error
		want error
	}{
		{"fifo", func(p string) error { return syscall.Mkfifo(p, 0o644) }, ErrNotRegular},
		{"symlink to a node file", func(p string) error { return os.Symlink(nodeFile, p) }, ErrNotRegular},
		{"directory", func(p string) error { return os.Mkdir(p, 0o755) }, ErrNotRegular},
		{"100 MiB sparse file", func(p string) error {
			f, err := os.Create(p)
			if err != nil {
				return err
			}
			defer f.Close()
			return f.Truncate(100 << 20)
		}, ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "status.json")
			testutil.Must(t, tc.make(path))
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			done := make(chan error, 1)
			go func() {
				_, err := ReadStatus(path)
				done <- err
			}()
			select {
			case err := <-done:
				if !errors.Is(err, tc.want) {
					t.Fatalf("ReadStatus: %v, want %v", err, tc.want)
				}
				t.Logf("refused: %v", err)
			case <-time.After(5 * time.Second):
				t.Fatal("ReadStatus still blocked after 5s")
			}
			runtime.ReadMemStats(&after)
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
				t.Errorf("refusing it allocated %d bytes: the file was read", grew)
			}
		})
	}
}

func TestReadStatus(t *testing.T) {
	path := filepath.Join(t.TempDir(), "status.json")
	testutil.Must(t, os.WriteFile(path, []byte(`{"phase":"Paused","guestMAC":"02:00:00:00:00:01"}`+"\n"), 0o644))
	st, err := ReadStatus(path)
	if err != nil || st.Phase != PhasePaused || st.GuestMAC != "02:00:00:00:00:01" {
		t.Fatalf("ReadStatus = %+v, %v", st, err)
	}
	if _, err := ReadStatus(filepath.Join(t.TempDir(), "none")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v, want ErrNotExist", err)
	}
}

// FuzzParseStatus: any bytes a pod writes either parse into a status whose values the node
// agent can use as they are, or are refused with an error; nothing panics.
func FuzzParseStatus(f *testing.F) {
	for _, s := range []string{
		`{"phase":"Running","accelerator":"kvm","guestMAC":"02:00:00:00:00:01","guestIP":"10.244.0.9"}`,
		`{"phase":"Paused","agentConnected":true,"guestOS":{"name":"Fedora","version":"41","kernelRelease":"6.11"}}`,
		`{"phase":"Crashed","reason":"qemu exited"}`,
		`{"phase":"Running"} {}`,
		`{"phase":"Running","guestIP":"fe80::1%eth0"}`,
		`{"phase":"Running","guestMAC":"00-00-5e-00-53-01"}`,
		`{"phase":"Running","diskSizes":{"rootdisk":2147483648,"../x":-1}}`,
		`{"PHASE":"Running","phase":"Starting"}`,
		`[1,2,3]`,
		"\xff\xfe",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := ParseStatus(b)
		if err != nil {
			if !reflect.DeepEqual(st, Status{}) {
				t.Fatalf("refused %q with a value %+v", b, st)
			}
			return
		}
		if len(b) > MaxStatusSize {
			t.Fatalf("accepted %d bytes", len(b))
		}
		if !slices.Contains(phases, st.Phase) {
			t.Fatalf("accepted phase %q", st.Phase)
		}
		if st.GuestMAC != "" {
			if _, err := net.ParseMAC(st.GuestMAC); err != nil {
				t.Fatalf("accepted MAC %q", st.GuestMAC)
			}
		}
		if st.GuestIP != "" {
			if _, err := netip.ParseAddr(st.GuestIP); err != nil {
				t.Fatalf("accepted IP %q", st.GuestIP)
			}
		}
		if len(st.DiskSizes) > MaxDiskSizes {
			t.Fatalf("accepted %d disks", len(st.DiskSizes))
		}
		for name, size := range st.DiskSizes {
			if !IsDNSLabel(name) || size <= 0 || size > MaxDiskSize {
				t.Fatalf("accepted disk %q of %d bytes", name, size)
			}
		}
		if len(st.DiskTargets) > MaxDiskSizes {
			t.Fatalf("accepted %d disk targets", len(st.DiskTargets))
		}
		for name, target := range st.DiskTargets {
			if !IsDNSLabel(name) || !isDiskTarget(target) {
				t.Fatalf("accepted disk target %q: %q", name, target)
			}
		}
		// What was accepted says the same once written again.
		again, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		st2, err := ParseStatus(again)
		if err != nil {
			t.Fatalf("accepted %q but not its own encoding %s: %v", b, again, err)
		}
		if st2.Phase != st.Phase || st2.GuestMAC != st.GuestMAC || st2.GuestIP != st.GuestIP || !maps.Equal(st2.DiskSizes, st.DiskSizes) {
			t.Fatalf("round trip changed %+v to %+v", st, st2)
		}
	})
}

// TestParseStatusHostileDiskSizes: the sizes of grown disks come from a file the tenant can
// write, and the node agent puts them in the VMI's status. A file with more disks than a VMI
// can have, sizes no disk has, or names that are no volume's is refused whole, so none of it
// reaches the VMI.
func TestParseStatusHostileDiskSizes(t *testing.T) {
	entries := func(n int, size string) string {
		var b strings.Builder
		b.WriteString(`{"phase":"Running","diskSizes":{`)
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `"%s":%s`, strconv.FormatInt(int64(i), 36), size)
		}
		b.WriteString("}}")
		return b.String()
	}
	for _, tc := range []struct {
		name, in string
		err      string
	}{
		{"10,000 disks", entries(10000, "1"), "larger than the status file bound"},
		{"7,000 disks within the size bound", entries(7000, "1"), "more than 64"},
		{"one disk 10,000 times", strings.Replace(entries(1, "1"), `"0":1`, strings.Repeat(`"0":1,`, 9999)+`"0":-1`, 1), "not between 1 and"},
		{"65 disks", entries(MaxDiskSizes+1, "1073741824"), "more than 64"},
		{"negative sizes", entries(3, "-1073741824"), "not between 1 and"},
		{"the smallest int64", entries(1, "-9223372036854775808"), "not between 1 and"},
		{"the largest int64", entries(1, "9223372036854775807"), "not between 1 and"},
		{"names with slashes", `{"phase":"Running","diskSizes":{"a/b":1024,"/var/lib/kubelet":1024}}`, "not a DNS label"},
		{"a name in another script", `{"phase":"Running","diskSizes":{"dìsk":1024}}`, "not a DNS label"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := ParseStatus([]byte(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("ParseStatus = %d disks, %v; want an error with %q", len(st.DiskSizes), err, tc.err)
			}
			if !reflect.DeepEqual(st, Status{}) {
				t.Errorf("refused status comes with a value: %+v", st)
			}
		})
	}
	t.Run("64 disks", func(t *testing.T) {
		st, err := ParseStatus([]byte(entries(MaxDiskSizes, "1073741824")))
		if err != nil || len(st.DiskSizes) != MaxDiskSizes {
			t.Fatalf("ParseStatus = %d disks, %v; want %d", len(st.DiskSizes), err, MaxDiskSizes)
		}
	})
}
