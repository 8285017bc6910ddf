//! The books of `SchedulerCore` and their transitions, all under its one mutex (never
//! held while Python code runs): the wheel, the priority lanes, the overdue queue, the
//! finished results, the counters, and the pump that runs ready tasks (sync handlers
//! inline, the others handed to the Python shell).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::MutexGuard;

use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::PyString;

use super::clock::*;
use super::first_step::{take_first_step, Step};
use super::{get, is_failure, set, SchedulerCore};
use crate::capi::is_awaitable;
use crate::py_task::*;
use crate::wheel::Wheel;

pub(super) const PUMP_BATCH: usize = 512;
pub(super) const NO_TIMER: u64 = u64::MAX;

static CANCELLED_TEXT: GILOnceCell<PyObject> = GILOnceCell::new();

pub(super) fn cancelled_text(py: Python<'_>) -> PyObject {
    CANCELLED_TEXT
        .get_or_init(py, || PyString::intern(py, "cancelled").into_any().unbind())
        .clone_ref(py)
}

/// A task in the scheduler's books is not tracked by the cycle collector: the books hold
/// it (so it is not garbage) and a burst of submits made every generation-0 collection
/// walk up to 700 live tasks (about a tenth of submit + cancel). It is tracked again when
/// it finishes, so a finished task in a cycle is collected as before. (A scheduler
/// dropped without `stop()` while it holds tasks whose handlers refer back to it is a
/// cycle the collector no longer sees.)
pub(super) fn untrack(task: &Bound<'_, Task>) {
    let ptr = task.as_ptr();
    // SAFETY: ptr is a live GC object of ours; untracking one that is not tracked is
    // skipped.
    unsafe {
        if ffi::PyObject_GC_IsTracked(ptr) != 0 {
            ffi::PyObject_GC_UnTrack(ptr.cast());
        }
    }
}

pub(super) fn retrack(task: &Bound<'_, Task>) {
    let ptr = task.as_ptr();
    // SAFETY: as in `untrack`; tracking one already tracked would abort, hence the check.
    unsafe {
        if ffi::PyObject_GC_IsTracked(ptr) == 0 {
            ffi::PyObject_GC_Track(ptr.cast());
        }
    }
}

pub(super) struct Books {
    pub(super) wheel: Wheel<Py<Task>>,
    pub(super) lanes: [VecDeque<Py<Task>>; 4],
    pub(super) overdue: VecDeque<Py<Task>>,
    pub(super) done: VecDeque<Py<Finished>>,
    pub(super) ready: usize,
    pub(super) overdue_count: usize,
    pub(super) delayed: usize,
    pub(super) active: usize,
    pub(super) total: u64,
    pub(super) completed: u64,
    pub(super) failed: u64,
    pub(super) cancelled: u64,
    pub(super) retried: u64,
    pub(super) timer_at: u64,
}

