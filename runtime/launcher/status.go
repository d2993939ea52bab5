package launcher

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"sync"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	"github.com/slimvirt/slimvirt/internal/atomicfile"
	"github.com/slimvirt/slimvirt/runtime/diskresize"
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
	// f may change the map in place: it must not change s.cur's with it.
	next.DiskSizes = maps.Clone(s.cur.DiskSizes)
	next.DiskTargets = maps.Clone(s.cur.DiskTargets)
	f(&next)
	if reflect.DeepEqual(next, s.cur) && s.cur.Phase != "" {
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

// running marks the domain Running with its disks' guest device names, read from the domain
// XML the launcher defined (each disk's alias names its volume).
func (s *statusWriter) running(domainXML string) error {
	names, err := ParseDeviceNames(domainXML)
	targets := map[string]string{}
	for dev, name := range names.Disks {
		targets[name] = dev
	}
	if err == nil && len(targets) > launcherpod.MaxDiskSizes {
		err = fmt.Errorf("%d disks, more than %d", len(targets), launcherpod.MaxDiskSizes)
	}
	return errors.Join(err, s.update(func(st *launcherpod.Status) {
		st.Phase, st.Reason = launcherpod.PhaseRunning, ""
		if err == nil && len(targets) > 0 {
			st.DiskTargets = targets
		}
	}))
}

// diskGrew is diskresize.Options.OnResize: the node agent learns from the status file how large
// the disk the guest was just given is, and puts it in the VMI's status.
func (l *Launcher) diskGrew(r diskresize.Resized) {
	if err := l.status.diskSize(r); err != nil {
		l.log.Error("report a disk's new size", "volume", r.Volume, "size", r.To, "err", err)
	}
}

// diskSize records the size the guest now sees of a disk that grew; anything else (a size
// that did not grow, or beyond the contract's bound) leaves the status as it is.
func (s *statusWriter) diskSize(r diskresize.Resized) error {
	if r.To <= r.From || r.To > launcherpod.MaxDiskSize {
		return nil
	}
	return s.update(func(st *launcherpod.Status) {
		if st.DiskSizes == nil {
			st.DiskSizes = map[string]int64{}
		}
		st.DiskSizes[r.Volume] = r.To
	})
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
