package control

import (
	"context"
	"errors"
	"path/filepath"
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
