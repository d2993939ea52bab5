package importer

import (
	"context"
	"sync"
)

const (
	// raBlock is the unit the remote file is fetched and kept in.
	raBlock = 1 << 20
	// raMax is the largest window one range request asks for; sequential reads double the
	// window up to it, a jump starts again at one block.
	raMax = 16
	// raKeep is how many blocks are kept: two windows and what was read before them. Blocks
	// still being fetched are kept beyond it.
	raKeep = 48
)

// readAhead serves reads of a remoteFile from blocks fetched in windows: qemu-img's many small
// sequential reads become a few large range requests on a kept-alive connection, fetched
// ahead of the reader while it converts.
type readAhead struct {
	file     *remoteFile
	ctx      context.Context
	cancel   context.CancelFunc
	progress func(float64)
	wg       sync.WaitGroup

	// reportMu serialises progress reports, which may be slow (they update the PVC), outside mu.
	reportMu sync.Mutex
	reported float64

	mu       sync.Mutex
	cond     *sync.Cond
	blocks   map[int64]*raEntry
	tick     uint64
	winStart int64 // first block of the last window asked for
	next     int64 // block after it
	window   int64
	inflight int
	fetched  int64
	err      error // the first failed fetch
}

type raEntry struct {
	data   []byte
	filled int
	used   uint64
	read   bool
	err    error
}

func newReadAhead(ctx context.Context, f *remoteFile, progress func(float64)) *readAhead {
	ctx, cancel := context.WithCancel(ctx)
	r := &readAhead{file: f, ctx: ctx, cancel: cancel, progress: progress, blocks: map[int64]*raEntry{}, winStart: -1}
	r.cond = sync.NewCond(&r.mu)
	return r
}

// seed keeps the first bytes of the file, read already.
func (r *readAhead) seed(head []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := int64(0); i*raBlock < int64(len(head)); i++ {
		b := head[i*raBlock : min(int64(len(head)), (i+1)*raBlock)]
		if len(b) < raBlock && int64(len(head)) < r.file.size {
			break // a partial block that is not the file's last
		}
		r.blocks[i] = &raEntry{data: append([]byte(nil), b...), filled: len(b)}
		r.fetched += int64(len(b))
	}
}

// Close stops the fetches in flight and waits for them.
func (r *readAhead) Close() {
	r.cancel()
	r.wg.Wait()
}

// failure is the first fetch that failed, or nil.
func (r *readAhead) failure() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// ReadAt fills p from off; off+len(p) is within the file.
func (r *readAhead) ReadAt(p []byte, off int64) error {
	for len(p) > 0 {
		i, in := off/raBlock, int(off%raBlock)
		n := min(len(p), raBlock-in)
		if err := r.read(p[:n], i, in); err != nil {
			return err
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

// read copies bytes in.. of block i into p, fetching the block when it is not kept.
func (r *readAhead) read(p []byte, i int64, in int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		e, ok := r.blocks[i]
		switch {
		case !ok:
			r.fetch(i)
			continue
		case e.err != nil:
			return e.err
		case e.filled >= in+len(p):
			copy(p, e.data[in:])
			r.tick++
			e.used, e.read = r.tick, true
			r.ahead(i)
			return nil
		}
		if r.ctx.Err() != nil {
			return r.ctx.Err()
		}
		r.cond.Wait()
	}
}

// ahead asks for the next window when a sequential reader at block i is half-way through the
// last one.
func (r *readAhead) ahead(i int64) {
	if i < r.winStart || i+r.window/2 < r.next || r.inflight >= 2 || r.next*raBlock >= r.file.size {
		return
	}
	if _, ok := r.blocks[r.next]; ok {
		return
	}
	r.fetch(r.next)
}

// fetch starts a window at block i: one block after a jump, twice the last window when it
// continues it. Called with mu held.
func (r *readAhead) fetch(i int64) {
	size := int64(1)
	if i == r.next {
		size = min(raMax, max(1, r.window*2))
	}
	last := (r.file.size - 1) / raBlock
	var bufs [][]byte
	var entries []*raEntry
	for j := i; j < i+size && j <= last; j++ {
		if _, ok := r.blocks[j]; ok {
			break
		}
		e := &raEntry{data: make([]byte, min(raBlock, r.file.size-j*raBlock)), used: r.tick}
		r.blocks[j] = e
		bufs, entries = append(bufs, e.data), append(entries, e)
	}
	r.winStart, r.next, r.window = i, i+int64(len(bufs)), int64(len(bufs))
	r.evict()
	r.inflight++
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		err := r.file.fetch(r.ctx, i*raBlock, bufs, func(k, n int) {
			r.mu.Lock()
			r.fetched += int64(n - entries[k].filled)
			entries[k].filled = n
			f := min(0.99, float64(r.fetched)/float64(r.file.size))
			r.mu.Unlock()
			r.cond.Broadcast()
			r.report(f)
		})
		r.mu.Lock()
		r.inflight--
		if err != nil {
			if r.err == nil {
				r.err = err
			}
			for _, e := range entries {
				if e.filled < len(e.data) {
					e.err = err
				}
			}
		}
		r.mu.Unlock()
		r.cond.Broadcast()
	}()
}

// report hands progress on, one report at a time and never backwards; 1 is said only by the
// caller, once the image is converted.
func (r *readAhead) report(f float64) {
	r.reportMu.Lock()
	defer r.reportMu.Unlock()
	if r.progress == nil || f <= r.reported {
		return
	}
	r.reported = f
	r.progress(f)
}

// evict drops complete blocks beyond raKeep: those read already, least recently read first;
// then those fetched ahead and not read yet, outside the last window. Called with mu held.
func (r *readAhead) evict() {
	for len(r.blocks) > raKeep {
		victim := r.oldest(func(i int64, e *raEntry) bool { return e.read })
		if victim < 0 {
			victim = r.oldest(func(i int64, e *raEntry) bool { return i < r.winStart || i >= r.next })
		}
		if victim < 0 {
			return
		}
		delete(r.blocks, victim)
	}
}

// oldest is the complete block that ok accepts with the oldest use, or -1.
func (r *readAhead) oldest(ok func(int64, *raEntry) bool) int64 {
	victim, oldest := int64(-1), ^uint64(0)
	for i, e := range r.blocks {
		if (e.filled == len(e.data) || e.err != nil) && e.used < oldest && ok(i, e) {
			victim, oldest = i, e.used
		}
	}
	return victim
}
