//! The only PyO3 code: thin wrappers exposing the pure-Rust modules as `glass_core._core`.
//!
//! Inputs: numpy float64 arrays are read in place (C-contiguous: zero copy); float32 and
//! non-contiguous numpy arrays are converted with one copy; anything else (torch tensors on any
//! device/dtype, lists, other dtypes) is converted by `to_numpy` through the object's own methods
//! and numpy.asarray (moves to CPU / casts / copies as documented there). The module imports no
//! glass_core module: it is the leaf of the package's import graph. Outputs are numpy arrays (int64 indices, float64).
//! No Rust panic crosses the boundary: all failures are Python exceptions naming the argument.

use crate::error::GlassError as RsError;
use crate::genealogy::{ResampleMode, SmcState};
use crate::glass;
use crate::interrupt::{Interrupt, Never};
use crate::resample::{resample_log_weights, Scheme, Seeds};
use crate::schedule::{self, Schedule, VpTable};
use crate::weights;
use numpy::ndarray::{Array2, Array3, ArrayD, IxDyn};
use numpy::{
    PyArray1, PyArray2, PyArray3, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyImportError, PyKeyboardInterrupt, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple, PyType,
};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, TryLockError};
use std::time::{Duration, Instant};

create_exception!(
    glass_core._core,
    GlassError,
    PyException,
    "Base class of all glass_core errors."
);

/// Work over at least this many float64 entries releases the GIL.
const DETACH_THRESHOLD: usize = 1 << 15;

/// The exception types made at module init (they derive from both GlassError and ValueError),
/// cached so raising one never looks anything up.
static INVALID_INPUT: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static DEGENERATE_WEIGHTS: PyOnceLock<Py<PyType>> = PyOnceLock::new();

fn py_err_cached(py: Python<'_>, cell: &PyOnceLock<Py<PyType>>, msg: String) -> PyErr {
    match cell.get(py) {
        Some(t) => PyErr::from_type(t.bind(py).clone(), msg),
        None => GlassError::new_err(msg), // unreachable once the module is initialised
    }
}

fn invalid_err(py: Python<'_>, msg: impl Into<String>) -> PyErr {
    py_err_cached(py, &INVALID_INPUT, msg.into())
}

fn to_py(py: Python<'_>, e: RsError) -> PyErr {
    match e {
        RsError::InvalidInput(m) => py_err_cached(py, &INVALID_INPUT, m),
        RsError::DegenerateWeights(m) => py_err_cached(py, &DEGENERATE_WEIGHTS, m),
        RsError::Other(m) => GlassError::new_err(m),
        RsError::Interrupted => PyKeyboardInterrupt::new_err(()),
    }
}

trait IntoPyResult<T> {
    fn py(self, py: Python<'_>) -> PyResult<T>;
}
impl<T> IntoPyResult<T> for crate::error::Result<T> {
    fn py(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| to_py(py, e))
    }
}

// ------------------------------------------------------------------------------------------------
// array input

/// A float64 view of an input: borrowed from numpy when possible, else an owned copy (C order).
enum FloatInput<'py> {
    Borrowed(PyReadonlyArrayDyn<'py, f64>),
    Owned(Vec<f64>, Vec<usize>),
}

impl FloatInput<'_> {
    fn slice(&self) -> &[f64] {
        match self {
            // only constructed when C-contiguous
            FloatInput::Borrowed(a) => a.as_slice().unwrap_or(&[]),
            FloatInput::Owned(v, _) => v,
        }
    }
    fn shape(&self) -> Vec<usize> {
        match self {
            FloatInput::Borrowed(a) => a.shape().to_vec(),
            FloatInput::Owned(_, s) => s.clone(),
        }
    }
}

fn from_numpy<'py>(obj: &Bound<'py, PyAny>) -> Option<FloatInput<'py>> {
    if let Ok(a) = obj.cast::<PyArrayDyn<f64>>() {
        if let Ok(ro) = a.try_readonly() {
            if a.is_c_contiguous() && ro.as_slice().is_ok() {
                return Some(FloatInput::Borrowed(ro));
            }
            let shape = ro.shape().to_vec();
            return Some(FloatInput::Owned(
                ro.as_array().iter().copied().collect(),
                shape,
            ));
        }
    }
    if let Ok(a) = obj.cast::<PyArrayDyn<f32>>() {
        if let Ok(ro) = a.try_readonly() {
            let shape = ro.shape().to_vec();
            return Some(FloatInput::Owned(
                ro.as_array().iter().map(|&x| x as f64).collect(),
                shape,
            ));
        }
    }
    None
}

/// numpy.asarray, looked up once: the one Python function the bindings call (numpy is the array
/// library every input is read through; no glass_core module is imported).
static NP_ASARRAY: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn asarray<'py>(obj: &Bound<'py, PyAny>, float64: bool) -> PyResult<Bound<'py, PyAny>> {
    let py = obj.py();
    let f = NP_ASARRAY.import(py, "numpy", "asarray")?;
    if !float64 {
        return f.call1((obj,));
    }
    let kw = PyDict::new(py);
    kw.set_item("dtype", "float64")?;
    kw.set_item("order", "C")?;
    f.call((obj,), Some(&kw))
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_default()
}

fn is_torch_tensor(obj: &Bound<'_, PyAny>) -> bool {
    let module = obj.get_type().module().map(|m| m.to_string());
    module.is_ok_and(|m| m.starts_with("torch")) && obj.hasattr("detach").unwrap_or(false)
}

fn truthy(obj: &Bound<'_, PyAny>, method: &str) -> PyResult<bool> {
    obj.call_method0(method)?.is_truthy()
}

/// A torch tensor as a numpy array, by the tensor's own methods: detached; moved to the CPU (one
/// device-to-host copy, which synchronises the device); bf16/fp16 cast to float32 (numpy has no
/// bf16); integer/bool cast to float64; non-contiguous copied.
fn torch_to_numpy<'py>(x: &Bound<'py, PyAny>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    let py = x.py();
    let mut t = x.call_method0("detach")?;
    if truthy(&t, "is_complex")? {
        let dtype = t.getattr("dtype")?.str()?;
        return Err(invalid_err(
            py,
            format!("{name} must be real-valued, got a complex tensor ({dtype})"),
        ));
    }
    if t.getattr("device")?.getattr("type")?.extract::<String>()? != "cpu" {
        t = t.call_method1("to", ("cpu",))?;
    }
    let dtype = t.getattr("dtype")?.str()?.to_string();
    if dtype == "torch.bfloat16" || dtype == "torch.float16" {
        t = t.call_method0("float")?;
    } else if !truthy(&t, "is_floating_point")? {
        t = t.call_method0("double")?;
    }
    if !truthy(&t, "is_contiguous")? {
        t = t.call_method0("contiguous")?;
    }
    match t.call_method0("numpy") {
        Ok(a) => Ok(a),
        Err(_) => asarray(&t.call_method0("tolist")?, true), // a tensor numpy cannot view
    }
}

