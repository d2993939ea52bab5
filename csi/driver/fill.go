package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/slimvirt/slimvirt/csi/claim"
	"github.com/slimvirt/slimvirt/csi/diskimg"
	"github.com/slimvirt/slimvirt/csi/state"
	"github.com/slimvirt/slimvirt/csi/voltree"
)

// jobs runs the driver's long work in the background, one goroutine per volume or snapshot
// (fills: clones, restores and imports; snapshot copies), and restarts what a killed driver
// left unfinished.
type jobs struct {
	d       *Driver
	mu      sync.Mutex
	running map[string]job
	wg      sync.WaitGroup
	base    context.Context
}

// job is one running piece of work: cancel stops it, done is closed when it has let go.
type job struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func newJobs(d *Driver) *jobs {
	return &jobs{d: d, running: map[string]job{}, base: context.Background()}
}

// resume restarts fills a previous run did not finish. An interrupted upload cannot be
// resumed by the driver: the volume goes back to waiting for its upload.
func (j *jobs) resume(ctx context.Context) {
	j.mu.Lock()
	j.base = ctx
	j.mu.Unlock()
	j.d.abandonSnapshots()
	for _, v := range j.d.store.List() {
		if v.Content.Phase != claim.PhasePopulating {
			continue
		}
		v, err := j.d.store.Update(v.ID, func(v *state.Volume) error {
			v.Content.Restarts++
			v.Content.Progress = "0.00%"
			if v.Source != nil && v.Source.Upload {
				v.Content.Phase = claim.PhasePending
				v.Content.Message = "upload interrupted by a driver restart; upload again"
			}
			return nil
		})
		if err != nil {
			j.d.log.Error("resume fill", "volume", v.ID, "err", err)
			continue
		}
		j.d.report(ctx, v)
		if v.Content.Phase == claim.PhasePopulating {
			j.d.log.Info("restarting fill", "volume", v.ID, "restarts", v.Content.Restarts)
			j.start(v)
		}
	}
}

// start fills v in the background.
func (j *jobs) start(v state.Volume) {
	j.run(v.ID, func(ctx context.Context) { j.d.fill(ctx, v) })
}

// run runs work for the volume or snapshot id in the background, unless work for id is
// already running.
func (j *jobs) run(id string, work func(context.Context)) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if _, ok := j.running[id]; ok {
		return
	}
	ctx, cancel := context.WithCancel(j.base)
	jb := job{cancel: cancel, done: make(chan struct{})}
	j.running[id] = jb
	j.wg.Add(1)
	go func() {
		defer j.wg.Done()
		defer func() {
			j.mu.Lock()
			delete(j.running, id)
			j.mu.Unlock()
			cancel()
			close(jb.done)
		}()
		work(ctx)
	}()
}

// done is closed when the work for id ends; nil when none is running.
func (j *jobs) done(id string) <-chan struct{} {
	j.mu.Lock()
	defer j.mu.Unlock()
	if jb, ok := j.running[id]; ok {
		return jb.done
	}
	return nil
}

// cancel stops the work for a volume or snapshot that is being deleted and waits (3 s at
// most) for it to let go.
func (j *jobs) cancel(id string) {
	j.mu.Lock()
	jb, ok := j.running[id]
	j.mu.Unlock()
	if !ok {
		return
	}
	jb.cancel()
	select {
	case <-jb.done:
	case <-time.After(3 * time.Second):
	}
}

func (j *jobs) stopAll() {
	j.mu.Lock()
	for _, jb := range j.running {
		jb.cancel()
	}
	j.mu.Unlock()
	j.wg.Wait()
}

