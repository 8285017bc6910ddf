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
use std::sync::Mutex;

use pyo3::exceptions::{PyException, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyDict, PyList, PyType};
use pyo3::{PyTraverseError, PyVisit};

use crate::py_task::*;
use crate::wheel::Wheel;

mod books;
mod clock;
mod first_step;
mod ids;
mod submit;

use books::*;
use clock::*;
use first_step::{Runners, RunnersSlot};
use ids::Ids;

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
    ids: Ids,
    shell: Shell,
    runners: RunnersSlot,
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
            ids: Ids::new(py),
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
            runners: Mutex::new(None),
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
        self.submit_task(py, task)
    }

    /// Cancels a waiting or running task; see `TaskScheduler.cancel`.
    fn cancel(&self, py: Python<'_>, task_id: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.cancel_task(py, task_id)
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

    /// The shell's runner pool (its loop, `idle` list and `hand_over`): from now on the
    /// core takes async first steps itself where it can (`first_step.rs`).
    fn use_runners(&self, loop_: PyObject, idle: Py<PyList>, hand_over: PyObject) -> PyResult<()> {
        let mut slot = self
            .runners
            .try_lock()
            .map_err(|_| PyRuntimeError::new_err("runners busy"))?;
        *slot = Some(Runners {
            loop_,
            idle,
            hand_over,
        });
        Ok(())
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

    /// The task (or finished task's record) of an id; None when unknown or forgotten.
    fn lookup<'py>(
        &self,
        py: Python<'py>,
        task_id: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.table_get(py, task_id)
    }

    /// Every task and finished record, in the order of `tasks`.
    fn entries<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let values: Vec<Bound<'py, PyAny>> =
            self.table_items(py)?.into_iter().map(|(_, v)| v).collect();
        PyList::new(py, values)
    }

    /// A snapshot of the id table as a dict (the core's ids in number order, then the
    /// others in insertion order), for tests and introspection.
    #[getter]
    fn tasks<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in self.table_items(py)? {
            d.set_item(k, v)?;
        }
        Ok(d)
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
        self.ids.traverse(&visit)?;
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
        if let Ok(slot) = self.runners.try_lock() {
            if let Some(r) = slot.as_ref() {
                visit.call(&r.loop_)?;
                visit.call(&r.idle)?;
                visit.call(&r.hand_over)?;
            }
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
