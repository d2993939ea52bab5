package launcher

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/slimvirt/slimvirt/api/launcherpod"
)

// Phases written to the status file.
const (
	PhaseStarting     = launcherpod.PhaseStarting
	PhaseRunning      = launcherpod.PhaseRunning
	PhasePaused       = launcherpod.PhasePaused
	PhaseShuttingDown = launcherpod.PhaseShuttingDown
	PhaseShutdown     = launcherpod.PhaseShutdown
	PhaseCrashed      = launcherpod.PhaseCrashed
)

// statusWriter keeps the status and writes it atomically on every change, so the node agent
// and the readiness probe never read half a file.
type statusWriter struct {
	path string
	mu   sync.Mutex
	cur  launcherpod.Status
}

func (s *statusWriter) update(f func(*launcherpod.Status)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := s.cur
	f(&next)
	if next == s.cur && s.cur.Phase != "" {
		return nil
	}
	s.cur = next
	b, err := json.Marshal(next)
	if err != nil {
		return err
	}
	tmp := s.path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write status: %w", err)
	}
	return os.Rename(tmp, s.path)
}

func (s *statusWriter) get() launcherpod.Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

func (s *statusWriter) phase(p, reason string) error {
	return s.update(func(st *launcherpod.Status) { st.Phase, st.Reason = p, reason })
}

// Probe is the readiness probe: nil only while the status says Running.
func Probe(path string) error {
	st, err := launcherpod.ReadStatus(path)
	if err != nil {
		return err
	}
	if st.Phase != PhaseRunning {
		return errors.New("phase is " + st.Phase)
	}
	return nil
}

func ensureDir(path string) error {
	return os.MkdirAll(filepath.Dir(path), 0o755)
}
