//! `Task`, the scheduler's task record, as a native object: building one costs one
//! allocation (the payload dict is made on first access), and the native scheduler core
//! reads and writes its fields without attribute lookups. Pure twin: `_pure/sched.py`.

#[cfg(not(Py_LIMITED_API))]
use std::sync::atomic::{AtomicPtr, Ordering};

#[cfg(not(Py_LIMITED_API))]
use pyo3::exceptions::PyTypeError;
#[cfg(not(Py_LIMITED_API))]
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyDict, PyString, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

// Where a submitted task is (`_where`).
pub const NEW: u8 = 0;
pub const READY: u8 = 1;
pub const OVERDUE: u8 = 2;
pub const DELAYED: u8 = 3;
pub const RUNNING: u8 = 4;
pub const DONE: u8 = 5;
// Why a running task is being cancelled (`_why`; 3 = by stop(), set by the shell).
pub const NO_REASON: u8 = 0;
pub const BY_CANCEL: u8 = 1;
pub const BY_TIMEOUT: u8 = 2;
// Index of each TaskStatus member in the registered tuple.
pub const PENDING: usize = 0;
pub const PROCESSING: usize = 1;
pub const COMPLETED: usize = 2;
pub const CANCELLED: usize = 4;

/// `Priority.NORMAL` and the six `TaskStatus` members, registered once by
/// `meetq.local.scheduler` (the enums are Python classes defined there).
pub struct Enums {
    pub normal: PyObject,
    pub statuses: Vec<PyObject>,
    pub empty: PyObject,
}

static ENUMS: GILOnceCell<Enums> = GILOnceCell::new();

pub fn enums(py: Python<'_>) -> PyResult<&'static Enums> {
    ENUMS.get(py).ok_or_else(|| {
        pyo3::exceptions::PyRuntimeError::new_err("import meetq.local.scheduler first")
    })
}

#[pyfunction]
pub fn register_task_enums(
    py: Python<'_>,
    normal: PyObject,
    statuses: &Bound<'_, PyTuple>,
) -> PyResult<()> {
    if statuses.len() != 6 {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "six statuses expected",
        ));
    }
    let enums = Enums {
        normal,
        statuses: statuses.iter().map(Bound::unbind).collect(),
        empty: PyString::intern(py, "").into_any().unbind(),
    };
    // A second registration (a re-imported module) keeps the first one.
    let _ = ENUMS.set(py, enums);
    Ok(())
}

/// A unit of work: `handler(task)` runs once the task is ready and a worker is free.
///
/// `timeout` (seconds, None or 0 = none) bounds async and thread handlers; `max_retries`
/// failed attempts are retried after `retry_backoff * 2**(n-1)` seconds (with jitter).
/// `delay` (seconds) or `scheduled_at` (epoch seconds) postpone the first attempt.
/// `result` receives the handler's return value.
#[pyclass(module = "meetq", name = "Task", subclass)]
pub struct Task {
    #[pyo3(get, set, name = "type")]
    pub type_: PyObject,
    #[pyo3(get, set)]
    pub handler: PyObject,
    #[pyo3(get, set)]
    pub priority: PyObject,
    /// None until first read: most delayed tasks are cancelled before anyone looks.
    pub payload: Option<PyObject>,
    #[pyo3(get, set)]
    pub id: PyObject,
    #[pyo3(get, set)]
    pub timeout: Option<f64>,
    #[pyo3(get, set)]
    pub max_retries: i64,
    #[pyo3(get, set)]
    pub retry_count: i64,
    #[pyo3(get, set)]
    pub retry_backoff: f64,
    #[pyo3(get, set)]
    pub delay: f64,
    #[pyo3(get, set)]
    pub scheduled_at: Option<f64>,
    #[pyo3(get, set)]
    pub in_thread: bool,
    #[pyo3(get, set)]
    pub status: PyObject,
    #[pyo3(get, set)]
    pub result: PyObject,
    // Scheduler state, shown to the Python shell of the scheduler.
    #[pyo3(get, set, name = "_where")]
    pub where_: u8,
    #[pyo3(get, set, name = "_why")]
    pub why: u8,
    #[pyo3(get, set, name = "_started")]
    pub started: f64,
    #[pyo3(get, set, name = "_ended")]
    pub ended: f64,
    #[pyo3(get, set, name = "_error")]
    pub error: Option<PyObject>,
    #[pyo3(get, set, name = "_future")]
    pub future: Option<PyObject>,
    #[pyo3(get, set, name = "_waiters")]
    pub waiters: Option<PyObject>,
    /// Wheel handle of the task's delay, retry backoff or running timeout.
    pub timer: Option<u64>,
    /// The lane (0..3) `priority` resolved to at submit.
    pub lane: u8,
}

