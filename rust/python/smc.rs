//! Binding of the SMC bookkeeping state (`SMCState`) and its step result.

use super::convert::{array2_i64, float_input, parse_scheme, parse_seeds, size_arg};
use super::errors::{invalid_err, no_panic, GlassError, IntoPyResult};
use super::native::run_native;
use crate::genealogy::{ResampleMode, SmcState};
use numpy::ndarray::{Array2, Array3};
use numpy::{PyArray1, PyArray2, PyArray3, PyUntypedArrayMethods};
use pyo3::prelude::*;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::Duration;

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
/// without holding the interpreter lock while it waits). No lock is held while Python code runs
/// (converting `step`'s input happens before locking), so that code may read the state; a
/// re-entrant call that would still wait on its own thread raises `GlassError` instead.
#[pyclass(frozen, module = "glass_core._core", name = "SMCState")]
struct PySMCState {
    inner: Mutex<SmcState>,
    /// Key of the thread holding `inner` (0: none), to refuse a re-entrant call from it.
    holder: AtomicU64,
    /// B and N, fixed for the state's life: read without locking.
    shape: (usize, usize),
}

static NEXT_THREAD_KEY: AtomicU64 = AtomicU64::new(1);
thread_local! {
    static THREAD_KEY: u64 = NEXT_THREAD_KEY.fetch_add(1, Ordering::Relaxed);
}

/// The locked state; clears the holder mark when dropped.
struct Locked<'a> {
    guard: MutexGuard<'a, SmcState>,
    holder: &'a AtomicU64,
}

impl Deref for Locked<'_> {
    type Target = SmcState;
    fn deref(&self) -> &SmcState {
        &self.guard
    }
}

impl DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut SmcState {
        &mut self.guard
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        self.holder.store(0, Ordering::Release);
    }
}

impl PySMCState {
    /// The state, locked. While another thread holds it (a step running detached from the
    /// interpreter), wait with the interpreter released so that thread can re-attach; Ctrl-C
    /// ends the wait. If this thread holds it (a callback reached from inside a call on it),
    /// waiting would never end: raise instead.
    fn state(&self, py: Python<'_>) -> PyResult<Locked<'_>> {
        let me = THREAD_KEY.with(|k| *k);
        loop {
            let guard = match self.inner.try_lock() {
                Ok(g) => g,
                Err(TryLockError::Poisoned(e)) => e.into_inner(),
                Err(TryLockError::WouldBlock) => {
                    if self.holder.load(Ordering::Acquire) == me {
                        return Err(GlassError::new_err(
                            "SMCState is in use by a call on this same thread (a callback \
                             reached from inside that call cannot use the state)",
                        ));
                    }
                    py.check_signals()?;
                    py.detach(|| std::thread::sleep(Duration::from_micros(200)));
                    continue;
                }
            };
            self.holder.store(me, Ordering::Release);
            return Ok(Locked {
                guard,
                holder: &self.holder,
            });
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
                    "ess_threshold",
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
            holder: AtomicU64::new(0),
            shape: (num_groups, num_particles),
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
        let (b, n) = self.shape;
        // converting may run Python code (``__array__``, ``__torch_function__``): before locking
        let x = float_input(log_potentials, "log_potentials")?;
        let shape = x.shape();
        let ok = (shape.len() == 2 && shape[0] == b && shape[1] == n)
            || (b == 1 && shape.len() == 1 && shape[0] == n);
        if !ok {
            return Err(invalid_err(
                py,
                "log_potentials",
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
        let mut st = self.state(py)?;
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
        let st = self.state(py)?;
        let (b, n) = (st.num_groups(), st.num_particles());
        let a = Array2::from_shape_vec((b, n), st.log_weights().to_vec())
            .map_err(|e| GlassError::new_err(e.to_string()))?;
        Ok(PyArray2::from_owned_array(py, a))
    }

    /// Accumulated log-evidence [B]: sum over steps of log sum_i W_i exp(G_i).
    #[getter]
    fn log_evidence<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray1<f64>>> {
        let st = self.state(py)?;
        Ok(PyArray1::from_slice(py, st.log_evidence()))
    }

    /// ESS per step, [num_steps, B] float64 (after reweighting, before resampling).
    #[getter]
    fn ess_history<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let st = self.state(py)?;
        let a =
            Array2::from_shape_vec((st.num_steps(), st.num_groups()), st.ess_history().to_vec())
                .map_err(|e| GlassError::new_err(e.to_string()))?;
        Ok(PyArray2::from_owned_array(py, a))
    }

    #[getter]
    fn num_steps(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.state(py)?.num_steps())
    }
    #[getter]
    fn num_groups(&self) -> usize {
        self.shape.0
    }
    #[getter]
    fn num_particles(&self) -> usize {
        self.shape.1
    }
    #[getter]
    fn scheme(&self, py: Python<'_>) -> PyResult<&'static str> {
        Ok(self.state(py)?.scheme().as_str())
    }
    #[getter]
    fn ess_threshold(&self, py: Python<'_>) -> PyResult<Option<f64>> {
        Ok(self.state(py)?.ess_threshold())
    }
    #[getter]
    fn track_genealogy(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.state(py)?.tracks_genealogy())
    }

    /// Ancestors of every step, int64 [num_steps, B, N]. GlassError if track_genealogy=False.
    fn genealogy<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray3<i64>>> {
        let st = self.state(py)?;
        let g = st.genealogy().ok_or_else(|| {
            GlassError::new_err("genealogy is not tracked (track_genealogy=False)")
        })?;
        crate::limits::ensure_fits(
            "genealogy",
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
        let st = self.state(py)?;
        let inner = &*st;
        let v = run_native(
            py,
            inner.num_steps() * inner.num_groups() * inner.num_particles(),
            |_| {
                let (k, b, n) = (inner.num_steps(), inner.num_groups(), inner.num_particles());
                crate::limits::ensure_fits(
                    "trace",
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

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let st = self.state(py)?;
        Ok(format!(
            "SMCState(num_groups={}, num_particles={}, scheme={:?}, ess_threshold={}, num_steps={})",
            st.num_groups(),
            st.num_particles(),
            st.scheme().as_str(),
            match st.ess_threshold() {
                Some(t) => format!("{t}"),
                None => "None".into(),
            },
            st.num_steps()
        ))
    }
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PySMCState>()?;
    m.add_class::<StepResult>()?;
    Ok(())
}