/// Any array-like as a float64 (or native float32) numpy array; errors name `name`. Torch
/// tensors: see [`torch_to_numpy`]; numpy arrays of other real dtypes (float16, integers, bool,
/// big-endian floats) are cast; sequences and scalars go through numpy.asarray; complex values,
/// strings and objects that do not convert raise InvalidInputError.
fn to_numpy<'py>(x: &Bound<'py, PyAny>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    let py = x.py();
    let arr = if is_torch_tensor(x) {
        match torch_to_numpy(x, name) {
            Ok(a) => a,
            Err(e) if INVALID_INPUT.get(py).is_some_and(|t| e.get_type(py).is(t)) => return Err(e),
            Err(e) => {
                let dtype = x
                    .getattr("dtype")
                    .and_then(|d| d.str().map(|s| s.to_string()));
                let device = x
                    .getattr("device")
                    .and_then(|d| d.str().map(|s| s.to_string()));
                return Err(invalid_err(
                    py,
                    format!(
                        "{name}: cannot read a {} tensor on {} as float64: {}",
                        dtype.unwrap_or_default(),
                        device.unwrap_or_default(),
                        e.value(py)
                    ),
                ));
            }
        }
    } else if x.cast::<PyUntypedArray>().is_ok() {
        x.clone()
    } else {
        if x.is_instance_of::<PyString>() || x.is_instance_of::<PyBytes>() {
            return Err(invalid_err(
                py,
                format!("{name} must be an array of floats, got {}", type_name(x)),
            ));
        }
        asarray(x, false).map_err(|e| {
            invalid_err(
                py,
                format!(
                    "{name} must be an array of floats, got {}: {}",
                    type_name(x),
                    e.value(py)
                ),
            )
        })?
    };
    let dtype = arr.getattr("dtype")?;
    let kind = dtype.getattr("kind")?.extract::<String>()?;
    if kind == "f"
        && dtype.getattr("itemsize")?.extract::<usize>()? == 4
        && dtype.getattr("isnative")?.is_truthy()?
    {
        return Ok(arr);
    }
    if kind == "c" {
        return Err(invalid_err(
            py,
            format!("{name} must be real-valued, got dtype {}", dtype.str()?),
        ));
    }
    if !"fiub".contains(kind.as_str()) {
        return Err(invalid_err(
            py,
            format!(
                "{name} must be an array of floats, got dtype {} ({})",
                dtype.str()?,
                type_name(x)
            ),
        ));
    }
    asarray(&arr, true)
}

/// Read any array-like as float64 (see [`to_numpy`]); errors name `name`.
fn float_input<'py>(obj: &Bound<'py, PyAny>, name: &str) -> PyResult<FloatInput<'py>> {
    if let Some(x) = from_numpy(obj) {
        return Ok(x);
    }
    let py = obj.py();
    let conv = to_numpy(obj, name)?;
    match from_numpy(&conv) {
        Some(x) => Ok(x),
        None => Err(invalid_err(
            py,
            format!("{name} could not be converted to a float64 array"),
        )),
    }
}

/// 1-D [N] or 2-D [B, N] weights; returns (input, B, N, was_2d).
fn weights_input<'py>(
    obj: &Bound<'py, PyAny>,
    name: &str,
) -> PyResult<(FloatInput<'py>, usize, usize, bool)> {
    let x = float_input(obj, name)?;
    let shape = x.shape();
    match shape.len() {
        1 => {
            let n = shape[0];
            Ok((x, 1, n, false))
        }
        2 => {
            let (b, n) = (shape[0], shape[1]);
            if b == 0 {
                return Err(invalid_err(
                    obj.py(),
                    format!("{name} must have at least one row, got shape {shape:?}"),
                ));
            }
            Ok((x, b, n, true))
        }
        _ => Err(invalid_err(
            obj.py(),
            format!("{name} must be 1-D [N] or 2-D [B, N], got shape {shape:?}"),
        )),
    }
}

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

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// `f`'s result, or a Rust panic in it turned into an error (a bug in glass_core; the last line of
/// defence, nothing should panic). Every native call goes through this: a panic must never reach
/// Python as pyo3's PanicException (a BaseException, not a GlassError).
fn no_panic<T>(f: impl FnOnce() -> crate::error::Result<T>) -> crate::error::Result<T> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
        Err(RsError::Other(format!(
            "internal error in glass_core's native core (a bug, please report it): {}",
            panic_message(&*p)
        )))
    })
}

/// Run native work: detached from the interpreter (other threads run) when it covers at least
/// DETACH_THRESHOLD entries, interruptible by Ctrl-C, with any Rust panic turned into a
/// `GlassError` (a bug in glass_core; the last line of defence, nothing should panic).
fn run_native<T: Send>(
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

fn array2_i64(
    py: Python<'_>,
    v: Vec<i64>,
    b: usize,
    n: usize,
) -> PyResult<Bound<'_, PyArray2<i64>>> {
    let a = Array2::from_shape_vec((b, n), v)
        .map_err(|e| GlassError::new_err(format!("internal shape error: {e}")))?;
    Ok(PyArray2::from_owned_array(py, a))
}

