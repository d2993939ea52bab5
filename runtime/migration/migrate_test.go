package migration_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"libvirt.org/go/libvirt"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/images/guest"
	"github.com/slimvirt/slimvirt/internal/testutil"
	"github.com/slimvirt/slimvirt/runtime/domain"
	"github.com/slimvirt/slimvirt/runtime/migration"
)

// Paths in both pods.
const (
	rootDisk   = podRun + "/disks/root.qcow2"
	dataDisk   = podRun + "/disks/data.img"
	dataSize   = 16 << 20
	dataOffset = 1 << 20
	serial     = podRun + "/serial0"
	sockets    = podRun + "/migration"
)

// env is a guest running in one pod, and another pod, on one network with a stranger.
type env struct {
	// top is the test the env lives for: the guest's console outlives the subtests.
	top  *testing.T
	root string
	net  *network
	// src runs the guest, dst is the other pod; srcRole and dstRole name their namespaces.
	src, dst         *pod
	srcRole, dstRole string
	dom              *libvirt.Domain
	name             string
	console          *console
	// bootID and uptime are what the guest said before any migration.
	bootID string
	uptime float64
	marker string
}

func newEnv(t *testing.T, unprivileged bool) *env {
	testutil.RequireRoot(t, "migration tests run libvirtd and QEMU in namespaces of their own")
	guestDir := os.Getenv("SLIMVIRT_GUEST_DIR")
	if guestDir == "" {
		guestDir = "../../_output/guest"
	}
	qcow2 := filepath.Join(guestDir, "disk.qcow2")
	if _, err := os.Stat(qcow2); err != nil {
		t.Fatalf("test guest missing (run make guest): %v", err)
	}
	root, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", prefix, os.Getpid()))
	testutil.Must(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(root) })
	e := &env{top: t, root: root, net: newNetwork(t, "source", "target", "stranger")}
	pods := startPods(t, root, e.net, unprivileged, "source", "target")
	e.src, e.dst = pods["source"], pods["target"]
	e.srcRole, e.dstRole = "source", "target"

	if out, err := exec.Command("cp", "--sparse=always", qcow2, e.src.host(rootDisk)).CombinedOutput(); err != nil {
		t.Fatalf("copy the guest disk: %v: %s", err, out)
	}
	f, err := os.Create(e.src.host(dataDisk))
	testutil.Must(t, err)
	testutil.Must(t, f.Truncate(dataSize))
	testutil.Must(t, f.Close())
	e.src.own(t, e.src.host(rootDisk), e.src.host(dataDisk))

	vmi := &v1.VirtualMachineInstance{
		ObjectMeta: metav1.ObjectMeta{Name: "migrant", Namespace: "test"},
		Spec: v1.VirtualMachineInstanceSpec{Domain: v1.DomainSpec{
			Memory: &v1.Memory{Guest: ptr.To(resource.MustParse("128Mi"))},
			Devices: v1.Devices{
				AutoattachPodInterface: ptr.To(false),
				Disks: []v1.Disk{
					{Name: "root", Disk: &v1.DiskTarget{Bus: "virtio"}, BootOrder: ptr.To(uint(1))},
					{Name: "data", Disk: &v1.DiskTarget{Bus: "virtio"}},
				},
			},
		}},
	}
	dx, err := domain.Convert(vmi, domain.Options{
		Accelerator: domain.AccelTCG,
		Disks: map[string]domain.DiskSource{
			"root": {Path: rootDisk, Format: "qcow2", Cache: "none"},
			"data": {Path: dataDisk, Format: "raw", Cache: "none"},
		},
		SerialSocket:     serial,
		VNCSocket:        podRun + "/vnc",
		GuestAgentSocket: podRun + "/guest-agent.sock",
	})
	testutil.Must(t, err)
	xml, err := dx.Marshal()
	testutil.Must(t, err)
	e.name = dx.Name
	e.dom, err = e.src.conn.DomainDefineXML(xml)
	testutil.Must(t, err)
	testutil.Must(t, e.dom.Create())
	e.console = attach(t, e.src.host(serial))
	boot := time.Now()
	if _, err := e.console.WaitFor(guest.MarkerUp, 5*time.Minute); err != nil {
		t.Fatalf("the guest did not come up on the source: %v\n%s", err, e.console.Log())
	}
	t.Logf("the guest came up on the source in %s", time.Since(boot).Round(time.Millisecond))
	if fi, err := os.Stat(e.src.host(serial)); err != nil || unprivileged != (fi.Sys().(*syscall.Stat_t).Uid == launcherpod.LauncherUID) {
		t.Fatalf("QEMU's serial socket (%v, %v) is not the launcher uid's as it should be (unprivileged: %v)", fi, err, unprivileged)
	}
	e.bootID, e.uptime = e.console.identity(t)
	e.marker = "slimvirt-migration-" + randomHex(t)
	e.console.run(t, fmt.Sprintf("echo %s | dd of=/dev/vdb bs=512 seek=%d 2>/dev/null && sync && echo MIG-WROTE $((6*7))", e.marker, dataOffset/512), regexp.MustCompile(`MIG-WROTE 42`))
	if !diskHas(t, e.src.host(dataDisk), e.marker) {
		t.Fatal("the guest's write did not reach the source's data disk")
	}
	return e
}

