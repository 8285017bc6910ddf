//! Sets pyo3's cfgs for this crate too (`Py_LIMITED_API` when built for the stable ABI,
//! `Py_3_x`), so `src/capi.rs` and the vectorcall constructor in `src/py_task.rs` can pick
//! the stable-ABI twin of the few CPython calls outside it.
fn main() {
    pyo3_build_config::use_pyo3_cfgs();
}