fn parse_seeds(py: Python<'_>, seed: &Bound<'_, PyAny>, name: &str) -> PyResult<Seeds> {
    if seed.is_none() {
        return Err(invalid_err(
            py,
            format!("{name} is required (an int or a sequence of ints)"),
        ));
    }
    if seed.is_instance_of::<PyBool>()
        || seed.is_instance_of::<PyBytes>()
        || seed.is_instance_of::<PyByteArray>()
    {
        return Err(invalid_err(
            py,
            format!(
                "{name} must be an int or a sequence of ints, got {}",
                seed.repr().map(|r| r.to_string()).unwrap_or_default()
            ),
        ));
    }
    if seed.is_instance_of::<PyInt>()
        || seed.hasattr("__index__").unwrap_or(false) && !seed.hasattr("__len__").unwrap_or(false)
    {
        return match seed.extract::<u64>() {
            Ok(s) => Ok(Seeds::Single(s)),
            Err(_) => Err(invalid_err(
                py,
                format!(
                    "{name} must be an integer in [0, 2**64), got {}",
                    seed.repr().map(|r| r.to_string()).unwrap_or_default()
                ),
            )),
        };
    }
    if seed.is_instance_of::<PyString>() {
        return Err(invalid_err(
            py,
            format!("{name} must be an int or a sequence of ints, got a str"),
        ));
    }
    // a bool is an int to Python (True == 1) but never meant as a seed: refused here as above
    let has_bool = match seed.getattr("dtype") {
        Ok(d) => d.getattr("kind").is_ok_and(|k| k.eq("b").unwrap_or(false)),
        Err(_) => seed.try_iter().is_ok_and(|items| {
            items.flatten().any(|v| {
                // Python's bool and numpy's bool_ (named "bool" since numpy 2)
                v.get_type()
                    .name()
                    .is_ok_and(|n| n == "bool" || n == "bool_")
            })
        }),
    };
    if has_bool {
        return Err(invalid_err(
            py,
            format!("{name} must be an int or a sequence of ints, got bools"),
        ));
    }
    match seed.extract::<Vec<u64>>() {
        Ok(v) => Ok(Seeds::PerRow(v)),
        Err(_) => Err(invalid_err(
            py,
            format!("{name} must be an int or a sequence of ints in [0, 2**64)"),
        )),
    }
}

/// A size argument: a Python int (or an integer-like such as numpy.int64, not a bool) >= `min`;
/// anything else is an InvalidInputError naming `name`. Whether the size fits in memory is
/// checked where it is used (see `limits`).
fn size_arg(obj: &Bound<'_, PyAny>, name: &str, min: u64) -> PyResult<usize> {
    let py = obj.py();
    let repr = || obj.repr().map(|r| r.to_string()).unwrap_or_default();
    let is_int = !obj.is_instance_of::<PyBool>()
        && (obj.is_instance_of::<PyInt>() || obj.hasattr("__index__").unwrap_or(false));
    if !is_int {
        return Err(invalid_err(
            py,
            format!("{name} must be an int >= {min}, got {}", repr()),
        ));
    }
    match obj.extract::<u64>() {
        Ok(v) if v >= min => usize::try_from(v)
            .map_err(|_| invalid_err(py, format!("{name} = {v} is too large for this platform"))),
        Ok(v) => Err(invalid_err(py, format!("{name} must be >= {min}, got {v}"))),
        Err(_) if obj.lt(0).unwrap_or(false) => Err(invalid_err(
            py,
            format!("{name} must be >= {min}, got {}", repr()),
        )),
        Err(_) => Err(invalid_err(
            py,
            format!("{name} = {} is too large (at most 2**64 - 1)", repr()),
        )),
    }
}

fn parse_scheme(py: Python<'_>, scheme: &str) -> PyResult<Scheme> {
    scheme.parse::<Scheme>().py(py)
}

// ------------------------------------------------------------------------------------------------
// weights

/// normalize_log_weights(log_weights) -> (normalised_log_weights, log_mean_weight)
///
/// 1-D [N] -> (ndarray[N], float); 2-D [B, N] -> (ndarray[B, N], ndarray[B]), each row normalised
/// with log-sum-exp. log_mean_weight = log((1/N) sum_i exp(lw_i)) is the evidence increment.
/// NaN -> DegenerateWeightsError (first bad index), all -inf row -> DegenerateWeightsError (row),
/// +inf -> InvalidInputError.
#[pyfunction]
#[pyo3(signature = (log_weights))]
fn normalize_log_weights<'py>(
    py: Python<'py>,
    log_weights: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyTuple>> {
    let (x, b, n, two_d) = weights_input(log_weights, "log_weights")?;
    let lw = x.slice();
    let (out, lm) = run_native(
        py,
        b * n,
        |intr| -> crate::error::Result<(Vec<f64>, Vec<f64>)> {
            let mut out = vec![0.0; b * n];
            if n == 0 {
                return Err(crate::error::invalid(
                    "log_weights must contain at least one particle",
                ));
            }
            let mut lm = Vec::with_capacity(b);
            for r in 0..b {
                lm.push(weights::normalize_row(
                    &lw[r * n..(r + 1) * n],
                    &mut out[r * n..(r + 1) * n],
                    "log_weights",
                    if two_d { Some(r) } else { None },
                    intr,
                )?);
            }
            Ok((out, lm))
        },
    )?;
    if two_d {
        let a =
            Array2::from_shape_vec((b, n), out).map_err(|e| GlassError::new_err(e.to_string()))?;
        PyTuple::new(
            py,
            [
                PyArray2::from_owned_array(py, a).into_any(),
                PyArray1::from_vec(py, lm).into_any(),
            ],
        )
    } else {
        PyTuple::new(
            py,
            [
                PyArray1::from_vec(py, out).into_any(),
                PyFloat::new(py, lm[0]).into_any(),
            ],
        )
    }
}

/// ess(log_weights) -> float (1-D) or ndarray[B] (2-D): (sum w)^2 / sum w^2 per row.
#[pyfunction]
#[pyo3(signature = (log_weights))]
fn ess<'py>(py: Python<'py>, log_weights: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let (x, b, n, two_d) = weights_input(log_weights, "log_weights")?;
    let lw = x.slice();
    let e = run_native(py, b * n, |intr| -> crate::error::Result<Vec<f64>> {
        if n == 0 {
            return Err(crate::error::invalid(
                "log_weights must contain at least one particle",
            ));
        }
        (0..b)
            .map(|r| {
                weights::ess_row(
                    &lw[r * n..(r + 1) * n],
                    "log_weights",
                    if two_d { Some(r) } else { None },
                    intr,
                )
            })
            .collect()
    })?;
    if two_d {
        Ok(PyArray1::from_vec(py, e).into_any())
    } else {
        Ok(PyFloat::new(py, e[0]).into_any())
    }
}