func randomHex(t *testing.T) string {
	b := make([]byte, 8)
	_, err := rand.Read(b)
	testutil.Must(t, err)
	return hex.EncodeToString(b)
}

// diskHas says whether the disk file holds marker where the guest wrote it.
func diskHas(t *testing.T, path, marker string) bool {
	t.Helper()
	f, err := os.Open(path)
	testutil.Must(t, err)
	defer f.Close()
	b := make([]byte, len(marker))
	if _, err := f.ReadAt(b, dataOffset); err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return string(b) == marker
}

// console is the guest's serial port, attached from the machine.
type console struct {
	conn net.Conn
	*guest.Console
}

func attach(t *testing.T, path string) *console {
	t.Helper()
	var conn net.Conn
	testutil.WaitFor(t, 30*time.Second, "the serial console socket "+path, func() bool {
		var err error
		conn, err = net.Dial("unix", path)
		return err == nil
	})
	t.Cleanup(func() { _ = conn.Close() })
	return &console{conn: conn, Console: guest.NewConsole(conn)}
}

// run types cmd on the guest's shell and returns the submatches of the first line matching
// re. The command is typed again while nothing answers: the shell may not be there yet just
// after the UP marker, and what is typed before is lost.
func (c *console) run(t *testing.T, cmd string, re *regexp.Regexp) []string {
	t.Helper()
	for range 6 {
		if _, err := io.WriteString(c.conn, cmd+"\n"); err != nil {
			t.Fatalf("type on the console: %v", err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			line, ok := c.Next(time.Until(deadline))
			if !ok {
				break
			}
			if m := re.FindStringSubmatch(line); m != nil {
				return m
			}
		}
	}
	t.Fatalf("no line matching %s after %q:\n%s", re, cmd, c.Log())
	return nil
}

var identityLine = regexp.MustCompile(`MIG-ID ([0-9a-f-]{36}) ([0-9.]+)`)

// identity is the guest's boot ID and uptime in seconds.
func (c *console) identity(t *testing.T) (string, float64) {
	t.Helper()
	m := c.run(t, "echo MIG-ID $(cat /proc/sys/kernel/random/boot_id) $(cut -d' ' -f1 /proc/uptime)", identityLine)
	up, err := strconv.ParseFloat(m[2], 64)
	testutil.Must(t, err)
	return m[1], up
}

// attempt is one migration's channel: fresh credentials, the target's end in the target pod's
// namespace, the source's end dialling from the source pod's, and the target's disks created.
type attempt struct {
	target *migration.Target
	opts   migration.Options
	log    *testutil.SyncBuffer
	stop   context.CancelFunc
	src    *migration.Identity
	dst    *migration.Identity
}

func (e *env) prepare(t *testing.T) *attempt {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	t.Cleanup(stop)
	a := &attempt{log: &testutil.SyncBuffer{}, stop: stop}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("MIGDEBUG") != "" {
			t.Logf("channel log:\n%s", a.log)
		}
	})
	log := slog.New(slog.NewTextHandler(a.log, nil))
	var err error
	a.src, err = migration.NewIdentity("source", time.Hour)
	testutil.Must(t, err)
	a.dst, err = migration.NewIdentity("target", time.Hour)
	testutil.Must(t, err)

	// What a failed attempt left on the target is no base for the next.
	for _, p := range []string{rootDisk, dataDisk} {
		_ = os.Remove(e.dst.host(p))
	}
	disks, err := migration.CopiedDisks(e.dom)
	testutil.Must(t, err)
	if len(disks) != 2 {
		t.Fatalf("copied disks %+v, want root and data", disks)
	}
	for i := range disks {
		disks[i].Path = e.dst.host(disks[i].Path)
	}
	testutil.Must(t, migration.CreateDisks(ctx, disks, e.dst.dir, "qemu-img"))
	for _, d := range disks {
		e.dst.own(t, d.Path)
	}

	a.target, err = migration.NewTarget(migration.TargetConfig{
		Identity:      a.dst,
		SourcePin:     a.src.Pin(),
		Listener:      e.net.listen(e.dstRole),
		LibvirtSocket: e.dst.host(podRun + "/libvirt/libvirt-sock"),
		Sockets:       migration.Sockets{Dir: e.dst.host(sockets)},
		Log:           log.With("end", "target"),
	})
	testutil.Must(t, err)
	go func() { _ = a.target.Serve(ctx) }()
	source, err := migration.ListenSource(migration.SourceConfig{
		Identity:   a.src,
		TargetPin:  a.dst.Pin(),
		TargetAddr: a.target.Addr().String(),
		Dial:       e.net.dialer(e.srcRole),
		Sockets:    migration.Sockets{Dir: e.src.host(sockets)},
		Log:        log.With("end", "source"),
	})
	testutil.Must(t, err)
	ss := migration.Sockets{Dir: e.src.host(sockets)}
	e.src.own(t, ss.Libvirt(), ss.Memory(), ss.Disks())
	go func() { _ = source.Serve(ctx) }()
	a.opts = migration.Options{Sockets: migration.Sockets{Dir: sockets}, TargetSession: e.dst.unprivileged,
		Channel: source, Log: log, ProgressEvery: 250 * time.Millisecond}
	return a
}

