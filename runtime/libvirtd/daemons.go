package libvirtd

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"
)

// qemuConf is libvirt's QEMU driver configuration inside a container: no cgroups (the
// container runtime owns them), no private /dev namespace and no security driver (both need
// CAP_SYS_ADMIN and the pod is the sandbox), no ownership changes (the launcher creates every
// file QEMU opens, as the user QEMU runs as).
const qemuConf = `# Written by slimvirt-launcher at startup.
%sdynamic_ownership = 0
remember_owner = 0
cgroup_controllers = [ ]
namespaces = [ ]
security_driver = "none"
stdio_handler = %q
set_process_name = 1
`

// libvirtdConf keeps libvirtd to a local socket only the launcher's user can open.
const libvirtdConf = `# Written by slimvirt-launcher at startup.
unix_sock_dir = %q
unix_sock_rw_perms = "0700"
unix_sock_ro_perms = "0700"
unix_sock_admin_perms = "0700"
auth_unix_ro = "none"
auth_unix_rw = "none"
log_outputs = "3:stderr"
max_workers = 4
min_workers = 1
prio_workers = 1
max_clients = 8
max_anonymous_clients = 4
admin_max_workers = 1
admin_min_workers = 1
admin_max_clients = 2
`

const virtlogdConf = `# Written by slimvirt-launcher at startup.
log_outputs = "3:stderr"
max_clients = 8
`

// hostUUID is the form libvirtd accepts for host_uuid.
var hostUUID = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// daemon is a supervised child: libvirtd or virtlogd.
type daemon struct {
	name string
	cmd  *exec.Cmd
	done chan error
}

func (d *Daemons) writeConfig() error {
	c := &d.cfg
	for _, dir := range []string{d.confDir(), c.RunDir} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", dir, err)
		}
	}
	ids := ""
	if !d.session {
		// The system daemon runs QEMU as this account; the session daemon as itself.
		if err := ensureQEMUAccount(c.PasswdFile, c.GroupFile); err != nil {
			return err
		}
		ids = fmt.Sprintf("user = %q\ngroup = %q\n", c.QEMUUser, c.QEMUGroup)
	}
	handler := "file"
	if c.Virtlogd != "" {
		handler = "logd"
	}
	daemonConf := fmt.Sprintf(libvirtdConf, c.RunDir)
	if c.HostUUID != "" {
		if !hostUUID.MatchString(c.HostUUID) {
			return fmt.Errorf("host UUID %.64q is not a UUID", c.HostUUID)
		}
		daemonConf += fmt.Sprintf("host_uuid = %q\n", c.HostUUID)
	}
	files := map[string]string{
		"qemu.conf":     fmt.Sprintf(qemuConf, ids, handler),
		"libvirtd.conf": daemonConf,
		"virtlogd.conf": virtlogdConf,
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(d.confDir(), name), []byte(content), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	return nil
}

// qemuDriverOnly makes a driver directory holding only libvirt's QEMU driver, so libvirtd
// loads neither the network, nwfilter, nodedev, interface, secret nor storage drivers: none
// is used for one domain on a pod's tap, and each costs memory and startup work (the network
// driver looks for dnsmasq and firewalld, nodedev walks every device).
func (d *Daemons) qemuDriverOnly() (string, error) {
	dir := filepath.Join(d.cfg.RunDir, "drivers")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create %s: %w", dir, err)
	}
	link := filepath.Join(dir, "libvirt_driver_qemu.so")
	_ = os.Remove(link)
	if err := os.Symlink(filepath.Join(d.cfg.DriverDir, "libvirt_driver_qemu.so"), link); err != nil {
		return "", fmt.Errorf("link the QEMU driver: %w", err)
	}
	return dir, nil
}