// fill makes a volume's content and marks it Ready, or Failed with its space released.
func (d *Driver) fill(ctx context.Context, v state.Volume) {
	// A restarted fill may find part of an earlier attempt; start from an empty volume, unless
	// the filler continues the import it had begun (it checks disk.img and resets it itself
	// when it cannot).
	if err := d.prepareFill(v); err != nil {
		d.finishFill(ctx, v, err)
		return
	}
	progress := d.progressReporter(ctx, v.ID)
	for attempt := 0; ; attempt++ {
		var err error
		switch {
		case v.Source == nil:
		case v.Source.CloneOf != "":
			err = d.cloneFrom(ctx, v)
		case v.Source.Snapshot != "":
			err = d.restoreFrom(v)
		case v.Source.Import != nil && d.cfg.Filler != nil:
			err = d.cfg.Filler.Import(ctx, v, *v.Source.Import, progress)
		default:
			err = fmt.Errorf("volume %s has no source this driver can fill it from", v.ID)
		}
		if ctx.Err() != nil {
			return // deleted or shutting down; a restart resumes
		}
		if err == nil || permanent(err) || attempt >= maxFillRetries {
			d.finishFill(ctx, v, err)
			return
		}
		// Start over from holes after a pause; the restart is counted and shown.
		d.log.Info("fill failed, starting over", "volume", v.ID, "attempt", attempt+1, "err", err)
		if err := resetVolume(v); err != nil {
			d.finishFill(ctx, v, err)
			return
		}
		nv, uerr := d.store.Update(v.ID, func(sv *state.Volume) error {
			sv.Content.Restarts++
			sv.Content.Message = "restarted after: " + err.Error()
			return nil
		})
		if uerr == nil {
			d.report(ctx, nv)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(fillRetryDelay << attempt):
		}
	}
}

// resumer is a Filler that can continue an import a restart cut short.
type resumer interface {
	Resumes(v state.Volume) bool
}

// prepareFill empties v for a fill, keeping disk.img as it is when the filler resumes into it.
func (d *Driver) prepareFill(v state.Volume) error {
	r, ok := d.cfg.Filler.(resumer)
	if !ok || v.Source == nil || v.Source.Import == nil || !r.Resumes(v) {
		return resetVolume(v)
	}
	d.log.Info("keeping the disk for a resumed import", "volume", v.ID)
	if v.Block {
		return nil
	}
	if err := voltree.Clear(v.Dir, diskimg.Name, treeLimits(v.Size)); err != nil {
		return fmt.Errorf("empty volume %s: %w", v.Name, err)
	}
	return nil
}

const (
	maxFillRetries = 3
	fillRetryDelay = 5 * time.Second
)

// permanentError is a fill failure that trying again cannot mend.
type permanentError struct{ error }

func (e permanentError) Unwrap() error   { return e.error }
func (e permanentError) Permanent() bool { return true }