// stillOnSource checks that a failed migration left the guest running on the source, the same
// boot, its disk intact, and, when the target is still there, nothing on it.
func (e *env) stillOnSource(t *testing.T, targetAlive bool) {
	t.Helper()
	state, _, err := e.dom.GetState()
	testutil.Must(t, err)
	if state != libvirt.DOMAIN_RUNNING {
		t.Errorf("the source domain is in state %d, want running", state)
	}
	if id, _ := e.console.identity(t); id != e.bootID {
		t.Errorf("the guest's boot ID is %s, was %s: it rebooted", id, e.bootID)
	}
	if !diskHas(t, e.src.host(dataDisk), e.marker) {
		t.Error("the source's data disk lost the guest's data")
	}
	if !targetAlive {
		return
	}
	testutil.WaitFor(t, time.Minute, "the target to drop the incoming domain", func() bool {
		doms, err := e.dst.conn.ListAllDomains(0)
		for _, d := range doms {
			_ = d.Free()
		}
		return err == nil && len(doms) == 0
	})
}

// migrateUntil runs a slow migration and calls interrupt, with the cancel of the migration's
// context, once it has copied some of the disks; it returns the migration's error.
func (e *env) migrateUntil(t *testing.T, a *attempt, interrupt func(context.CancelCauseFunc)) error {
	t.Helper()
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	var once sync.Once
	a.opts.BandwidthMiBs = 1
	a.opts.Progress = func(p migration.Progress) {
		if p.DiskDone+p.MemoryDone >= 2<<20 {
			once.Do(func() { interrupt(cancel) })
		}
	}
	errc := make(chan error, 1)
	go func() {
		_, err := migration.Migrate(ctx, e.src.conn, e.dom, a.opts)
		errc <- err
	}()
	select {
	case err := <-errc:
		return err
	case <-time.After(3 * time.Minute):
		t.Fatal("the interrupted migration did not end in 3 minutes")
		return nil
	}
}

