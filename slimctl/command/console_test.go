package command

import (
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

func TestEscapeReaderStopsAtCtrlRightBracket(t *testing.T) {
	tests := []struct{ in, want string }{
		{"ls\r\n", "ls\r\n"},
		{"abc\x1ddef", "abc"},
		{"\x1d", ""},
	}
	for _, tt := range tests {
		r := &escapeReader{r: strings.NewReader(tt.in)}
		got, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != tt.want {
			t.Errorf("read %q from %q, want %q", got, tt.in, tt.want)
		}
	}
}

// TestAttachEndsAtEscape: what precedes Ctrl-] reaches the guest, the rest does not, and the
// stream is closed.
func TestAttachEndsAtEscape(t *testing.T) {
	ours, theirs := net.Pipe()
	got := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(theirs) // ends when attach closes its side
		got <- string(b)
	}()
	var out bytes.Buffer
	done := make(chan error, 1)
	// stdin never ends by itself: only the escape byte can end the session.
	in := io.MultiReader(strings.NewReader("root\r\n\x1dnot this"), blockingReader{})
	go func() { done <- attach(context.Background(), ours, in, &out) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("attach: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("attach did not end at the escape byte")
	}
	if s := <-got; s != "root\r\n" {
		t.Errorf("the guest got %q, want %q", s, "root\r\n")
	}
}

// TestAttachEndsWhenServerCloses: the guest's bytes reach the terminal and the session ends
// with the stream, though the terminal still waits for a key.
func TestAttachEndsWhenServerCloses(t *testing.T) {
	ours, theirs := net.Pipe()
	go func() {
		_, _ = theirs.Write([]byte("login: "))
		_ = theirs.Close()
	}()
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- attach(context.Background(), ours, blockingReader{}, &out) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("attach: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("attach did not end with the stream")
	}
	if out.String() != "login: " {
		t.Errorf("the terminal got %q", out.String())
	}
}

// TestAttachEndsWithContext: Ctrl-C outside a raw terminal ends the session.
func TestAttachEndsWithContext(t *testing.T) {
	ours, theirs := net.Pipe()
	go func() { _, _ = io.Copy(io.Discard, theirs) }()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- attach(ctx, ours, blockingReader{}, io.Discard) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("attach: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("attach did not end with ctx")
	}
}

// blockingReader is a terminal nobody types on.
type blockingReader struct{}

func (blockingReader) Read([]byte) (int, error) { select {} }
