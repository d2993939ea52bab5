package vmistatus

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// statusNotifier wakes the reporter when a launcher puts a new status file in place: the
// launcher writes it to a temporary file and renames it, and an inotify watch for renames
// into each launcher's run directory sees that at once. Only renames are watched, not writes,
// so the serial console log the launcher keeps in the same directory costs nothing here.
type statusNotifier struct {
	f       *os.File
	wds     map[string]int // run directory -> watch descriptor
	changed chan struct{}
}

func newStatusNotifier() (*statusNotifier, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	n := &statusNotifier{f: os.NewFile(uintptr(fd), "inotify"), wds: map[string]int{}, changed: make(chan struct{}, 1)}
	go n.read()
	return n, nil
}

// read turns every batch of events into one wake-up; it ends when the notifier is closed.
func (n *statusNotifier) read() {
	buf := make([]byte, 16<<10)
	for {
		k, err := n.f.Read(buf)
		if err != nil {
			return
		}
		if k > 0 {
			select {
			case n.changed <- struct{}{}:
			default:
			}
		}
	}
}

// follow watches exactly dirs: new ones are added (one not made yet is tried again on the
// next call), those of launchers that went are dropped.
func (n *statusNotifier) follow(dirs []string) {
	want := make(map[string]bool, len(dirs))
	for _, d := range dirs {
		want[d] = true
		if _, ok := n.wds[d]; ok {
			continue
		}
		wd, err := unix.InotifyAddWatch(int(n.f.Fd()), d, unix.IN_MOVED_TO|unix.IN_ONLYDIR|unix.IN_DONT_FOLLOW)
		if err != nil {
			continue
		}
		n.wds[d] = wd
	}
	for d, wd := range n.wds {
		if !want[d] {
			// Gone with its directory already when the pod went: nothing to undo then.
			_, _ = unix.InotifyRmWatch(int(n.f.Fd()), uint32(wd))
			delete(n.wds, d)
		}
	}
}

func (n *statusNotifier) close() { _ = n.f.Close() }
