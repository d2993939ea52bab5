//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"image"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/slimvirt/slimvirt/api/subresources"
	"github.com/slimvirt/slimvirt/slimctl/subresource"
	"github.com/slimvirt/slimvirt/slimctl/webconsole/browsertest"
)

// webConsoleOnCluster opens `slimctl vnc --web` as the tenant in headless Chromium: after a
// soft reboot the guest's boot marker shows on the page's serial terminal, a command typed
// there is answered, and the page's screen matches the framebuffer read over RFB through the
// aggregated API. Screenshots of both tabs go to _output/e2e (and docs/images with
// UPDATE_SCREENSHOTS=1).
func webConsoleOnCluster(t *testing.T, tn *tenant, sub *subresource.Client, name string) {
	bin, _ := filepath.Abs("../_output/bin/slimctl")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--kubeconfig", tn.kubeconfig, "vnc", "--web", name)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start slimctl vnc --web: %v", err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()
	var url string
	re := regexp.MustCompile(`http://127\.0\.0\.1:\d+/[0-9a-f]+/`)
	eventually(t, 30*time.Second, "slimctl prints the web console's URL", func() (bool, error) {
		url = re.FindString(out.String())
		return url != "", nil
	})

	b, err := browsertest.Start(ctx)
	if err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	defer b.Close()
	if err := b.Open(url); err != nil {
		t.Fatalf("open the web console: %v", err)
	}

	// The serial terminal: a boot marker after a soft reboot, and a typed command's answer.
	if err := b.ShowTab("console"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the page's console connected", func() (bool, error) {
		return browsertest.Eval[bool](b, `window.slimvirt.consoleConnected`)
	})
	if err := sub.Put(ctx, subresources.VMIs, tn.ns, name, subresources.SoftReboot); err != nil {
		t.Fatalf("soft reboot: %v", err)
	}
	if _, err := b.WaitTerminalText("SLIMVIRT-GUEST-UP", 4*time.Minute); err != nil {
		t.Fatalf("boot marker on the page's terminal: %v", err)
	}
	if err := b.TypeTerminal("\necho WEB-$((6*7))\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.WaitTerminalText("WEB-42", time.Minute); err != nil {
		t.Fatalf("typed command on the page's terminal: %v", err)
	}
	saveScreenshot(t, b, "console")

	// The screen: the page's canvas is the guest's framebuffer.
	if err := b.ShowTab("screen"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.WaitCanvas(time.Minute); err != nil {
		t.Fatalf("screen: %v", err)
	}
	var best float64
	deadline := time.Now().Add(time.Minute)
	for {
		direct := clusterFramebuffer(t, sub, tn.ns, name)
		time.Sleep(time.Second)
		shown, err := b.Canvas()
		if err != nil {
			t.Fatal(err)
		}
		f, err := browsertest.Match(shown, direct, 8)
		t.Logf("canvas %v, framebuffer over RFB %v: %.4f of pixels equal within 8 (%v)", shown.Bounds().Size(), direct.Bounds().Size(), f, err)
		if err == nil && f >= 0.99 {
			break
		}
		best = max(best, f)
		if time.Now().After(deadline) {
			t.Fatalf("the page's canvas never matched the framebuffer: best %.4f of pixels equal", best)
		}
		time.Sleep(2 * time.Second)
	}
	saveScreenshot(t, b, "screen")
}

// clusterFramebuffer reads the VMI's screen over RFB through the aggregated API.
func clusterFramebuffer(t *testing.T, sub *subresource.Client, ns, name string) image.Image {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := sub.Dial(ctx, subresources.VMIs, ns, name, subresources.VNC)
	if err != nil {
		t.Fatalf("open vnc: %v", err)
	}
	timer := time.AfterFunc(30*time.Second, func() { _ = conn.Close() })
	defer timer.Stop()
	defer conn.Close()
	start := time.Now()
	img, err := browsertest.ReadFramebuffer(conn)
	if err != nil {
		t.Fatalf("read the framebuffer over RFB: %v", err)
	}
	took := time.Since(start)
	size := img.Bounds().Size()
	t.Logf("RFB handshake and a full %dx%d raw framebuffer (%d KiB) through the aggregated API: %v, %.1f MiB/s",
		size.X, size.Y, size.X*size.Y*4/1024, took.Round(time.Millisecond), float64(size.X*size.Y*4)/took.Seconds()/(1<<20))
	return img
}