#[cfg(not(Py_LIMITED_API))]
impl Task {
    /// The same construction from vectorcall arguments (`PARAMS` order).
    fn from_slots(py: Python<'_>, slots: &[Option<Bound<'_, PyAny>>; 14]) -> PyResult<Self> {
        let obj = |i: usize| slots[i].as_ref().map(|o| o.clone().unbind());
        let float_or_none = |i: usize, default: Option<f64>| -> PyResult<Option<f64>> {
            match &slots[i] {
                None => Ok(default),
                Some(o) if o.is_none() => Ok(None),
                Some(o) => Ok(Some(o.extract()?)),
            }
        };
        let int = |i: usize| -> PyResult<i64> { slots[i].as_ref().map_or(Ok(0), |o| o.extract()) };
        let float = |i: usize, default: f64| -> PyResult<f64> {
            slots[i].as_ref().map_or(Ok(default), |o| o.extract())
        };
        Task::py_new(
            py,
            obj(0),
            obj(1),
            obj(2),
            obj(3),
            obj(4),
            float_or_none(5, Some(30.0))?,
            int(6)?,
            int(7)?,
            float(8, 1.0)?,
            float(9, 0.0)?,
            float_or_none(10, None)?,
            slots[11].as_ref().map_or(Ok(false), |o| o.extract())?,
            obj(12),
            obj(13),
        )
    }
}

#[cfg(not(Py_LIMITED_API))]
const PARAMS: [&str; 14] = [
    "type",
    "handler",
    "priority",
    "payload",
    "id",
    "timeout",
    "max_retries",
    "retry_count",
    "retry_backoff",
    "delay",
    "scheduled_at",
    "in_thread",
    "status",
    "result",
];

#[cfg(not(Py_LIMITED_API))]
static PARAM_NAMES: GILOnceCell<Vec<Py<PyString>>> = GILOnceCell::new();

#[cfg(not(Py_LIMITED_API))]
fn param_names(py: Python<'_>) -> &Vec<Py<PyString>> {
    PARAM_NAMES.get_or_init(py, || {
        PARAMS
            .iter()
            .map(|p| PyString::intern(py, p).unbind())
            .collect()
    })
}

#[cfg(not(Py_LIMITED_API))]
static TASK_TYPE: AtomicPtr<ffi::PyTypeObject> = AtomicPtr::new(std::ptr::null_mut());

#[cfg(not(Py_LIMITED_API))]
/// `Task(...)` without the tuple and dict `type.__call__` would build for the keyword
/// arguments: installed as the type's `tp_vectorcall` (subclasses do not inherit it).
unsafe extern "C" fn task_vectorcall(
    callable: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: usize,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    let py = Python::assume_gil_acquired();
    match vectorcall_new(py, callable, args, nargsf, kwnames) {
        Ok(obj) => obj,
        Err(err) => {
            err.restore(py);
            std::ptr::null_mut()
        }
    }
}

