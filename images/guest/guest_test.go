package guest

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/slimvirt/slimvirt/internal/testutil"
	"github.com/slimvirt/slimvirt/runtime/iso9660"
)

func TestFields(t *testing.T) {
	tests := []struct {
		name, line, marker string
		want               map[string]string
		ok                 bool
	}{
		{"up", "SLIMVIRT-GUEST-UP hostname=vm1 ip=10.0.2.15 mac=52:54:00:12:34:56\r", MarkerUp,
			map[string]string{"hostname": "vm1", "ip": "10.0.2.15", "mac": "52:54:00:12:34:56"}, true},
		{"after a prompt", "vm1:/# SLIMVIRT-GUEST-POWEROFF", MarkerPoweroff, map[string]string{}, true},
		{"other marker", "SLIMVIRT-LEASE interface=eth0 ip=10.0.2.15/24", MarkerUp, nil, false},
		{"longer marker", "SLIMVIRT-USERDATA-EXIT rc=0", "SLIMVIRT-USERDATA", nil, false},
		{"agent", "SLIMVIRT-GUEST-AGENT port=vport1p1", MarkerAgent, map[string]string{"port": "vport1p1"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := Fields(tt.line, tt.marker)
			if ok != tt.ok || fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("Fields(%q, %q) = %v, %v; want %v, %v", tt.line, tt.marker, got, ok, tt.want, tt.ok)
			}
		})
	}
	up, ok := ParseUp("SLIMVIRT-GUEST-UP hostname=h ip=none mac=52:54:00:00:00:01")
	if !ok || up != (Up{Hostname: "h", IP: "none", MAC: "52:54:00:00:00:01"}) {
		t.Fatalf("ParseUp = %+v, %v", up, ok)
	}
}

func TestConsole(t *testing.T) {
	r, w := io.Pipe()
	c := NewConsole(r)
	go func() {
		_, _ = io.WriteString(w, "noise\r\nSLIMVIRT-USERDATA-BEGIN\r\n#!/bin/sh\r\necho hi\r\nSLIMVIRT-USERDATA-END\r\nlogin# SLIMVIRT-GUEST-UP hostname=h ip=none mac=m\r\npartial")
		_ = w.Close()
	}()
	got, err := c.Between(MarkerUserDataBegin, MarkerUserDataEnd, 5*time.Second)
	if err != nil || strings.Join(got, "|") != "#!/bin/sh|echo hi" {
		t.Fatalf("Between = %q, %v", got, err)
	}
	line, err := c.WaitFor(MarkerUp, 5*time.Second)
	if up, ok := ParseUp(line); err != nil || !ok || up.Hostname != "h" {
		t.Fatalf("WaitFor(UP) = %q, %v", line, err)
	}
	if _, err := c.WaitFor(MarkerPoweroff, 5*time.Second); err == nil {
		t.Fatal("WaitFor after EOF found a marker that was never printed")
	}
	if !strings.HasSuffix(c.Log(), "partial") {
		t.Fatalf("log lost the unterminated tail: %q", c.Log())
	}
}

// guestDir is where `make guest` put the guest; the QEMU tests need it and run only when
// SLIMVIRT_GUEST_DIR names it (make test-guest sets it).
func guestDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("SLIMVIRT_GUEST_DIR")
	if dir == "" {
		t.Skip("SLIMVIRT_GUEST_DIR is not set; run `make test-guest`")
	}
	for _, f := range []string{"vmlinuz", "initrd.gz", "disk.raw", "disk.qcow2"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatalf("guest file missing (run `make guest`): %v", err)
		}
	}
	return dir
}

// bootTimeout is generous: TCG on a busy 2-core machine is several times slower than idle.
const bootTimeout = 3 * time.Minute

// vm is one QEMU process with its serial console on stdin/stdout and a monitor socket.
type vm struct {
	t       *testing.T
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	console *Console
	monitor string
	started time.Time
	exited  chan struct{}
	exitErr error
}

