//! The first step of an async handler's coroutine, taken by the core inside an idle runner
//! task of the shell's `RunnerPool` (`meetq/_core/runners.py`), with no Python frame of
//! ours: the runner is made the current task and its context the current context while
//! `PyIter_Send` runs the step, so `asyncio.current_task()`, `asyncio.timeout()` and
//! context variables there are the runner's, as in `RunnerPool.first_step`. A handler that
//! never suspends is finished right here (no `StopIteration` is raised for it); one that
//! suspends is handed to its runner (`RunnerPool.hand_over`) and tracked.
//!
//! Only where it is cheap and exact: the default build (`PyContext_Enter` is outside the
//! stable ABI), an exact coroutine, an idle runner at hand and no current task (the pump
//! runs in a loop callback). Otherwise the shell's `start_async` takes the step (the abi3
//! build always does).

use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::PyList;

/// What the core needs of the shell's runner pool: the loop, the pool's idle list and its
/// `hand_over`.
pub(super) struct Runners {
    pub(super) loop_: PyObject,
    pub(super) idle: Py<PyList>,
    pub(super) hand_over: PyObject,
}

pub(super) type RunnersSlot = Mutex<Option<Runners>>;

/// How a first step ended (the abi3 build only ever declines).
#[cfg_attr(Py_LIMITED_API, allow(dead_code))]
pub(super) enum Step {
    /// The core cannot take it natively: the shell's `start_async` must.
    Declined,
    /// The coroutine returned this value.
    Returned(PyObject),
    /// It raised (already fetched: the runner's task and context were left).
    Raised(PyErr),
    /// It suspended and its runner now runs it: the runner stands for the run.
    Suspended(PyObject),
}

#[cfg(Py_LIMITED_API)]
pub(super) fn take_first_step(
    _py: Python<'_>,
    _slot: &RunnersSlot,
    _task: &Bound<'_, PyAny>,
    _coro: &Bound<'_, PyAny>,
) -> PyResult<Step> {
    Ok(Step::Declined)
}

#[cfg(not(Py_LIMITED_API))]
pub(super) use native::take_first_step;

#[cfg(not(Py_LIMITED_API))]
mod native {
    use pyo3::ffi;
    use pyo3::intern;
    use pyo3::prelude::*;
    use pyo3::sync::GILOnceCell;
    use pyo3::types::{PyDict, PyList};

    use super::{RunnersSlot, Step};

    /// asyncio's `_enter_task`, `_leave_task` and its registry of current tasks (a dict by
    /// loop, 3.11-3.13); None where that registry is gone (then the shell takes steps).
    struct Asyncio {
        enter: PyObject,
        leave: PyObject,
        current: Py<PyDict>,
    }

    static ASYNCIO: GILOnceCell<Option<Asyncio>> = GILOnceCell::new();

    fn asyncio(py: Python<'_>) -> Option<&Asyncio> {
        ASYNCIO
            .get_or_init(py, || {
                let tasks = py.import("asyncio.tasks").ok()?;
                Some(Asyncio {
                    enter: tasks.getattr("_enter_task").ok()?.unbind(),
                    leave: tasks.getattr("_leave_task").ok()?.unbind(),
                    current: tasks
                        .getattr("_current_tasks")
                        .ok()?
                        .downcast_into::<PyDict>()
                        .ok()?
                        .unbind(),
                })
            })
            .as_ref()
    }

    fn pop(idle: &Bound<'_, PyList>) -> PyResult<Option<PyObject>> {
        let n = idle.len();
        if n == 0 {
            return Ok(None);
        }
        let runner = idle.get_item(n - 1)?;
        idle.del_item(n - 1)?;
        Ok(Some(runner.unbind()))
    }

