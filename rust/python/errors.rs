//! Python exception classes of the native core and the mapping of Rust errors onto them.

use crate::error::GlassError as RsError;
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyKeyboardInterrupt, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};
use std::panic::AssertUnwindSafe;

create_exception!(
    glass_core._core,
    GlassError,
    PyException,
    "Base class of all glass_core errors."
);

/// The exception types made at module init (they derive from both GlassError and ValueError),
/// cached so raising one never looks anything up.
pub(super) static INVALID_INPUT: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static DEGENERATE_WEIGHTS: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// An `InvalidInputError(msg, arg=arg)`: `arg` names the offending argument, so a caller (the CLI)
/// can name its own flag for it without reading the message.
pub(super) fn invalid_err(py: Python<'_>, arg: &str, msg: impl Into<String>) -> PyErr {
    let msg = msg.into();
    let Some(cls) = INVALID_INPUT.get(py) else {
        return GlassError::new_err(msg); // unreachable once the module is initialised
    };
    let kw = PyDict::new(py);
    let made = kw
        .set_item("arg", arg)
        .and_then(|()| cls.bind(py).call((msg,), Some(&kw)));
    match made {
        Ok(exc) => PyErr::from_value(exc),
        Err(e) => e,
    }
}

pub(super) fn to_py(py: Python<'_>, e: RsError) -> PyErr {
    match e {
        RsError::InvalidInput { arg, msg } => invalid_err(py, &arg, msg),
        RsError::DegenerateWeights(m) => match DEGENERATE_WEIGHTS.get(py) {
            Some(t) => PyErr::from_type(t.bind(py).clone(), m),
            None => GlassError::new_err(m), // unreachable once the module is initialised
        },
        RsError::Other(m) => GlassError::new_err(m),
        RsError::Interrupted => PyKeyboardInterrupt::new_err(()),
    }
}

pub(super) trait IntoPyResult<T> {
    fn py(self, py: Python<'_>) -> PyResult<T>;
}
impl<T> IntoPyResult<T> for crate::error::Result<T> {
    fn py(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| to_py(py, e))
    }
}

pub(super) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// `f`'s result, or a Rust panic in it turned into an error (a bug in glass_core; the last line of
/// defence, nothing should panic). Every native call goes through this: a panic must never reach
/// Python as pyo3's PanicException (a BaseException, not a GlassError).
pub(super) fn no_panic<T>(f: impl FnOnce() -> crate::error::Result<T>) -> crate::error::Result<T> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
        Err(RsError::Other(format!(
            "internal error in glass_core's native core (a bug, please report it): {}",
            panic_message(&*p)
        )))
    })
}

/// A Python exception class named `name` deriving from both `bases`.
fn make_error_type<'py>(
    py: Python<'py>,
    name: &str,
    bases: (&Bound<'py, PyAny>, &Bound<'py, PyAny>),
    doc: &str,
) -> PyResult<Bound<'py, PyType>> {
    let ns = PyDict::new(py);
    ns.set_item("__module__", "glass_core._core")?;
    ns.set_item("__doc__", doc)?;
    let made = py
        .get_type::<PyType>()
        .call1((name, PyTuple::new(py, [bases.0, bases.1])?, ns))?;
    Ok(made.cast_into::<PyType>()?)
}

/// `InvalidInputError(GlassError, ValueError)` with an `arg` attribute: the name of the offending
/// argument (None when unknown). Written in Python because a PyO3 class cannot have two
/// exception bases; it pickles with its `arg` (BaseException keeps the instance dict).
const INVALID_INPUT_SOURCE: &std::ffi::CStr = c"
class InvalidInputError(GlassError, ValueError):
    \"\"\"Bad shape, dtype, value or range of an argument; the message names the argument and
    ``arg`` holds its name (None when not known), e.g. ``InvalidInputError(msg, arg='seed')``.\"\"\"

    __module__ = 'glass_core._core'
    arg = None

    def __init__(self, *args, arg=None):
        super().__init__(*args)
        self.arg = arg
";

fn make_invalid_input_type<'py>(
    py: Python<'py>,
    base: &Bound<'py, PyType>,
) -> PyResult<Bound<'py, PyType>> {
    let ns = PyDict::new(py);
    ns.set_item("GlassError", base)?;
    py.run(INVALID_INPUT_SOURCE, Some(&ns), None)?;
    Ok(ns
        .get_item("InvalidInputError")?
        .ok_or_else(|| GlassError::new_err("InvalidInputError was not defined"))?
        .cast_into::<PyType>()?)
}

/// Add the exception classes to the module and cache the two made here for raising.
pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let base = py.get_type::<GlassError>();
    let value_error = py.get_type::<PyValueError>();
    m.add("GlassError", &base)?;
    let invalid = make_invalid_input_type(py, &base)?;
    m.add("InvalidInputError", &invalid)?;
    let _ = INVALID_INPUT.set(py, invalid.unbind());
    let degenerate = make_error_type(
        py,
        "DegenerateWeightsError",
        (base.as_any(), value_error.as_any()),
        "Log-weights that define no distribution: a NaN (message gives the first bad index) \
         or a row that is entirely -inf (message gives the row).",
    )?;
    m.add("DegenerateWeightsError", &degenerate)?;
    let _ = DEGENERATE_WEIGHTS.set(py, degenerate.unbind());
    Ok(())
}