func startVM(t *testing.T, args ...string) *vm {
	t.Helper()
	dir := t.TempDir()
	v := &vm{t: t, monitor: filepath.Join(dir, "monitor.sock"), exited: make(chan struct{})}
	base := []string{"-machine", "q35", "-accel", "tcg", "-m", "256", "-display", "none",
		"-serial", "stdio", "-monitor", "unix:" + v.monitor + ",server=on,wait=off"}
	v.cmd = exec.Command("qemu-system-x86_64", append(base, args...)...)
	var err error
	if v.stdin, err = v.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := v.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	v.console = NewConsole(stdout)
	v.cmd.Stderr = v.console
	v.started = time.Now()
	if err := v.cmd.Start(); err != nil {
		t.Fatalf("start qemu: %v", err)
	}
	pid := v.cmd.Process.Pid
	t.Logf("qemu pid %d: %s", pid, strings.Join(v.cmd.Args, " "))
	go func() {
		<-v.console.Done()
		v.exitErr = v.cmd.Wait()
		close(v.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-v.exited:
		default:
			_ = v.cmd.Process.Kill() // our own child, by PID
			<-v.exited
		}
		if t.Failed() {
			t.Logf("console of qemu %d:\n%s", pid, v.console.Log())
		}
	})
	return v
}

// waitFor returns the next console line containing marker.
func (v *vm) waitFor(marker string, timeout time.Duration) string {
	v.t.Helper()
	line, err := v.console.WaitFor(marker, timeout)
	if err != nil {
		v.t.Fatal(err)
	}
	return line
}

// collect returns the console lines strictly between the next begin and end markers.
func (v *vm) collect(begin, end string, timeout time.Duration) []string {
	v.t.Helper()
	got, err := v.console.Between(begin, end, timeout)
	if err != nil {
		v.t.Fatal(err)
	}
	return got
}

// run types cmd on the serial console until a line containing want appears: the shell is
// started right after the UP marker, and characters sent before it opens the port are lost.
func (v *vm) run(cmd, want string, timeout time.Duration) {
	v.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if _, err := io.WriteString(v.stdin, cmd+"\n"); err != nil {
			v.t.Fatalf("type on the console: %v", err)
		}
		wait := time.Now().Add(5 * time.Second)
		for time.Now().Before(wait) {
			line, ok := v.console.Next(time.Until(wait))
			if ok && strings.Contains(line, want) && !strings.Contains(line, cmd) {
				return
			}
		}
	}
	v.t.Fatalf("typed %q, no %q within %s", cmd, want, timeout)
}

