// Package console multiplexes the guest's serial port. QEMU's serial socket takes one client;
// the launcher is that client for the guest's whole life. It copies the guest's output line by
// line to its own stdout (so `kubectl logs` shows the console) and to a log file, and serves
// a socket of its own where interactive clients attach: each gets the output from the moment
// it attaches, and what any of them types goes to the guest.
package console

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"
)

// MaxLog is the size at which the log file starts over (keeping one previous file as .1).
const MaxLog = 8 << 20

// Mux is the console multiplexer.
type Mux struct {
	// QEMUSocket is the serial port's unix socket, served by QEMU.
	QEMUSocket string
	// ClientSocket is where interactive clients attach.
	ClientSocket string
	// LogFile receives the raw console output.
	LogFile string
	// Lines receives the console output line by line (the launcher's stdout).
	Lines io.Writer
	Log   *slog.Logger

	mu      sync.Mutex
	clients map[net.Conn]bool
	qemu    net.Conn
	log     *os.File
	logSize int64
	partial []byte
}

// Connect attaches to QEMU's socket, retrying until it exists or ctx ends.
func (m *Mux) Connect(ctx context.Context) error {
	for {
		c, err := net.Dial("unix", m.QEMUSocket)
		if err == nil {
			m.qemu = c
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("connect to serial console %s: %w", m.QEMUSocket, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Serve copies output and serves clients until ctx ends or QEMU closes the socket.
func (m *Mux) Serve(ctx context.Context) error {
	if m.qemu == nil {
		return errors.New("console: Serve before Connect")
	}
	m.clients = map[net.Conn]bool{}
	if m.LogFile != "" {
		f, err := os.OpenFile(m.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
		if err != nil {
			return fmt.Errorf("open console log %s: %w", m.LogFile, err)
		}
		m.log = f
		defer f.Close()
	}
	_ = os.Remove(m.ClientSocket)
	ln, err := net.Listen("unix", m.ClientSocket)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", m.ClientSocket, err)
	}
	defer ln.Close()
	go m.accept(ln)
	go func() {
		<-ctx.Done()
		_ = m.qemu.Close()
	}()
	lines := make(chan struct{}, 1)
	go m.flushPartial(ctx, lines)
	buf := make([]byte, 4096)
	for {
		n, err := m.qemu.Read(buf)
		if n > 0 {
			m.output(buf[:n])
			select {
			case lines <- struct{}{}:
			default:
			}
		}
		if err != nil {
			m.mu.Lock()
			m.emitPartial()
			for c := range m.clients {
				_ = c.Close()
			}
			m.mu.Unlock()
			if ctx.Err() != nil || errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("read serial console: %w", err)
		}
	}
}

func (m *Mux) output(b []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.log != nil {
		m.writeLog(b)
	}
	for c := range m.clients {
		_ = c.SetWriteDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write(b); err != nil {
			// A client that cannot keep up must not stall the guest's console.
			_ = c.Close()
			delete(m.clients, c)
		}
	}
	m.partial = append(m.partial, b...)
	for {
		i := bytes.IndexByte(m.partial, '\n')
		if i < 0 {
			break
		}
		m.emit(m.partial[:i])
		m.partial = m.partial[i+1:]
	}
	if len(m.partial) > 4096 {
		m.emitPartial()
	}
}

// flushPartial writes out a line without a newline (a login prompt) once output pauses.
func (m *Mux) flushPartial(ctx context.Context, activity <-chan struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-activity:
		}
		t := time.NewTimer(500 * time.Millisecond)
	quiet:
		for {
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-activity:
				t.Reset(500 * time.Millisecond)
			case <-t.C:
				break quiet
			}
		}
		m.mu.Lock()
		m.emitPartial()
		m.mu.Unlock()
	}
}

func (m *Mux) emitPartial() {
	if len(m.partial) > 0 {
		m.emit(m.partial)
		m.partial = m.partial[:0]
	}
}

func (m *Mux) emit(line []byte) {
	line = bytes.TrimRight(line, "\r")
	line = bytes.ReplaceAll(line, []byte{'\r'}, nil)
	if m.Lines != nil {
		_, _ = m.Lines.Write(append(append([]byte{}, line...), '\n'))
	}
}

func (m *Mux) writeLog(b []byte) {
	if m.logSize+int64(len(b)) > MaxLog {
		_ = m.log.Close()
		_ = os.Rename(m.LogFile, m.LogFile+".1")
		f, err := os.OpenFile(m.LogFile, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
		if err != nil {
			m.log = nil
			return
		}
		m.log, m.logSize = f, 0
	}
	n, _ := m.log.Write(b)
	m.logSize += int64(n)
}

func (m *Mux) accept(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		m.mu.Lock()
		m.clients[c] = true
		m.mu.Unlock()
		go m.input(c)
	}
}

func (m *Mux) input(c net.Conn) {
	buf := make([]byte, 1024)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := m.qemu.Write(buf[:n]); werr != nil && m.Log != nil {
				m.Log.Info("write to serial console failed", "err", werr)
			}
		}
		if err != nil {
			m.mu.Lock()
			delete(m.clients, c)
			m.mu.Unlock()
			_ = c.Close()
			return
		}
	}
}
