//! Python face of the ring: `RingBuffer` of objects, with a fast path that builds and
//! pushes a `LocalEvent` in one call (the bus's `emit`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyDict, PyList, PyString, PyTuple, PyType};
use pyo3::{ffi, PyTraverseError, PyVisit};

use crate::py_sched::is_failure;
use crate::ring::{Pushed, Ring};

const NORMAL: i64 = 1;

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

static COROUTINE_TYPE: GILOnceCell<Py<PyType>> = GILOnceCell::new();

/// Calls an async handler and takes its coroutine's first step: None when it finished
/// there (or returned something that is not a coroutine: done, as `HandlerRunner.run_here`
/// has it), else (coroutine, what it yielded) for the caller's task to resume; Err with
/// what the call or the step raised.
fn first_step<'py>(
    py: Python<'py>,
    fn_: &Bound<'py, PyAny>,
    ev: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyTuple>>> {
    let coro = fn_.call1((ev,))?;
    let coro_type = COROUTINE_TYPE.get_or_try_init(py, || -> PyResult<Py<PyType>> {
        Ok(py
            .import("types")?
            .getattr("CoroutineType")?
            .downcast_into::<PyType>()?
            .unbind())
    })?;
    if !coro.get_type().is(coro_type.bind(py)) {
        return Ok(None);
    }
    let mut out: *mut ffi::PyObject = std::ptr::null_mut();
    // SAFETY: coro is a live coroutine; PyIter_Send (stable ABI since 3.10) leaves a new
    // reference in `out` for NEXT and RETURN, and sets an exception for ERROR.
    let sent = unsafe { ffi::PyIter_Send(coro.as_ptr(), ffi::Py_None(), &mut out) };
    match sent {
        ffi::PySendResult::PYGEN_RETURN => {
            // SAFETY: a new reference (the return value), dropped right away.
            drop(unsafe { Bound::from_owned_ptr(py, out) });
            Ok(None)
        }
        ffi::PySendResult::PYGEN_NEXT => {
            // SAFETY: a new reference to what the coroutine yielded.
            let yielded = unsafe { Bound::from_owned_ptr(py, out) };
            Ok(Some(PyTuple::new(py, [coro, yielded])?))
        }
        _ => Err(PyErr::fetch(py)),
    }
}

/// An in-process event: what `LocalEventBus` handlers receive.
///
/// Deliberately not tracked by the cycle collector: tracking made every event cost a GC
/// header and triggered a generation-0 collection every 700 emits (half the bus's speed).
/// An event whose payload refers back to the event itself is therefore never freed.
#[pyclass(frozen, module = "meetq", name = "LocalEvent")]
pub struct LocalEvent {
    #[pyo3(get, name = "type")]
    event_type: Py<PyString>,
    #[pyo3(get)]
    payload: PyObject,
    #[pyo3(get)]
    source: PyObject,
    #[pyo3(get)]
    timestamp: f64,
    #[pyo3(get)]
    priority: i64,
}

impl LocalEvent {
    fn build(
        py: Python<'_>,
        event_type: Py<PyString>,
        payload: Option<PyObject>,
        source: Option<PyObject>,
        priority: i64,
    ) -> Self {
        LocalEvent {
            event_type,
            payload: payload.unwrap_or_else(|| PyDict::new(py).into_any().unbind()),
            source: source.unwrap_or_else(|| PyString::intern(py, "").into_any().unbind()),
            timestamp: now(),
            priority,
        }
    }
}

#[pymethods]
impl LocalEvent {
    #[new]
    #[pyo3(signature = (r#type, payload=None, source=None, timestamp=None, priority=NORMAL))]
    fn py_new(
        py: Python<'_>,
        r#type: Py<PyString>,
        payload: Option<PyObject>,
        source: Option<PyObject>,
        timestamp: Option<f64>,
        priority: i64,
    ) -> Self {
        let mut event = LocalEvent::build(py, r#type, payload, source, priority);
        if let Some(ts) = timestamp {
            event.timestamp = ts;
        }
        event
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "LocalEvent(type={}, source={}, priority={}, payload={})",
            self.event_type.bind(py).repr()?,
            self.source.bind(py).repr()?,
            self.priority,
            self.payload.bind(py).repr()?,
        ))
    }
}

/// Bounded MPMC ring of Python objects with strict-priority lanes and edge wake-ups.
#[pyclass(frozen, module = "meetq._meetq_rs")]
pub struct RingBuffer {
    ring: Ring<PyObject>,
    /// Called (with no arguments) by the push that ends an armed wait.
    waker: Mutex<Option<PyObject>>,
    accepted: AtomicU64,
    dropped: AtomicU64,
}

