//! The scheduler's clocks: the monotonic clock in whole ms, which the timer wheel counts,
//! and the wall clock, for the `next_run` a caller reads.

use std::time::{SystemTime, UNIX_EPOCH};

use pyo3::prelude::*;

pub(super) fn wall() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(target_os = "linux")]
pub(super) fn monotonic(_py: Python<'_>) -> PyResult<f64> {
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
pub(super) fn monotonic(py: Python<'_>) -> PyResult<f64> {
    py.import("time")?.getattr("monotonic")?.call0()?.extract()
}

/// Whole ms, rounded up, `seconds` from now on the monotonic clock.
pub(super) fn ms_ceil(py: Python<'_>, seconds: f64) -> PyResult<u64> {
    Ok(((monotonic(py)? + seconds) * 1000.0).ceil() as u64)
}

pub(super) fn now_ms(py: Python<'_>) -> PyResult<u64> {
    Ok((monotonic(py)? * 1000.0) as u64)
}