/// resample(log_weights, scheme="systematic", *, seed, num_samples=None) -> ndarray[int64]
///
/// 1-D [N] -> [M] ancestor indices; 2-D [B, N] -> [B, M] row-local indices (M = num_samples or
/// N). scheme: "systematic" | "stratified" | "multinomial" | "residual" (all O(N)). seed: an int
/// (row b uses PCG-64 stream b of that seed) or a sequence of B ints (row b uses seeds[b], stream
/// 0, so row b equals a 1-D call with seed=seeds[b]). Same seed, same indices.
#[pyfunction]
#[pyo3(signature = (log_weights, scheme="systematic", *, seed, num_samples=None))]
fn resample<'py>(
    py: Python<'py>,
    log_weights: &Bound<'py, PyAny>,
    scheme: &str,
    seed: &Bound<'py, PyAny>,
    num_samples: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let scheme = parse_scheme(py, scheme)?;
    let seeds = parse_seeds(py, seed, "seed")?;
    let (x, b, n, two_d) = weights_input(log_weights, "log_weights")?;
    let m = match num_samples {
        Some(v) if !v.is_none() => size_arg(v, "num_samples", 1)?,
        _ => n,
    };
    let lw = x.slice();
    let out = run_native(py, b * n.max(m), |intr| {
        resample_log_weights(lw, b, n, m, scheme, &seeds, intr)
    })?;
    if two_d {
        Ok(array2_i64(py, out, b, m)?.into_any())
    } else {
        Ok(PyArray1::from_vec(py, out).into_any())
    }
}

// ------------------------------------------------------------------------------------------------
// SMC state

/// Result of SMCState.step (read-only).
#[pyclass(frozen, get_all, module = "glass_core._core", name = "StepResult")]
struct StepResult {
    /// [B, N] int64 row-local ancestors (identity where not resampled).
    ancestors: Py<PyArray2<i64>>,
    /// [B*N] int64 global ancestors b*N + a (for index_select on a [B*N, ...] tensor).
    flat_ancestors: Py<PyArray1<i64>>,
    /// [B] bool, whether each group was resampled.
    resampled: Py<PyArray1<bool>>,
    /// [B] float64 ESS after reweighting, before resampling.
    ess: Py<PyArray1<f64>>,
    /// Whether any group was resampled.
    any_resampled: bool,
}

#[pymethods]
impl StepResult {
    fn __repr__(&self, py: Python<'_>) -> String {
        let b = self.resampled.bind(py).len();
        let n = self.ancestors.bind(py).shape()[1];
        format!(
            "StepResult(num_groups={b}, num_particles={n}, any_resampled={})",
            if self.any_resampled { "True" } else { "False" }
        )
    }
}

/// SMCState(num_groups, num_particles, *, scheme="systematic", ess_threshold=None, seeds,
/// track_genealogy=True)
///
/// Bookkeeping for B groups of N particles: normalised log-weights [B, N] (float64, start uniform),
/// log_evidence [B], ESS history, adaptive resampling and the genealogy. seeds: an int (group b
/// uses PCG-64 stream b) or a sequence of B ints (group b uses seeds[b], stream 0); each group's
/// generator advances across steps.
/// Thread-safe: calls from several threads are serialised (each waits for the one running,
/// without holding the interpreter lock while it waits).
#[pyclass(frozen, module = "glass_core._core", name = "SMCState")]
struct PySMCState {
    inner: Mutex<SmcState>,
}

impl PySMCState {
    /// The state, locked. While another thread holds it (a step running detached from the
    /// interpreter), wait with the interpreter released so that thread can re-attach.
    fn state(&self, py: Python<'_>) -> MutexGuard<'_, SmcState> {
        loop {
            match self.inner.try_lock() {
                Ok(g) => return g,
                Err(TryLockError::Poisoned(e)) => return e.into_inner(),
                Err(TryLockError::WouldBlock) => {
                    py.detach(|| std::thread::sleep(Duration::from_micros(200)))
                }
            }
        }
    }
}

#[pymethods]
impl PySMCState {
    #[new]
    #[pyo3(signature = (num_groups, num_particles, *, scheme="systematic", ess_threshold=None, seeds, track_genealogy=true))]
    fn new(
        py: Python<'_>,
        num_groups: &Bound<'_, PyAny>,
        num_particles: &Bound<'_, PyAny>,
        scheme: &str,
        ess_threshold: Option<f64>,
        seeds: &Bound<'_, PyAny>,
        track_genealogy: bool,
    ) -> PyResult<Self> {
        let num_groups = size_arg(num_groups, "num_groups", 1)?;
        let num_particles = size_arg(num_particles, "num_particles", 1)?;
        if let Some(th) = ess_threshold {
            if !(0.0..=1.0).contains(&th) {
                return Err(invalid_err(
                    py,
                    format!("ess_threshold must be None or a fraction in [0, 1], got {th}"),
                ));
            }
        }
        let scheme = parse_scheme(py, scheme)?;
        let seeds = parse_seeds(py, seeds, "seeds")?;
        let inner = no_panic(|| {
            SmcState::new(
                num_groups,
                num_particles,
                scheme,
                ess_threshold,
                &seeds,
                track_genealogy,
            )
        })
        .py(py)?;
        Ok(Self {
            inner: Mutex::new(inner),
        })
    }

    /// step(log_potentials, *, resample=None) -> StepResult
    ///
    /// log_potentials: [B, N] (or [N] when B == 1) float. NaN -> DegenerateWeightsError,
    /// +inf -> InvalidInputError, a group whose reweighted log-weights are all -inf ->
    /// DegenerateWeightsError; on error the state is unchanged. resample: True always, False
    /// never, None adaptive (ESS < ess_threshold * N; always when ess_threshold is None).
    /// Groups that are not resampled carry their weights; resampled groups reset to uniform.
    #[pyo3(signature = (log_potentials, *, resample=None))]
    fn step(
        &self,
        py: Python<'_>,
        log_potentials: &Bound<'_, PyAny>,
        resample: Option<bool>,
    ) -> PyResult<StepResult> {
        let mut st = self.state(py);
        let (b, n) = (st.num_groups(), st.num_particles());
        let x = float_input(log_potentials, "log_potentials")?;
        let shape = x.shape();
        let ok = (shape.len() == 2 && shape[0] == b && shape[1] == n)
            || (b == 1 && shape.len() == 1 && shape[0] == n);
        if !ok {
            return Err(invalid_err(
                py,
                format!(
                    "log_potentials must have shape [{b}, {n}]{}, got {shape:?}",
                    if b == 1 {
                        format!(" or [{n}]")
                    } else {
                        String::new()
                    }
                ),
            ));
        }
        let mode = match resample {
            None => ResampleMode::Adaptive,
            Some(true) => ResampleMode::Always,
            Some(false) => ResampleMode::Never,
        };
        let g = x.slice();
        let inner = &mut *st;
        let (out, flat) = run_native(py, b * n, |intr| {
            inner.step(g, mode, intr).map(|o| {
                let flat = o.flat_ancestors(n);
                (o, flat)
            })
        })?;
        let any = out.resampled.iter().any(|&r| r);
        Ok(StepResult {
            ancestors: array2_i64(py, out.ancestors, b, n)?.unbind(),
            flat_ancestors: PyArray1::from_vec(py, flat).unbind(),
            resampled: PyArray1::from_vec(py, out.resampled).unbind(),
            ess: PyArray1::from_vec(py, out.ess).unbind(),
            any_resampled: any,
        })
    }