impl RingBuffer {
    fn push(&self, py: Python<'_>, lane: usize, item: PyObject) -> bool {
        match self.ring.push_lane(lane, item) {
            Ok(pushed) => {
                self.accepted.fetch_add(1, Ordering::Relaxed);
                if pushed == Pushed::Woke {
                    self.wake(py);
                }
                true
            }
            Err(_) => false,
        }
    }

    /// An `emit` that found the ring full is a drop; a refused `try_push` is not.
    fn push_event(&self, py: Python<'_>, event: LocalEvent) -> PyResult<bool> {
        let lane = event.priority as usize;
        let ok = self.push(py, lane, Py::new(py, event)?.into_any());
        if !ok {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        Ok(ok)
    }

    fn wake(&self, py: Python<'_>) {
        let waker = self
            .waker
            .lock()
            .map(|w| w.as_ref().map(|w| w.clone_ref(py)))
            .unwrap_or(None);
        if let Some(waker) = waker {
            if let Err(err) = waker.call0(py) {
                err.write_unraisable(py, Some(waker.bind(py)));
            }
        }
    }
}

#[pymethods]
impl RingBuffer {
    /// The waker usually points back at the ring's owner (bus -> ring -> waker -> bus):
    /// showing it to the cycle collector keeps such a bus collectable.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Ok(waker) = self.waker.try_lock() {
            if let Some(w) = waker.as_ref() {
                visit.call(w)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        if let Ok(mut waker) = self.waker.try_lock() {
            *waker = None;
        }
    }

