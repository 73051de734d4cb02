//! Binding of the GLASS coefficient table of one transition.

use super::convert::float_input;
use super::errors::invalid_err;
use super::native::run_native;
use super::schedules::PySchedule;
use crate::glass;
use numpy::PyArray1;
use pyo3::prelude::*;
use pyo3::types::{PyFloat, PyInt};

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
                "s",
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

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<GlassCoefficients>()?;
    m.add_function(wrap_pyfunction!(glass_coefficients, m)?)?;
    Ok(())
}