    /// Normalised log-weights [B, N] (a copy).
    #[getter]
    fn log_weights<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let st = self.state(py);
        let (b, n) = (st.num_groups(), st.num_particles());
        let a = Array2::from_shape_vec((b, n), st.log_weights().to_vec())
            .map_err(|e| GlassError::new_err(e.to_string()))?;
        Ok(PyArray2::from_owned_array(py, a))
    }

    /// Accumulated log-evidence [B]: sum over steps of log sum_i W_i exp(G_i).
    #[getter]
    fn log_evidence<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        let st = self.state(py);
        PyArray1::from_slice(py, st.log_evidence())
    }

    /// ESS per step, [num_steps, B] float64 (after reweighting, before resampling).
    #[getter]
    fn ess_history<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let st = self.state(py);
        let a =
            Array2::from_shape_vec((st.num_steps(), st.num_groups()), st.ess_history().to_vec())
                .map_err(|e| GlassError::new_err(e.to_string()))?;
        Ok(PyArray2::from_owned_array(py, a))
    }

    #[getter]
    fn num_steps(&self, py: Python<'_>) -> usize {
        self.state(py).num_steps()
    }
    #[getter]
    fn num_groups(&self, py: Python<'_>) -> usize {
        self.state(py).num_groups()
    }
    #[getter]
    fn num_particles(&self, py: Python<'_>) -> usize {
        self.state(py).num_particles()
    }
    #[getter]
    fn scheme(&self, py: Python<'_>) -> &'static str {
        self.state(py).scheme().as_str()
    }
    #[getter]
    fn ess_threshold(&self, py: Python<'_>) -> Option<f64> {
        self.state(py).ess_threshold()
    }
    #[getter]
    fn track_genealogy(&self, py: Python<'_>) -> bool {
        self.state(py).tracks_genealogy()
    }

    /// Ancestors of every step, int64 [num_steps, B, N]. GlassError if track_genealogy=False.
    fn genealogy<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray3<i64>>> {
        let st = self.state(py);
        let g = st.genealogy().ok_or_else(|| {
            GlassError::new_err("genealogy is not tracked (track_genealogy=False)")
        })?;
        crate::limits::ensure_fits(
            &format!("genealogy of {} ancestors", g.len()),
            crate::limits::bytes_of(&[(g.len() as u128, 8)]),
        )
        .py(py)?;
        let v: Vec<i64> = g.iter().map(|&a| a as i64).collect();
        let a = Array3::from_shape_vec((st.num_steps(), st.num_groups(), st.num_particles()), v)
            .map_err(|e| GlassError::new_err(e.to_string()))?;
        Ok(PyArray3::from_owned_array(py, a))
    }

    /// Lineages, int64 [num_steps + 1, B, N]: trace[k, b, i] is the index at step k of the
    /// ancestor of final particle i of group b (trace[-1] is the identity).
    fn trace<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray3<i64>>> {
        let st = self.state(py);
        let inner = &*st;
        let v = run_native(
            py,
            inner.num_steps() * inner.num_groups() * inner.num_particles(),
            |_| {
                let (k, b, n) = (inner.num_steps(), inner.num_groups(), inner.num_particles());
                crate::limits::ensure_fits(
                    &format!("trace of {k} steps x {b} groups x {n} particles"),
                    crate::limits::bytes_of(&[((k as u128 + 1) * b as u128 * n as u128, 8)]),
                )?;
                Ok(inner.trace())
            },
        )?
        .ok_or_else(|| GlassError::new_err("genealogy is not tracked (track_genealogy=False)"))?;
        let a = Array3::from_shape_vec(
            (
                inner.num_steps() + 1,
                inner.num_groups(),
                inner.num_particles(),
            ),
            v,
        )
        .map_err(|e| GlassError::new_err(e.to_string()))?;
        Ok(PyArray3::from_owned_array(py, a))
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let st = self.state(py);
        format!(
            "SMCState(num_groups={}, num_particles={}, scheme={:?}, ess_threshold={}, num_steps={})",
            st.num_groups(),
            st.num_particles(),
            st.scheme().as_str(),
            match st.ess_threshold() {
                Some(t) => format!("{t}"),
                None => "None".into(),
            },
            st.num_steps()
        )
    }
}

// ------------------------------------------------------------------------------------------------
// schedules

/// A noise schedule (t = 0 noise, t = 1 data, x_t = alpha_t z + sigma_t eps). Build with the
/// factories in glass_core.schedules. Methods accept a float (-> float) or an array of times
/// (-> float64 ndarray of the same shape; torch tensors are converted to numpy).
#[pyclass(frozen, module = "glass_core._core", name = "Schedule")]
struct PySchedule {
    inner: Schedule,
}

fn map_times<'py>(
    obj: &Bound<'py, PyAny>,
    name: &str,
    check: impl Fn(f64) -> bool,
    expect: &str,
    f: impl Fn(f64) -> f64 + Sync,
) -> PyResult<Bound<'py, PyAny>> {
    let py = obj.py();
    if obj.is_instance_of::<PyFloat>() || obj.is_instance_of::<PyInt>() {
        let v: f64 = obj.extract()?;
        if !check(v) {
            return Err(invalid_err(py, format!("{name} must be {expect}, got {v}")));
        }
        return Ok(PyFloat::new(py, no_panic(|| Ok(f(v))).py(py)?).into_any());
    }
    let x = float_input(obj, name)?;
    let shape = x.shape();
    let s = x.slice();
    if let Some((i, v)) = s.iter().enumerate().find(|(_, &v)| !check(v)) {
        return Err(invalid_err(
            py,
            format!("{name} must be {expect}, got {name}[{i}] = {v}"),
        ));
    }
    if shape.is_empty() {
        return Ok(PyFloat::new(py, no_panic(|| Ok(f(s[0]))).py(py)?).into_any());
    }
    let out: Vec<f64> = run_native(py, s.len(), |_| Ok(s.iter().map(|&v| f(v)).collect()))?;
    let a = ArrayD::from_shape_vec(IxDyn(&shape), out)
        .map_err(|e| GlassError::new_err(e.to_string()))?;
    Ok(PyArrayDyn::from_owned_array(py, a).into_any())
}

