package reflink

import (
	"context"

	"errors"
	"io/fs"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// worker does the pool's background work, one item at a time: precache
// clones first (the next start wants them), then removals of "~" files
// (pruned revisions, stale precaches, leftovers). Its goroutine runs only
// while there is work.
type worker struct {
	p   *reflinkPool
	log zerolog.Logger // the pool's, marked background=true

	mu        sync.Mutex
	jobs      []*precacheJob
	removals  []string
	queued    map[string]bool    // paths in removals
	cancelJob context.CancelFunc // cancels the job running now, if any
	running   bool
	halted    bool          // tests: the process "crashed", drop all work
	idle      chan struct{} // closed when the worker becomes idle; replaced when it starts

	busy atomic.Int64 // nanoseconds spent working, for benchmarks
}

// backgroundKey marks the context of work done by the worker, so that its
// log lines say background=true.
type backgroundKey struct{}

// precacheJob prepares the precache of one volume. It runs at most once,
// in the worker, under the volume's lock; an operation that makes it
// useless cancels it.
type precacheJob struct {
	v         *volume
	cancelled atomic.Bool
	ctx       context.Context // set when the worker takes it
	made      atomic.Bool     // the job made the precache file
}

func newWorker(p *reflinkPool) *worker {
	idle := make(chan struct{})
	close(idle)
	return &worker{p: p, log: p.log.With().Bool("background", true).Logger(), queued: make(map[string]bool), idle: idle}
}

// precache queues a precache job.
func (w *worker) precache(j *precacheJob) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.jobs = append(w.jobs, j)
	w.kick()
}

// remove queues the removal of a "~" file; a path already queued is not
// queued twice.
func (w *worker) remove(path string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.queued[path] {
		return
	}
	w.queued[path] = true
	w.removals = append(w.removals, path)
	w.kick()
}

// kick starts the goroutine if it is not running. w.mu is held.
func (w *worker) kick() {
	if w.running {
		return
	}
	w.running = true
	w.idle = make(chan struct{})
	go w.loop()
}

func (w *worker) loop() {
	for {
		w.mu.Lock()
		var job *precacheJob
		var path string
		switch {
		case w.halted:
			w.jobs, w.removals = nil, nil
			w.running = false
			close(w.idle)
			w.mu.Unlock()
			return
		case len(w.jobs) > 0:
			job, w.jobs = w.jobs[0], w.jobs[1:]
			// Under the same lock as the dequeue, so that cancel finds the
			// job either queued or cancellable.
			job.ctx, w.cancelJob = context.WithCancel(context.WithValue(context.Background(), backgroundKey{}, true))
		case len(w.removals) > 0:
			path, w.removals = w.removals[0], w.removals[1:]
		default:
			w.running = false
			close(w.idle)
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()

		start := time.Now()
		if job != nil {
			w.runJob(job)
		} else {
			w.removeNow(path)
			w.mu.Lock()
			delete(w.queued, path)
			w.mu.Unlock()
		}
		w.busy.Add(int64(time.Since(start)))
	}
}

func (w *worker) runJob(j *precacheJob) {
	defer func() {
		w.mu.Lock()
		if w.cancelJob != nil {
			w.cancelJob()
			w.cancelJob = nil
		}
		w.mu.Unlock()
	}()
	if j.cancelled.Load() {
		return
	}
	ctx := j.ctx
	if err := j.v.lock(ctx); err != nil {
		return
	}
	defer j.v.unlock()
	if !j.cancelled.Load() {
		j.made.Store(j.v.makePrecache(ctx))
	}
}

func (w *worker) removeNow(path string) {
	start := time.Now()
	err := os.Remove(path)
	if errors.Is(err, fs.ErrNotExist) {
		return // removed meanwhile, e.g. by the volume's Remove
	}
	logOp(w.log, "remove", path, "", 0, start, err)
}

// cancel drops the queued work and stops the precache copy running now
// (the copy removes its temporary file). Nothing of it is needed for
// correctness: a start without a precache copies the image itself, and
// the next InitVolume of each volume queues its "~" files again.
func (w *worker) cancel() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, j := range w.jobs {
		j.cancelled.Store(true)
	}
	w.jobs, w.removals = nil, nil
	clear(w.queued)
	if w.cancelJob != nil {
		w.cancelJob()
	}
}

// flush waits until the worker is idle or ctx ends.
func (w *worker) flush(ctx context.Context) error {
	for {
		w.mu.Lock()
		idle, running := w.idle, w.running
		w.mu.Unlock()
		if !running {
			return nil
		}
		select {
		case <-idle:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// close waits for the queued work to finish.
func (w *worker) close() { _ = w.flush(context.Background()) }