func TestMigration(t *testing.T) {
	e := newEnv(t, false)

	t.Run("a stranger is refused", func(t *testing.T) {
		a := e.prepare(t)
		// The stranger knows the target's address and pin (neither is secret) and runs the
		// real source end with libvirt's own client, from its own pod: it lacks the source's key.
		thief, err := migration.NewIdentity("source", time.Hour)
		testutil.Must(t, err)
		dir := filepath.Join(e.root, "stranger")
		stranger, err := migration.ListenSource(migration.SourceConfig{
			Identity: thief, TargetPin: a.dst.Pin(), TargetAddr: a.target.Addr().String(),
			Dial: e.net.dialer("stranger"), Sockets: migration.Sockets{Dir: dir},
		})
		testutil.Must(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() { _ = stranger.Serve(ctx) }()
		if conn, err := libvirt.NewConnect("qemu:///system?socket=" + migration.Sockets{Dir: dir}.Libvirt()); err == nil {
			_, _ = conn.Close()
			t.Fatal("a stranger opened a libvirt connection to the target")
		}
		raw, err := e.net.dialer("stranger")(ctx, a.target.Addr().String())
		testutil.Must(t, err)
		_, _ = io.WriteString(raw, "GET / HTTP/1.0\r\n\r\n")
		_ = raw.SetReadDeadline(time.Now().Add(20 * time.Second))
		if b, _ := io.ReadAll(raw); len(b) > 0 && bytes.Contains(b, []byte("HTTP")) {
			t.Errorf("the target answered plain bytes: %q", b)
		}
		_ = raw.Close()
		testutil.WaitFor(t, 20*time.Second, "the target to log the refusals", func() bool {
			return strings.Count(a.log.String(), "refused a migration connection") >= 2
		})
		if strings.Contains(a.log.String(), "migration stream open\" end=target") {
			t.Errorf("a stranger's stream was opened on the target:\n%s", a.log)
		}
		doms, err := e.dst.conn.ListAllDomains(0)
		testutil.Must(t, err)
		if len(doms) != 0 {
			t.Errorf("the target has %d domains", len(doms))
		}
	})

	t.Run("a cut channel leaves the guest on the source", func(t *testing.T) {
		a := e.prepare(t)
		begin := time.Now()
		err := e.migrateUntil(t, a, func(context.CancelCauseFunc) { e.net.unplug(e.dstRole) })
		if err == nil {
			t.Fatal("the migration succeeded through a cut channel")
		}
		if !strings.Contains(err.Error(), "the channel failed") || !strings.Contains(err.Error(), "timed out") {
			t.Errorf("the error does not say the channel timed out: %v", err)
		}
		t.Logf("the migration failed after %s: %v", time.Since(begin).Round(time.Millisecond), err)
		e.stillOnSource(t, true)
		e.net.plug(e.dstRole)
	})

	t.Run("a cancelled migration leaves the guest on the source", func(t *testing.T) {
		a := e.prepare(t)
		err := e.migrateUntil(t, a, func(cancel context.CancelCauseFunc) {
			cancel(errors.New("the migration was called off"))
		})
		if err == nil || !strings.Contains(err.Error(), "called off") {
			t.Fatalf("cancelled migration: %v, want it to say it was called off", err)
		}
		t.Logf("cancelled: %v", err)
		e.stillOnSource(t, true)
	})

	t.Run("migrates with its disks", e.migrate)
	t.Run("migrates back", e.migrate)

	t.Run("a killed target leaves the guest on the source", func(t *testing.T) {
		a := e.prepare(t)
		begin := time.Now()
		err := e.migrateUntil(t, a, func(context.CancelCauseFunc) { e.dst.kill() })
		if err == nil {
			t.Fatal("the migration succeeded to a killed target")
		}
		t.Logf("the migration failed after %s: %v", time.Since(begin).Round(time.Millisecond), err)
		e.stillOnSource(t, false)
	})
}

// migrate moves the guest to the other pod with fresh credentials and checks that the other
// pod runs it, defined, with the same boot and the disks' data, and that this one is rid of it.
func (e *env) migrate(t *testing.T) {
	a := e.prepare(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	st, err := migration.Migrate(ctx, e.src.conn, e.dom, a.opts)
	if err != nil {
		t.Fatalf("migrate: %v", err)
	}
	t.Logf("MIGRATION %s -> %s: total=%s downtime=%s memory=%d/%d disks=%d/%d", e.srcRole, e.dstRole,
		st.Total, st.Downtime, st.MemoryBytes, st.MemoryTotal, st.DiskBytes, st.DiskTotal)
	if st.Total == 0 || st.MemoryTotal < 128<<20 {
		t.Errorf("implausible statistics %+v", st)
	}

	moved, err := e.dst.conn.LookupDomainByName(e.name)
	testutil.Must(t, err)
	state, _, err := moved.GetState()
	testutil.Must(t, err)
	if persistent, _ := moved.IsPersistent(); state != libvirt.DOMAIN_RUNNING || !persistent {
		t.Errorf("on the target: state %d, persistent %v; want running and defined", state, persistent)
	}
	if _, err := e.src.conn.LookupDomainByName(e.name); !isNoDomain(err) {
		t.Errorf("the source still knows the domain (err %v)", err)
	}

	c := attach(e.top, e.dst.host(serial))
	id, up := c.identity(t)
	t.Logf("on the target: boot ID %s, uptime %.2f s; before the first migration: %s, %.2f s", id, up, e.bootID, e.uptime)
	if id != e.bootID || up < e.uptime {
		t.Errorf("on the target the guest has boot ID %s and uptime %.1f s; before it had %s and %.1f s", id, up, e.bootID, e.uptime)
	}
	if !diskHas(t, e.dst.host(dataDisk), e.marker) {
		t.Error("the target's data disk lacks what the guest wrote")
	}
	srcData, err := os.ReadFile(e.src.host(dataDisk))
	testutil.Must(t, err)
	dstData, err := os.ReadFile(e.dst.host(dataDisk))
	testutil.Must(t, err)
	if !bytes.Equal(srcData, dstData) {
		t.Error("the data disks differ")
	}
	if out, err := exec.Command("qemu-img", "compare", "-U", "-f", "qcow2", "-F", "qcow2", e.src.host(rootDisk), e.dst.host(rootDisk)).CombinedOutput(); err != nil {
		t.Errorf("the root disks differ: %v: %s", err, out)
	}
	// The guest goes on writing on the target.
	c.run(t, "echo after | dd of=/dev/vdb bs=512 seek=4096 2>/dev/null && sync && echo MIG-WROTE $((6*8))", regexp.MustCompile(`MIG-WROTE 48`))

	_ = e.dom.Free()
	e.dom, e.console = moved, c
	e.src, e.dst = e.dst, e.src
	e.srcRole, e.dstRole = e.dstRole, e.srcRole
}

// The launcher runs as an unprivileged uid, and its libvirtd in session mode: so do both pods
// here.
func TestMigrationUnprivileged(t *testing.T) {
	e := newEnv(t, true)
	t.Run("migrates with its disks", e.migrate)
	t.Run("migrates back", e.migrate)
}

func isNoDomain(err error) bool {
	var lerr libvirt.Error
	return errors.As(err, &lerr) && lerr.Code == libvirt.ERR_NO_DOMAIN
}