func (v *vm) hmp(command string) {
	v.t.Helper()
	c, err := net.DialTimeout("unix", v.monitor, 10*time.Second)
	if err != nil {
		v.t.Fatalf("connect to the qemu monitor: %v", err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, command+"\n"); err != nil {
		v.t.Fatalf("monitor %s: %v", command, err)
	}
	// Read the banner and the echo so the command is taken before the socket closes.
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, _ = io.Copy(io.Discard, c)
}

func (v *vm) waitExit(timeout time.Duration) {
	v.t.Helper()
	select {
	case <-v.exited:
		if v.exitErr != nil {
			v.t.Fatalf("qemu exited with %v", v.exitErr)
		}
	case <-time.After(timeout):
		v.t.Fatalf("qemu still running %s after the request to stop", timeout)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	client := &http.Client{Timeout: 20 * time.Second}
	var lastErr error
	for i := 0; i < 5; i++ {
		resp, err := client.Get(url)
		if err == nil {
			body, err := io.ReadAll(resp.Body)
			_ = resp.Body.Close() // the body is read
			if err == nil && resp.StatusCode == http.StatusOK {
				return string(body)
			}
			lastErr = fmt.Errorf("status %d: %w", resp.StatusCode, err)
		} else {
			lastErr = err
		}
		time.Sleep(2 * time.Second)
	}
	t.Fatalf("GET %s: %v", url, lastErr)
	return ""
}

func expectUp(t *testing.T, v *vm, hostname, mac string) {
	t.Helper()
	line := v.waitFor(MarkerUp, bootTimeout)
	t.Logf("boot to %s: %s", MarkerUp, time.Since(v.started).Round(100*time.Millisecond))
	up, _ := ParseUp(line)
	want := Up{Hostname: hostname, IP: "10.0.2.15", MAC: mac}
	if up != want {
		t.Fatalf("%s line %q: got %+v, want %+v", MarkerUp, line, up, want)
	}
}

// TestDiskBootPowerButton boots disk.raw (SeaBIOS + syslinux) on virtio-blk with a
// virtio-net NIC, fetches the web page and presses the ACPI power button.
func TestDiskBootPowerButton(t *testing.T) {
	dir := guestDir(t)
	port := freePort(t)
	v := startVM(t,
		"-drive", "file="+filepath.Join(dir, "disk.raw")+",if=none,id=boot,format=raw,snapshot=on",
		"-device", "virtio-blk-pci,drive=boot,bootindex=1",
		"-netdev", fmt.Sprintf("user,id=n0,hostfwd=tcp:127.0.0.1:%d-:80", port),
		"-device", "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56")
	expectUp(t, v, "slimvirt-guest", "52:54:00:12:34:56")
	body := httpGet(t, fmt.Sprintf("http://127.0.0.1:%d/", port))
	if strings.TrimSpace(body) != "slimvirt guest slimvirt-guest" {
		t.Fatalf("web page %q, want %q", body, "slimvirt guest slimvirt-guest")
	}
	v.hmp("system_powerdown")
	v.waitFor(MarkerPoweroff, time.Minute)
	v.waitExit(time.Minute)
}

// TestKernelBootConsoleReboot boots vmlinuz + initrd.gz directly with an e1000e NIC, uses
// the serial shell and reboots from it.
func TestKernelBootConsoleReboot(t *testing.T) {
	dir := guestDir(t)
	v := startVM(t,
		"-kernel", filepath.Join(dir, "vmlinuz"), "-initrd", filepath.Join(dir, "initrd.gz"),
		"-append", "console=ttyS0 panic=-1 quiet",
		"-netdev", "user,id=n0", "-device", "e1000e,netdev=n0,mac=52:54:00:00:00:e1")
	expectUp(t, v, "slimvirt-guest", "52:54:00:00:00:e1")
	v.run("echo console-$((6*7)) $(cat /proc/sys/kernel/hostname)", "console-42 slimvirt-guest", time.Minute)
	v.run("reboot", MarkerReboot, time.Minute)
	rebooted := time.Now()
	v.waitFor(MarkerUp, bootTimeout)
	t.Logf("reboot to %s: %s", MarkerUp, time.Since(rebooted).Round(100*time.Millisecond))
	v.hmp("quit")
	v.waitExit(time.Minute)
}

// TestPVHBoot boots the unpacked vmlinux, which QEMU enters through its PVH entry point
// without the in-guest decompression of vmlinuz; two NICs, each gets a lease.
func TestPVHBoot(t *testing.T) {
	dir := guestDir(t)
	v := startVM(t,
		"-kernel", filepath.Join(dir, "vmlinux"), "-initrd", filepath.Join(dir, "initrd.gz"),
		"-append", "console=ttyS0 panic=-1 quiet",
		"-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:00:00:a0",
		"-netdev", "user,id=n1,net=10.0.3.0/24", "-device", "virtio-net-pci,netdev=n1,mac=52:54:00:00:00:a1")
	nics := map[string]string{}
	for i := 0; i < 2; i++ {
		f, _ := Fields(v.waitFor(MarkerNIC, bootTimeout), MarkerNIC)
		nics[f["interface"]] = f["ip"] + " " + f["mac"]
	}
	want := map[string]string{"eth0": "10.0.2.15 52:54:00:00:00:a0", "eth1": "10.0.3.15 52:54:00:00:00:a1"}
	if fmt.Sprint(nics) != fmt.Sprint(want) {
		t.Fatalf("NIC lines %v, want %v", nics, want)
	}
	expectUp(t, v, "slimvirt-guest", "52:54:00:00:00:a0")
	v.hmp("system_powerdown")
	v.waitFor(MarkerPoweroff, time.Minute)
	v.waitExit(time.Minute)
}

// TestGuestAgent boots vmlinux with a virtio-serial port named org.qemu.guest_agent.0 (the
// channel libvirt gives the agent) and talks the QEMU guest agent protocol to the guest over
// the port's host socket, as libvirt would: guest-sync first, then the commands.
func TestGuestAgent(t *testing.T) {
	dir := guestDir(t)
	release, version := kernelVersion(t, filepath.Join(dir, "vmlinuz"))
	sock := filepath.Join(t.TempDir(), "qga.sock")
	v := startVM(t,
		"-kernel", filepath.Join(dir, "vmlinux"), "-initrd", filepath.Join(dir, "initrd.gz"),
		"-append", "console=ttyS0 panic=-1 quiet",
		// The DHCP hostname option names the guest: the agent must report the current name.
		"-netdev", "user,id=n0,hostname=vm-agent", "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:00:00:a9",
		"-device", "virtio-serial-pci",
		"-chardev", "socket,id=qga0,path="+sock+",server=on,wait=off",
		"-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0")

	// The agent starts in the background: its marker and UP may come in either order.
	var agentLine, upLine string
	deadline := time.Now().Add(bootTimeout)
	for agentLine == "" || upLine == "" {
		if upLine != "" && time.Until(deadline) > time.Minute {
			deadline = time.Now().Add(time.Minute) // the agent starts before DHCP settles
		}
		line, ok := v.console.Next(time.Until(deadline))
		if !ok {
			t.Fatalf("no %s marker (agent: %q, up: %q)", MarkerAgent, agentLine, upLine)
		}
		if _, ok := Fields(line, MarkerAgent); ok {
			agentLine = line
		}
		if _, ok := ParseUp(line); ok {
			upLine = line
		}
	}
	t.Logf("boot to %s and %s: %s", MarkerAgent, MarkerUp, time.Since(v.started).Round(100*time.Millisecond))
	if f, _ := Fields(agentLine, MarkerAgent); !regexp.MustCompile(`^vport[0-9]+p[0-9]+$`).MatchString(f["port"]) {
		t.Fatalf("agent marker %q: no port=vportNpM", agentLine)
	}
	if up, _ := ParseUp(upLine); up.Hostname != "vm-agent" {
		t.Fatalf("UP line %q: hostname is not vm-agent", upLine)
	}

	a := dialAgent(t, sock)
	if r := a.call(`{"execute":"guest-sync","arguments":{"id":1234567}}`); string(r.Return) != "1234567" {
		t.Errorf("guest-sync: return %s, want 1234567", r.Return)
	}
	if r := a.call(`{"execute": "guest-sync-delimited", "arguments": {"id": 42}}`); !r.delimited || string(r.Return) != "42" {
		t.Errorf("guest-sync-delimited: return %s (0xFF first: %v), want 0xFF and 42", r.Return, r.delimited)
	}
	if r := a.call(`{"execute":"guest-ping"}`); string(r.Return) != "{}" {
		t.Errorf("guest-ping: return %s, want {}", r.Return)
	}
	var osinfo map[string]string
	a.call(`{"execute":"guest-get-osinfo"}`).into(t, &osinfo)
	want := map[string]string{"id": "slimvirt-guest", "name": "slimvirt test guest", "pretty-name": "slimvirt test guest",
		"version": "1", "version-id": "1", "kernel-release": release, "kernel-version": version, "machine": "x86_64"}
	if fmt.Sprint(osinfo) != fmt.Sprint(want) {
		t.Errorf("guest-get-osinfo: %v, want %v", osinfo, want)
	}
	var host struct {
		HostName string `json:"host-name"`
	}
	if a.call(`{"execute":"guest-get-host-name"}`).into(t, &host); host.HostName != "vm-agent" {
		t.Errorf("guest-get-host-name: %q, want vm-agent", host.HostName)
	}
	if r := a.call(`{"execute":"guest-get-users"}`); string(r.Return) != "[]" {
		t.Errorf("guest-get-users: return %s, want []", r.Return)
	}
	var tz struct {
		Offset *int
		Zone   string
	}
	if a.call(`{"execute":"guest-get-timezone"}`).into(t, &tz); tz.Offset == nil || *tz.Offset != 0 || tz.Zone != "UTC" {
		t.Errorf("guest-get-timezone: %+v, want offset 0, zone UTC", tz)
	}
	var info struct {
		Version           string
		SupportedCommands []struct {
			Name            string
			Enabled         bool
			SuccessResponse bool `json:"success-response"`
		} `json:"supported_commands"`
	}
	a.call(`{"execute":"guest-info"}`).into(t, &info)
	listed := false
	for _, c := range info.SupportedCommands {
		listed = listed || c.Name == "guest-get-osinfo" && c.Enabled && c.SuccessResponse
	}
	if info.Version == "" || !listed {
		t.Errorf("guest-info: %+v, want a version and guest-get-osinfo enabled", info)
	}
	// Freeze and thaw: the state, a second freeze refused, the markers on the console.
	freeze := []struct{ cmd, want string }{
		{`{"execute":"guest-fsfreeze-status"}`, `"thawed"`},
		{`{"execute":"guest-fsfreeze-freeze"}`, `0`},
		{`{"execute":"guest-fsfreeze-status"}`, `"frozen"`},
		{`{"execute":"guest-fsfreeze-thaw"}`, `0`},
		{`{"execute":"guest-fsfreeze-status"}`, `"thawed"`},
		{`{"execute":"guest-fsfreeze-thaw"}`, `0`},
	}
	for i, f := range freeze {
		if r := a.call(f.cmd); string(r.Return) != f.want {
			t.Errorf("fsfreeze step %d %s: return %s (error %+v), want %s", i, f.cmd, r.Return, r.Error, f.want)
		}
		if i == 1 {
			if r := a.call(`{"execute":"guest-fsfreeze-freeze"}`); r.Error == nil {
				t.Errorf("a second freeze: %+v, want an error", r)
			}
		}
	}
	for _, m := range []string{"SLIMVIRT-GUEST-FROZEN", "SLIMVIRT-GUEST-THAWED"} {
		if _, err := v.console.WaitFor(m, 10*time.Second); err != nil {
			t.Errorf("no %s on the console: %v", m, err)
		}
	}
	if r := a.call(`{"execute":"guest-no-such-command"}`); r.Error == nil || r.Error.Class != "CommandNotFound" {
		t.Errorf("unknown command: %+v, want error class CommandNotFound", r)
	}
	if r := a.call(`this is not JSON`); r.Error == nil {
		t.Errorf("malformed line: %+v, want an error", r)
	}
	if r := a.call(`{"execute":"guest-ping"}`); string(r.Return) != "{}" {
		t.Errorf("guest-ping after a malformed line: return %s, want {}", r.Return)
	}

	// The host closes the channel and connects again (libvirt reconnecting): still served.
	testutil.Must(t, a.conn.Close())
	a = dialAgent(t, sock)
	if r := a.call(`{"execute":"guest-sync","arguments":{"id":7654321}}`); string(r.Return) != "7654321" {
		t.Errorf("guest-sync after reconnecting: return %s, want 7654321", r.Return)
	}
	testutil.Must(t, a.conn.Close())
	v.hmp("quit")
	v.waitExit(time.Minute)
}

// kernelVersion reads the kernel's release and version (uname -r, uname -v) from the version
// string of a bzImage: "6.1.0-xx-amd64 (debian-kernel@lists.debian.org) #1 SMP ...".
func kernelVersion(t *testing.T, bzImage string) (release, version string) {
	t.Helper()
	b, err := os.ReadFile(bzImage)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 0x210 || string(b[0x202:0x206]) != "HdrS" {
		t.Fatalf("%s is not a bzImage", bzImage)
	}
	s := b[int(binary.LittleEndian.Uint16(b[0x20e:]))+0x200:]
	if i := bytes.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	release, rest, _ := strings.Cut(string(s), " ")
	_, version, ok := strings.Cut(rest, " #")
	if !ok {
		t.Fatalf("no version in the kernel's version string %q", s)
	}
	return release, "#" + version
}

// agent is a host-side client of the guest agent's socket.
type agent struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

type agentReply struct {
	Return json.RawMessage
	Error  *struct{ Class, Desc string }

	delimited bool // the reply started with 0xFF (guest-sync-delimited)
}

func dialAgent(t *testing.T, sock string) *agent {
	t.Helper()
	c, err := net.DialTimeout("unix", sock, 10*time.Second)
	if err != nil {
		t.Fatalf("connect to the agent socket: %v", err)
	}
	return &agent{t: t, conn: c, r: bufio.NewReader(c)}
}

// call sends one command line and returns the reply line, which must be one JSON object.
func (a *agent) call(cmd string) agentReply {
	a.t.Helper()
	// Under TCG on a busy machine the busybox agent may take seconds per reply.
	_ = a.conn.SetDeadline(time.Now().Add(time.Minute))
	if _, err := io.WriteString(a.conn, cmd+"\n"); err != nil {
		a.t.Fatalf("send %s: %v", cmd, err)
	}
	line, err := a.r.ReadString('\n')
	if err != nil {
		a.t.Fatalf("%s: no reply: %v (got %q)", cmd, err, line)
	}
	a.t.Logf("agent: %s -> %q", cmd, line)
	var r agentReply
	line, r.delimited = strings.CutPrefix(line, "\xff")
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		a.t.Fatalf("%s: reply %q is not JSON: %v", cmd, line, err)
	}
	if r.Return == nil && r.Error == nil {
		a.t.Fatalf("%s: reply %q has neither return nor error", cmd, line)
	}
	return r
}

// into decodes the reply's return value.
func (r agentReply) into(t *testing.T, v any) {
	t.Helper()
	if r.Error != nil {
		t.Fatalf("agent error %s: %s", r.Error.Class, r.Error.Desc)
	}
	if err := json.Unmarshal(r.Return, v); err != nil {
		t.Fatalf("agent return %s: %v", r.Return, err)
	}
}

// TestQcow2CloudInitDataDisk boots disk.qcow2 with a cloud-init ISO on a SATA CD-ROM (the
// way the launcher attaches it), a data disk and another NIC model; the user-data script
// formats and writes the data disk, which is read back on the host after poweroff.
func TestQcow2CloudInitDataDisk(t *testing.T) {
	dir := guestDir(t)
	tests := []struct {
		name     string
		label    string
		files    func(userData string) []iso9660.File
		nic      string
		dataDisk []string // QEMU arguments attaching data.raw (%s)
		format   []string // formats data.raw on the host first, when set
		script   string   // writes "hello <hostname>" to the data disk
		readBack func(t *testing.T, image string) string
	}{
		{
			name:  "nocloud ext4 on virtio-scsi e1000",
			label: "cidata",
			files: func(ud string) []iso9660.File {
				return []iso9660.File{
					{Path: "meta-data", Data: []byte("instance-id: vm-nocloud.default\nlocal-hostname: vm-nocloud\n")},
					{Path: "user-data", Data: []byte(ud)},
				}
			},
			nic:      "e1000",
			dataDisk: []string{"-device", "virtio-scsi-pci,id=scsi0", "-drive", "file=%s,if=none,id=data,format=raw", "-device", "scsi-hd,drive=data,bus=scsi0.0"},
			script:   "mke2fs -F -L data /dev/sda >/dev/null\nmount -t ext4 /dev/sda /mnt/data\necho \"hello $(hostname)\" >/mnt/data/hello\n",
			readBack: func(t *testing.T, image string) string {
				out, err := exec.Command("debugfs", "-R", "cat /hello", image).Output()
				if err != nil {
					t.Fatalf("debugfs cat /hello: %v", err)
				}
				return string(out)
			},
		},
		{
			name:  "configdrive vfat on virtio-blk rtl8139",
			label: "config-2",
			files: func(ud string) []iso9660.File {
				return []iso9660.File{
					{Path: "openstack/latest/meta_data.json", Data: []byte(`{"uuid": "0b7a1b2e", "hostname": "vm-configdrive"}`)},
					{Path: "openstack/latest/user_data", Data: []byte(ud)},
				}
			},
			nic:      "rtl8139",
			dataDisk: []string{"-drive", "file=%s,if=virtio,format=raw"},
			// Formatted on the host (busybox mkdosfs makes a FAT32 that mtools cannot read).
			format: []string{"mkfs.vfat", "-n", "DATA"},
			script: "mount -t vfat /dev/vdb /mnt/data\necho \"hello $(hostname)\" >/mnt/data/hello.txt\n",
			readBack: func(t *testing.T, image string) string {
				out, err := exec.Command("mtype", "-i", image, "::HELLO.TXT").Output()
				if err != nil {
					t.Fatalf("mtype HELLO.TXT: %v", err)
				}
				return string(out)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmp := t.TempDir()
			hostname := "vm-nocloud"
			if tt.label == "config-2" {
				hostname = "vm-configdrive"
			}
			userData := "#!/bin/sh\nset -e\nmkdir -p /mnt/data\n" + tt.script +
				"cat /mnt/data/hello*\numount /mnt/data\necho user-data-done\n"
			seed := filepath.Join(tmp, "seed.iso")
			f, err := os.Create(seed)
			if err != nil {
				t.Fatal(err)
			}
			if err := iso9660.Write(f, tt.label, tt.files(userData), time.Now()); err != nil {
				t.Fatalf("write seed ISO: %v", err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			data := filepath.Join(tmp, "data.raw")
			if err := os.WriteFile(data, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(data, 32<<20); err != nil {
				t.Fatal(err)
			}
			if tt.format != nil {
				if out, err := exec.Command(tt.format[0], append(tt.format[1:], data)...).CombinedOutput(); err != nil {
					t.Fatalf("%v: %v: %s", tt.format, err, out)
				}
			}
			port := freePort(t)
			args := []string{
				// SeaBIOS tries only the first hard disk: with a data disk around, say which.
				"-drive", "file=" + filepath.Join(dir, "disk.qcow2") + ",if=none,id=boot,format=qcow2,snapshot=on",
				"-device", "virtio-blk-pci,drive=boot,bootindex=1",
				"-drive", "file=" + seed + ",if=none,id=seed,media=cdrom,format=raw,readonly=on",
				"-device", "ide-cd,drive=seed,bus=ide.2",
				"-netdev", fmt.Sprintf("user,id=n0,hostfwd=tcp:127.0.0.1:%d-:80", port),
				"-device", tt.nic + ",netdev=n0,mac=52:54:00:00:00:c1",
			}
			for _, a := range tt.dataDisk {
				if strings.Contains(a, "%s") {
					a = fmt.Sprintf(a, data)
				}
				args = append(args, a)
			}
			v := startVM(t, args...)
			got := v.collect(MarkerUserDataBegin, MarkerUserDataEnd, bootTimeout)
			if strings.Join(got, "\n")+"\n" != userData {
				t.Fatalf("user-data on the console:\n%s\nwant:\n%s", strings.Join(got, "\n"), userData)
			}
			v.waitFor("hello "+hostname, bootTimeout)
			exit := v.waitFor(MarkerUserDataExit, bootTimeout)
			if f, _ := Fields(exit, MarkerUserDataExit); f["rc"] != "0" {
				t.Fatalf("user-data script failed: %q", exit)
			}
			expectUp(t, v, hostname, "52:54:00:00:00:c1")
			body := httpGet(t, fmt.Sprintf("http://127.0.0.1:%d/", port))
			if strings.TrimSpace(body) != "slimvirt guest "+hostname {
				t.Fatalf("web page %q, want %q", body, "slimvirt guest "+hostname)
			}
			v.hmp("system_powerdown")
			v.waitFor(MarkerPoweroff, time.Minute)
			v.waitExit(time.Minute)
			if got := strings.TrimSpace(tt.readBack(t, data)); got != "hello "+hostname {
				t.Fatalf("data disk holds %q, want %q", got, "hello "+hostname)
			}
		})
	}
}

// TestLeaseScript runs the guest's DHCP lease script (from initrd.gz) in a network and mount
// namespace of its own, chrooted into the unpacked initramfs, on a veth eth0, with the
// variables udhcpc would pass, and checks what the guest would end up with. Root only.
func TestLeaseScript(t *testing.T) {
	dir := guestDir(t)
	testutil.RequireRoot(t, "network namespaces need root")
	tests := []struct {
		name  string
		env   []string
		want  []string // lines that must appear in the namespace's `ip` output or files
		avoid []string
	}{
		{
			name: "router option, DNS, MTU, hostname",
			env: []string{"ip=10.0.2.15", "mask=24", "router=10.0.2.2", "dns=10.0.2.3 10.0.2.4", "domain=example.com",
				"mtu=1400", "hostname=vm1"},
			want: []string{"inet 10.0.2.15/24", "default via 10.0.2.2 dev eth0", "mtu 1400", "nameserver 10.0.2.3",
				"nameserver 10.0.2.4", "search example.com", "dhcp-hostname=vm1",
				"SLIMVIRT-LEASE interface=eth0 ip=10.0.2.15/24 router=10.0.2.2 mtu=1400"},
		},
		{
			name: "pod /32 behind 169.254.1.1, classless routes with the default last",
			env:  []string{"ip=10.244.0.7", "mask=32", "router=169.254.1.1", "staticroutes=169.254.1.1/32 0.0.0.0 0.0.0.0/0 169.254.1.1", "search=ns.svc.cluster.local svc.cluster.local", "dns=10.96.0.10"},
			want: []string{"inet 10.244.0.7/32", "169.254.1.1 dev eth0", "default via 169.254.1.1 dev eth0",
				"search ns.svc.cluster.local svc.cluster.local", "nameserver 10.96.0.10"},
		},
		{
			name:  "classless routes win over the router option",
			env:   []string{"ip=10.0.2.15", "mask=24", "router=10.0.2.99", "staticroutes=10.10.0.0/16 10.0.2.2 0.0.0.0/0 10.0.2.1"},
			want:  []string{"10.10.0.0/16 via 10.0.2.2 dev eth0", "default via 10.0.2.1 dev eth0"},
			avoid: []string{"10.0.2.99"},
		},
		{
			name: "router outside the subnet without classless routes",
			env:  []string{"ip=10.244.0.7", "mask=32", "router=169.254.1.1"},
			want: []string{"inet 10.244.0.7/32", "169.254.1.1 dev eth0", "default via 169.254.1.1 dev eth0"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			unpack := exec.Command("sh", "-c", "gzip -dc \"$1\" | cpio -idm --quiet", "sh", filepath.Join(dir, "initrd.gz"))
			unpack.Dir = root
			if out, err := unpack.CombinedOutput(); err != nil {
				t.Fatalf("unpack initrd: %v\n%s", err, out)
			}
			// bound, then a renew with the same lease (must not fail on the existing address).
			inner := `set -e
export interface=eth0 ` + shellQuote(tt.env) + `
/etc/udhcpc.script bound
/etc/udhcpc.script renew
ip -4 addr show dev eth0; ip link show dev eth0; ip -4 route
cat /etc/resolv.conf 2>/dev/null || true
echo "dhcp-hostname=$(cat /run/dhcp-hostname.eth0 2>/dev/null)"
cat /dev/console
/etc/udhcpc.script deconfig
echo "after-deconfig: $(ip -4 addr show dev eth0 | grep -c inet)"`
			cmd := exec.Command("unshare", "--net", "--mount", "--propagation", "private", "--", "sh", "-c",
				`set -e; ip link add eth0 type veth peer name peer0; ip link set peer0 up; exec chroot "$0" /bin/sh -c "$1"`, root, inner)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("lease script: %v\n%s", err, out)
			}
			for _, w := range tt.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("missing %q in:\n%s", w, out)
				}
			}
			for _, a := range tt.avoid {
				if strings.Contains(string(out), a) {
					t.Errorf("unexpected %q in:\n%s", a, out)
				}
			}
			if !strings.Contains(string(out), "after-deconfig: 0") {
				t.Errorf("deconfig left an address:\n%s", out)
			}
		})
	}
}

// shellQuote turns K=V pairs into single-quoted shell assignments.
func shellQuote(env []string) string {
	var b strings.Builder
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		b.WriteString(k + "='" + strings.ReplaceAll(v, "'", `'\''`) + "' ")
	}
	return b.String()
}
