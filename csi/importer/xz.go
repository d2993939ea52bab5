package importer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"sync"
)

// xzMemLimit bounds the memory xz may use to decompress a tenant's image. An xz stream names
// its dictionary size in its headers, up to 4 GiB, and the decoder allocates it; every xz
// preset (-9e included) needs at most 65 MiB to decompress.
const xzMemLimit = 128 << 20

// xzReader decompresses an xz stream with xz(1) under a memory limit; a stream that needs more
// fails as a corrupt image would. The pure-Go decoder is not used: it allocates whatever
// dictionary each block header asks for and cannot be limited. Debian ships xz-utils as a
// required package, so every node image has it.
func xzReader(ctx context.Context, r io.Reader) (io.Reader, func(), error) {
	path, err := exec.LookPath("xz")
	if err != nil {
		return nil, nil, permanent("xz images need xz(1) on the node: %w", err)
	}
	src, ok := r.(*recordingReader)
	if !ok {
		src = &recordingReader{r: r}
	}
	cmd := exec.CommandContext(ctx, path, "--decompress", "--stdout", "--threads=0", "--memlimit-decompress="+strconv.Itoa(xzMemLimit))
	cmd.Stdin = src
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, fmt.Errorf("xz: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("start xz: %w", err)
	}
	pr := &processReader{out: out, cmd: cmd, stderr: &stderr, src: src}
	return pr, pr.stop, nil
}

// recordingReader remembers the first error of the compressed stream, so a broken download is
// reported as such and not as the corrupt input xz then sees.
type recordingReader struct {
	r   io.Reader
	mu  sync.Mutex
	err error
}

func (s *recordingReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		s.mu.Lock()
		if s.err == nil {
			s.err = err
		}
		s.mu.Unlock()
	}
	return n, err
}

func (s *recordingReader) failure() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

type processReader struct {
	out    io.Reader
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	src    *recordingReader
	done   bool
	err    error
}

func (p *processReader) Read(b []byte) (int, error) {
	if p.done {
		return 0, p.err
	}
	n, err := p.out.Read(b)
	if err == nil {
		return n, nil
	}
	p.done = true
	werr := p.cmd.Wait()
	switch {
	case p.src.failure() != nil:
		p.err = p.src.failure()
	case werr != nil && strings.Contains(p.stderr.String(), "Memory usage limit"):
		p.err = permanent("import refused: the xz stream needs more than %d MiB of memory to decompress (compress it with a preset up to -9)", xzMemLimit>>20)
	case werr != nil:
		p.err = permanent("decompress xz: %v: %s", werr, strings.TrimSpace(p.stderr.String()))
	case errors.Is(err, io.EOF):
		p.err = io.EOF
	default:
		p.err = fmt.Errorf("read xz output: %w", err)
	}
	return n, p.err
}

// stop ends xz when the import stops early.
func (p *processReader) stop() {
	if !p.done {
		p.done = true
		// The import is over; xz's exit status (killed) says nothing anyone needs.
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
	}
}
