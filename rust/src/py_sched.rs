//! `SchedulerCore`: the books of `TaskScheduler` (task table, priority lanes, the timer
//! wheel, counters, result eviction) and its hot paths (`submit`, `cancel`, the pump that
//! runs ready tasks with sync handlers inline, the timer callback). The Python shell in
//! `meetq/local/scheduler.py` keeps the loop timer, async and thread runs, retries and
//! waiters, and is called back for them. Pure twin: `python/meetq/_pure/sched.py`.
//!
//! Only the loop's thread calls in. The books sit behind one mutex that is never held while
//! Python code runs (a handler may submit or cancel from inside the pump); a re-entrant call
//! that still finds it taken fails with RuntimeError instead of deadlocking.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use pyo3::exceptions::{PyException, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyDict, PyList, PyString, PyType};
use pyo3::{ffi, PyTraverseError, PyVisit};

use crate::capi::is_awaitable;
use crate::py_task::*;
use crate::wheel::Wheel;

const PUMP_BATCH: usize = 512;
const NO_TIMER: u64 = u64::MAX;

fn wall() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(target_os = "linux")]
fn monotonic(_py: Python<'_>) -> PyResult<f64> {
    // What time.monotonic() reads on Linux: CLOCK_MONOTONIC.
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clk: i32, tp: *mut Timespec) -> i32;
    }
    let mut ts = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the struct we own.
    unsafe { clock_gettime(1, &mut ts) };
    Ok(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9)
}

#[cfg(not(target_os = "linux"))]
fn monotonic(py: Python<'_>) -> PyResult<f64> {
    py.import("time")?.getattr("monotonic")?.call0()?.extract()
}

/// Whole ms, rounded up, `seconds` from now on the monotonic clock.
fn ms_ceil(py: Python<'_>, seconds: f64) -> PyResult<u64> {
    Ok(((monotonic(py)? + seconds) * 1000.0).ceil() as u64)
}

fn now_ms(py: Python<'_>) -> PyResult<u64> {
    Ok((monotonic(py)? * 1000.0) as u64)
}

static CANCELLED_TEXT: GILOnceCell<PyObject> = GILOnceCell::new();

fn cancelled_text(py: Python<'_>) -> PyObject {
    CANCELLED_TEXT
        .get_or_init(py, || PyString::intern(py, "cancelled").into_any().unbind())
        .clone_ref(py)
}

static CANCELLED_ERROR: GILOnceCell<Py<PyType>> = GILOnceCell::new();

/// A handler's exception that counts as a failed run: any Exception, and CancelledError
/// raised by the handler itself. Anything else (KeyboardInterrupt, SystemExit) propagates.
pub fn is_failure(py: Python<'_>, err: &PyErr) -> PyResult<bool> {
    if err.is_instance_of::<PyException>(py) {
        return Ok(true);
    }
    let cancelled = CANCELLED_ERROR.get_or_try_init(py, || -> PyResult<Py<PyType>> {
        Ok(py
            .import("asyncio")?
            .getattr("CancelledError")?
            .downcast_into::<PyType>()?
            .unbind())
    })?;
    Ok(err.is_instance(py, cancelled.bind(py)))
}

/// A task in the scheduler's books is not tracked by the cycle collector: the books hold
/// it (so it is not garbage) and a burst of submits made every generation-0 collection
/// walk up to 700 live tasks (about a tenth of submit + cancel). It is tracked again when
/// it finishes, so a finished task in a cycle is collected as before. (A scheduler
/// dropped without `stop()` while it holds tasks whose handlers refer back to it is a
/// cycle the collector no longer sees.)
fn untrack(task: &Bound<'_, Task>) {
    let ptr = task.as_ptr();
    // SAFETY: ptr is a live GC object of ours; untracking one that is not tracked is
    // skipped.
    unsafe {
        if ffi::PyObject_GC_IsTracked(ptr) != 0 {
            ffi::PyObject_GC_UnTrack(ptr.cast());
        }
    }
}

fn retrack(task: &Bound<'_, Task>) {
    let ptr = task.as_ptr();
    // SAFETY: as in `untrack`; tracking one already tracked would abort, hence the check.
    unsafe {
        if ffi::PyObject_GC_IsTracked(ptr) == 0 {
            ffi::PyObject_GC_Track(ptr.cast());
        }
    }
}

