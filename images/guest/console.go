package guest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Console reads a guest's serial output line by line so a test can wait for marker lines.
// It keeps the whole output for failure reports.
type Console struct {
	lines chan string
	done  chan struct{}

	mu  sync.Mutex
	log bytes.Buffer
}

// NewConsole reads r until EOF in the background.
func NewConsole(r io.Reader) *Console {
	c := &Console{lines: make(chan string, 4096), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		br := bufio.NewReader(r)
		for {
			line, err := br.ReadString('\n')
			if line != "" {
				c.mu.Lock()
				c.log.WriteString(line)
				c.mu.Unlock()
				select {
				case c.lines <- strings.TrimRight(line, "\r\n"):
				default: // nobody reads old lines; the log keeps them
				}
			}
			if err != nil {
				return
			}
		}
	}()
	return c
}

// Write adds text to the log without offering it as lines (a QEMU's stderr, say).
func (c *Console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.log.Write(p)
}

// Log returns everything read so far.
func (c *Console) Log() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.log.String()
}

// Done is closed when the reader hit EOF (the guest's process ended).
func (c *Console) Done() <-chan struct{} { return c.done }

// Next returns the next line, or ok=false at EOF or after timeout.
func (c *Console) Next(timeout time.Duration) (line string, ok bool) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case line := <-c.lines:
		return line, true
	case <-c.done:
		// Lines queued before EOF are still delivered.
		select {
		case line := <-c.lines:
			return line, true
		default:
			return "", false
		}
	case <-t.C:
		return "", false
	}
}

// WaitFor returns the next line carrying marker (see Fields), skipping other lines.
func (c *Console) WaitFor(marker string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return "", fmt.Errorf("no %s on the console within %s", marker, timeout)
		}
		line, ok := c.Next(left)
		if !ok {
			select {
			case <-c.done:
				return "", fmt.Errorf("console closed before %s", marker)
			default:
				continue
			}
		}
		if _, found := Fields(line, marker); found {
			return line, nil
		}
	}
}

// Between returns the lines strictly between the next begin and end markers.
func (c *Console) Between(begin, end string, timeout time.Duration) ([]string, error) {
	deadline := time.Now().Add(timeout)
	if _, err := c.WaitFor(begin, timeout); err != nil {
		return nil, err
	}
	var got []string
	for {
		line, ok := c.Next(time.Until(deadline))
		if !ok {
			return got, fmt.Errorf("no %s within %s", end, timeout)
		}
		if _, found := Fields(line, end); found {
			return got, nil
		}
		got = append(got, line)
	}
}