// permanent says whether retrying cannot help: the filler said so, or the pool is full.
func permanent(err error) bool {
	var p interface{ Permanent() bool }
	if errors.As(err, &p) && p.Permanent() {
		return true
	}
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// cloneFrom fills v with a copy of its source volume: the whole directory tree for a
// filesystem volume (see cloneTree), disk.img for a block volume.
func (d *Driver) cloneFrom(ctx context.Context, v state.Volume) error {
	src, err := d.store.Get(v.Source.CloneOf)
	if err != nil {
		return fmt.Errorf("clone source %s: %w", v.Source.CloneOf, err)
	}
	in, err := openDisk(src, os.O_RDONLY, "clone")
	if err != nil {
		return err
	}
	defer in.Close()
	// The source's owner can make its disk.img any length; the clone is its volume's size.
	if fi, err := in.Stat(); err != nil {
		return fmt.Errorf("stat clone source %s: %w", src.Name, err)
	} else if fi.Size() > v.Size {
		return permanentError{fmt.Errorf("volume %s: %s is %d bytes, larger than the clone's %d; refusing to clone", src.Name, diskimg.Name, fi.Size(), v.Size)}
	}
	if !v.Block {
		return d.cloneTree(ctx, src, v)
	}
	return d.copyInto(v, in, "cloned volume", "source", src.ID)
}

// restoreFrom fills v with a copy of its snapshot.
func (d *Driver) restoreFrom(v state.Volume) error {
	sn, err := d.store.GetSnapshot(v.Source.Snapshot)
	if err != nil {
		return permanentError{fmt.Errorf("restore volume %s: %w", v.Name, err)}
	}
	in, err := diskimg.Open(filepath.Dir(sn.Path), filepath.Base(sn.Path), os.O_RDONLY, 0)
	if err != nil {
		return permanentError{fmt.Errorf("open snapshot %s: %w", sn.ID, err)}
	}
	defer in.Close()
	return d.copyInto(v, in, "restored volume", "snapshot", sn.ID)
}

// copyInto makes v's disk.img a copy of in (reflinked where the filesystem can), v's size,
// and logs msg with the source's key and value.
func (d *Driver) copyInto(v state.Volume, in *os.File, msg, key, source string) error {
	out, err := openDisk(v, os.O_RDWR, "copy into")
	if err != nil {
		return err
	}
	defer out.Close()
	start := time.Now()
	reflinked, err := diskimg.CloneFile(in, out, v.Size)
	if err != nil {
		return err
	}
	d.log.Info(msg, "volume", v.ID, key, source, "reflink", reflinked, "duration", time.Since(start))
	return nil
}

// cloneTree copies the source volume's whole directory tree (disk.img and whatever pods wrote
// beside it) into v's, within v's limits, and leaves v's disk.img exactly v's size.
func (d *Driver) cloneTree(ctx context.Context, src, v state.Volume) error {
	start := time.Now()
	lim := treeLimits(v.Size)
	if err := voltree.Clear(v.Dir, "", lim); err != nil {
		return fmt.Errorf("empty volume %s: %w", v.Name, err)
	}
	st, err := voltree.Copy(ctx, src.Dir, v.Dir, voltree.Options{Limits: lim})
	if st.SocketCount > 0 {
		d.log.Info("clone leaves sockets out", "volume", v.ID, "source", src.ID, "sockets", st.SocketCount, "paths", st.Sockets)
	}
	if err != nil {
		return fmt.Errorf("clone volume %s into %s: %w", src.Name, v.Name, err)
	}
	// The walk copied what was at disk.img by then: a pod may have swapped it since the check.
	out, err := openDisk(v, os.O_RDWR, "clone into")
	if err != nil {
		return err
	}
	defer out.Close()
	fi, err := out.Stat()
	if err != nil {
		return fmt.Errorf("stat the disk of volume %s: %w", v.Name, err)
	}
	if fi.Size() > v.Size {
		return permanentError{fmt.Errorf("volume %s: %s is %d bytes, larger than the clone's %d; refusing to clone", src.Name, diskimg.Name, fi.Size(), v.Size)}
	}
	if err := out.Truncate(v.Size); err != nil {
		return fmt.Errorf("size the disk of volume %s: %w", v.Name, err)
	}
	if err := out.Sync(); err != nil {
		return fmt.Errorf("sync the disk of volume %s: %w", v.Name, err)
	}
	d.log.Info("cloned volume", "volume", v.ID, "source", src.ID, "files", st.Files, "dirs", st.Dirs, "symlinks", st.Symlinks,
		"fifos", st.FIFOs, "reflinked", st.Reflinked, "hardLinkedCopied", st.HardLinked, "bytes", st.Bytes, "duration", time.Since(start))
	return nil
}

func (d *Driver) finishFill(ctx context.Context, v state.Volume, fillErr error) {
	content := claim.Content{Phase: claim.PhaseReady, Progress: "100.0%"}
	if fillErr != nil {
		d.log.Error("fill failed", "volume", v.ID, "err", fillErr)
		// Never leave half-written data in the pool: give the space back.
		if err := resetVolume(v); err != nil {
			d.log.Error("release space of failed volume", "volume", v.ID, "err", err)
		}
		content = claim.Content{Phase: claim.PhaseFailed, Message: fillErr.Error()}
	}
	nv, err := d.store.Update(v.ID, func(sv *state.Volume) error {
		content.Restarts = sv.Content.Restarts
		if fillErr != nil {
			content.Progress = sv.Content.Progress
		}
		sv.Content = content
		return nil
	})
	if errors.Is(err, state.ErrNotFound) {
		return
	}
	if err != nil {
		d.log.Error("record fill result", "volume", v.ID, "err", err)
		return
	}
	d.report(ctx, nv)
}

// progressReporter records progress at most every 2 seconds, in state and on the PVC.
func (d *Driver) progressReporter(ctx context.Context, id string) func(float64) {
	var last time.Time
	return func(f float64) {
		if time.Since(last) < 2*time.Second && f < 1 {
			return
		}
		last = time.Now()
		if f > 1 {
			f = 1
		}
		v, err := d.store.Update(id, func(v *state.Volume) error {
			v.Content.Progress = fmt.Sprintf("%.2f%%", f*100)
			return nil
		})
		if err == nil {
			d.report(ctx, v)
		}
	}
}

// report publishes a volume's content state on its PVC, when there is a cluster to tell.
func (d *Driver) report(ctx context.Context, v state.Volume) {
	if d.cfg.Cluster == nil || v.Claim == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := d.cfg.Cluster.ReportContent(ctx, v.Claim.Namespace, v.Claim.Name, v.Content); err != nil {
		d.log.Info("report progress on PVC failed", "volume", v.ID, "pvc", v.Claim.Namespace+"/"+v.Claim.Name, "err", err)
	}
}

// WriteFunc writes a volume's content into disk (size bytes, all holes), staging in scratch
// if it must, and reports progress from 0 to 1.
type WriteFunc func(ctx context.Context, disk string, size int64, progress func(float64)) error

// Upload fills an upload volume with what write produces. It is refused unless the volume is
// waiting for its upload (or a previous upload failed); the volume is Ready only if write
// succeeds, and any failure releases the space and leaves the volume Failed until it is
// uploaded again.
func (d *Driver) Upload(ctx context.Context, id string, write WriteFunc) error {
	d.mu.Lock()
	v, err := d.store.Get(id)
	if err != nil {
		d.mu.Unlock()
		return err
	}
	if v.Source == nil || !v.Source.Upload {
		d.mu.Unlock()
		return fmt.Errorf("volume %s: %w", id, ErrNotUpload)
	}
	if v.Content.Phase != claim.PhasePending && v.Content.Phase != claim.PhaseFailed {
		d.mu.Unlock()
		return fmt.Errorf("volume %s is %s: %w", id, v.Content.Phase, ErrUploadBusy)
	}
	restarts := v.Content.Restarts
	if v.Content.Phase == claim.PhaseFailed {
		restarts++
	}
	v, err = d.store.Update(id, func(sv *state.Volume) error {
		sv.Content = claim.Content{Phase: claim.PhasePopulating, Progress: "0.00%", Restarts: restarts}
		return nil
	})
	d.mu.Unlock()
	if err != nil {
		return err
	}
	d.report(ctx, v)
	if err := resetVolume(v); err != nil {
		d.finishFill(ctx, v, err)
		return err
	}
	err = write(ctx, filepath.Join(v.Dir, diskimg.Name), v.Size, d.progressReporter(ctx, id))
	d.finishFill(ctx, v, err)
	return err
}

// Upload errors.
var (
	ErrNotUpload  = errors.New("volume does not take uploads")
	ErrUploadBusy = errors.New("an upload is running or done")
)

// VolumeForClaim finds the volume made for a PVC on this node.
func (d *Driver) VolumeForClaim(namespace, name string) (state.Volume, error) {
	for _, v := range d.store.List() {
		if v.Claim != nil && v.Claim.Namespace == namespace && v.Claim.Name == name {
			return v, nil
		}
	}
	return state.Volume{}, fmt.Errorf("PVC %s/%s: %w", namespace, name, state.ErrNotFound)
}

// Volume returns a copy of a volume's state.
func (d *Driver) Volume(id string) (state.Volume, error) { return d.store.Get(id) }