    /// Takes `coro`'s first step inside an idle runner (see the module docs).
    pub(in crate::py_sched) fn take_first_step(
        py: Python<'_>,
        slot: &RunnersSlot,
        task: &Bound<'_, PyAny>,
        coro: &Bound<'_, PyAny>,
    ) -> PyResult<Step> {
        // SAFETY: coro is a live object; an exact type check.
        if unsafe { ffi::PyCoro_CheckExact(coro.as_ptr()) } == 0 {
            return Ok(Step::Declined);
        }
        let a = match asyncio(py) {
            Some(a) => a,
            None => return Ok(Step::Declined),
        };
        let (loop_, idle, hand_over) = {
            let guard = slot
                .try_lock()
                .map_err(|_| pyo3::exceptions::PyRuntimeError::new_err("runners busy"))?;
            match guard.as_ref() {
                Some(r) => (
                    r.loop_.clone_ref(py),
                    r.idle.clone_ref(py),
                    r.hand_over.clone_ref(py),
                ),
                None => return Ok(Step::Declined),
            }
        };
        let loop_ = loop_.bind(py);
        if a.current.bind(py).get_item(loop_)?.is_some() {
            return Ok(Step::Declined); // a task runs: the shell's path handles it
        }
        let idle = idle.bind(py);
        let runner = match pop(idle)? {
            Some(r) => r,
            None => return Ok(Step::Declined), // the shell makes a new runner
        };
        let runner = runner.bind(py);
        let rtask = match runner.getattr(intern!(py, "task")) {
            Ok(t) => t,
            Err(e) => {
                idle.append(runner)?;
                return Err(e);
            }
        };
        let ctx = match runner.getattr(intern!(py, "context")) {
            Ok(c) => c,
            Err(e) => {
                idle.append(runner)?;
                return Err(e);
            }
        };
        // SAFETY: ctx is a live object; PyContext_Enter type-checks it and fails (with an
        // exception set) for a non-context or one already entered.
        if unsafe { ffi::PyContext_Enter(ctx.as_ptr()) } != 0 {
            let err = PyErr::fetch(py);
            idle.append(runner)?;
            return Err(err);
        }
        if let Err(e) = a.enter.call1(py, (loop_, &rtask)) {
            // SAFETY: entered just above, by this thread.
            unsafe { ffi::PyContext_Exit(ctx.as_ptr()) };
            idle.append(runner)?;
            return Err(e);
        }
        let mut out: *mut ffi::PyObject = std::ptr::null_mut();
        // SAFETY: coro is a live coroutine; PyIter_Send leaves a new reference in `out`
        // for NEXT and RETURN, and sets an exception for ERROR.
        let sent = unsafe { ffi::PyIter_Send(coro.as_ptr(), ffi::Py_None(), &mut out) };
        let raised = if sent == ffi::PySendResult::PYGEN_ERROR {
            Some(PyErr::fetch(py)) // before any other call, which must not see it set
        } else {
            None
        };
        let left = a.leave.call1(py, (loop_, &rtask));
        // SAFETY: the context entered above; Exit fails only if it is not the current one.
        let exited = unsafe { ffi::PyContext_Exit(ctx.as_ptr()) };
        let exit_err = if exited != 0 {
            Some(PyErr::fetch(py))
        } else {
            None
        };
        let step = match sent {
            ffi::PySendResult::PYGEN_RETURN => {
                // SAFETY: a new reference (the return value).
                Step::Returned(unsafe { PyObject::from_owned_ptr(py, out) })
            }
            ffi::PySendResult::PYGEN_NEXT => {
                // SAFETY: a new reference to what the coroutine yielded.
                let yielded = unsafe { PyObject::from_owned_ptr(py, out) };
                hand_over.call1(py, (runner, task, coro, yielded))?;
                left?;
                if let Some(e) = exit_err {
                    return Err(e);
                }
                return Ok(Step::Suspended(runner.clone().unbind()));
            }
            _ => Step::Raised(raised.unwrap_or_else(|| {
                pyo3::exceptions::PySystemError::new_err("coroutine step failed")
            })),
        };
        idle.append(runner)?;
        left?;
        if let Some(e) = exit_err {
            return Err(e);
        }
        Ok(step)
    }
}