struct Books {
    wheel: Wheel<Py<Task>>,
    lanes: [VecDeque<Py<Task>>; 4],
    overdue: VecDeque<Py<Task>>,
    done: VecDeque<Py<Finished>>,
    ready: usize,
    overdue_count: usize,
    delayed: usize,
    active: usize,
    total: u64,
    completed: u64,
    failed: u64,
    cancelled: u64,
    retried: u64,
    timer_at: u64,
}

/// Callbacks into the Python shell.
struct Shell {
    arm: PyObject,
    kick: PyObject,
    reject: PyObject,
    finished: PyObject,
    idle: PyObject,
    start_async: PyObject,
    start_thread: PyObject,
    failed: PyObject,
}

#[pyclass(frozen, module = "meetq._meetq_rs")]
pub struct SchedulerCore {
    books: Mutex<Books>,
    tasks: Py<PyDict>,
    shell: Shell,
    prefix: String,
    buffer_size: usize,
    workers: usize,
    max_results: usize,
    result_ttl: f64,
    running: AtomicBool,
    closed: AtomicBool,
    pump_scheduled: AtomicBool,
    watch_idle: AtomicBool,
    next_id: AtomicU64,
}

fn set(flag: &AtomicBool, v: bool) {
    flag.store(v, Ordering::Relaxed)
}

fn get(flag: &AtomicBool) -> bool {
    flag.load(Ordering::Relaxed)
}

