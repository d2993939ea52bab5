package launcherpod

import (
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
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
		{name: "too large", in: `{"phase":"Running","reason":"` + strings.Repeat("x", MaxStatusSize) + `"}`, err: "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := ParseStatus([]byte(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ParseStatus = %+v, %v; want an error with %q", st, err, tc.err)
				}
				if st != (Status{}) {
					t.Errorf("refused status comes with a value: %+v", st)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			st.GuestOS = nil
			if st != tc.want {
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
		`{"PHASE":"Running","phase":"Starting"}`,
		`[1,2,3]`,
		"\xff\xfe",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := ParseStatus(b)
		if err != nil {
			if st != (Status{}) {
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
		// What was accepted says the same once written again.
		again, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		st2, err := ParseStatus(again)
		if err != nil {
			t.Fatalf("accepted %q but not its own encoding %s: %v", b, again, err)
		}
		if st2.Phase != st.Phase || st2.GuestMAC != st.GuestMAC || st2.GuestIP != st.GuestIP {
			t.Fatalf("round trip changed %+v to %+v", st, st2)
		}
	})
}