// saveScreenshot keeps a PNG of the page's tab in _output/e2e, and in docs/images with
// UPDATE_SCREENSHOTS=1.
func saveScreenshot(t *testing.T, b *browsertest.Browser, tab string) {
	t.Helper()
	png, err := b.Screenshot()
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	dirs := []string{"../_output/e2e"}
	if os.Getenv("UPDATE_SCREENSHOTS") == "1" {
		dirs = append(dirs, "../docs/images")
	}
	for _, dir := range dirs {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "webconsole-cluster-"+strings.ToLower(tab)+".png")
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", path)
	}
}

// inClusterConsole signs in to the in-cluster web console (Service slimvirt-console, through
// a port-forward) with the editor's own token: the namespace's list shows the VMI Running, and
// its console answers a command typed in the page. With the viewer's token the list shows, but
// the console says it is forbidden.
func inClusterConsole(t *testing.T, editor, viewer *tenant, name string) {
	base := "http://127.0.0.1:" + portForward(t, "slimvirt", "svc/slimvirt-console", "8090")
	b, err := browsertest.Start(context.Background())
	if err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	defer b.Close()

	signIn := func(tok string) {
		t.Helper()
		err := b.Do(30*time.Second, chromedp.Navigate(base+"/"),
			chromedp.Poll[chromedp.Void](`typeof window.slimvirtHome === "object"`, chromedp.WithPollingInterval(100*time.Millisecond)))
		if err != nil {
			t.Fatalf("open the sign-in page: %v", err)
		}
		if _, err := browsertest.Eval[chromedp.Void](b, fmt.Sprintf(`window.slimvirtHome.signIn(%q, %q), null`, tok, editor.ns)); err != nil {
			t.Fatal(err)
		}
		if err := b.Do(30*time.Second, chromedp.Poll[chromedp.Void](`window.slimvirtHome.listShown()`, chromedp.WithPollingInterval(100*time.Millisecond))); err != nil {
			msg, _ := browsertest.Eval[string](b, `window.slimvirtHome.error()`)
			t.Fatalf("no list after signing in: %v (page says %q)", err, msg)
		}
	}

	signIn(editor.config.BearerToken)
	rows, err := browsertest.Eval[[][]string](b, `window.slimvirtHome.rows()`)
	if err != nil || !slices.ContainsFunc(rows, func(r []string) bool { return len(r) > 1 && r[0] == name && r[1] == "Running" }) {
		t.Fatalf("the list shows %q (%v), want %s Running", rows, err, name)
	}
	page := fmt.Sprintf("%s/vmis/%s/%s/#console", base, editor.ns, name)
	if err := b.Open(page); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the page's console connected", func() (bool, error) {
		ok, err := browsertest.Eval[bool](b, `window.slimvirt.consoleConnected`)
		if err != nil || ok {
			return ok, err
		}
		s, _ := browsertest.Eval[string](b, `document.getElementById('status').textContent`)
		return false, fmt.Errorf("status %q", s)
	})
	if err := b.TypeTerminal("\necho INCLUSTER-$((6*7))\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.WaitTerminalText("INCLUSTER-42", time.Minute); err != nil {
		t.Fatalf("a command typed in the in-cluster console: %v", err)
	}

	signIn(viewer.config.BearerToken)
	if err := b.Open(page); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the viewer's console page says forbidden", func() (bool, error) {
		s, err := browsertest.Eval[string](b, `document.getElementById('status').textContent`)
		return strings.Contains(s, "forbidden"), fmt.Errorf("status %q: %w", s, err)
	})
}