impl SchedulerCore {
    pub(super) fn books(&self) -> PyResult<MutexGuard<'_, Books>> {
        self.books
            .try_lock()
            .map_err(|_| PyRuntimeError::new_err("TaskScheduler re-entered from a finalizer"))
    }

    /// Calls the shell's `arm(deadline_ms)` if the loop timer must fire earlier.
    pub(super) fn arm_if_earlier(&self, py: Python<'_>, deadline: Option<u64>) -> PyResult<()> {
        let d = match deadline {
            Some(d) => d,
            None => return Ok(()),
        };
        if !get(&self.running) {
            return Ok(());
        }
        {
            let mut b = self.books()?;
            if d >= b.timer_at {
                return Ok(());
            }
            b.timer_at = d;
        }
        self.shell.arm.call1(py, (d,))?;
        Ok(())
    }

    pub(super) fn kick_inner(&self, py: Python<'_>) -> PyResult<()> {
        if get(&self.pump_scheduled) || !get(&self.running) {
            return Ok(());
        }
        {
            let b = self.books()?;
            if b.ready == 0 && b.overdue_count == 0 {
                return Ok(());
            }
        }
        set(&self.pump_scheduled, true);
        self.shell.kick.call0(py)?;
        Ok(())
    }

    pub(super) fn to_wheel(
        &self,
        py: Python<'_>,
        task: &Bound<'_, Task>,
        deadline: u64,
    ) -> PyResult<()> {
        self.to_wheel_counted(py, task, deadline, false)
    }

    /// Puts `task` in the wheel (counting it submitted when `new`), under one lock, and
    /// arms the loop timer if the deadline is the earliest.
    pub(super) fn to_wheel_counted(
        &self,
        py: Python<'_>,
        task: &Bound<'_, Task>,
        deadline: u64,
        new: bool,
    ) -> PyResult<()> {
        let arm = {
            let mut b = self.books()?;
            if new {
                b.total += 1;
            }
            let mut t = task.borrow_mut();
            t.where_ = DELAYED;
            b.delayed += 1;
            t.timer = Some(b.wheel.insert(deadline, task.clone().unbind()));
            if get(&self.running) && deadline < b.timer_at {
                b.timer_at = deadline;
                true
            } else {
                false
            }
        };
        if arm {
            self.shell.arm.call1(py, (deadline,))?;
        }
        Ok(())
    }

    /// Takes a waiting task out of the books (lanes and overdue skip it lazily); returns
    /// what the wheel held, to be dropped once the books are unlocked.
    pub(super) fn unqueue_locked(b: &mut Books, t: &mut Task) -> Option<Py<Task>> {
        let mut released = None;
        match t.where_ {
            READY => b.ready -= 1,
            OVERDUE => b.overdue_count -= 1,
            DELAYED => {
                if let Some(h) = t.timer.take() {
                    released = b.wheel.cancel(h);
                }
                b.delayed -= 1;
            }
            _ => {}
        }
        t.where_ = DONE;
        released
    }

    pub(super) fn make_ready_locked(&self, b: &mut Books, task: Py<Task>, t: &mut Task) {
        if b.ready < self.buffer_size {
            t.where_ = READY;
            b.ready += 1;
            b.lanes[t.lane as usize].push_back(task);
        } else {
            t.where_ = OVERDUE;
            b.overdue_count += 1;
            b.overdue.push_back(task);
        }
    }

    pub(super) fn refill_locked(&self, py: Python<'_>, b: &mut Books) {
        while b.ready < self.buffer_size {
            let task = match b.overdue.pop_front() {
                Some(task) => task,
                None => break,
            };
            let mut t = task.bind(py).borrow_mut();
            if t.where_ == OVERDUE {
                b.overdue_count -= 1;
                t.where_ = READY;
                b.ready += 1;
                let lane = t.lane as usize;
                drop(t);
                b.lanes[lane].push_back(task);
            }
        }
    }

    pub(super) fn finish_inner(
        &self,
        py: Python<'_>,
        task: &Bound<'_, Task>,
        status: usize,
        error: Option<PyObject>,
    ) -> PyResult<()> {
        retrack(task);
        let e = enums(py)?;
        let end = wall();
        let status_obj = e.statuses[status].clone_ref(py);
        let (record, has_waiters) = {
            let mut t = task.borrow_mut();
            t.status = status_obj.clone_ref(py);
            t.where_ = DONE;
            t.ended = end;
            let record = Finished {
                id: t.id.clone_ref(py),
                status: status_obj,
                error: error.as_ref().map(|e| e.clone_ref(py)),
                started: t.started,
                ended: end,
                replaced: AtomicBool::new(false),
            };
            t.error = error;
            (record, t.waiters.is_some())
        };
        let record = Py::new(py, record)?;
        // From now on the table holds the record, not the task.
        self.table_set(py, record.get().id.bind(py), record.bind(py).as_any())?;
        let mut evicted: Vec<Py<Finished>> = Vec::new();
        {
            let mut b = self.books()?;
            match status {
                COMPLETED => b.completed += 1,
                CANCELLED => b.cancelled += 1,
                _ => b.failed += 1,
            }
            b.done.push_back(record);
            let oldest_expired = b
                .done
                .front()
                .map_or(false, |old| old.get().ended < end - self.result_ttl);
            if b.done.len() > self.max_results || oldest_expired {
                let cutoff = end - self.result_ttl;
                let mut keep = self.max_results;
                if b.done.len() > keep {
                    keep -= keep / 8;
                }
                while let Some(old) = b.done.front() {
                    if b.done.len() <= keep && old.get().ended >= cutoff {
                        break;
                    }
                    evicted.extend(b.done.pop_front());
                }
            }
        }
        for old in evicted {
            let old = old.get();
            // Unless a newer task reused the id, the table still holds this record.
            if !old.replaced.load(Ordering::Relaxed) {
                self.table_del(py, old.id.bind(py))?;
            }
        }
        if has_waiters || get(&self.watch_idle) {
            self.shell.finished.call1(py, (task,))?;
        }
        Ok(())
    }

    /// A sync handler returned `result` (or an eager async step finished with it).
    pub(super) fn complete(
        &self,
        py: Python<'_>,
        task: &Bound<'_, Task>,
        result: PyObject,
    ) -> PyResult<()> {
        let by_cancel = {
            let mut t = task.borrow_mut();
            if t.why == BY_CANCEL {
                true
            } else {
                t.result = result;
                false
            }
        };
        if by_cancel {
            self.finish_inner(py, task, CANCELLED, Some(cancelled_text(py)))
        } else {
            self.finish_inner(py, task, COMPLETED, None)
        }
    }

    pub(super) fn run(&self, py: Python<'_>, task: &Bound<'_, Task>) -> PyResult<()> {
        let (handler, in_thread) = {
            let mut t = task.borrow_mut();
            t.where_ = RUNNING;
            t.status = enums(py)?.statuses[PROCESSING].clone_ref(py);
            if t.started == 0.0 {
                t.started = wall();
            }
            (t.handler.clone_ref(py), t.in_thread)
        };
        if in_thread {
            self.shell.start_thread.call1(py, (task,))?;
            return Ok(());
        }
        match handler.bind(py).call1((task,)) {
            Err(err) => {
                if !is_failure(py, &err)? {
                    return Err(err);
                }
                self.shell.failed.call1(py, (task, err.into_value(py)))?;
                Ok(())
            }
            Ok(result) => {
                if !result.is_none() && is_awaitable(&result) {
                    self.start_async(py, task, result)
                } else {
                    self.complete(py, task, result.unbind())
                }
            }
        }
    }

    /// A handler returned an awaitable: its first step runs natively where it can
    /// (`first_step.rs`), else in the shell.
    fn start_async(
        &self,
        py: Python<'_>,
        task: &Bound<'_, Task>,
        result: Bound<'_, PyAny>,
    ) -> PyResult<()> {
        match take_first_step(py, &self.runners, task.as_any(), &result)? {
            Step::Declined => {
                self.shell.start_async.call1(py, (task, result))?;
                Ok(())
            }
            Step::Returned(value) => self.complete(py, task, value),
            Step::Raised(err) => {
                if !is_failure(py, &err)? {
                    return Err(err);
                }
                // A handler's own CancelledError fails it too.
                self.shell.failed.call1(py, (task, err.into_value(py)))?;
                Ok(())
            }
            Step::Suspended(runner) => self.track(py, task, runner),
        }
    }

    pub(super) fn pump_inner(&self, py: Python<'_>) -> PyResult<()> {
        set(&self.pump_scheduled, false);
        if !get(&self.running) {
            return Ok(());
        }
        for _ in 0..PUMP_BATCH {
            let task = {
                let mut b = self.books()?;
                if b.ready == 0 || b.active >= self.workers {
                    drop(b);
                    if get(&self.watch_idle) {
                        self.shell.idle.call0(py)?;
                    }
                    return Ok(());
                }
                let mut found = None;
                for lane in (0..4).rev() {
                    while let Some(task) = b.lanes[lane].pop_front() {
                        if task.bind(py).borrow().where_ == READY {
                            found = Some(task);
                            break;
                        }
                        // cancelled while queued
                    }
                    if found.is_some() {
                        break;
                    }
                }
                let task = match found {
                    Some(task) => task,
                    None => {
                        return Err(PyRuntimeError::new_err(
                            "ready count out of sync with the lanes",
                        ))
                    }
                };
                b.ready -= 1;
                if b.overdue_count > 0 {
                    self.refill_locked(py, &mut b);
                }
                task
            };
            self.run(py, task.bind(py))?;
        }
        self.kick_inner(py) // let the loop breathe between batches
    }
}