fn is_time(v: f64) -> bool {
    (0.0..=1.0).contains(&v)
}
const TIME: &str = "a finite time in [0, 1]";

#[pymethods]
impl PySchedule {
    /// Rectified flow: alpha = t, sigma = 1 - t.
    #[staticmethod]
    fn rectified_flow() -> Self {
        Self {
            inner: Schedule::RectifiedFlow,
        }
    }
    /// Cosine: alpha = sin(pi t / 2), sigma = cos(pi t / 2).
    #[staticmethod]
    fn cosine() -> Self {
        Self {
            inner: Schedule::Cosine,
        }
    }
    /// Variance preserving from a diffusers alphas_cumprod table (decreasing, index 0 least
    /// noisy); node k sits at t = 1 - (k+1)/(T+1), log-SNR piecewise linear in t.
    #[staticmethod]
    fn vp_from_alphas_cumprod(py: Python<'_>, alphas_cumprod: &Bound<'_, PyAny>) -> PyResult<Self> {
        let x = float_input(alphas_cumprod, "alphas_cumprod")?;
        if x.shape().len() != 1 {
            return Err(invalid_err(
                py,
                format!("alphas_cumprod must be 1-D, got shape {:?}", x.shape()),
            ));
        }
        let tab = no_panic(|| VpTable::from_alphas_cumprod(x.slice())).py(py)?;
        Ok(Self {
            inner: Schedule::Vp(Arc::new(tab)),
        })
    }
    /// Variance preserving from DDPM betas, kind "linear" or "scaled_linear" (float64 math).
    #[staticmethod]
    #[pyo3(
        signature = (beta_start, beta_end, num_train_timesteps=None, kind="linear"),
        text_signature = "(beta_start, beta_end, num_train_timesteps=1000, kind='linear')"
    )]
    fn vp_from_betas(
        py: Python<'_>,
        beta_start: f64,
        beta_end: f64,
        num_train_timesteps: Option<&Bound<'_, PyAny>>,
        kind: &str,
    ) -> PyResult<Self> {
        let num_train_timesteps = match num_train_timesteps {
            Some(v) => size_arg(v, "num_train_timesteps", 2)?,
            None => 1000,
        };
        let tab = run_native(py, 0, |_| {
            VpTable::from_betas(beta_start, beta_end, num_train_timesteps, kind)
        })?;
        Ok(Self {
            inner: Schedule::Vp(Arc::new(tab)),
        })
    }
    /// SD3/FLUX static time shift of `base` (shift > 0).
    #[staticmethod]
    fn shifted(py: Python<'_>, base: &Bound<'_, PySchedule>, shift: f64) -> PyResult<Self> {
        let inner = no_panic(|| Schedule::shifted(base.get().inner.clone(), shift)).py(py)?;
        Ok(Self { inner })
    }

    /// e.g. "rectified_flow", "cosine", "vp(T=1000)", "shifted(rectified_flow, 3)".
    #[getter]
    fn name(&self) -> String {
        self.inner.name()
    }
    /// "rectified_flow" | "cosine" | "vp" | "shifted".
    #[getter]
    fn kind(&self) -> &'static str {
        match self.inner {
            Schedule::RectifiedFlow => "rectified_flow",
            Schedule::Cosine => "cosine",
            Schedule::Vp(_) => "vp",
            Schedule::Shifted { .. } => "shifted",
        }
    }
    /// The shift of a shifted schedule, else None.
    #[getter]
    fn shift(&self) -> Option<f64> {
        match &self.inner {
            Schedule::Shifted { shift, .. } => Some(*shift),
            _ => None,
        }
    }
    /// The base of a shifted schedule, else None.
    #[getter]
    fn base(&self) -> Option<Self> {
        match &self.inner {
            Schedule::Shifted { base, .. } => Some(Self {
                inner: (**base).clone(),
            }),
            _ => None,
        }
    }
    /// (t_lo, t_hi): the times at which a model carries information; denoisers are queried at t
    /// clamped to this range (VP tables: the noisiest and least noisy nodes; else (0, 1)).
    #[getter]
    fn model_time_range(&self, py: Python<'_>) -> PyResult<(f64, f64)> {
        no_panic(|| Ok(self.inner.model_time_range())).py(py)
    }
    /// T for a VP table schedule, else None.
    #[getter]
    fn num_train_timesteps(&self) -> Option<usize> {
        self.inner.vp_table().map(|t| t.len())
    }
    /// The VP table (alphas_cumprod, diffusers order) or None.
    fn alphas_cumprod<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyArray1<f64>>> {
        self.inner
            .vp_table()
            .map(|t| PyArray1::from_vec(py, t.alphas_cumprod()))
    }

    fn alpha<'py>(&self, t: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        map_times(t, "t", is_time, TIME, |x| self.inner.alpha(x))
    }
    fn sigma<'py>(&self, t: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        map_times(t, "t", is_time, TIME, |x| self.inner.sigma(x))
    }
    fn d_alpha<'py>(&self, t: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        map_times(t, "t", is_time, TIME, |x| self.inner.d_alpha(x))
    }
    fn d_sigma<'py>(&self, t: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        map_times(t, "t", is_time, TIME, |x| self.inner.d_sigma(x))
    }
    /// 2 log(alpha/sigma): -inf at t = 0, +inf at t = 1.
    fn log_snr<'py>(&self, t: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        map_times(t, "t", is_time, TIME, |x| self.inner.log_snr(x))
    }
    /// Inverse of SNR(t) = alpha^2/sigma^2 (snr >= 0; 0 -> 0, inf -> 1).
    fn t_from_snr<'py>(&self, snr: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        map_times(
            snr,
            "snr",
            |v| v >= 0.0,
            "a number >= 0 (inf allowed)",
            |x| self.inner.t_from_snr(x),
        )
    }
    /// Inverse of log_snr (-inf -> 0, +inf -> 1).
    fn t_from_log_snr<'py>(&self, lsnr: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        map_times(
            lsnr,
            "lsnr",
            |v| !v.is_nan(),
            "a number (not NaN)",
            |x| self.inner.t_from_log_snr(x),
        )
    }
    /// alpha_t sigma_t' / (sigma_t alpha_t') (0 at t = 0 and at t_next = 1).
    fn rho_ddpm(&self, py: Python<'_>, t: f64, t_next: f64) -> PyResult<f64> {
        no_panic(|| self.inner.rho_ddpm(t, t_next)).py(py)
    }
    /// VP tables only: continuous diffusers timestep k = (T+1)(1-t) - 1.
    fn timestep_from_t<'py>(&self, t: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let py = t.py();
        let vp = self.vp_table(py)?;
        map_times(t, "t", is_time, TIME, move |x| vp.timestep_from_t(x))
    }
    /// VP tables only: t = 1 - (k+1)/(T+1) for a (possibly fractional) timestep k in [-1, T].
    fn t_from_timestep<'py>(&self, k: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let py = k.py();
        let vp = self.vp_table(py)?;
        let n = vp.len() as f64;
        map_times(
            k,
            "k",
            move |v| (-1.0..=n).contains(&v),
            &format!("a timestep in [-1, {n}]"),
            move |x| vp.t_from_timestep(x),
        )
    }

    fn __repr__(&self) -> String {
        format!("Schedule({})", self.inner.name())
    }
    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        match other.cast::<PySchedule>() {
            Ok(o) => o.get().inner == self.inner,
            Err(_) => false,
        }
    }
    fn __hash__(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.inner.name().hash(&mut h);
        h.finish()
    }
    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let ctor = py.get_type::<PySchedule>().into_any();
        let args: Bound<'py, PyTuple> = match &self.inner {
            Schedule::RectifiedFlow => {
                return PyTuple::new(
                    py,
                    [
                        ctor.getattr("rectified_flow")?,
                        PyTuple::empty(py).into_any(),
                    ],
                )
            }
            Schedule::Cosine => {
                return PyTuple::new(py, [ctor.getattr("cosine")?, PyTuple::empty(py).into_any()])
            }
            Schedule::Vp(t) => {
                let tab = PyArray1::from_vec(py, t.alphas_cumprod()).into_any();
                return PyTuple::new(
                    py,
                    [
                        ctor.getattr("vp_from_alphas_cumprod")?,
                        PyTuple::new(py, [tab])?.into_any(),
                    ],
                );
            }
            Schedule::Shifted { base, shift } => {
                let b = Bound::new(
                    py,
                    PySchedule {
                        inner: (**base).clone(),
                    },
                )?
                .into_any();
                PyTuple::new(py, [b, PyFloat::new(py, *shift).into_any()])?
            }
        };
        PyTuple::new(py, [ctor.getattr("shifted")?, args.into_any()])
    }
}

