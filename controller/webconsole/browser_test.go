package webconsole_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/slimvirt/slimvirt/controller/webconsole"
	"github.com/slimvirt/slimvirt/internal/testutil"
	"github.com/slimvirt/slimvirt/slimctl/webconsole/browsertest"
)

// TestBrowserSignIn signs in in headless Chromium with a service account's token, sees the
// namespace's VMIs, opens one's console page and reads the stand-in's greeting to that user in
// the terminal: the page's websocket carried the token from sessionStorage. A user who may
// only list VMIs sees the console refused as forbidden.
func TestBrowserSignIn(t *testing.T) {
	base, logs := startConsole(t)
	registerStandIn(t)
	alice, viewer := token(t, "ns-web", "alice"), token(t, "ns-web", "viewer")
	grant(t, "ns-web", "alice", "*", []string{"virtualmachineinstances", "virtualmachineinstances/console", "virtualmachineinstances/vnc"}, []string{"get", "list"})
	grant(t, "ns-web", "viewer", "slimvirt.io", []string{"virtualmachineinstances"}, []string{"get", "list"})
	createVMI(t, "ns-web", "web-vm", "Running")

	b, err := browsertest.Start(context.Background())
	if err != nil {
		t.Fatalf("%v (run `make deps`)", err)
	}
	t.Cleanup(b.Close)
	signIn(t, b, base, alice)
	rows, err := browsertest.Eval[[][]string](b, `window.slimvirtHome.rows()`)
	if err != nil || len(rows) != 1 || rows[0][0] != "web-vm" || rows[0][1] != "Running" {
		t.Fatalf("the list shows %q (%v), want web-vm Running", rows, err)
	}
	href, err := browsertest.Eval[string](b, `document.querySelector('#vmis a[href$="#console"]').href`)
	if err != nil || href != base+"/vmis/ns-web/web-vm/#console" {
		t.Fatalf("console link %q (%v)", href, err)
	}
	if err := b.Open(href); err != nil {
		t.Fatal(err)
	}
	if _, err := b.WaitTerminalText("hello system:serviceaccount:ns-web:alice", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := b.TypeTerminal("typed-in-chromium"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.WaitTerminalText("typed-in-chromium", 30*time.Second); err != nil {
		t.Fatal(err) // the stand-in echoes what the terminal sent
	}

	signIn(t, b, base, viewer)
	if err := b.Open(href); err != nil {
		t.Fatal(err)
	}
	status := waitStatus(t, b, "forbidden")
	t.Log("viewer's page says:", status)
	noTokens(t, logs.String(), alice, viewer)
}

// signIn opens the sign-in page, signs in with tok for namespace ns-web and waits for the list.
func signIn(t *testing.T, b *browsertest.Browser, base, tok string) {
	t.Helper()
	err := b.Do(30*time.Second, chromedp.Navigate(base+"/"),
		chromedp.Poll[chromedp.Void](`typeof window.slimvirtHome === "object"`, chromedp.WithPollingInterval(100*time.Millisecond)))
	if err != nil {
		t.Fatal(err)
	}
	_, err = browsertest.Eval[chromedp.Void](b, fmt.Sprintf(`window.slimvirtHome.signIn(%q, "ns-web"), null`, tok))
	if err != nil {
		t.Fatal(err)
	}
	err = b.Do(30*time.Second, chromedp.Poll[chromedp.Void](`window.slimvirtHome.listShown()`, chromedp.WithPollingInterval(100*time.Millisecond)))
	if err != nil {
		msg, _ := browsertest.Eval[string](b, `window.slimvirtHome.error()`)
		t.Fatalf("no list after signing in: %v (page says %q)", err, msg)
	}
}

func waitStatus(t *testing.T, b *browsertest.Browser, want string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s, err := browsertest.Eval[string](b, `document.getElementById('status').textContent`)
		if err == nil && strings.Contains(s, want) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("the status shows %q (%v), want %q", s, err, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestBrowserSignInBeforeFirstAnswer: the sign-in page asks for the list as it loads, without a
// token, and is answered 401. A user who signs in before that answer arrives stays signed in:
// the late 401 neither hides the list nor drops the token the console page needs.
func TestBrowserSignInBeforeFirstAnswer(t *testing.T) {
	const delay = 1500 * time.Millisecond
	s, err := webconsole.New(webconsole.Config{APIServer: env.Config, Addr: "127.0.0.1:0",
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	testutil.Must(t, err)
	// The answers to requests without a token come late.
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/api/") && r.Header.Get("Authorization") == "" {
			time.Sleep(delay)
		}
		s.Handler().ServeHTTP(w, r)
	})
	srv := httptest.NewServer(slow)
	t.Cleanup(srv.Close)
	carol := token(t, "ns-race", "carol")
	grant(t, "ns-race", "carol", "slimvirt.io", []string{"virtualmachineinstances"}, []string{"get", "list"})

	b, err := browsertest.Start(context.Background())
	if err != nil {
		t.Fatalf("%v (run `make deps`)", err)
	}
	t.Cleanup(b.Close)
	err = b.Do(30*time.Second, chromedp.Navigate(srv.URL+"/"),
		chromedp.Poll[chromedp.Void](`typeof window.slimvirtHome === "object"`, chromedp.WithPollingInterval(50*time.Millisecond)))
	testutil.Must(t, err)
	_, err = browsertest.Eval[chromedp.Void](b, fmt.Sprintf(`window.slimvirtHome.signIn(%q, "ns-race"), null`, carol))
	testutil.Must(t, err)
	err = b.Do(30*time.Second, chromedp.Poll[chromedp.Void](`window.slimvirtHome.listShown()`, chromedp.WithPollingInterval(50*time.Millisecond)))
	testutil.Must(t, err)
	time.Sleep(2 * delay) // the first load's 401 has arrived
	shown, err := browsertest.Eval[bool](b, `window.slimvirtHome.listShown()`)
	testutil.Must(t, err)
	kept, err := browsertest.Eval[bool](b, fmt.Sprintf(`window.sessionStorage.getItem('slimvirt-token') === %q`, carol))
	testutil.Must(t, err)
	if !shown || !kept {
		msg, _ := browsertest.Eval[string](b, `window.slimvirtHome.error()`)
		t.Fatalf("after the first load's late 401: list shown %v, token kept %v (page says %q)", shown, kept, msg)
	}
}
