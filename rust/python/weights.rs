//! Bindings of the log-weight functions: normalize_log_weights, ess, resample.

use super::convert::{array2_i64, parse_scheme, parse_seeds, size_arg, weights_input};
use super::errors::GlassError;
use super::native::run_native;
use crate::resample::{resample_log_weights, Scheme};
use crate::weights;
use numpy::ndarray::Array2;
use numpy::{PyArray1, PyArray2};
use pyo3::prelude::*;
use pyo3::types::{PyFloat, PyTuple};

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
                    "log_weights",
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
                "log_weights",
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
/// N). scheme: one of RESAMPLING_SCHEMES, all O(N): "systematic" | "stratified" | "multinomial" |
/// "residual" | "ssp" | "killing" (killing: M = N only). seed: an int
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

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(normalize_log_weights, m)?)?;
    m.add_function(wrap_pyfunction!(ess, m)?)?;
    m.add_function(wrap_pyfunction!(resample, m)?)?;
    let names: Vec<&str> = Scheme::ALL.iter().map(|s| s.as_str()).collect();
    m.add("RESAMPLING_SCHEMES", PyTuple::new(m.py(), names)?)?;
    Ok(())
}
