package diskcopy

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestAwait(t *testing.T) {
	t.Run("a copy renamed into place later", func(t *testing.T) {
		dir := t.TempDir()
		waited := 0
		go func() {
			time.Sleep(100 * time.Millisecond)
			if _, err := CopyAs(writeFile(t, "kernel bytes"), dir, "kernel"); err != nil {
				t.Error(err)
			}
		}()
		got, err := Await(context.Background(), dir, "kernel", []string{"kernel"}, func() { waited++ })
		if err != nil || got != filepath.Join(dir, "kernel") {
			t.Fatalf("Await = %q, %v", got, err)
		}
		if waited != 1 {
			t.Errorf("waiting called %d times, want once", waited)
		}
	})
	t.Run("either name", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, RawName), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := Await(context.Background(), dir, "", []string{QCOW2Name, RawName}, func() { t.Error("waited for a copy already there") })
		if err != nil || got != filepath.Join(dir, RawName) {
			t.Fatalf("Await = %q, %v", got, err)
		}
	})
	t.Run("the copier's failure", func(t *testing.T) {
		dir := t.TempDir()
		_, cerr := Copy(filepath.Join(t.TempDir(), "disk"), dir)
		if err := ReportFailure(dir, "", cerr); err != nil {
			t.Fatal(err)
		}
		_, err := Await(context.Background(), dir, "", []string{QCOW2Name, RawName}, nil)
		if !errors.Is(err, ErrCopyFailed) || !strings.Contains(err.Error(), "does not exist in the image") {
			t.Fatalf("Await error = %v, want the copier's failure", err)
		}
	})
	t.Run("another file's failure is not this one's", func(t *testing.T) {
		dir := t.TempDir()
		if err := ReportFailure(dir, "initrd", errors.New("no initrd")); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_, err := Await(ctx, dir, "kernel", []string{"kernel"}, nil)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Await error = %v, want the deadline", err)
		}
	})
	t.Run("a half-written temporary file is not the copy", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "."+RawName+".123"), []byte("half"), 0o644); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		if got, err := Await(ctx, dir, "", []string{QCOW2Name, RawName}, nil); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Await = %q, %v; want the deadline", got, err)
		}
	})
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
