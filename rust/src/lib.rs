//! Native cores of meetq, exposed to Python as `meetq._meetq_rs`.
//!
//! Each structure lives in its own module as plain Rust (tested with `cargo test`);
//! the `py_*` modules are the thin pyo3 wrappers Python sees.

pub mod ring;
pub mod wheel;

#[cfg(feature = "extension-module")]
mod capi;
#[cfg(feature = "extension-module")]
mod py_event;
#[cfg(feature = "extension-module")]
mod py_sched;
#[cfg(feature = "extension-module")]
mod py_task;
#[cfg(feature = "extension-module")]
mod py_wheel;

#[cfg(feature = "extension-module")]
use pyo3::prelude::*;

#[cfg(feature = "extension-module")]
#[pymodule]
fn _meetq_rs(m: &Bound<'_, PyModule>) -> PyResult<()> {
    py_event::register(m)?;
    py_wheel::register(m)?;
    py_sched::register(m)?;
    Ok(())
}
