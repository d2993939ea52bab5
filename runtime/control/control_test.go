package control

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestCallServe(t *testing.T) {
	path := filepath.Join(t.TempDir(), "control.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var got []string
	go Serve(ctx, ln, func(_ context.Context, cmd string) (string, error) {
		got = append(got, cmd)
		switch cmd {
		case Status:
			return `{"phase":"Running"}`, nil
		case Pause:
			return "", nil
		}
		return "", errors.New("unknown command\nwith a newline")
	})
	cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
	defer ccancel()
	if out, err := Call(cctx, path, Pause); err != nil || out != "" {
		t.Errorf("pause: %q %v", out, err)
	}
	if out, err := Call(cctx, path, Status); err != nil || out != `{"phase":"Running"}` {
		t.Errorf("status: %q %v", out, err)
	}
	if _, err := Call(cctx, path, "bogus"); err == nil || !strings.Contains(err.Error(), "unknown command with a newline") {
		t.Errorf("bogus: %v", err)
	}
	if strings.Join(got, ",") != "pause,status,bogus" {
		t.Errorf("handler saw %v", got)
	}
}

// serveRaw answers every connection on a fresh socket with answer, after reading the command.
func serveRaw(t *testing.T, answer func(net.Conn)) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "control.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = bufio.NewReader(c).ReadString('\n')
				answer(c)
			}()
		}
	}()
	return path
}

// TestCallBounded: whoever answers on the socket (anyone who can write the launcher pod's run
// directory) cannot make a call read without end or wait without end: an endless reply is cut
// at MaxReply, a silent one at the deadline, and a cancelled call ends at once.
func TestCallBounded(t *testing.T) {
	endless := func(c net.Conn) {
		chunk := []byte("ok " + strings.Repeat("x", 64<<10))
		for {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	}
	silent := func(c net.Conn) { time.Sleep(time.Minute) }
	for _, tc := range []struct {
		name   string
		answer func(net.Conn)
		ctx    func() (context.Context, context.CancelFunc)
		want   error
	}{
		{"endless reply", endless, func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 10*time.Second)
		}, ErrReplyTooLarge},
		{"endless reply, no deadline", endless, func() (context.Context, context.CancelFunc) {
			return context.WithCancel(context.Background())
		}, ErrReplyTooLarge},
		{"silent", silent, func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 500*time.Millisecond)
		}, context.DeadlineExceeded},
		{"silent, cancelled", silent, func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(500*time.Millisecond, cancel)
			return ctx, cancel
		}, context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := serveRaw(t, tc.answer)
			ctx, cancel := tc.ctx()
			defer cancel()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			start := time.Now()
			done := make(chan error, 1)
			go func() {
				_, err := Call(ctx, path, Stats)
				done <- err
			}()
			select {
			case err := <-done:
				if !errors.Is(err, tc.want) {
					t.Fatalf("Call: %v, want %v", err, tc.want)
				}
				t.Logf("after %v: %v", time.Since(start).Round(time.Millisecond), err)
			case <-time.After(5 * time.Second):
				t.Fatal("Call still running after 5s")
			}
			runtime.ReadMemStats(&after)
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 8*MaxReply {
				t.Errorf("the call allocated %d MiB", grew>>20)
			}
		})
	}
}

// FuzzReply: any bytes on the socket give a payload no longer than the bound or an error.
func FuzzReply(f *testing.F) {
	for _, s := range []string{"ok\n", "ok {\"phase\":\"Running\"}\n", "error no domain\n", "ok", "bogus\n",
		"ok " + strings.Repeat("y", 100) + "\n", "\n", "error \n", "ok \xff\n"} {
		f.Add([]byte(s))
	}
	const max = 64
	f.Fuzz(func(t *testing.T, b []byte) {
		line, err := readLine(bytes.NewReader(b), max)
		if err != nil {
			return
		}
		if len(line) > max || strings.Contains(line, "\n") {
			t.Fatalf("readLine returned %d bytes %q", len(line), line)
		}
		out, err := ParseReply(line)
		if err == nil && !strings.HasPrefix(strings.TrimSpace(line), "ok") {
			t.Fatalf("reply %q accepted as %q", line, out)
		}
		if len(out) > len(line) {
			t.Fatalf("payload %q longer than the reply %q", out, line)
		}
	})
}

// lateCtx is a context whose deadline has passed but whose timer has not fired yet, as a
// loaded machine sees it for a moment after the socket's own deadline fired.
type lateCtx struct{ context.Context }

func (lateCtx) Err() error { return nil }

// TestDeadlineBeforeContext: when the socket's deadline fires before the context notices its
// own, the call still ends with the context's deadline error.
func TestDeadlineBeforeContext(t *testing.T) {
	dl := time.Now().Add(-time.Millisecond)
	ioErr := fmt.Errorf("read unix: %w", os.ErrDeadlineExceeded)
	if err := ctxErr(lateCtx{context.Background()}, dl, ioErr); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ctxErr = %v, want context.DeadlineExceeded", err)
	}
	if err := ctxErr(lateCtx{context.Background()}, time.Now().Add(time.Hour), ioErr); err != nil {
		t.Fatalf("ctxErr before the deadline = %v, want nil", err)
	}
}
