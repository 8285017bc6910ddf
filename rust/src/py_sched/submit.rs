//! The two hot calls into the books: `submit` (a task into the id table and a lane, or
//! onto the wheel when it is delayed) and `cancel` (out of wherever it waits, or its
//! running future cancelled). `SchedulerCore`'s pymethods are thin wrappers of these.

use super::*;

impl SchedulerCore {
    /// Queues `task` and returns its id (see `TaskScheduler.submit`).
    pub(super) fn submit_task(&self, py: Python<'_>, task: &Bound<'_, Task>) -> PyResult<PyObject> {
        let mut replacing: Option<Bound<'_, Finished>> = None;
        let (tid, seq, delay) = {
            let mut t = task.borrow_mut();
            let lane = t
                .priority
                .bind(py)
                .extract::<i64>()
                .ok()
                .filter(|p| (0..=3).contains(p));
            let valid = lane.is_some() && t.where_ == NEW && !t.handler.is_none(py);
            if !valid || get(&self.closed) {
                drop(t);
                self.shell.reject.call1(py, (task, false))?;
                return Err(PyRuntimeError::new_err("task rejected"));
            }
            t.lane = lane.unwrap_or(1) as u8;
            let mut seq = None;
            if !t.id.bind(py).is_truthy()? {
                let n = self.next_id.fetch_add(1, Ordering::Relaxed);
                t.id = self.id_of(py, n).into_any().unbind();
                seq = Some(n);
            } else if let Some(old) = self.table_get(py, t.id.bind(py))? {
                let live = match old.downcast::<Task>() {
                    Ok(old) => old.borrow().where_ != DONE,
                    Err(_) => {
                        // A finished task's record: the new task takes its place.
                        replacing = old.downcast_into::<Finished>().ok();
                        false
                    }
                };
                if live {
                    return Err(PyValueError::new_err(format!(
                        "task id {} is already scheduled",
                        t.id.bind(py).repr()?
                    )));
                }
            }
            t.status = enums(py)?.statuses[PENDING].clone_ref(py);
            let mut delay = None;
            if t.delay > 0.0 || t.scheduled_at.is_some() {
                let d = match t.scheduled_at {
                    Some(at) => at - wall(),
                    None => t.delay,
                };
                if d > 0.0 {
                    delay = Some(d);
                }
            }
            (t.id.clone_ref(py), seq, delay)
        };
        let put = |tid: &PyObject| match seq {
            Some(n) => self.seq_set(n, task.as_any()),
            None => self.table_set(py, tid.bind(py), task.as_any()),
        };
        let mark = |r: Option<Bound<'_, Finished>>| {
            if let Some(r) = r {
                r.get().replaced.store(true, Ordering::Relaxed);
            }
        };
        if let Some(d) = delay {
            mark(replacing);
            put(&tid)?;
            self.to_wheel_counted(py, task, ms_ceil(py, d)?, true)?;
            untrack(task);
            return Ok(tid);
        }
        {
            let mut b = self.books()?;
            if b.ready >= self.buffer_size {
                drop(b);
                self.shell.reject.call1(py, (task, true))?;
                return Err(PyRuntimeError::new_err("task rejected"));
            }
            b.total += 1;
            b.ready += 1;
            let mut t = task.borrow_mut();
            t.where_ = READY;
            let lane = t.lane as usize;
            drop(t);
            b.lanes[lane].push_back(task.clone().unbind());
        }
        mark(replacing);
        put(&tid)?;
        untrack(task);
        self.kick_inner(py)?;
        Ok(tid)
    }

    /// Cancels a waiting or running task; see `TaskScheduler.cancel`.
    pub(super) fn cancel_task(&self, py: Python<'_>, task_id: &Bound<'_, PyAny>) -> PyResult<bool> {
        let obj = match self.table_get(py, task_id)? {
            Some(obj) => obj,
            None => return Ok(false),
        };
        let task = match obj.downcast::<Task>() {
            Ok(task) => task,
            Err(_) => return Ok(false), // a finished task's record
        };
        let mut t = task.borrow_mut();
        match t.where_ {
            DONE => Ok(false),
            RUNNING => {
                let fut = t.future.as_ref().map(|f| f.clone_ref(py));
                if let Some(f) = &fut {
                    if f.call_method0(py, "done")?.is_truthy(py)? {
                        return Ok(false); // finished; its result is being recorded
                    }
                }
                if t.why == NO_REASON {
                    t.why = BY_CANCEL;
                    t.status = enums(py)?.statuses[CANCELLED].clone_ref(py);
                    drop(t);
                    if let Some(f) = fut {
                        f.call_method0(py, "cancel")?;
                    }
                }
                Ok(true)
            }
            _ => {
                let released = {
                    let mut b = self.books()?;
                    Self::unqueue_locked(&mut b, &mut t)
                };
                drop(t);
                drop(released);
                self.finish_inner(py, task, CANCELLED, Some(cancelled_text(py)))?;
                Ok(true)
            }
        }
    }
}
