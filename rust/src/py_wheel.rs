//! Python face of the timer wheel: `TimerWheel` of arbitrary Python objects.
//!
//! Ownership: `insert` keeps one reference to the item; `advance` moves it into the returned
//! list and `cancel` drops it, so each item is released exactly once. The class takes part
//! in garbage collection (`__traverse__` / `__clear__`) because items often refer back to
//! the scheduler that owns the wheel.

use pyo3::prelude::*;
use pyo3::types::PyList;
use pyo3::{PyTraverseError, PyVisit};

use crate::wheel::Wheel;

/// Hierarchical timer wheel (1 ms tick) holding Python objects; see `rust/src/wheel.rs`.
#[pyclass(module = "meetq._meetq_rs")]
pub struct TimerWheel {
    wheel: Wheel<PyObject>,
}

#[pymethods]
impl TimerWheel {
    #[new]
    #[pyo3(signature = (start_ms=0))]
    fn py_new(start_ms: u64) -> Self {
        TimerWheel {
            wheel: Wheel::new(start_ms),
        }
    }

    /// Adds `item` due at `deadline_ms`; returns the handle that cancels it.
    fn insert(&mut self, deadline_ms: u64, item: PyObject) -> u64 {
        self.wheel.insert(deadline_ms, item)
    }

    /// Removes the timer behind `handle`: True if it was live, False if it had fired, was
    /// cancelled, or never existed.
    fn cancel(slf: &Bound<'_, Self>, handle: u64) -> bool {
        // Drop the item only after the borrow ends: its finalizer may call back into us.
        let item = slf.borrow_mut().wheel.cancel(handle);
        item.is_some()
    }

    /// Moves the clock to `now_ms` and returns the due items in deadline order (ties in
    /// insertion order).
    fn advance<'py>(&mut self, py: Python<'py>, now_ms: u64) -> PyResult<Bound<'py, PyList>> {
        let mut out = Vec::new();
        self.wheel.advance(now_ms, &mut out);
        PyList::new(py, out)
    }

    /// The earliest deadline of the live timers, or None when the wheel is empty.
    fn next_deadline(&mut self) -> Option<u64> {
        self.wheel.next_deadline()
    }

    /// The time the wheel was last advanced to.
    #[getter]
    fn elapsed(&self) -> u64 {
        self.wheel.elapsed()
    }

    fn __len__(&self) -> usize {
        self.wheel.len()
    }

    fn __repr__(&self) -> String {
        format!(
            "TimerWheel(len={}, elapsed={})",
            self.wheel.len(),
            self.wheel.elapsed()
        )
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        for item in self.wheel.items() {
            visit.call(item)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        self.wheel = Wheel::new(self.wheel.elapsed());
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<TimerWheel>()?;
    Ok(())
}
