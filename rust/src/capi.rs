//! The CPython calls outside the stable ABI, each beside its stable-ABI twin. The default
//! build (one wheel per CPython version) takes the fast ones; the abi3 build (`--features
//! abi3`: pyo3 sets cfg(Py_LIMITED_API)) the twins. The other one is `Task`'s vectorcall
//! constructor (py_task.rs), which the abi3 build leaves out: `Task(...)` then goes through
//! the type's ordinary `__new__` (same arguments, same defaults, one tuple and dict more).

use pyo3::ffi;
use pyo3::prelude::*;

/// What a handler's return value asks for: run it as an awaitable, or it is the result.
#[cfg(not(Py_LIMITED_API))]
pub fn is_awaitable(obj: &Bound<'_, PyAny>) -> bool {
    let ptr = obj.as_ptr();
    // SAFETY: ptr is a live object; we read its type's async slots.
    unsafe {
        if ffi::PyCoro_CheckExact(ptr) != 0 {
            return true;
        }
        let tp = ffi::Py_TYPE(ptr);
        let am = (*tp).tp_as_async;
        !am.is_null() && (*am).am_await.is_some()
    }
}

/// The stable twin: a type identity check against the cached coroutine type, then the
/// `am_await` slot read through `PyType_GetSlot` (static types too since 3.10).
#[cfg(Py_LIMITED_API)]
pub fn is_awaitable(obj: &Bound<'_, PyAny>) -> bool {
    use pyo3::sync::GILOnceCell;
    use pyo3::types::PyType;

    static COROUTINE: GILOnceCell<Option<Py<PyType>>> = GILOnceCell::new();
    let py = obj.py();
    let coroutine = COROUTINE.get_or_init(py, || {
        let types = py.import("types").ok()?;
        let tp = types.getattr("CoroutineType").ok()?;
        Some(tp.downcast_into::<PyType>().ok()?.unbind())
    });
    // SAFETY: ptr is a live object and its type outlives it; Py_am_await names a slot.
    unsafe {
        let tp = ffi::Py_TYPE(obj.as_ptr());
        if coroutine
            .as_ref()
            .map_or(false, |c| c.as_ptr().cast() == tp)
        {
            return true;
        }
        !ffi::PyType_GetSlot(tp, ffi::Py_am_await).is_null()
    }
}
