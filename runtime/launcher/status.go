package launcher

import (
	"encoding/json"
	"errors"
	"sync"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	"github.com/slimvirt/slimvirt/internal/atomicfile"
)

// statusWriter keeps the status and replaces the file on every change, so the node agent
// never reads half a file.
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
	return atomicfile.WriteFile(s.path, append(b, '\n'), 0o644)
}

func (s *statusWriter) get() launcherpod.Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

func (s *statusWriter) phase(p, reason string) error {
	return s.update(func(st *launcherpod.Status) { st.Phase, st.Reason = p, reason })
}

// running says whether the status file at path shows the domain Running ("probe": for a
// shell in the pod and the tests; the node agent reads the file itself).
func running(path string) error {
	st, err := launcherpod.ReadStatus(path)
	if err != nil {
		return err
	}
	if st.Phase != launcherpod.PhaseRunning {
		return errors.New("phase is " + st.Phase)
	}
	return nil
}
