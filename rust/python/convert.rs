//! Reading Python arguments: array-likes as float64, seeds, sizes, scheme names; and building
//! the output arrays.

use super::errors::{invalid_err, GlassError, IntoPyResult, INVALID_INPUT};
use crate::resample::{Scheme, Seeds};
use numpy::ndarray::Array2;
use numpy::{
    PyArray2, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyDict, PyInt, PyString};

// array input

/// A float64 view of an input: borrowed from numpy when possible, else an owned copy (C order).
pub(super) enum FloatInput<'py> {
    Borrowed(PyReadonlyArrayDyn<'py, f64>),
    Owned(Vec<f64>, Vec<usize>),
}

impl FloatInput<'_> {
    pub(super) fn slice(&self) -> &[f64] {
        match self {
            // only constructed when C-contiguous
            FloatInput::Borrowed(a) => a.as_slice().unwrap_or(&[]),
            FloatInput::Owned(v, _) => v,
        }
    }
    pub(super) fn shape(&self) -> Vec<usize> {
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
            name,
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
                    name,
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
                name,
                format!("{name} must be an array of floats, got {}", type_name(x)),
            ));
        }
        asarray(x, false).map_err(|e| {
            invalid_err(
                py,
                name,
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
            name,
            format!("{name} must be real-valued, got dtype {}", dtype.str()?),
        ));
    }
    if !"fiub".contains(kind.as_str()) {
        return Err(invalid_err(
            py,
            name,
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
pub(super) fn float_input<'py>(obj: &Bound<'py, PyAny>, name: &str) -> PyResult<FloatInput<'py>> {
    if let Some(x) = from_numpy(obj) {
        return Ok(x);
    }
    let py = obj.py();
    let conv = to_numpy(obj, name)?;
    match from_numpy(&conv) {
        Some(x) => Ok(x),
        None => Err(invalid_err(
            py,
            name,
            format!("{name} could not be converted to a float64 array"),
        )),
    }
}

/// 1-D [N] or 2-D [B, N] weights; returns (input, B, N, was_2d).
pub(super) fn weights_input<'py>(
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
                    name,
                    format!("{name} must have at least one row, got shape {shape:?}"),
                ));
            }
            Ok((x, b, n, true))
        }
        _ => Err(invalid_err(
            obj.py(),
            name,
            format!("{name} must be 1-D [N] or 2-D [B, N], got shape {shape:?}"),
        )),
    }
}

pub(super) fn array2_i64(
    py: Python<'_>,
    v: Vec<i64>,
    b: usize,
    n: usize,
) -> PyResult<Bound<'_, PyArray2<i64>>> {
    let a = Array2::from_shape_vec((b, n), v)
        .map_err(|e| GlassError::new_err(format!("internal shape error: {e}")))?;
    Ok(PyArray2::from_owned_array(py, a))
}

pub(super) fn parse_seeds(py: Python<'_>, seed: &Bound<'_, PyAny>, name: &str) -> PyResult<Seeds> {
    if seed.is_none() {
        return Err(invalid_err(
            py,
            name,
            format!("{name} is required (an int or a sequence of ints)"),
        ));
    }
    if seed.is_instance_of::<PyBool>()
        || seed.is_instance_of::<PyBytes>()
        || seed.is_instance_of::<PyByteArray>()
    {
        return Err(invalid_err(
            py,
            name,
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
                name,
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
            name,
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
            name,
            format!("{name} must be an int or a sequence of ints, got bools"),
        ));
    }
    match seed.extract::<Vec<u64>>() {
        Ok(v) => Ok(Seeds::PerRow(v)),
        Err(_) => Err(invalid_err(
            py,
            name,
            format!("{name} must be an int or a sequence of ints in [0, 2**64)"),
        )),
    }
}

/// A size argument: a Python int (or an integer-like such as numpy.int64, not a bool) >= `min`;
/// anything else is an InvalidInputError naming `name`. Whether the size fits in memory is
/// checked where it is used (see `limits`).
pub(super) fn size_arg(obj: &Bound<'_, PyAny>, name: &str, min: u64) -> PyResult<usize> {
    let py = obj.py();
    let repr = || obj.repr().map(|r| r.to_string()).unwrap_or_default();
    let is_int = !obj.is_instance_of::<PyBool>()
        && (obj.is_instance_of::<PyInt>() || obj.hasattr("__index__").unwrap_or(false));
    if !is_int {
        return Err(invalid_err(
            py,
            name,
            format!("{name} must be an int >= {min}, got {}", repr()),
        ));
    }
    match obj.extract::<u64>() {
        Ok(v) if v >= min => usize::try_from(v).map_err(|_| {
            invalid_err(
                py,
                name,
                format!("{name} = {v} is too large for this platform"),
            )
        }),
        Ok(v) => Err(invalid_err(
            py,
            name,
            format!("{name} must be >= {min}, got {v}"),
        )),
        Err(_) if obj.lt(0).unwrap_or(false) => Err(invalid_err(
            py,
            name,
            format!("{name} must be >= {min}, got {}", repr()),
        )),
        Err(_) => Err(invalid_err(
            py,
            name,
            format!("{name} = {} is too large (at most 2**64 - 1)", repr()),
        )),
    }
}

pub(super) fn parse_scheme(py: Python<'_>, scheme: &str) -> PyResult<Scheme> {
    scheme.parse::<Scheme>().py(py)
}
