package testenv

import "sync"

// Warnings collects the warnings the API server sends a client whose rest.Config has it as its
// WarningHandler, for tests that check what a client is warned of (a dropped unknown field, a
// deprecated API).
type Warnings struct {
	mu   sync.Mutex
	list []string
}

// HandleWarningHeader keeps one warning (rest.WarningHandler).
func (w *Warnings) HandleWarningHeader(_ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.list = append(w.list, text)
}

// Take returns the warnings received since the last Take and forgets them.
func (w *Warnings) Take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	l := w.list
	w.list = nil
	return l
}