impl PySchedule {
    fn vp_table(&self, py: Python<'_>) -> PyResult<&VpTable> {
        self.inner.vp_table().ok_or_else(|| {
            invalid_err(
                py,
                format!(
                    "timestep conversion needs a VP table schedule, this is {}",
                    self.inner.name()
                ),
            )
        })
    }
}

/// rho_ddpm(schedule, t, t_next) -> float: alpha_t sigma_t' / (sigma_t alpha_t').
#[pyfunction]
fn rho_ddpm(
    py: Python<'_>,
    schedule: &Bound<'_, PySchedule>,
    t: f64,
    t_next: f64,
) -> PyResult<f64> {
    no_panic(|| schedule.get().inner.rho_ddpm(t, t_next)).py(py)
}

/// The GLASS coefficient table of one transition t -> t_next (read-only). Scalars gamma, abar,
/// sbar, alpha_t, sigma_t; over the inner times s (float64 arrays, or floats for a scalar s):
/// a_s, s_s, w1, w2, w3, lam, t_star, alpha_star, c_x, c_y. Item access ``c["w1"]`` and
/// ``keys()`` read the same fields (so ``dict(c)`` works).
#[pyclass(
    frozen,
    get_all,
    module = "glass_core._core",
    name = "GlassCoefficients"
)]
struct GlassCoefficients {
    gamma: f64,
    abar: f64,
    sbar: f64,
    alpha_t: f64,
    sigma_t: f64,
    a_s: Py<PyAny>,
    s_s: Py<PyAny>,
    w1: Py<PyAny>,
    w2: Py<PyAny>,
    w3: Py<PyAny>,
    lam: Py<PyAny>,
    t_star: Py<PyAny>,
    alpha_star: Py<PyAny>,
    c_x: Py<PyAny>,
    c_y: Py<PyAny>,
}

const GLASS_FIELDS: [&str; 15] = [
    "gamma",
    "abar",
    "sbar",
    "alpha_t",
    "sigma_t",
    "a_s",
    "s_s",
    "w1",
    "w2",
    "w3",
    "lam",
    "t_star",
    "alpha_star",
    "c_x",
    "c_y",
];

#[pymethods]
impl GlassCoefficients {
    fn keys(&self) -> Vec<&'static str> {
        GLASS_FIELDS.to_vec()
    }
    fn __getitem__(slf: &Bound<'_, Self>, key: &str) -> PyResult<Py<PyAny>> {
        if !GLASS_FIELDS.contains(&key) {
            return Err(pyo3::exceptions::PyKeyError::new_err(key.to_string()));
        }
        Ok(slf.getattr(key)?.unbind())
    }
    fn __repr__(&self) -> String {
        format!(
            "GlassCoefficients(gamma={}, abar={}, sbar={}, alpha_t={}, sigma_t={})",
            self.gamma, self.abar, self.sbar, self.alpha_t, self.sigma_t
        )
    }
}