#[cfg(not(Py_LIMITED_API))]
unsafe fn vectorcall_new(
    py: Python<'_>,
    callable: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: usize,
    kwnames: *mut ffi::PyObject,
) -> PyResult<*mut ffi::PyObject> {
    let nargs = ffi::PyVectorcall_NARGS(nargsf) as usize;
    let arg = |i: usize| Bound::from_borrowed_ptr(py, *args.add(i));
    if callable.cast() != TASK_TYPE.load(Ordering::Relaxed) {
        // Not Task itself: the generic type call.
        let tuple = PyTuple::new(py, (0..nargs).map(arg))?;
        let kwargs = PyDict::new(py);
        if !kwnames.is_null() {
            let names = Bound::from_borrowed_ptr(py, kwnames).downcast_into::<PyTuple>()?;
            for (j, name) in names.iter().enumerate() {
                kwargs.set_item(name, arg(nargs + j))?;
            }
        }
        let call = ffi::PyType_Type.tp_call.expect("type has tp_call");
        let out = call(callable, tuple.as_ptr(), kwargs.as_ptr());
        return if out.is_null() {
            Err(PyErr::fetch(py))
        } else {
            Ok(out)
        };
    }
    if nargs > PARAMS.len() {
        return Err(PyTypeError::new_err(format!(
            "Task() takes at most {} positional arguments ({nargs} given)",
            PARAMS.len()
        )));
    }
    let mut slots: [Option<Bound<'_, PyAny>>; 14] = Default::default();
    for (i, slot) in slots.iter_mut().enumerate().take(nargs) {
        *slot = Some(arg(i));
    }
    if !kwnames.is_null() {
        let names = Bound::from_borrowed_ptr(py, kwnames).downcast_into::<PyTuple>()?;
        let interned = param_names(py);
        for (j, name) in names.iter().enumerate() {
            // Keyword names at a call site are interned: a pointer match is the usual case.
            let i = match interned.iter().position(|p| p.as_ptr() == name.as_ptr()) {
                Some(i) => i,
                None => {
                    let key = name.downcast::<PyString>()?.to_str()?;
                    PARAMS.iter().position(|p| *p == key).ok_or_else(|| {
                        PyTypeError::new_err(format!(
                            "Task() got an unexpected keyword argument '{key}'"
                        ))
                    })?
                }
            };
            if slots[i].is_some() {
                return Err(PyTypeError::new_err(format!(
                    "Task() got multiple values for argument '{}'",
                    PARAMS[i]
                )));
            }
            slots[i] = Some(arg(nargs + j));
        }
    }
    Ok(Py::new(py, Task::from_slots(py, &slots)?)?.into_ptr())
}

#[cfg(not(Py_LIMITED_API))]
/// Installs the vectorcall constructor on the registered `Task` type.
pub fn install_vectorcall(py: Python<'_>) {
    let tp = py.get_type::<Task>().as_type_ptr();
    TASK_TYPE.store(tp, Ordering::Relaxed);
    // SAFETY: tp is our live heap type; CPython reads tp_vectorcall when the type is
    // called (PyType_Type sets Py_TPFLAGS_HAVE_VECTORCALL with tp_vectorcall's offset).
    unsafe { (*tp).tp_vectorcall = Some(task_vectorcall) };
}

/// The stable ABI has no `tp_vectorcall` to set (capi.rs): `Task(...)` runs `__new__`.
#[cfg(Py_LIMITED_API)]
pub fn install_vectorcall(_py: Python<'_>) {}

/// What the scheduler keeps of a finished task (for `status`, `wait`, `TaskResult`): no
/// reference back into user objects, so it stays out of the cycle collector, and keeping
/// `max_results` of them costs the collector nothing.
#[pyclass(frozen, module = "meetq._meetq_rs", name = "FinishedTask")]
pub struct Finished {
    #[pyo3(get)]
    pub id: PyObject,
    #[pyo3(get)]
    pub status: PyObject,
    #[pyo3(get, name = "_error")]
    pub error: Option<PyObject>,
    #[pyo3(get, name = "_started")]
    pub started: f64,
    #[pyo3(get, name = "_ended")]
    pub ended: f64,
    /// Set when a newer task took this id in the table: eviction must not remove it.
    pub replaced: std::sync::atomic::AtomicBool,
}

#[pymethods]
impl Finished {
    #[getter(_where)]
    fn where_(&self) -> u8 {
        DONE
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "FinishedTask(id={}, status={})",
            self.id.bind(py).repr()?,
            self.status.bind(py).repr()?
        ))
    }
}

