// Package browsertest drives slimctl's web console in headless Chromium for tests, here and in
// the cluster's end-to-end suite: open the page, wait for text in the serial console, wait for
// the VNC screen, read its pixels and take screenshots. ReadFramebuffer reads the same screen
// straight from an RFB server, to compare with what the page shows.
package browsertest

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"image"
	"image/png"
	"os"
	"strings"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// ChromiumPath is where Debian's chromium package (make deps) installs the browser.
const ChromiumPath = "/usr/bin/chromium"

// Browser is one headless Chromium with one tab.
type Browser struct {
	ctx    context.Context // the tab's
	cancel context.CancelFunc
}

// Start launches headless Chromium with a fresh temporary profile (removed by Close). Chromium
// resolves no host name and reaches no address but loopback: a page can reach nothing off this
// machine.
func Start(ctx context.Context) (*Browser, error) {
	if _, err := os.Stat(ChromiumPath); err != nil {
		return nil, fmt.Errorf("find chromium (run `make deps` to install Debian's chromium): %w", err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(ChromiumPath),
		chromedp.WindowSize(1280, 800),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("no-pings", true),
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1, EXCLUDE [::1]"),
	)
	actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
	tctx, tcancel := chromedp.NewContext(actx)
	if err := chromedp.Do(tctx); err != nil {
		tcancel()
		acancel()
		return nil, fmt.Errorf("start chromium: %w", err)
	}
	return &Browser{ctx: tctx, cancel: func() { tcancel(); acancel() }}, nil
}

// Close ends the browser and removes its profile.
func (b *Browser) Close() { b.cancel() }

// Do runs chromedp actions in the browser's tab, in order, bounded by timeout.
func (b *Browser) Do(timeout time.Duration, actions ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	return chromedp.Do(ctx, actions...)
}

// Open navigates to url and waits for the page's test hooks (window.slimvirt).
func (b *Browser) Open(url string) error {
	err := b.Do(30*time.Second, chromedp.Navigate(url),
		chromedp.Poll[chromedp.Void](`typeof window.slimvirt === "object"`, chromedp.WithPollingInterval(100*time.Millisecond)))
	if err != nil {
		return fmt.Errorf("open %s: %w", redact(url), err)
	}
	return nil
}

// Eval evaluates a JavaScript expression in the browser's page and decodes its value.
func Eval[T any](b *Browser, expr string) (T, error) {
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		return v, fmt.Errorf("evaluate %q: %w", expr, err)
	}
	return v, nil
}

// TerminalText is the serial console's text as the page's terminal holds it.
func (b *Browser) TerminalText() (string, error) {
	return Eval[string](b, `window.slimvirt.terminalText()`)
}

// WaitTerminalText waits until the terminal's text contains marker and returns the text.
func (b *Browser) WaitTerminalText(marker string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		s, err := b.TerminalText()
		if err == nil && strings.Contains(s, marker) {
			return s, nil
		}
		if time.Now().After(deadline) {
			return s, fmt.Errorf("terminal shows no %q after %s (last error: %w)", marker, timeout, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// ShowTab switches the page to the "screen" or the "console" tab.
func (b *Browser) ShowTab(name string) error {
	_, err := Eval[chromedp.Void](b, fmt.Sprintf(`window.slimvirt.showTab(%q), null`, name))
	return err
}

// TypeTerminal types text into the console tab's terminal as key presses.
func (b *Browser) TypeTerminal(text string) error {
	if err := b.ShowTab("console"); err != nil {
		return err
	}
	return b.Do(30*time.Second, chromedp.Focus(chromedp.CSS(`#terminal .xterm-helper-textarea`)), typeKeys(text))
}

// typeKeys presses a key for each character as a person does, a keyDown that carries the text
// and a keyUp. chromedp.KeyEvent sends the text in a separate char event after the keyDown,
// which xterm.js takes as two inputs.
func typeKeys(text string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		for _, r := range text {
			var down, up *input.DispatchKeyEventParams
			for _, k := range kb.Encode(r) {
				switch k.Type {
				case kb.KeyDown:
					down = k
				case kb.KeyUp:
					up = k
				case kb.KeyChar:
					down.Text, down.UnmodifiedText = k.Text, k.UnmodifiedText
				}
			}
			for _, k := range []*input.DispatchKeyEventParams{down, up} {
				if _, err := cdp.Call(ctx, t, input.DispatchKeyEvent, *k); err != nil {
					return fmt.Errorf("press %q: %w", r, err)
				}
			}
		}
		return nil
	})
}

// Canvas reads the pixels of the page's VNC canvas.
func (b *Browser) Canvas() (image.Image, error) {
	url, err := Eval[string](b, `(() => { const c = window.slimvirt.screenCanvas(); return c && c.width > 0 ? c.toDataURL("image/png") : ""; })()`)
	if err != nil {
		return nil, err
	}
	data, ok := strings.CutPrefix(url, "data:image/png;base64,")
	if !ok {
		return nil, errors.New("the page has no VNC canvas yet")
	}
	raw, err := base64.StdEncoding.DecodeString(data)
	if err != nil {
		return nil, fmt.Errorf("decode canvas: %w", err)
	}
	img, err := png.Decode(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("decode canvas: %w", err)
	}
	return img, nil
}

// WaitCanvas waits until the page's VNC session is connected and its canvas shows more than
// one colour, and returns the canvas.
func (b *Browser) WaitCanvas(timeout time.Duration) (image.Image, error) {
	deadline := time.Now().Add(timeout)
	for {
		connected, err := Eval[bool](b, `window.slimvirt.vncConnected`)
		var img image.Image
		if err == nil && connected {
			if img, err = b.Canvas(); err == nil && !Blank(img) {
				return img, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("VNC canvas still blank after %s (connected %v, last error: %w)", timeout, connected, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// Screenshot takes a PNG of the browser's viewport.
func (b *Browser) Screenshot() ([]byte, error) {
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	buf, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		return nil, fmt.Errorf("take screenshot: %w", err)
	}
	return buf, nil
}

// redact keeps a URL's secret path out of errors and logs.
func redact(url string) string {
	if i := strings.Index(url, "://"); i >= 0 {
		if j := strings.Index(url[i+3:], "/"); j >= 0 {
			return url[:i+3+j] + "/…"
		}
	}
	return url
}