// In session mode (the launcher is not root) libvirtd and virtlogd keep everything under the
// XDG directories; they are all put below RunDir, so one writable directory is all the
// container needs, and the sockets land where the system daemons put theirs
// ($XDG_RUNTIME_DIR/libvirt = RunDir).
func (d *Daemons) sessionEnv() []string {
	if !d.session {
		return nil
	}
	base := d.cfg.RunDir
	return []string{
		"HOME=" + base,
		"XDG_RUNTIME_DIR=" + filepath.Dir(base),
		"XDG_CONFIG_HOME=" + filepath.Join(base, "config"),
		"XDG_CACHE_HOME=" + filepath.Join(base, "cache"),
	}
}

// confDir is where libvirt reads qemu.conf: fixed for the system daemon, under
// XDG_CONFIG_HOME for the session daemon.
func (d *Daemons) confDir() string {
	if d.session {
		return filepath.Join(d.cfg.RunDir, "config", "libvirt")
	}
	return d.cfg.ConfDir
}

// startDaemon starts a child whose stderr and stdout become log lines.
func (d *Daemons) startDaemon(name string, args ...string) (*daemon, error) {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append([]string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C"}, d.sessionEnv()...)
	if name == "libvirtd" && d.cfg.DriverDir != "" {
		dir, err := d.qemuDriverOnly()
		if err != nil {
			return nil, err
		}
		cmd.Env = append(cmd.Env, "LIBVIRT_DRIVER_DIR="+dir)
	}
	// Its own process group, so a terminal's ^C reaches only the launcher, which stops it in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	go logLines(d.log.With("daemon", name), pr)
	if err := d.reaper.Start(cmd); err != nil {
		_ = pw.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	child := &daemon{name: name, cmd: cmd, done: make(chan error, 1)}
	go func() {
		err := d.reaper.Wait(cmd)
		_ = pw.Close()
		child.done <- err
	}()
	d.log.Info("started daemon", "daemon", name, "pid", cmd.Process.Pid)
	return child, nil
}

func logLines(log *slog.Logger, r io.Reader) {
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 64<<10), 64<<10)
	for s.Scan() {
		if line := strings.TrimSpace(s.Text()); line != "" {
			log.Warn("daemon output", "line", line)
		}
	}
	_, _ = io.Copy(io.Discard, r)
}

// stop asks the daemon to end, kills it when it does not in time, and returns how it ended.
func (d *daemon) stop(timeout time.Duration) (exit error) {
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case exit = <-d.done:
	case <-time.After(timeout):
		_ = d.cmd.Process.Kill()
		exit = <-d.done
	}
	return exit
}

// waitSocket waits for a daemon's socket to appear, failing early when the daemon dies.
func waitSocket(ctx context.Context, d *daemon, path string) error {
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		select {
		case err := <-d.done:
			d.done <- err
			return fmt.Errorf("%s exited before creating %s: %w", d.name, path, err)
		case <-ctx.Done():
			return fmt.Errorf("%s did not create %s: %w", d.name, path, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// libvirtQEMUUser is the account Debian's libvirt resolves at startup even when qemu.conf
// names another user; it must exist in the container's /etc/passwd and /etc/group.
const libvirtQEMUUser = "libvirt-qemu"

// ensureQEMUAccount adds libvirt's QEMU account to the passwd and group files when the
// image lacks it (a trimmed rootfs without libvirt-daemon-system's maintainer scripts).
func ensureQEMUAccount(passwd, group string) error {
	add := func(path, line string) error {
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, libvirtQEMUUser+":") {
				return nil
			}
		}
		f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			return fmt.Errorf("add %s to %s: %w", libvirtQEMUUser, path, err)
		}
		defer f.Close()
		if len(b) > 0 && b[len(b)-1] != '\n' {
			line = "\n" + line
		}
		_, err = f.WriteString(line)
		return err
	}
	if err := add(passwd, libvirtQEMUUser+":x:64055:64055:libvirt QEMU:/var/lib/libvirt:/usr/sbin/nologin\n"); err != nil {
		return err
	}
	return add(group, libvirtQEMUUser+":x:64055:\n")
}