#[pymethods]
impl Task {
    #[new]
    #[pyo3(signature = (
        r#type=None, handler=None, priority=None, payload=None, id=None, timeout=Some(30.0),
        max_retries=0, retry_count=0, retry_backoff=1.0, delay=0.0, scheduled_at=None,
        in_thread=false, status=None, result=None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn py_new(
        py: Python<'_>,
        r#type: Option<PyObject>,
        handler: Option<PyObject>,
        priority: Option<PyObject>,
        payload: Option<PyObject>,
        id: Option<PyObject>,
        timeout: Option<f64>,
        max_retries: i64,
        retry_count: i64,
        retry_backoff: f64,
        delay: f64,
        scheduled_at: Option<f64>,
        in_thread: bool,
        status: Option<PyObject>,
        result: Option<PyObject>,
    ) -> PyResult<Self> {
        let e = enums(py)?;
        Ok(Task {
            type_: r#type.unwrap_or_else(|| e.empty.clone_ref(py)),
            handler: handler.unwrap_or_else(|| py.None()),
            priority: priority.unwrap_or_else(|| e.normal.clone_ref(py)),
            payload,
            id: id.unwrap_or_else(|| e.empty.clone_ref(py)),
            timeout,
            max_retries,
            retry_count,
            retry_backoff,
            delay,
            scheduled_at,
            in_thread,
            status: status.unwrap_or_else(|| e.statuses[PENDING].clone_ref(py)),
            result: result.unwrap_or_else(|| py.None()),
            where_: NEW,
            why: NO_REASON,
            started: 0.0,
            ended: 0.0,
            error: None,
            future: None,
            waiters: None,
            timer: None,
            lane: 1,
        })
    }

    #[getter]
    fn payload(&mut self, py: Python<'_>) -> PyObject {
        self.payload
            .get_or_insert_with(|| PyDict::new(py).into_any().unbind())
            .clone_ref(py)
    }

    #[setter]
    fn set_payload(&mut self, value: PyObject) {
        self.payload = Some(value);
    }

    /// The wheel handle of the task's pending timer, -1 when none.
    #[getter(_timer)]
    fn timer_handle(&self) -> i128 {
        self.timer.map_or(-1, i128::from)
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let py = slf.py();
        let t = slf.borrow();
        let r = |o: &PyObject| -> PyResult<String> { Ok(o.bind(py).repr()?.to_string()) };
        let f = |x: Option<f64>| -> PyResult<String> {
            Ok(match x {
                Some(v) => v.into_pyobject(py)?.repr()?.to_string(),
                None => "None".to_string(),
            })
        };
        let payload = match &t.payload {
            Some(p) => r(p)?,
            None => "{}".to_string(),
        };
        Ok(format!(
            "Task(type={}, handler={}, priority={}, payload={}, id={}, timeout={}, \
             max_retries={}, retry_count={}, retry_backoff={}, delay={}, scheduled_at={}, \
             in_thread={}, status={}, result={})",
            r(&t.type_)?,
            r(&t.handler)?,
            r(&t.priority)?,
            payload,
            r(&t.id)?,
            f(t.timeout)?,
            t.max_retries,
            t.retry_count,
            f(Some(t.retry_backoff))?,
            f(Some(t.delay))?,
            f(t.scheduled_at)?,
            if t.in_thread { "True" } else { "False" },
            r(&t.status)?,
            r(&t.result)?,
        ))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        for o in [
            &self.type_,
            &self.handler,
            &self.priority,
            &self.id,
            &self.status,
            &self.result,
        ] {
            visit.call(o)?;
        }
        for o in [&self.payload, &self.error, &self.future, &self.waiters]
            .into_iter()
            .flatten()
        {
            visit.call(o)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        // Breaks cycles through the handler, payload, result and futures.
        Python::with_gil(|py| {
            self.handler = py.None();
            self.result = py.None();
        });
        self.payload = None;
        self.future = None;
        self.waiters = None;
    }
}
