//! The only PyO3 code: thin wrappers exposing the pure-Rust modules as `glass_core._core`, one
//! submodule per concern: `errors` (exception classes, Rust error -> Python), `native` (running
//! work detached and interruptible), `convert` (reading arguments), and the bindings `weights`,
//! `smc`, `schedules`, `glass`.
//!
//! Inputs: numpy float64 arrays are read in place (C-contiguous: zero copy); float32 and
//! non-contiguous numpy arrays are converted with one copy; anything else (torch tensors on any
//! device/dtype, lists, other dtypes) is converted by `convert::to_numpy` through the object's own
//! methods and numpy.asarray (moves to CPU / casts / copies as documented there). The module
//! imports no glass_core module: it is the leaf of the package's import graph. Outputs are numpy
//! arrays (int64 indices, float64). No Rust panic crosses the boundary: all failures are Python
//! exceptions naming the argument.

mod convert;
mod errors;
mod glass;
mod native;
mod schedules;
mod smc;
mod weights;

use pyo3::exceptions::PyImportError;
use pyo3::prelude::*;
use std::panic::AssertUnwindSafe;

/// rust-numpy loads NumPy's C-API table on first use and panics if that fails (as it does when a
/// signal handler raises meanwhile: the load runs Python code); loading it here, at import, means
/// no later call can meet that failure.
fn load_numpy_api(py: Python<'_>) -> PyResult<()> {
    py.import("numpy")?;
    // SAFETY: slot 0 of the API table, a function taking no arguments
    std::panic::catch_unwind(AssertUnwindSafe(|| unsafe {
        numpy::PY_ARRAY_API.PyArray_GetNDArrayCVersion(py)
    }))
    .map(|_| ())
    .map_err(|p| {
        PyImportError::new_err(format!(
            "glass_core could not load NumPy's C API: {}",
            errors::panic_message(&*p)
        ))
    })
}

#[pymodule]
#[pyo3(name = "_core")]
fn core_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    load_numpy_api(m.py())?;
    native::set_signal_thread();
    errors::register(m)?;
    schedules::register(m)?;
    smc::register(m)?;
    glass::register(m)?;
    weights::register(m)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
