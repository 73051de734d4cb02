//! Running native work from Python: detached from the interpreter for large inputs,
//! interruptible by Ctrl-C, with Rust panics turned into `GlassError`.

use super::errors::{no_panic, to_py};
use crate::error::GlassError as RsError;
use crate::interrupt::{Interrupt, Never};
use pyo3::exceptions::PyKeyboardInterrupt;
use pyo3::prelude::*;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Work over at least this many float64 entries releases the GIL.
const DETACH_THRESHOLD: usize = 1 << 15;

/// The thread that imported the module: Python runs signal handlers only there (the main thread).
static SIGNAL_THREAD: OnceLock<std::thread::ThreadId> = OnceLock::new();

/// How often a detached call on the main thread asks Python whether a signal (Ctrl-C) arrived.
const SIGNAL_POLL: Duration = Duration::from_millis(5);

/// Between chunks of a detached call, re-attaches briefly (at most every SIGNAL_POLL) and runs
/// Python's signal handlers; a raised exception (KeyboardInterrupt) stops the call.
struct PySignals {
    active: bool,
    last: Mutex<Instant>,
    raised: Mutex<Option<PyErr>>,
}

impl PySignals {
    fn new() -> Self {
        Self {
            active: SIGNAL_THREAD.get() == Some(&std::thread::current().id()),
            last: Mutex::new(Instant::now()),
            raised: Mutex::new(None),
        }
    }
    fn take(&self) -> Option<PyErr> {
        self.raised.lock().ok().and_then(|mut e| e.take())
    }
}

impl Interrupt for PySignals {
    fn check(&self) -> crate::error::Result<()> {
        if !self.active {
            return Ok(());
        }
        if let Ok(mut last) = self.last.lock() {
            if last.elapsed() < SIGNAL_POLL {
                return Ok(());
            }
            *last = Instant::now();
        }
        match Python::attach(|py| py.check_signals()) {
            Ok(()) => Ok(()),
            Err(e) => {
                if let Ok(mut r) = self.raised.lock() {
                    *r = Some(e);
                }
                Err(RsError::Interrupted)
            }
        }
    }
}

/// Run native work: detached from the interpreter (other threads run) when it covers at least
/// DETACH_THRESHOLD entries, interruptible by Ctrl-C, with any Rust panic turned into a
/// `GlassError` (a bug in glass_core; the last line of defence, nothing should panic).
pub(super) fn run_native<T: Send>(
    py: Python<'_>,
    size: usize,
    f: impl FnOnce(&dyn Interrupt) -> crate::error::Result<T> + Send,
) -> PyResult<T> {
    let guarded = |intr: &dyn Interrupt| no_panic(|| f(intr));
    let signals = PySignals::new();
    let res = if size >= DETACH_THRESHOLD {
        py.detach(|| guarded(&signals))
    } else {
        guarded(&Never)
    };
    match res {
        Ok(v) => Ok(v),
        Err(RsError::Interrupted) => Err(signals
            .take()
            .unwrap_or_else(|| PyKeyboardInterrupt::new_err(()))),
        Err(e) => Err(to_py(py, e)),
    }
}

/// Record the calling thread (the importing one) as the one that runs Python's signal handlers.
pub(super) fn set_signal_thread() {
    let _ = SIGNAL_THREAD.set(std::thread::current().id());
}