    #[new]
    #[pyo3(signature = (limit, lanes=1))]
    fn py_new(limit: usize, lanes: usize) -> PyResult<Self> {
        if limit == 0 || lanes == 0 {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "limit and lanes must be positive",
            ));
        }
        Ok(RingBuffer {
            ring: Ring::with_lanes(limit, lanes),
            waker: Mutex::new(None),
            accepted: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        })
    }

    /// Stores `item` (in `lane`, clamped to the lanes there are); False when full.
    #[pyo3(signature = (item, lane=0))]
    fn try_push(&self, py: Python<'_>, item: PyObject, lane: usize) -> bool {
        self.push(py, lane, item)
    }

    /// Builds a `LocalEvent` and pushes it: the bus's `emit` in one native call.
    #[pyo3(signature = (event_type, payload=None, source=None))]
    fn emit(
        &self,
        py: Python<'_>,
        event_type: Py<PyString>,
        payload: Option<PyObject>,
        source: Option<PyObject>,
    ) -> PyResult<bool> {
        self.push_event(
            py,
            LocalEvent::build(py, event_type, payload, source, NORMAL),
        )
    }

    /// `emit` into the lane of `priority` (0 = LOW .. 3 = CRITICAL).
    #[pyo3(signature = (priority, event_type, payload=None, source=None))]
    fn emit_with_priority(
        &self,
        py: Python<'_>,
        priority: i64,
        event_type: Py<PyString>,
        payload: Option<PyObject>,
        source: Option<PyObject>,
    ) -> PyResult<bool> {
        if !(0..=3).contains(&priority) {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "priority must be 0..3, got {priority}"
            )));
        }
        self.push_event(
            py,
            LocalEvent::build(py, event_type, payload, source, priority),
        )
    }

    fn pop(&self) -> Option<PyObject> {
        self.ring.pop()
    }

    /// The bus's emit -> handler path: pops up to `max` events, one at a time (so strict
    /// priority holds even against events emitted meanwhile), and runs each through
    /// `table[event.type]` = (sync handlers, async handlers, thread handlers). Sync handlers
    /// run inline. An event with exactly one async handler and no thread handler has that
    /// handler's first step taken here, in the calling task (`first_step`): finished, it
    /// counts as processed (or failed); suspended, it is handed back as (handler,
    /// (coroutine, what it yielded)) for the calling task to resume. Otherwise each async
    /// handler goes to `start_async(event, handler)`, which returns None when it already
    /// finished, else what finishes it. Those (and thread handlers) are handed back; it
    /// stops once `budget` events are left in progress. Returns (events fully processed,
    /// failed runs, [(event, [(handler, what finishes it, or None for a thread
    /// handler)])] or None, events popped). Pure twin: `RingBuffer.dispatch` in
    /// `_pure/ring.py`.
    fn dispatch<'py>(
        &self,
        py: Python<'py>,
        max: usize,
        table: &Bound<'py, PyDict>,
        on_error: &Bound<'py, PyAny>,
        mut budget: isize,
        start_async: &Bound<'py, PyAny>,
    ) -> PyResult<(usize, usize, Option<Bound<'py, PyList>>, usize)> {
        let (mut processed, mut failed, mut popped) = (0usize, 0usize, 0usize);
        let mut pending: Option<Bound<'py, PyList>> = None;
        while popped < max && budget > 0 {
            let item = match self.ring.pop() {
                Some(item) => item,
                None => break,
            };
            popped += 1;
            let ev = item.into_bound(py);
            let entry = match ev.downcast::<LocalEvent>() {
                Ok(le) => table.get_item(le.get().event_type.bind(py))?,
                Err(_) => table.get_item(ev.getattr("type")?)?,
            };
            let entry = match entry {
                Some(entry) => entry,
                None => {
                    processed += 1;
                    continue;
                }
            };
            let entry = entry.downcast_into::<PyTuple>()?;
            for fn_ in entry.get_item(0)?.downcast_into::<PyTuple>()?.iter() {
                if let Err(err) = fn_.call1((&ev,)) {
                    if !is_failure(py, &err)? {
                        return Err(err);
                    }
                    failed += 1;
                    on_error.call1((&ev, &fn_, err.into_value(py)))?;
                }
            }
            let mut runs: Option<Bound<'py, PyList>> = None;
            let asyncs = entry.get_item(1)?.downcast_into::<PyTuple>()?;
            let threads = entry.get_item(2)?.downcast_into::<PyTuple>()?;
            if asyncs.len() == 1 && threads.is_empty() {
                // The common case, one async handler: its first step runs here, in the
                // task that called dispatch (the bus's worker, which then runs nothing
                // else until this handler is done), so a handler that never suspends
                // costs no Python frame of ours at all.
                let fn_ = asyncs.get_item(0)?;
                match first_step(py, &fn_, &ev) {
                    Ok(None) => {}
                    Ok(Some(rest)) => {
                        let run = PyTuple::new(py, [fn_.into_any(), rest.into_any()])?;
                        runs = Some(PyList::new(py, [run])?);
                    }
                    Err(err) => {
                        if !is_failure(py, &err)? {
                            return Err(err);
                        }
                        failed += 1;
                        on_error.call1((&ev, &fn_, err.into_value(py)))?;
                    }
                }
            } else {
                for fn_ in asyncs.iter() {
                    let rest = start_async.call1((&ev, &fn_))?;
                    if !rest.is_none() {
                        let run = PyTuple::new(py, [fn_, rest])?;
                        runs.get_or_insert_with(|| PyList::empty(py)).append(run)?;
                    }
                }
            }
            for fn_ in threads.iter() {
                let run = PyTuple::new(py, [fn_, py.None().into_bound(py)])?;
                runs.get_or_insert_with(|| PyList::empty(py)).append(run)?;
            }
            match runs {
                None => processed += 1,
                Some(runs) => {
                    let entry = PyTuple::new(py, [ev.into_any(), runs.into_any()])?;
                    pending
                        .get_or_insert_with(|| PyList::empty(py))
                        .append(entry)?;
                    budget -= 1;
                }
            }
        }
        Ok((processed, failed, pending, popped))
    }

    /// Up to `max` items, highest lane first, oldest first within a lane.
    fn drain<'py>(&self, py: Python<'py>, max: usize) -> PyResult<Bound<'py, PyList>> {
        let mut out = Vec::with_capacity(max.min(self.ring.len()));
        self.ring.drain_into(max, &mut out);
        PyList::new(py, out)
    }

    /// Consumer is about to sleep: True = armed (the next push calls the waker),
    /// False = items are already there.
    fn arm(&self) -> bool {
        self.ring.arm()
    }

    fn disarm(&self) {
        self.ring.disarm()
    }

    #[pyo3(signature = (waker))]
    fn set_waker(&self, waker: Option<PyObject>) {
        if let Ok(mut slot) = self.waker.lock() {
            *slot = waker;
        }
    }

    fn __len__(&self) -> usize {
        self.ring.len()
    }

    #[getter]
    fn capacity(&self) -> usize {
        self.ring.capacity()
    }

    #[getter]
    fn limit(&self) -> usize {
        self.ring.limit()
    }

    #[getter]
    fn lanes(&self) -> usize {
        self.ring.lanes()
    }

    /// Items ever accepted by a push.
    #[getter]
    fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Events `emit` refused because the ring was full.
    #[getter]
    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<LocalEvent>()?;
    m.add_class::<RingBuffer>()?;
    Ok(())
}