/// glass_coefficients(schedule, t, t_next, rho, s, sigma0=1.0) -> GlassCoefficients
///
/// The table of one transition over the inner times s (S = c_x x_t + c_y (xbar - gamma x_t),
/// model input alpha_star * S at time t_star); docs/math.md gives the formulas and edge cases.
#[pyfunction]
#[pyo3(signature = (schedule, t, t_next, rho, s, sigma0=1.0))]
fn glass_coefficients<'py>(
    py: Python<'py>,
    schedule: &Bound<'py, PySchedule>,
    t: f64,
    t_next: f64,
    rho: f64,
    s: &Bound<'py, PyAny>,
    sigma0: f64,
) -> PyResult<GlassCoefficients> {
    let (sv, scalar_s) = if s.is_instance_of::<PyFloat>() || s.is_instance_of::<PyInt>() {
        (vec![s.extract::<f64>()?], true)
    } else {
        let x = float_input(s, "s")?;
        if x.shape().len() > 1 {
            return Err(invalid_err(
                py,
                format!(
                    "s must be a 1-D array of inner times, got shape {:?}",
                    x.shape()
                ),
            ));
        }
        (x.slice().to_vec(), x.shape().is_empty())
    };
    let sched = &schedule.get().inner;
    let c = run_native(py, sv.len(), |_| {
        glass::glass_coefficients(sched, t, t_next, rho, &sv, sigma0)
    })?;
    let col = |v: Vec<f64>| -> Py<PyAny> {
        if scalar_s {
            PyFloat::new(py, v[0]).into_any().unbind()
        } else {
            PyArray1::from_vec(py, v).into_any().unbind()
        }
    };
    Ok(GlassCoefficients {
        gamma: c.gamma,
        abar: c.abar,
        sbar: c.sbar,
        alpha_t: c.alpha_t,
        sigma_t: c.sigma_t,
        a_s: col(c.a_s),
        s_s: col(c.s_s),
        w1: col(c.w1),
        w2: col(c.w2),
        w3: col(c.w3),
        lam: col(c.lam),
        t_star: col(c.t_star),
        alpha_star: col(c.alpha_star),
        c_x: col(c.c_x),
        c_y: col(c.c_y),
    })
}

/// uniform_grid(num_steps, t_start=0.0, t_end=1.0) -> ndarray[num_steps + 1]
#[pyfunction]
#[pyo3(signature = (num_steps, t_start=0.0, t_end=1.0))]
fn uniform_grid<'py>(
    py: Python<'py>,
    num_steps: &Bound<'py, PyAny>,
    t_start: f64,
    t_end: f64,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let num_steps = size_arg(num_steps, "num_steps", 1)?;
    let g = run_native(py, 0, |_| schedule::uniform_grid(num_steps, t_start, t_end))?;
    Ok(PyArray1::from_vec(py, g))
}

/// shifted_grid(num_steps, shift) -> ndarray[num_steps + 1] (FLUX/SD3 shifted sigmas as times).
#[pyfunction]
fn shifted_grid<'py>(
    py: Python<'py>,
    num_steps: &Bound<'py, PyAny>,
    shift: f64,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let num_steps = size_arg(num_steps, "num_steps", 1)?;
    let g = run_native(py, 0, |_| schedule::shifted_grid(num_steps, shift))?;
    Ok(PyArray1::from_vec(py, g))
}

/// validate_time_grid(time_grid) -> float64 ndarray (the grid, checked: >= 2 points, finite,
/// inside [0, 1], strictly increasing; else InvalidInputError naming time_grid).
#[pyfunction]
fn validate_time_grid<'py>(
    py: Python<'py>,
    time_grid: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let x = if time_grid.is_instance_of::<PyList>() || time_grid.is_instance_of::<PyTuple>() {
        match time_grid.extract::<Vec<f64>>() {
            Ok(v) => {
                let n = v.len();
                FloatInput::Owned(v, vec![n])
            }
            Err(_) => {
                return Err(invalid_err(
                    py,
                    "time_grid must be a 1-D sequence of floats",
                ))
            }
        }
    } else {
        float_input(time_grid, "time_grid")?
    };
    if x.shape().len() != 1 {
        return Err(invalid_err(
            py,
            format!("time_grid must be 1-D, got shape {:?}", x.shape()),
        ));
    }
    no_panic(|| schedule::validate_time_grid(x.slice())).py(py)?;
    Ok(PyArray1::from_slice(py, x.slice()))
}

/// dynamic_shift_mu(image_seq_len, base_seq_len=256, max_seq_len=4096, base_shift=0.5,
/// max_shift=1.15) -> float (diffusers' FLUX calculate_shift; static shift equivalent exp(mu)).
#[pyfunction]
#[pyo3(signature = (image_seq_len, base_seq_len=256.0, max_seq_len=4096.0, base_shift=0.5, max_shift=1.15))]
fn dynamic_shift_mu(
    py: Python<'_>,
    image_seq_len: f64,
    base_seq_len: f64,
    max_seq_len: f64,
    base_shift: f64,
    max_shift: f64,
) -> PyResult<f64> {
    no_panic(|| {
        schedule::dynamic_shift_mu(
            image_seq_len,
            base_seq_len,
            max_seq_len,
            base_shift,
            max_shift,
        )
    })
    .py(py)
}

// ------------------------------------------------------------------------------------------------

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
            panic_message(&*p)
        ))
    })
}

#[pymodule]
#[pyo3(name = "_core")]
fn core_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    load_numpy_api(py)?;
    let _ = SIGNAL_THREAD.set(std::thread::current().id());
    let base = py.get_type::<GlassError>();
    let value_error = py.get_type::<PyValueError>();
    m.add("GlassError", &base)?;
    let invalid = make_error_type(
        py,
        "InvalidInputError",
        (base.as_any(), value_error.as_any()),
        "Bad shape, dtype, value or range of an argument; the message names the argument.",
    )?;
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
    m.add_class::<PySchedule>()?;
    m.add_class::<PySMCState>()?;
    m.add_class::<StepResult>()?;
    m.add_class::<GlassCoefficients>()?;
    m.add_function(wrap_pyfunction!(normalize_log_weights, m)?)?;
    m.add_function(wrap_pyfunction!(ess, m)?)?;
    m.add_function(wrap_pyfunction!(resample, m)?)?;
    m.add_function(wrap_pyfunction!(rho_ddpm, m)?)?;
    m.add_function(wrap_pyfunction!(glass_coefficients, m)?)?;
    m.add_function(wrap_pyfunction!(uniform_grid, m)?)?;
    m.add_function(wrap_pyfunction!(shifted_grid, m)?)?;
    m.add_function(wrap_pyfunction!(validate_time_grid, m)?)?;
    m.add_function(wrap_pyfunction!(dynamic_shift_mu, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
