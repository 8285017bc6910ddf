//! The core's id table: every task by id (live ones, and finished ones' records until
//! evicted). The ids the core makes are its prefix and a sequence number, so those live in
//! a map keyed by that number (one multiply to hash, no string hashing or comparing: a
//! `str`-keyed dict of up to 10,000 results cost submit + cancel about 15% in lookups);
//! any other id a caller gives a task lives in a dict. An id string that spells the
//! prefix and a canonical number maps to the number, whoever made it, so both halves never
//! hold the same id. Pure twin: the one dict of `python/meetq/_pure/sched.py`.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use pyo3::PyTraverseError;
use pyo3::PyVisit;

use super::SchedulerCore;

/// Fibonacci hashing of a sequence number: consecutive numbers spread over the buckets
/// and their top bits (hashbrown's control bytes) differ.
#[derive(Default)]
pub(super) struct SeqHasher(u64);

impl Hasher for SeqHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub(super) type SeqMap = HashMap<u64, PyObject, BuildHasherDefault<SeqHasher>>;

/// The two halves of the table.
pub(super) struct Ids {
    pub(super) seq: Mutex<SeqMap>,
    pub(super) custom: Py<PyDict>,
}

impl Ids {
    pub(super) fn new(py: Python<'_>) -> Self {
        Ids {
            seq: Mutex::new(SeqMap::default()),
            custom: PyDict::new(py).unbind(),
        }
    }

    pub(super) fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.custom)?;
        if let Ok(seq) = self.seq.try_lock() {
            for v in seq.values() {
                visit.call(v)?;
            }
        }
        Ok(())
    }
}

fn busy() -> PyErr {
    PyRuntimeError::new_err("TaskScheduler re-entered from a finalizer")
}

impl SchedulerCore {
    /// The sequence number an id spells (the prefix, then a number without leading zeros).
    pub(super) fn seq_of(&self, id: &Bound<'_, PyAny>) -> Option<u64> {
        let s = id.downcast_exact::<PyString>().ok()?;
        let text = s.to_str().ok()?;
        let digits = text.strip_prefix(self.prefix.as_str())?.as_bytes();
        if digits.is_empty() || digits.len() > 19 || digits[0] == b'0' {
            return None;
        }
        let mut n: u64 = 0;
        for &b in digits {
            if !b.is_ascii_digit() {
                return None;
            }
            n = n * 10 + u64::from(b - b'0');
        }
        Some(n)
    }

    /// The id string of sequence number `n`.
    pub(super) fn id_of<'py>(&self, py: Python<'py>, n: u64) -> Bound<'py, PyString> {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut m = n;
        loop {
            i -= 1;
            digits[i] = b'0' + (m % 10) as u8;
            m /= 10;
            if m == 0 {
                break;
            }
        }
        let mut text = String::with_capacity(self.prefix.len() + digits.len() - i);
        text.push_str(&self.prefix);
        // The digits are ASCII.
        text.extend(digits[i..].iter().map(|&b| b as char));
        PyString::new(py, &text)
    }

    pub(super) fn table_get<'py>(
        &self,
        py: Python<'py>,
        id: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        match self.seq_of(id) {
            Some(n) => self.seq_get(py, n),
            None => self.ids.custom.bind(py).get_item(id),
        }
    }

    pub(super) fn seq_get<'py>(
        &self,
        py: Python<'py>,
        n: u64,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let seq = self.ids.seq.try_lock().map_err(|_| busy())?;
        Ok(seq.get(&n).map(|v| v.bind(py).clone()))
    }

    pub(super) fn table_set(
        &self,
        py: Python<'_>,
        id: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        match self.seq_of(id) {
            Some(n) => self.seq_set(n, value),
            None => self.ids.custom.bind(py).set_item(id, value),
        }
    }

    pub(super) fn seq_set(&self, n: u64, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let old = {
            let mut seq = self.ids.seq.try_lock().map_err(|_| busy())?;
            seq.insert(n, value.clone().unbind())
        };
        drop(old); // outside the lock: freeing it may run Python code
        Ok(())
    }

    pub(super) fn table_del(&self, py: Python<'_>, id: &Bound<'_, PyAny>) -> PyResult<()> {
        match self.seq_of(id) {
            Some(n) => {
                let old = {
                    let mut seq = self.ids.seq.try_lock().map_err(|_| busy())?;
                    seq.remove(&n)
                };
                drop(old);
                Ok(())
            }
            None => self.ids.custom.bind(py).del_item(id),
        }
    }

    /// Every entry: the core's ids in number order, then the others in insertion order.
    pub(super) fn table_items<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)>> {
        let mut numbered: Vec<(u64, PyObject)> = {
            let seq = self.ids.seq.try_lock().map_err(|_| busy())?;
            seq.iter().map(|(n, v)| (*n, v.clone_ref(py))).collect()
        };
        numbered.sort_unstable_by_key(|(n, _)| *n);
        let mut items = Vec::with_capacity(numbered.len());
        for (n, v) in numbered {
            items.push((self.id_of(py, n).into_any(), v.into_bound(py)));
        }
        for (k, v) in self.ids.custom.bind(py).iter() {
            items.push((k, v));
        }
        Ok(items)
    }
}