impl SchedulerCore {
    fn books(&self) -> PyResult<MutexGuard<'_, Books>> {
        self.books
            .try_lock()
            .map_err(|_| PyRuntimeError::new_err("TaskScheduler re-entered from a finalizer"))
    }

    /// Calls the shell's `arm(deadline_ms)` if the loop timer must fire earlier.
    fn arm_if_earlier(&self, py: Python<'_>, deadline: Option<u64>) -> PyResult<()> {
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

    fn kick_inner(&self, py: Python<'_>) -> PyResult<()> {
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

    fn to_wheel(&self, py: Python<'_>, task: &Bound<'_, Task>, deadline: u64) -> PyResult<()> {
        self.to_wheel_counted(py, task, deadline, false)
    }

    /// Puts `task` in the wheel (counting it submitted when `new`), under one lock, and
    /// arms the loop timer if the deadline is the earliest.
    fn to_wheel_counted(
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
    fn unqueue_locked(b: &mut Books, t: &mut Task) -> Option<Py<Task>> {
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

    fn make_ready_locked(&self, b: &mut Books, task: Py<Task>, t: &mut Task) {
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

    fn refill_locked(&self, py: Python<'_>, b: &mut Books) {
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

    fn finish_inner(
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
        let tasks = self.tasks.bind(py);
        // From now on the table holds the record, not the task.
        tasks.set_item(&record.get().id, &record)?;
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
                tasks.del_item(&old.id)?;
            }
        }
        if has_waiters || get(&self.watch_idle) {
            self.shell.finished.call1(py, (task,))?;
        }
        Ok(())
    }

    /// A sync handler returned `result` (or an eager async step finished with it).
    fn complete(&self, py: Python<'_>, task: &Bound<'_, Task>, result: PyObject) -> PyResult<()> {
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

    fn run(&self, py: Python<'_>, task: &Bound<'_, Task>) -> PyResult<()> {
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
                    self.shell.start_async.call1(py, (task, result))?;
                    Ok(())
                } else {
                    self.complete(py, task, result.unbind())
                }
            }
        }
    }

    fn pump_inner(&self, py: Python<'_>) -> PyResult<()> {
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

#[pymethods]
impl SchedulerCore {
    #[new]
    #[pyo3(signature = (
        buffer_size, workers, max_results, result_ttl, prefix, start_ms, *,
        arm, kick, reject, finished, idle, start_async, start_thread, failed
    ))]
    #[allow(clippy::too_many_arguments)]
    fn py_new(
        py: Python<'_>,
        buffer_size: usize,
        workers: usize,
        max_results: usize,
        result_ttl: f64,
        prefix: String,
        start_ms: u64,
        arm: PyObject,
        kick: PyObject,
        reject: PyObject,
        finished: PyObject,
        idle: PyObject,
        start_async: PyObject,
        start_thread: PyObject,
        failed: PyObject,
    ) -> Self {
        SchedulerCore {
            books: Mutex::new(Books {
                wheel: Wheel::new(start_ms),
                lanes: Default::default(),
                overdue: VecDeque::new(),
                done: VecDeque::new(),
                ready: 0,
                overdue_count: 0,
                delayed: 0,
                active: 0,
                total: 0,
                completed: 0,
                failed: 0,
                cancelled: 0,
                retried: 0,
                timer_at: NO_TIMER,
            }),
            tasks: PyDict::new(py).unbind(),
            shell: Shell {
                arm,
                kick,
                reject,
                finished,
                idle,
                start_async,
                start_thread,
                failed,
            },
            prefix,
            buffer_size,
            workers,
            max_results,
            result_ttl,
            running: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            pump_scheduled: AtomicBool::new(false),
            watch_idle: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
        }
    }

    /// Queues `task` and returns its id (see `TaskScheduler.submit`).
    fn submit(&self, py: Python<'_>, task: &Bound<'_, Task>) -> PyResult<PyObject> {
        let tasks = self.tasks.bind(py);
        let mut replacing: Option<Bound<'_, Finished>> = None;
        let (tid, delay) = {
            let mut t = task.borrow_mut();
            let lane = t
                .priority
                .bind(py)
                .extract::<i64>()
                .ok()
                .filter(|p| (0..=3).contains(p));
            let valid = lane.is_some() && t.where_ == NEW && !t.handler.is_none(py);
            if !valid || get(&self.closed) {
                drop(t);
                self.shell.reject.call1(py, (task, false))?;
                return Err(PyRuntimeError::new_err("task rejected"));
            }
            t.lane = lane.unwrap_or(1) as u8;
            if !t.id.bind(py).is_truthy()? {
                let n = self.next_id.fetch_add(1, Ordering::Relaxed);
                t.id = PyString::new(py, &format!("{}{}", self.prefix, n))
                    .into_any()
                    .unbind();
            } else if let Some(old) = tasks.get_item(&t.id)? {
                let live = match old.downcast::<Task>() {
                    Ok(old) => old.borrow().where_ != DONE,
                    Err(_) => {
                        // A finished task's record: the new task takes its place.
                        replacing = old.downcast_into::<Finished>().ok();
                        false
                    }
                };
                if live {
                    return Err(PyValueError::new_err(format!(
                        "task id {} is already scheduled",
                        t.id.bind(py).repr()?
                    )));
                }
            }
            t.status = enums(py)?.statuses[PENDING].clone_ref(py);
            let mut delay = None;
            if t.delay > 0.0 || t.scheduled_at.is_some() {
                let d = match t.scheduled_at {
                    Some(at) => at - wall(),
                    None => t.delay,
                };
                if d > 0.0 {
                    delay = Some(d);
                }
            }
            (t.id.clone_ref(py), delay)
        };
        let mark = |r: Option<Bound<'_, Finished>>| {
            if let Some(r) = r {
                r.get().replaced.store(true, Ordering::Relaxed);
            }
        };
        if let Some(d) = delay {
            mark(replacing);
            tasks.set_item(&tid, task)?;
            self.to_wheel_counted(py, task, ms_ceil(py, d)?, true)?;
            untrack(task);
            return Ok(tid);
        }
        {
            let mut b = self.books()?;
            if b.ready >= self.buffer_size {
                drop(b);
                self.shell.reject.call1(py, (task, true))?;
                return Err(PyRuntimeError::new_err("task rejected"));
            }
            b.total += 1;
            b.ready += 1;
            let mut t = task.borrow_mut();
            t.where_ = READY;
            let lane = t.lane as usize;
            drop(t);
            b.lanes[lane].push_back(task.clone().unbind());
        }
        mark(replacing);
        tasks.set_item(&tid, task)?;
        untrack(task);
        self.kick_inner(py)?;
        Ok(tid)
    }

    /// Cancels a waiting or running task; see `TaskScheduler.cancel`.
    fn cancel(&self, py: Python<'_>, task_id: &Bound<'_, PyAny>) -> PyResult<bool> {
        let obj = match self.tasks.bind(py).get_item(task_id)? {
            Some(obj) => obj,
            None => return Ok(false),
        };
        let task = match obj.downcast::<Task>() {
            Ok(task) => task,
            Err(_) => return Ok(false), // a finished task's record
        };
        let mut t = task.borrow_mut();
        match t.where_ {
            DONE => Ok(false),
            RUNNING => {
                let fut = t.future.as_ref().map(|f| f.clone_ref(py));
                if let Some(f) = &fut {
                    if f.call_method0(py, "done")?.is_truthy(py)? {
                        return Ok(false); // finished; its result is being recorded
                    }
                }
                if t.why == NO_REASON {
                    t.why = BY_CANCEL;
                    t.status = enums(py)?.statuses[CANCELLED].clone_ref(py);
                    drop(t);
                    if let Some(f) = fut {
                        f.call_method0(py, "cancel")?;
                    }
                }
                Ok(true)
            }
            _ => {
                let released = {
                    let mut b = self.books()?;
                    Self::unqueue_locked(&mut b, &mut t)
                };
                drop(t);
                drop(released);
                self.finish_inner(py, task, CANCELLED, Some(cancelled_text(py)))?;
                Ok(true)
            }
        }
    }

    /// Records the end of a task: `status` is an index into TaskStatus.
    #[pyo3(signature = (task, status, error))]
    fn finish(
        &self,
        py: Python<'_>,
        task: &Bound<'_, Task>,
        status: usize,
        error: Option<PyObject>,
    ) -> PyResult<()> {
        if status > 5 {
            return Err(PyValueError::new_err("status index must be 0..5"));
        }
        self.finish_inner(py, task, status, error)
    }

    /// Takes a waiting task out of the books (it must be finished next).
    fn unqueue(&self, task: &Bound<'_, Task>) -> PyResult<()> {
        let released = {
            let mut b = self.books()?;
            let mut t = task.borrow_mut();
            Self::unqueue_locked(&mut b, &mut t)
        };
        drop(released);
        Ok(())
    }

    /// Empties the lanes and the overdue list (their tasks were all unqueued).
    fn clear_waiting(&self) -> PyResult<()> {
        let (lanes, overdue) = {
            let mut b = self.books()?;
            let lanes: Vec<VecDeque<Py<Task>>> = b.lanes.iter_mut().map(std::mem::take).collect();
            (lanes, std::mem::take(&mut b.overdue))
        };
        drop(lanes);
        drop(overdue);
        Ok(())
    }

    /// Starts ready tasks, highest priority first, while workers are free.
    fn pump(&self, py: Python<'_>) -> PyResult<()> {
        self.pump_inner(py)
    }

    /// Schedules the pump (once) if there is something to start.
    fn kick(&self, py: Python<'_>) -> PyResult<()> {
        self.kick_inner(py)
    }

    /// The loop timer fired: due delayed tasks become ready, due timeouts cancel their run.
    fn on_timer(&self, py: Python<'_>) -> PyResult<()> {
        let now = now_ms(py)?;
        let mut due = Vec::new();
        {
            let mut b = self.books()?;
            b.timer_at = NO_TIMER;
            b.wheel.advance(now, &mut due);
        }
        for task in due {
            let bound = task.bind(py);
            let mut t = bound.borrow_mut();
            t.timer = None;
            if t.where_ == RUNNING {
                let fut = t.future.as_ref().map(|f| f.clone_ref(py));
                if let Some(f) = fut {
                    if t.why == NO_REASON && !f.call_method0(py, "done")?.is_truthy(py)? {
                        t.why = BY_TIMEOUT;
                        drop(t);
                        f.call_method0(py, "cancel")?;
                    }
                }
            } else {
                let mut b = self.books()?;
                b.delayed -= 1;
                self.make_ready_locked(&mut b, task.clone_ref(py), &mut t);
            }
        }
        let (next, startable) = {
            let mut b = self.books()?;
            (
                b.wheel.next_deadline(),
                b.ready > 0 && b.active < self.workers,
            )
        };
        self.arm_if_earlier(py, next)?;
        if startable {
            self.pump_inner(py)?; // start due tasks now, not one loop iteration later
        }
        Ok(())
    }

    /// An async or thread run started: count it and arm its timeout.
    fn track(&self, py: Python<'_>, task: &Bound<'_, Task>, future: PyObject) -> PyResult<()> {
        let deadline = {
            let mut t = task.borrow_mut();
            t.future = Some(future);
            match t.timeout {
                Some(s) if s != 0.0 => Some(ms_ceil(py, s)?),
                _ => None,
            }
        };
        {
            let mut b = self.books()?;
            b.active += 1;
            if let Some(d) = deadline {
                task.borrow_mut().timer = Some(b.wheel.insert(d, task.clone().unbind()));
            }
        }
        self.arm_if_earlier(py, deadline)
    }

    /// An async or thread run ended: uncount it, drop its timeout; returns `_why`.
    fn settle(&self, task: &Bound<'_, Task>) -> PyResult<u8> {
        let (why, released) = {
            let mut b = self.books()?;
            let mut t = task.borrow_mut();
            b.active -= 1;
            t.future = None;
            let released = t.timer.take().and_then(|h| b.wheel.cancel(h));
            (t.why, released)
        };
        drop(released);
        Ok(why)
    }

    /// After a settled run: start more ready tasks now, or report idleness.
    fn after_settle(&self, py: Python<'_>) -> PyResult<()> {
        let ready = self.books()?.ready > 0;
        if ready && !get(&self.pump_scheduled) {
            self.pump_inner(py)
        } else {
            if get(&self.watch_idle) {
                self.shell.idle.call0(py)?;
            }
            Ok(())
        }
    }

    /// A failed attempt will be retried after `backoff` seconds.
    fn retry(&self, py: Python<'_>, task: &Bound<'_, Task>, backoff: f64) -> PyResult<()> {
        {
            let mut t = task.borrow_mut();
            t.status = enums(py)?.statuses[PENDING].clone_ref(py);
            t.why = NO_REASON;
        }
        self.books()?.retried += 1;
        self.to_wheel(py, task, ms_ceil(py, backoff)?)
    }

    /// The scheduler starts running: arm the loop timer and start ready tasks.
    fn start(&self, py: Python<'_>) -> PyResult<()> {
        set(&self.running, true);
        let next = self.books()?.wheel.next_deadline();
        self.arm_if_earlier(py, next)?;
        self.kick_inner(py)
    }

    fn halt(&self) -> PyResult<()> {
        set(&self.running, false);
        self.books()?.timer_at = NO_TIMER;
        Ok(())
    }

    fn close(&self) {
        set(&self.closed, true);
    }

    fn is_idle(&self) -> PyResult<bool> {
        let b = self.books()?;
        Ok(b.active == 0 && b.ready == 0 && b.overdue_count == 0)
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let b = self.books()?;
        let d = PyDict::new(py);
        d.set_item("total_tasks", b.total)?;
        d.set_item("completed_tasks", b.completed)?;
        d.set_item("failed_tasks", b.failed)?;
        d.set_item("cancelled_tasks", b.cancelled)?;
        d.set_item("retried_tasks", b.retried)?;
        d.set_item("active_tasks", b.active)?;
        d.set_item("delayed_tasks", b.delayed)?;
        d.set_item("pending_tasks", b.ready + b.overdue_count)?;
        Ok(d)
    }

    /// Every task by id: live ones, and finished ones until evicted.
    #[getter]
    fn tasks(&self, py: Python<'_>) -> Py<PyDict> {
        self.tasks.clone_ref(py)
    }

    /// The wheel ms the loop timer is armed for (inf when none).
    #[getter]
    fn timer_at(&self) -> PyResult<f64> {
        let at = self.books()?.timer_at;
        Ok(if at == NO_TIMER {
            f64::INFINITY
        } else {
            at as f64
        })
    }

    #[getter]
    fn running(&self) -> bool {
        get(&self.running)
    }

    #[getter]
    fn closed(&self) -> bool {
        get(&self.closed)
    }

    #[getter]
    fn pump_scheduled(&self) -> bool {
        get(&self.pump_scheduled)
    }

    #[getter]
    fn watch_idle(&self) -> bool {
        get(&self.watch_idle)
    }

    #[setter]
    fn set_watch_idle(&self, value: bool) {
        set(&self.watch_idle, value)
    }

    /// Ready tasks in pop order (highest lane first), for tests comparing the twins.
    fn ready_order<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let b = self.books()?;
        let live: Vec<Py<Task>> = (0..4)
            .rev()
            .flat_map(|l| b.lanes[l].iter())
            .filter(|t| t.bind(py).borrow().where_ == READY)
            .map(|t| t.clone_ref(py))
            .collect();
        drop(b);
        PyList::new(py, live)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.tasks)?;
        let s = &self.shell;
        for cb in [
            &s.arm,
            &s.kick,
            &s.reject,
            &s.finished,
            &s.idle,
            &s.start_async,
            &s.start_thread,
            &s.failed,
        ] {
            visit.call(cb)?;
        }
        if let Ok(b) = self.books.try_lock() {
            for t in b.wheel.items() {
                visit.call(t)?;
            }
            for t in b.lanes.iter().flatten().chain(&b.overdue) {
                visit.call(t)?;
            }
        }
        Ok(())
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Task>()?;
    install_vectorcall(m.py());
    m.add_class::<SchedulerCore>()?;
    m.add_class::<Finished>()?;
    m.add_function(wrap_pyfunction!(register_task_enums, m)?)?;
    Ok(())
}
