package webconsole_test

import (
	"context"
	"image"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/slimvirt/slimvirt/images/guest"
	"github.com/slimvirt/slimvirt/slimctl/webconsole"
	"github.com/slimvirt/slimvirt/slimctl/webconsole/browsertest"
)

// bootTimeout is generous: TCG on a busy 2-core machine is several times slower than idle.
const bootTimeout = 3 * time.Minute

// Pixel comparison of the page's canvas with the framebuffer read straight from QEMU: noVNC
// may get lossy (JPEG) Tight rectangles and the text cursor blinks, so a pixel counts as equal
// within a small per-channel tolerance, and nearly all pixels must be equal.
const (
	pixelTolerance = 8
	pixelsEqual    = 0.99
)

// TestWebConsoleGuest boots the test guest in QEMU and uses its web console in headless
// Chromium: the boot marker in the terminal, the screen matching QEMU's own framebuffer, a
// command typed into the terminal, text typed into the screen through the paste box.
func TestWebConsoleGuest(t *testing.T) {
	b := startBrowser(t)
	dial, vncSock := qemuGuest(t)
	s, err := webconsole.New(webconsole.Config{Namespace: "default", VMI: "testvm", Dial: dial})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); _ = s.Wait() })
	page, err := s.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Open(page); err != nil {
		t.Fatal(err)
	}
	if _, err := b.WaitTerminalText(guest.MarkerUp, bootTimeout); err != nil {
		t.Fatal(err)
	}
	t.Log("boot marker in the terminal")

	compareScreen(t, b, vncSock)

	if err := b.TypeTerminal("echo web-$((6*7))\r"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.WaitTerminalText("web-42", time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Log("command typed into the terminal ran")

	// The screen's shell (tty1) writes to the serial console, so the terminal shows that the
	// paste box's keys reached the guest, shifted characters included.
	if err := b.ShowTab("screen"); err != nil {
		t.Fatal(err)
	}
	if err := b.Do(30*time.Second, chromedp.SetValue(chromedp.CSS("#paste"), "echo Typed-$((6*7)) >/dev/ttyS0"),
		chromedp.Focus(chromedp.CSS("#paste")), chromedp.KeyEvent("\r")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.WaitTerminalText("Typed-42", time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Log("text from the paste box ran on the screen's shell")
	screenshots(t, b)

	if err := b.Do(30*time.Second, chromedp.Click(chromedp.CSS("#ctrl-alt-del"))); err != nil {
		t.Fatal(err)
	}
	// The kernel's own line, printed whether or not init got to say MarkerReboot first.
	if _, err := b.WaitTerminalText("reboot: Restarting system", time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Log("Ctrl-Alt-Del rebooted the guest")

	u, err := url.Parse(page)
	if err != nil {
		t.Fatal(err)
	}
	refusedWithoutSecret(t, u)
}

// compareScreen waits for the page's canvas and compares it with a framebuffer read over RFB
// from QEMU's socket, retrying while the screen settles.
func compareScreen(t *testing.T, b *browsertest.Browser, vncSock string) {
	t.Helper()
	if _, err := b.WaitCanvas(time.Minute); err != nil {
		t.Fatal(err)
	}
	var best float64
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		direct := readQEMUScreen(t, vncSock)
		time.Sleep(time.Second)
		shown, err := b.Canvas()
		if err != nil {
			t.Fatal(err)
		}
		f, err := browsertest.Match(shown, direct, pixelTolerance)
		exact, _ := browsertest.Match(shown, direct, 0)
		t.Logf("canvas %v, framebuffer %v: %.4f of pixels equal within %d, %.4f exactly (%v)",
			shown.Bounds().Size(), direct.Bounds().Size(), f, pixelTolerance, exact, err)
		if err == nil && f >= pixelsEqual {
			return
		}
		best = max(best, f)
		time.Sleep(2 * time.Second)
	}
	t.Fatalf("the page's canvas never matched QEMU's framebuffer: best %.4f of pixels equal", best)
}

func readQEMUScreen(t *testing.T, sock string) image.Image {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	img, err := browsertest.ReadFramebuffer(c)
	if err != nil {
		t.Fatalf("read QEMU's framebuffer: %v", err)
	}
	return img
}

// screenshots saves both tabs to docs/images when UPDATE_SCREENSHOTS=1.
func screenshots(t *testing.T, b *browsertest.Browser) {
	t.Helper()
	if os.Getenv("UPDATE_SCREENSHOTS") != "1" {
		return
	}
	for tab, file := range map[string]string{"screen": "webconsole-vnc.png", "console": "webconsole-console.png"} {
		if err := b.ShowTab(tab); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		png, err := b.Screenshot()
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join("..", "..", "docs", "images", file)
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", path)
	}
}

// refusedWithoutSecret checks the server the browser used: no secret, or a foreign Origin, is
// a 403.
func refusedWithoutSecret(t *testing.T, page *url.URL) {
	t.Helper()
	for name, req := range map[string]func() *http.Request{
		"no secret": func() *http.Request {
			r, _ := http.NewRequest(http.MethodGet, "http://"+page.Host+"/", nil)
			return r
		},
		"foreign origin": func() *http.Request {
			r, _ := http.NewRequest(http.MethodGet, page.String()+"ws/console", nil)
			r.Header.Set("Origin", "http://attacker.example")
			r.Header.Set("Connection", "Upgrade")
			r.Header.Set("Upgrade", "websocket")
			r.Header.Set("Sec-WebSocket-Version", "13")
			r.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
			return r
		},
	} {
		resp, err := http.DefaultClient.Do(req())
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", name, resp.StatusCode)
		}
	}
}
