//! Bindings of noise schedules (`Schedule`) and time grids.

use super::convert::{float_input, size_arg, FloatInput};
use super::errors::{invalid_err, no_panic, GlassError, IntoPyResult};
use super::native::run_native;
use crate::schedule::{self, Schedule, VpTable};
use numpy::ndarray::{ArrayD, IxDyn};
use numpy::{PyArray1, PyArrayDyn};
use pyo3::prelude::*;
use pyo3::types::{PyFloat, PyInt, PyList, PyTuple};
use std::sync::Arc;

// schedules

/// A noise schedule (t = 0 noise, t = 1 data, x_t = alpha_t z + sigma_t eps). Build with the
/// factories in glass_core.schedules. Methods accept a float (-> float) or an array of times
/// (-> float64 ndarray of the same shape; torch tensors are converted to numpy).
#[pyclass(frozen, module = "glass_core._core", name = "Schedule")]
pub(super) struct PySchedule {
    pub(super) inner: Schedule,
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
            return Err(invalid_err(
                py,
                name,
                format!("{name} must be {expect}, got {v}"),
            ));
        }
        return Ok(PyFloat::new(py, no_panic(|| Ok(f(v))).py(py)?).into_any());
    }
    let x = float_input(obj, name)?;
    let shape = x.shape();
    let s = x.slice();
    if let Some((i, v)) = s.iter().enumerate().find(|(_, &v)| !check(v)) {
        return Err(invalid_err(
            py,
            name,
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
                "alphas_cumprod",
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
                "schedule",
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
                    "time_grid",
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
            "time_grid",
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

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PySchedule>()?;
    m.add_function(wrap_pyfunction!(rho_ddpm, m)?)?;
    m.add_function(wrap_pyfunction!(uniform_grid, m)?)?;
    m.add_function(wrap_pyfunction!(shifted_grid, m)?)?;
    m.add_function(wrap_pyfunction!(validate_time_grid, m)?)?;
    m.add_function(wrap_pyfunction!(dynamic_shift_mu, m)?)?;
    Ok(())
}
