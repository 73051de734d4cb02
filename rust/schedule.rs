//! Noise schedules in the convention t = 0 noise, t = 1 data, x_t = alpha_t z + sigma_t eps.
//!
//! Every schedule provides alpha, sigma, their time derivatives, log-SNR = 2 log(alpha / sigma) and
//! the inverse map t(log-SNR). Analytic schedules are exact; the VP table interpolates the log-SNR of
//! a discrete `alphas_cumprod` table piecewise-linearly in t (see [`VpTable`]).

use crate::error::{invalid, Result};
use crate::limits::{bytes_of, ensure_fits};
use std::f64::consts::FRAC_PI_2;
use std::sync::Arc;

/// Variance-preserving schedule built from a discrete diffusers-style `alphas_cumprod` table.
///
/// With T = len(table) and diffusers index k = 0 the least noisy entry, node k sits at
/// t_k = 1 - (k + 1) / (T + 1) with log-SNR l_k = log(abar_k / (1 - abar_k)). Between nodes the
/// log-SNR is linear in t. Below the first node (t < 1/(T+1)) the schedule closes as alpha ∝ t,
/// i.e. log_snr = l_{T-1} + 2 log(t / t_{T-1}); above the last node it closes as sigma ∝ (1 - t),
/// log_snr = l_0 - 2 log((1 - t) / (1 - t_0)). So alpha(0) = 0 and sigma(1) = 0 exactly, and
/// alpha^2 + sigma^2 = 1 everywhere.
#[derive(Debug, Clone, PartialEq)]
pub struct VpTable {
    /// Node times in increasing order: ts[j] = (j + 1) / (T + 1).
    ts: Vec<f64>,
    /// Node log-SNRs in increasing order (ls[j] belongs to diffusers index T - 1 - j).
    ls: Vec<f64>,
    /// The table as given (diffusers order), kept for exact round trips (pickling).
    table: Vec<f64>,
}

impl VpTable {
    /// Build from `alphas_cumprod` (diffusers order: decreasing, index 0 least noisy).
    pub fn from_alphas_cumprod(table: &[f64]) -> Result<Self> {
        let n = table.len();
        if n < 2 {
            return Err(invalid(
                "alphas_cumprod",
                format!("alphas_cumprod must have at least 2 entries, got {n}"),
            ));
        }
        for (k, &a) in table.iter().enumerate() {
            if !(a.is_finite() && a > 0.0 && a < 1.0) {
                return Err(invalid(
                    "alphas_cumprod",
                    format!("alphas_cumprod[{k}] = {a} is not in the open interval (0, 1)"),
                ));
            }
        }
        let mut ls = Vec::with_capacity(n);
        for j in 0..n {
            let a = table[n - 1 - j];
            ls.push(a.ln() - (-a).ln_1p());
        }
        for j in 1..n {
            if ls[j] <= ls[j - 1] {
                let k = n - 1 - j;
                return Err(invalid(
                    "alphas_cumprod",
                    format!(
                        "alphas_cumprod must be strictly decreasing (index 0 least noisy); \
                     alphas_cumprod[{k}] = {} <= alphas_cumprod[{}] = {}",
                        table[k],
                        k + 1,
                        table[k + 1]
                    ),
                ));
            }
        }
        let denom = (n + 1) as f64;
        let ts = (0..n).map(|j| (j + 1) as f64 / denom).collect();
        Ok(Self {
            ts,
            ls,
            table: table.to_vec(),
        })
    }

    /// Build from DDPM betas: "linear" (linspace(beta_start, beta_end, T)) or "scaled_linear"
    /// (linspace(sqrt(beta_start), sqrt(beta_end), T)^2, SD 1.x / SDXL), alphas_cumprod =
    /// cumprod(1 - betas). Computed in float64 (diffusers uses float32, differences ~1e-7).
    pub fn from_betas(
        beta_start: f64,
        beta_end: f64,
        num_train_timesteps: usize,
        kind: &str,
    ) -> Result<Self> {
        if !(beta_start.is_finite() && beta_start > 0.0 && beta_start < 1.0) {
            return Err(invalid(
                "beta_start",
                format!("beta_start must be in (0, 1), got {beta_start}"),
            ));
        }
        if !(beta_end.is_finite() && beta_end > 0.0 && beta_end < 1.0) {
            return Err(invalid(
                "beta_end",
                format!("beta_end must be in (0, 1), got {beta_end}"),
            ));
        }
        if num_train_timesteps < 2 {
            return Err(invalid(
                "num_train_timesteps",
                format!("num_train_timesteps must be >= 2, got {num_train_timesteps}"),
            ));
        }
        // betas, the table, its copy and the log-SNR and time nodes
        ensure_fits(
            "num_train_timesteps",
            &format!("num_train_timesteps = {num_train_timesteps}"),
            bytes_of(&[(num_train_timesteps as u128, 8 * 5)]),
        )?;
        let n = num_train_timesteps;
        let lin = |a: f64, b: f64, i: usize| a + (b - a) * (i as f64) / ((n - 1) as f64);
        let betas: Vec<f64> = match kind {
            "linear" => (0..n).map(|i| lin(beta_start, beta_end, i)).collect(),
            "scaled_linear" => (0..n)
                .map(|i| lin(beta_start.sqrt(), beta_end.sqrt(), i).powi(2))
                .collect(),
            other => {
                return Err(invalid(
                    "kind",
                    format!("kind must be \"linear\" or \"scaled_linear\", got {other:?}"),
                ))
            }
        };
        let mut acc = 1.0;
        let table: Vec<f64> = betas
            .iter()
            .map(|b| {
                acc *= 1.0 - b;
                acc
            })
            .collect();
        Self::from_alphas_cumprod(&table)
    }

    /// Times of the noisiest and the least noisy node: (1/(T+1), 1 - 1/(T+1)).
    pub fn node_range(&self) -> (f64, f64) {
        (self.ts[0], self.ts[self.ts.len() - 1])
    }

    /// Number of table entries T.
    pub fn len(&self) -> usize {
        self.ts.len()
    }

    /// Always false (a table has at least two entries).
    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    /// Continuous diffusers timestep of time t: node k sits at t_k = 1 - (k + 1) / (T + 1), so
    /// k(t) = (T + 1)(1 - t) - 1 (fractional between nodes, -1 at t = 1, T at t = 0).
    pub fn timestep_from_t(&self, t: f64) -> f64 {
        (self.len() as f64 + 1.0) * (1.0 - t) - 1.0
    }

    /// Inverse of [`VpTable::timestep_from_t`]: t = 1 - (k + 1) / (T + 1).
    pub fn t_from_timestep(&self, k: f64) -> f64 {
        1.0 - (k + 1.0) / (self.len() as f64 + 1.0)
    }

    /// The table back in diffusers order (alphas_cumprod[k], k = 0 least noisy).
    pub fn alphas_cumprod(&self) -> Vec<f64> {
        self.table.clone()
    }

    /// Log-SNR and its t-derivative.
    fn log_snr_and_slope(&self, t: f64) -> (f64, f64) {
        let n = self.ts.len();
        let (t_lo, l_lo) = (self.ts[0], self.ls[0]);
        let (t_hi, l_hi) = (self.ts[n - 1], self.ls[n - 1]);
        // the slope is right-continuous: at the noisiest node itself it is the table's, so a
        // sampler stepping from that node sees the table's (bounded) derivatives
        if t < t_lo {
            if t <= 0.0 {
                return (f64::NEG_INFINITY, f64::INFINITY);
            }
            return (l_lo + 2.0 * (t / t_lo).ln(), 2.0 / t);
        }
        if t >= t_hi {
            if t >= 1.0 {
                return (f64::INFINITY, f64::INFINITY);
            }
            return (
                l_hi - 2.0 * ((1.0 - t) / (1.0 - t_hi)).ln(),
                2.0 / (1.0 - t),
            );
        }
        // uniform node spacing: j = floor(t * (T + 1)) - 1 gives ts[j] <= t < ts[j + 1]
        let h = 1.0 / (n + 1) as f64;
        let mut j = ((t / h).floor() as usize).saturating_sub(1).min(n - 2);
        while j > 0 && self.ts[j] > t {
            j -= 1;
        }
        while j + 2 < n && self.ts[j + 1] <= t {
            j += 1;
        }
        let slope = (self.ls[j + 1] - self.ls[j]) / (self.ts[j + 1] - self.ts[j]);
        (self.ls[j] + slope * (t - self.ts[j]), slope)
    }

    fn t_from_log_snr(&self, l: f64) -> f64 {
        let n = self.ts.len();
        let (t_lo, l_lo) = (self.ts[0], self.ls[0]);
        let (t_hi, l_hi) = (self.ts[n - 1], self.ls[n - 1]);
        if l <= l_lo {
            return t_lo * (0.5 * (l - l_lo)).exp();
        }
        if l >= l_hi {
            return 1.0 - (1.0 - t_hi) * (-0.5 * (l - l_hi)).exp();
        }
        // ls strictly increasing: find j with ls[j] <= l < ls[j + 1]
        let j = self.ls.partition_point(|&x| x <= l) - 1;
        let j = j.min(n - 2);
        let frac = (l - self.ls[j]) / (self.ls[j + 1] - self.ls[j]);
        self.ts[j] + frac * (self.ts[j + 1] - self.ts[j])
    }
}

/// A noise schedule. Cheap to clone (shifted schedules share their base).
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// alpha = t, sigma = 1 - t (FLUX, SD3, SiT "linear").
    RectifiedFlow,
    /// alpha = sin(pi t / 2), sigma = cos(pi t / 2).
    Cosine,
    /// Variance preserving, from a discrete table.
    Vp(Arc<VpTable>),
    /// SD3/FLUX time shift of a base schedule: alpha(t) = base.alpha(m(t)) with
    /// m(t) = 1 - s(1-t) / (1 + (s-1)(1-t)).
    Shifted { base: Arc<Schedule>, shift: f64 },
}

#[inline]
fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

fn check_t(t: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&t) {
        return Err(invalid(
            "t",
            format!("t must be a finite time in [0, 1], got {t}"),
        ));
    }
    Ok(())
}

impl Schedule {
    /// Wrap `base` with the SD3/FLUX static time shift `shift` (> 0).
    pub fn shifted(base: Schedule, shift: f64) -> Result<Self> {
        check_shift(shift)?;
        Ok(Schedule::Shifted {
            base: Arc::new(base),
            shift,
        })
    }

    /// Human-readable name, e.g. `rectified_flow`, `shifted(rectified_flow, 3)`.
    pub fn name(&self) -> String {
        match self {
            Schedule::RectifiedFlow => "rectified_flow".into(),
            Schedule::Cosine => "cosine".into(),
            Schedule::Vp(tab) => format!("vp(T={})", tab.len()),
            Schedule::Shifted { base, shift } => format!("shifted({}, {})", base.name(), shift),
        }
    }

    /// The VP table when this is a (non-shifted) VP schedule.
    pub fn vp_table(&self) -> Option<&VpTable> {
        match self {
            Schedule::Vp(t) => Some(t),
            _ => None,
        }
    }

    /// The times [t_lo, t_hi] at which a model carries information about this schedule's states.
    /// A denoiser is queried at t clamped to this range (D_t := D_{t_lo} below it, the noise-end
    /// convention). VP tables: their noisiest and least noisy nodes (the network was trained only
    /// there; outside, the schedule is a closure); analytic schedules: [0, 1]; shifted: the base's
    /// range mapped back through the shift.
    pub fn model_time_range(&self) -> (f64, f64) {
        match self {
            Schedule::RectifiedFlow | Schedule::Cosine => (0.0, 1.0),
            Schedule::Vp(tab) => tab.node_range(),
            Schedule::Shifted { base, shift } => {
                let (lo, hi) = base.model_time_range();
                (shift_inverse(*shift, lo), shift_inverse(*shift, hi))
            }
        }
    }

    /// (alpha, sigma, d_alpha, d_sigma) at t in [0, 1]. Input is not validated (see `check_t`).
    pub fn eval(&self, t: f64) -> (f64, f64, f64, f64) {
        match self {
            Schedule::RectifiedFlow => (t, 1.0 - t, 1.0, -1.0),
            Schedule::Cosine => {
                let a = (FRAC_PI_2 * t).sin();
                let s = (FRAC_PI_2 * (1.0 - t)).sin();
                (a, s, FRAC_PI_2 * s, -FRAC_PI_2 * a)
            }
            Schedule::Vp(tab) => {
                let (l, dl) = tab.log_snr_and_slope(t);
                let a2 = sigmoid(l);
                let s2 = sigmoid(-l);
                let (a, s) = (a2.sqrt(), s2.sqrt());
                let n = tab.ts.len();
                let (t_lo, t_hi) = tab.node_range();
                // In the end closures alpha = exp(l_lo / 2) (t / t_lo) sigma below the table and
                // sigma = exp(-l_hi / 2) ((1 - t) / (1 - t_hi)) alpha above it, so the
                // derivatives have closed forms that stay finite where l' = 2 / t overflows
                // and alpha underflows (0 * inf at subnormal t).
                let da = if t >= 1.0 {
                    0.0
                } else if t < t_lo {
                    s2 * s * (0.5 * tab.ls[0]).exp() / t_lo
                } else {
                    0.5 * a * s2 * dl
                };
                let ds = if t <= 0.0 {
                    0.0
                } else if t >= t_hi {
                    -a2 * a * (-0.5 * tab.ls[n - 1]).exp() / (1.0 - t_hi)
                } else {
                    -0.5 * s * a2 * dl
                };
                (a, s, da, ds)
            }
            Schedule::Shifted { base, shift } => {
                let (m, dm) = shift_map(*shift, t);
                let (a, s, da, ds) = base.eval(m);
                (a, s, da * dm, ds * dm)
            }
        }
    }

    pub fn alpha(&self, t: f64) -> f64 {
        self.eval(t).0
    }
    pub fn sigma(&self, t: f64) -> f64 {
        self.eval(t).1
    }
    pub fn d_alpha(&self, t: f64) -> f64 {
        self.eval(t).2
    }
    pub fn d_sigma(&self, t: f64) -> f64 {
        self.eval(t).3
    }

    /// log SNR(t) = 2 log(alpha_t / sigma_t); -inf at t = 0, +inf at t = 1.
    pub fn log_snr(&self, t: f64) -> f64 {
        match self {
            Schedule::RectifiedFlow => 2.0 * (t.ln() - (1.0 - t).ln()),
            Schedule::Cosine => {
                2.0 * ((FRAC_PI_2 * t).sin().ln() - (FRAC_PI_2 * (1.0 - t)).sin().ln())
            }
            Schedule::Vp(tab) => tab.log_snr_and_slope(t).0,
            Schedule::Shifted { base, shift } => base.log_snr(shift_map(*shift, t).0),
        }
    }

    /// Inverse of `log_snr` (monotone). -inf -> 0, +inf -> 1. NaN is passed through.
    pub fn t_from_log_snr(&self, l: f64) -> f64 {
        if l.is_nan() {
            return f64::NAN;
        }
        if l == f64::NEG_INFINITY {
            return 0.0;
        }
        if l == f64::INFINITY {
            return 1.0;
        }
        match self {
            // SNR = (t/(1-t))^2  =>  t = sigmoid(l/2)
            Schedule::RectifiedFlow => sigmoid(0.5 * l),
            // SNR = tan^2(pi t / 2)
            Schedule::Cosine => {
                if l <= 0.0 {
                    (0.5 * l).exp().atan() / FRAC_PI_2
                } else {
                    1.0 - (-0.5 * l).exp().atan() / FRAC_PI_2
                }
            }
            Schedule::Vp(tab) => tab.t_from_log_snr(l),
            Schedule::Shifted { base, shift } => shift_inverse(*shift, base.t_from_log_snr(l)),
        }
    }

    /// Inverse of SNR(t) (= alpha^2 / sigma^2); snr must be >= 0 (0 -> 0, inf -> 1).
    pub fn t_from_snr(&self, snr: f64) -> f64 {
        self.t_from_log_snr(snr.ln())
    }

    /// DDPM correlation rho = alpha_t sigma_t' / (sigma_t alpha_t') (docs/math.md §3, Prop. 1).
    /// 0 at t = 0 and at t_next = 1 (sigma_1 = 0).
    pub fn rho_ddpm(&self, t: f64, t_next: f64) -> Result<f64> {
        check_transition(t, t_next)?;
        let (a, s, _, _) = self.eval(t);
        let (a2, s2, _, _) = self.eval(t_next);
        if a == 0.0 || s2 == 0.0 {
            return Ok(0.0);
        }
        Ok(((a * s2) / (s * a2)).clamp(0.0, 1.0))
    }
}

/// Validate an outer transition (t, t_next): finite, 0 <= t < t_next <= 1.
pub fn check_transition(t: f64, t_next: f64) -> Result<()> {
    check_t(t)?;
    if !(0.0..=1.0).contains(&t_next) {
        return Err(invalid(
            "t_next",
            format!("t_next must be a finite time in [0, 1], got {t_next}"),
        ));
    }
    if t >= 1.0 {
        return Err(invalid(
            "t",
            format!("t must be < 1 (t = 1 is data), got {t}"),
        ));
    }
    if t_next <= t {
        return Err(invalid(
            "t_next",
            format!("t_next must be > t, got t = {t}, t_next = {t_next}"),
        ));
    }
    Ok(())
}

/// m(t) = 1 - s(1-t) / (1 + (s-1)(1-t)) and dm/dt = s / (1 + (s-1)(1-t))^2.
#[inline]
pub fn shift_map(shift: f64, t: f64) -> (f64, f64) {
    let tau = 1.0 - t;
    let den = 1.0 + (shift - 1.0) * tau;
    (1.0 - shift * tau / den, shift / (den * den))
}

/// Inverse of `shift_map`: given m, the t with shift_map(t) = m.
#[inline]
pub fn shift_inverse(shift: f64, m: f64) -> f64 {
    let taup = 1.0 - m;
    1.0 - taup / (shift - (shift - 1.0) * taup)
}

/// diffusers' FLUX `calculate_shift`: mu linear in the image sequence length.
pub fn dynamic_shift_mu(
    image_seq_len: f64,
    base_seq_len: f64,
    max_seq_len: f64,
    base_shift: f64,
    max_shift: f64,
) -> Result<f64> {
    if max_seq_len == base_seq_len {
        return Err(invalid(
            "max_seq_len",
            "max_seq_len must differ from base_seq_len",
        ));
    }
    let m = (max_shift - base_shift) / (max_seq_len - base_seq_len);
    let b = base_shift - m * base_seq_len;
    let mu = image_seq_len * m + b;
    if !mu.is_finite() {
        return Err(invalid(
            "image_seq_len",
            format!("image_seq_len gives a non-finite mu: {mu}"),
        ));
    }
    Ok(mu)
}

/// Shifts are accepted in [1/MAX_SHIFT, MAX_SHIFT]: beyond, the shifted times round to the ends
/// of [0, 1] (a grid collapses, alpha(0) underflows). Models use shifts of about 0.3 to 10.
pub const MAX_SHIFT: f64 = 1e6;

fn check_shift(shift: f64) -> Result<()> {
    if !(shift.is_finite() && (1.0 / MAX_SHIFT..=MAX_SHIFT).contains(&shift)) {
        return Err(invalid(
            "shift",
            format!("shift must be a number in [1e-6, 1e6], got {shift:?}"),
        ));
    }
    Ok(())
}

/// A generated grid must be strictly increasing: `what` names the arguments that made it collapse.
fn check_generated(g: &[f64], arg: &str, what: impl Fn() -> String) -> Result<()> {
    match g.windows(2).position(|p| p[1] <= p[0]) {
        None => Ok(()),
        Some(i) => Err(invalid(
            arg,
            format!(
                "{}: the grid is not strictly increasing (points {i} and {} are {} and {})",
                what(),
                i + 1,
                g[i],
                g[i + 1]
            ),
        )),
    }
}

/// `num_steps + 1` equally spaced times from t_start to t_end (endpoints exact).
pub fn uniform_grid(num_steps: usize, t_start: f64, t_end: f64) -> Result<Vec<f64>> {
    if num_steps == 0 {
        return Err(invalid("num_steps", "num_steps must be >= 1, got 0"));
    }
    ensure_fits(
        "num_steps",
        &format!("num_steps = {num_steps}"),
        bytes_of(&[(num_steps as u128 + 1, 8)]),
    )?;
    check_t(t_start).map_err(|_| {
        invalid(
            "t_start",
            format!("t_start must be in [0, 1], got {t_start}"),
        )
    })?;
    check_t(t_end)
        .map_err(|_| invalid("t_end", format!("t_end must be in [0, 1], got {t_end}")))?;
    if t_end <= t_start {
        return Err(invalid(
            "t_end",
            format!("t_end must be > t_start, got t_start = {t_start}, t_end = {t_end}"),
        ));
    }
    let n = num_steps as f64;
    let mut g: Vec<f64> = (0..=num_steps)
        .map(|i| t_start + (t_end - t_start) * (i as f64 / n))
        .collect();
    g[num_steps] = t_end;
    check_generated(&g, "num_steps", || {
        format!("num_steps = {num_steps} is too many for t_start = {t_start}, t_end = {t_end}")
    })?;
    Ok(g)
}

/// FLUX/SD3 shifted grid: sigmas = linspace(1, 0, n+1), sigma' = s sigma / (1 + (s-1) sigma),
/// t = 1 - sigma'.
pub fn shifted_grid(num_steps: usize, shift: f64) -> Result<Vec<f64>> {
    if num_steps == 0 {
        return Err(invalid("num_steps", "num_steps must be >= 1, got 0"));
    }
    ensure_fits(
        "num_steps",
        &format!("num_steps = {num_steps}"),
        bytes_of(&[(num_steps as u128 + 1, 8)]),
    )?;
    check_shift(shift)?;
    let n = num_steps as f64;
    let mut g: Vec<f64> = (0..=num_steps)
        .map(|i| {
            let sig = 1.0 - i as f64 / n;
            1.0 - shift * sig / (1.0 + (shift - 1.0) * sig)
        })
        .collect();
    g[0] = 0.0;
    g[num_steps] = 1.0;
    check_generated(&g, "num_steps", || {
        format!("num_steps = {num_steps} with shift = {shift} collapses the shifted grid")
    })?;
    Ok(g)
}

/// Check a time grid: at least two points, finite, inside [0, 1], strictly increasing.
pub fn validate_time_grid(grid: &[f64]) -> Result<()> {
    if grid.len() < 2 {
        return Err(invalid(
            "time_grid",
            format!("time_grid must have at least 2 points, got {}", grid.len()),
        ));
    }
    for (i, &t) in grid.iter().enumerate() {
        if !(0.0..=1.0).contains(&t) {
            return Err(invalid(
                "time_grid",
                format!("time_grid[{i}] = {t} is not a finite time in [0, 1]"),
            ));
        }
        if i > 0 && t <= grid[i - 1] {
            return Err(invalid(
                "time_grid",
                format!(
                "time_grid must be strictly increasing: time_grid[{}] = {} >= time_grid[{i}] = {t}",
                i - 1,
                grid[i - 1]
            ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The VP inverse t(SNR) over the whole of [0, 1], including below the noisiest table time
    /// 1/(T+1) and above the least noisy one: t -> SNR(t) -> t round-trips.
    #[test]
    fn vp_inverse_round_trips_on_the_whole_range() {
        let vp = Schedule::Vp(std::sync::Arc::new(
            VpTable::from_betas(0.00085, 0.012, 1000, "scaled_linear").unwrap(),
        ));
        let lo = 1.0 / 1001.0;
        let mut ts = vec![
            1e-7,
            1e-5,
            1e-4,
            3e-4,
            0.5 * lo,
            0.9 * lo,
            lo,
            1.1 * lo,
            2.0 * lo,
        ];
        ts.extend((1..1000).map(|k| k as f64 / 1000.0));
        ts.extend([1.0 - lo, 1.0 - 0.5 * lo, 1.0 - 1e-6]);
        for &t in &ts {
            let l = vp.log_snr(t);
            assert!(l.is_finite(), "{t}");
            let back = vp.t_from_log_snr(l);
            assert!((back - t).abs() < 1e-9, "t_from_log_snr: {t} -> {back}");
            let back = vp.t_from_snr(l.exp());
            assert!(
                (back - t).abs() < 1e-7 * t.max(1e-3),
                "t_from_snr: {t} -> {back}"
            );
        }
        assert_eq!(vp.t_from_snr(0.0), 0.0);
        assert_eq!(vp.t_from_snr(f64::INFINITY), 1.0);
    }

    #[test]
    fn vp_timestep_mapping_hits_the_nodes_and_inverts() {
        let table: Vec<f64> = (0..10).map(|k| 0.99 - 0.09 * k as f64).collect();
        let vp = VpTable::from_alphas_cumprod(&table).unwrap();
        for k in 0..10 {
            let t = 1.0 - (k as f64 + 1.0) / 11.0;
            assert!((vp.timestep_from_t(t) - k as f64).abs() < 1e-12);
            assert!((vp.t_from_timestep(k as f64) - t).abs() < 1e-15);
        }
        assert!((vp.timestep_from_t(0.0) - 10.0).abs() < 1e-12);
        assert!((vp.timestep_from_t(1.0) + 1.0).abs() < 1e-12);
    }

    fn sd_table() -> VpTable {
        VpTable::from_betas(0.00085, 0.012, 1000, "scaled_linear").unwrap()
    }

    fn all() -> Vec<Schedule> {
        vec![
            Schedule::RectifiedFlow,
            Schedule::Cosine,
            Schedule::Vp(Arc::new(sd_table())),
            Schedule::shifted(Schedule::RectifiedFlow, 3.0).unwrap(),
            Schedule::shifted(Schedule::Vp(Arc::new(sd_table())), 0.5).unwrap(),
        ]
    }

    #[test]
    fn boundaries() {
        for s in all() {
            let (a0, s0, _, _) = s.eval(0.0);
            let (a1, s1, _, _) = s.eval(1.0);
            assert_eq!(a0, 0.0, "{}", s.name());
            assert_eq!(s1, 0.0, "{}", s.name());
            assert!(
                (s0 - 1.0).abs() < 1e-12 && (a1 - 1.0).abs() < 1e-12,
                "{}",
                s.name()
            );
        }
    }

    #[test]
    fn derivatives_match_finite_differences() {
        for s in all() {
            for i in 1..200 {
                let t = i as f64 / 200.0 + 1e-3;
                if t >= 1.0 {
                    continue;
                }
                // one-sided differences: the VP log-SNR is only piecewise linear, so its
                // derivative (right-continuous) may jump at table nodes
                let h = 1e-7;
                let (_, _, da, ds) = s.eval(t);
                let ok = |d: f64, f: &dyn Fn(f64) -> f64| {
                    let r = (f(t + h) - f(t)) / h;
                    let l = (f(t) - f(t - h)) / h;
                    (d - r).abs() < 1e-5 * (1.0 + d.abs()) || (d - l).abs() < 1e-5 * (1.0 + d.abs())
                };
                assert!(ok(da, &|x| s.alpha(x)), "{} t={t} {da}", s.name());
                assert!(ok(ds, &|x| s.sigma(x)), "{} t={t} {ds}", s.name());
            }
        }
    }

    #[test]
    fn round_trip_t_from_log_snr() {
        for s in all() {
            for i in 1..1000 {
                let t = i as f64 / 1000.0;
                let l = s.log_snr(t);
                let t2 = s.t_from_log_snr(l);
                assert!((t - t2).abs() < 1e-10, "{} t={t} t2={t2}", s.name());
                let l2 = s.log_snr(t2);
                // 1e-6 relative in SNR
                assert!((l - l2).abs() < 1e-6, "{} t={t}", s.name());
            }
            assert_eq!(s.t_from_snr(0.0), 0.0);
            assert_eq!(s.t_from_snr(f64::INFINITY), 1.0);
        }
    }

    #[test]
    fn vp_nodes_reproduce_table() {
        let tab = sd_table();
        let ac = tab.alphas_cumprod();
        let s = Schedule::Vp(Arc::new(tab));
        let t_count = ac.len() as f64;
        for (k, &a) in ac.iter().enumerate() {
            let t = 1.0 - (k as f64 + 1.0) / (t_count + 1.0);
            assert!((s.alpha(t).powi(2) - a).abs() < 1e-12);
        }
        // alpha^2 + sigma^2 = 1
        for i in 0..=100 {
            let (a, sg, _, _) = s.eval(i as f64 / 100.0);
            assert!((a * a + sg * sg - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn model_time_range_is_the_node_range() {
        let tab = sd_table();
        let s = Schedule::Vp(Arc::new(tab.clone()));
        let (lo, hi) = s.model_time_range();
        assert_eq!((lo, hi), (1.0 / 1001.0, 1.0 - 1.0 / 1001.0));
        assert_eq!(Schedule::RectifiedFlow.model_time_range(), (0.0, 1.0));
        assert_eq!(Schedule::Cosine.model_time_range(), (0.0, 1.0));
        let sh = Schedule::shifted(s.clone(), 3.0).unwrap();
        let (slo, shi) = sh.model_time_range();
        assert!((shift_map(3.0, slo).0 - lo).abs() < 1e-12);
        assert!((shift_map(3.0, shi).0 - hi).abs() < 1e-12);
        // at the noisiest node the derivative is the table's (right) slope, not the closure's
        let (_, _, da_node, _) = s.eval(lo);
        let (_, _, da_next, _) = s.eval(lo + 1e-9);
        assert!(
            (da_node - da_next).abs() < 1e-6 * da_next.abs(),
            "{da_node} {da_next}"
        );
        assert!(da_node < 1.0, "{da_node}");
    }

    #[test]
    fn vp_rejects_bad_tables() {
        assert!(VpTable::from_alphas_cumprod(&[0.9, 0.95]).is_err());
        assert!(VpTable::from_alphas_cumprod(&[0.9, 1.0]).is_err());
        assert!(VpTable::from_alphas_cumprod(&[0.9]).is_err());
        assert!(VpTable::from_alphas_cumprod(&[0.9, f64::NAN]).is_err());
        assert!(VpTable::from_betas(0.1, 0.2, 10, "cubic").is_err());
    }

    #[test]
    fn closed_forms() {
        let rf = Schedule::RectifiedFlow;
        let cos = Schedule::Cosine;
        for i in 1..100 {
            let t = i as f64 / 100.0;
            let y = 1.0 / (t / (1.0 - t)).powi(2); // g(t)
            assert!((rf.t_from_snr(1.0 / y) - 1.0 / (1.0 + y.sqrt())).abs() < 1e-12);
            let yc = 1.0 / (FRAC_PI_2 * t).tan().powi(2);
            let tc = (1.0 / yc.sqrt()).atan() / FRAC_PI_2;
            assert!((cos.t_from_snr(1.0 / yc) - tc).abs() < 1e-12);
            let rho = rf.rho_ddpm(t, (t + 1.0) / 2.0).unwrap();
            let tn = (t + 1.0) / 2.0;
            assert!((rho - t * (1.0 - tn) / ((1.0 - t) * tn)).abs() < 1e-12);
        }
        assert_eq!(rf.rho_ddpm(0.0, 0.5).unwrap(), 0.0);
        assert_eq!(rf.rho_ddpm(0.5, 1.0).unwrap(), 0.0);
        assert!(rf.rho_ddpm(0.5, 0.5).is_err());
        assert!(rf.rho_ddpm(1.0, 1.0).is_err());
    }

    #[test]
    fn shift_grid_matches_shifted_schedule() {
        let g = shifted_grid(10, 3.0).unwrap();
        let u = uniform_grid(10, 0.0, 1.0).unwrap();
        for (a, b) in g.iter().zip(u.iter()) {
            // shifted_grid point = m(uniform point)
            assert!((shift_map(3.0, *b).0 - a).abs() < 1e-12);
            assert!((shift_inverse(3.0, *a) - b).abs() < 1e-12);
        }
        validate_time_grid(&g).unwrap();
        assert!(validate_time_grid(&[0.0, 0.5, 0.5]).is_err());
        assert!(validate_time_grid(&[0.0, 1.5]).is_err());
        assert!(validate_time_grid(&[0.0]).is_err());
        let mu = dynamic_shift_mu(4096.0, 256.0, 4096.0, 0.5, 1.15).unwrap();
        assert!((mu - 1.15).abs() < 1e-12);
    }

    fn arg_of<T: std::fmt::Debug>(r: Result<T>) -> String {
        match r {
            Err(crate::error::GlassError::InvalidInput { arg, .. }) => arg,
            e => panic!("expected InvalidInput, got {e:?}"),
        }
    }

    fn msg_of<T: std::fmt::Debug>(r: Result<T>) -> String {
        match r {
            Err(crate::error::GlassError::InvalidInput { msg, .. }) => msg,
            e => panic!("expected InvalidInput, got {e:?}"),
        }
    }

    /// A three-entry table: nodes at t = 1/4, 1/2, 3/4 with log-SNR ln(1/9), 0, ln 9.
    fn small_vp() -> VpTable {
        VpTable::from_alphas_cumprod(&[0.9, 0.5, 0.1]).unwrap()
    }

    #[test]
    fn vp_table_accessors_and_schedule_names() {
        let tab = small_vp();
        assert_eq!(tab.len(), 3);
        assert!(!tab.is_empty());
        assert_eq!(tab.node_range(), (0.25, 0.75));
        assert_eq!(tab.alphas_cumprod(), vec![0.9, 0.5, 0.1]);
        let vp = Schedule::Vp(Arc::new(tab.clone()));
        assert_eq!(vp.vp_table(), Some(&tab));
        assert_eq!(Schedule::RectifiedFlow.vp_table(), None);
        let sh = Schedule::shifted(vp.clone(), 2.5).unwrap();
        assert_eq!(sh.vp_table(), None);
        assert_eq!(Schedule::RectifiedFlow.name(), "rectified_flow");
        assert_eq!(Schedule::Cosine.name(), "cosine");
        assert_eq!(vp.name(), "vp(T=3)");
        assert_eq!(sh.name(), "shifted(vp(T=3), 2.5)");
    }

    /// log-SNR of the three-node table in every region (closure below the first node, linear
    /// between nodes, closure above the last) and its right-continuous slope, through eval's
    /// derivatives d_alpha = alpha sigma^2 l' / 2, d_sigma = -sigma alpha^2 l' / 2.
    #[test]
    fn vp_log_snr_and_slope_closed_form_in_every_region() {
        let vp = Schedule::Vp(Arc::new(small_vp()));
        let (l0, l1, l2) = ((1.0f64 / 9.0).ln(), 0.0f64, 9f64.ln());
        let cases: [(f64, f64, f64); 9] = [
            (0.1, l0 + 2.0 * (0.1f64 / 0.25).ln(), 2.0 / 0.1),
            (0.2, l0 + 2.0 * (0.2f64 / 0.25).ln(), 2.0 / 0.2),
            (0.25, l0, (l1 - l0) / 0.25),
            (0.3, l0 + (l1 - l0) * 0.05 / 0.25, (l1 - l0) / 0.25),
            (0.5, l1, (l2 - l1) / 0.25),
            (0.6, l1 + (l2 - l1) * 0.1 / 0.25, (l2 - l1) / 0.25),
            (0.75, l2, 2.0 / 0.25),
            (0.8, l2 - 2.0 * (0.2f64 / 0.25).ln(), 2.0 / 0.2),
            (0.95, l2 - 2.0 * (0.05f64 / 0.25).ln(), 2.0 / 0.05),
        ];
        for (t, l, dl) in cases {
            assert!(
                (vp.log_snr(t) - l).abs() < 1e-12,
                "t={t}: {} vs {l}",
                vp.log_snr(t)
            );
            let (a, s, da, ds) = vp.eval(t);
            let a2 = 1.0 / (1.0 + (-l).exp());
            assert!((a - a2.sqrt()).abs() < 1e-12 && (s - (1.0 - a2).sqrt()).abs() < 1e-12);
            assert!((da - 0.5 * a * s * s * dl).abs() < 1e-9, "t={t}: da {da}");
            assert!((ds + 0.5 * s * a * a * dl).abs() < 1e-9, "t={t}: ds {ds}");
            // and back
            assert!((vp.t_from_log_snr(l) - t).abs() < 1e-12, "t={t}");
        }
        assert_eq!(vp.log_snr(0.0), f64::NEG_INFINITY);
        assert_eq!(vp.log_snr(1.0), f64::INFINITY);
        // the ends: alpha = exp(l0 / 2) t / t0 near 0, sigma = exp(-l2 / 2) (1 - t) / (1 - t2)
        // near 1
        let (a, s, da, ds) = vp.eval(0.0);
        assert_eq!((a, s, ds), (0.0, 1.0, 0.0));
        assert!((da - (0.5 * l0).exp() / 0.25).abs() < 1e-12, "{da}");
        let (a, s, da, ds) = vp.eval(1.0);
        assert_eq!((a, s, da), (1.0, 0.0, 0.0));
        assert!((ds + (-0.5 * l2).exp() / 0.25).abs() < 1e-12, "{ds}");
        // alpha underflows long before t does: d_alpha keeps its limit down to subnormal t
        for t in [1e-200, 1e-300, 1.1125369292536007e-308, f64::from_bits(1)] {
            let da = vp.d_alpha(t);
            assert!((da - (0.5 * l0).exp() / 0.25).abs() < 1e-12, "t={t}: {da}");
        }
        for t in [1.0 - 1e-12, 1.0f64.next_down()] {
            let ds = vp.d_sigma(t);
            assert!((ds + (-0.5 * l2).exp() / 0.25).abs() < 1e-9, "t={t}: {ds}");
        }
        for (l, t) in [
            (l0 - 2.0, 0.25 * (-1.0f64).exp()),
            (l2 + 2.0, 1.0 - 0.25 / 1f64.exp()),
        ] {
            assert!((vp.t_from_log_snr(l) - t).abs() < 1e-15, "{l}");
        }
    }

    /// The piecewise-linear log-SNR of the 1000-entry SD table against a plain search for the
    /// node interval, at random times and right at (and one ulp around) every node.
    #[test]
    fn vp_interpolation_matches_a_plain_search() {
        let tab = sd_table();
        let vp = Schedule::Vp(Arc::new(tab.clone()));
        let (ts, ls) = (&tab.ts, &tab.ls);
        let n = ts.len();
        // (log-SNR, slope) on the interval [ts[j], ts[j + 1]) holding t
        let plain = |t: f64| {
            let j = (0..n - 1).rev().find(|&j| ts[j] <= t).unwrap();
            let slope = (ls[j + 1] - ls[j]) / (ts[j + 1] - ts[j]);
            (ls[j] + slope * (t - ts[j]), slope)
        };
        let mut rng = crate::resample::row_rng(3, 0);
        let mut times: Vec<f64> = (0..2000)
            .map(|_| ts[0] + (ts[n - 1] - ts[0]) * crate::resample::uniform(&mut rng))
            .collect();
        for &x in &ts[..n - 1] {
            times.extend([x, x.next_up()]);
        }
        for &x in &ts[1..n - 1] {
            times.push(x.next_down());
        }
        times.push(ts[n - 1].next_down());
        for t in times {
            let (want, slope) = plain(t);
            let got = vp.log_snr(t);
            assert!(
                (got - want).abs() < 1e-12 * want.abs().max(1.0),
                "t={t}: {got} vs {want}"
            );
            // the slope through d_alpha = alpha sigma^2 l' / 2
            let (a, s, da, _) = vp.eval(t);
            let want_da = 0.5 * a * s * s * slope;
            assert!(
                (da - want_da).abs() < 1e-9 * want_da.abs(),
                "t={t}: {da} vs {want_da}"
            );
        }
        // the inverse at the nodes' log-SNRs returns the nodes
        for j in 0..n {
            assert!((vp.t_from_log_snr(ls[j]) - ts[j]).abs() < 1e-14, "node {j}");
        }
    }

    #[test]
    fn tables_from_betas_closed_form() {
        let lin = VpTable::from_betas(0.1, 0.3, 3, "linear").unwrap();
        for (got, want) in lin
            .alphas_cumprod()
            .iter()
            .zip([0.9, 0.9 * 0.8, 0.9 * 0.8 * 0.7])
        {
            assert!((got - want).abs() < 1e-15, "{got} {want}");
        }
        // sqrt-linspace from 0.1 to 0.3: betas 0.01, 0.04, 0.09
        let sl = VpTable::from_betas(0.01, 0.09, 3, "scaled_linear").unwrap();
        for (got, want) in sl
            .alphas_cumprod()
            .iter()
            .zip([0.99, 0.99 * 0.96, 0.99 * 0.96 * 0.91])
        {
            assert!((got - want).abs() < 1e-15, "{got} {want}");
        }
        assert_eq!(VpTable::from_betas(0.1, 0.2, 2, "linear").unwrap().len(), 2);
        for (bs, be, t, arg) in [
            (0.0, 0.2, 10, "beta_start"),
            (1.0, 0.2, 10, "beta_start"),
            (f64::INFINITY, 0.2, 10, "beta_start"),
            (0.1, 0.0, 10, "beta_end"),
            (0.1, 1.0, 10, "beta_end"),
            (0.1, f64::NAN, 10, "beta_end"),
            (0.1, 0.2, 1, "num_train_timesteps"),
        ] {
            assert_eq!(arg_of(VpTable::from_betas(bs, be, t, "linear")), arg);
        }
        assert_eq!(arg_of(VpTable::from_betas(0.1, 0.2, 10, "cubic")), "kind");
    }

    #[test]
    fn alphas_cumprod_validation_names_the_entry() {
        assert!(VpTable::from_alphas_cumprod(&[0.999_999, 1e-9]).is_ok());
        for bad in [0.0, 1.0, -0.5, 1.5, f64::INFINITY, f64::NAN] {
            let msg = msg_of(VpTable::from_alphas_cumprod(&[0.9, bad]));
            assert!(msg.starts_with("alphas_cumprod[1] = "), "{msg}");
            let msg = msg_of(VpTable::from_alphas_cumprod(&[bad, 0.1]));
            assert!(msg.starts_with("alphas_cumprod[0] = "), "{msg}");
        }
        let msg = msg_of(VpTable::from_alphas_cumprod(&[0.9, 0.8, 0.85]));
        assert!(
            msg.ends_with("alphas_cumprod[1] = 0.8 <= alphas_cumprod[2] = 0.85"),
            "{msg}"
        );
        assert!(VpTable::from_alphas_cumprod(&[0.9, 0.9]).is_err());
        assert!(msg_of(VpTable::from_alphas_cumprod(&[])).contains("got 0"));
    }

    #[test]
    fn sigmoid_is_stable_at_both_ends() {
        assert_eq!(sigmoid(800.0), 1.0);
        assert!(sigmoid(-800.0) >= 0.0 && sigmoid(-800.0) < 1e-300);
        assert_eq!(sigmoid(0.0), 0.5);
        for x in [-3.0f64, -0.5, 0.5, 3.0] {
            assert!((sigmoid(x) - 1.0 / (1.0 + (-x).exp())).abs() < 1e-15);
        }
        // through the rectified-flow inverse t = sigmoid(l / 2)
        let rf = Schedule::RectifiedFlow;
        assert_eq!(rf.t_from_log_snr(2000.0), 1.0);
        assert!(rf.t_from_log_snr(-2000.0) < 1e-300);
        assert!(rf.t_from_log_snr(f64::NAN).is_nan());
        assert!(Schedule::Cosine.t_from_log_snr(f64::NAN).is_nan());
    }

    #[test]
    fn cosine_inverse_both_branches() {
        let cos = Schedule::Cosine;
        for t in [0.01, 0.2, 0.5, 0.7, 0.99] {
            let l = 2.0 * (FRAC_PI_2 * t).tan().ln();
            assert!((cos.log_snr(t) - l).abs() < 1e-12, "{t}");
            assert!((cos.t_from_log_snr(l) - t).abs() < 1e-12, "{t}");
        }
        // each branch is the one without cancellation: t = 1e-12 comes back to 1e-9 relative
        // (the other branch, 1 - atan(e^{-l/2}) / (pi/2), loses it to 1 - (1 - 6e-13))
        let t = 1e-12;
        let back = cos.t_from_log_snr(cos.log_snr(t));
        assert!((back / t - 1.0).abs() < 1e-9, "{back}");
        // near t = 1, log SNR uses 1 - t itself (sin(pi/2 (1 + t)) is equal in exact arithmetic
        // but rounds 2 - d to 4e-16, a 1e-7 relative error in d = 1e-9)
        let t = 1.0 - 1e-9;
        let d = 1.0 - t;
        let exact = 2.0 * ((FRAC_PI_2 * t).sin().ln() - (FRAC_PI_2 * d).sin().ln());
        assert!(
            (cos.log_snr(t) - exact).abs() < 1e-12,
            "{}",
            cos.log_snr(t) - exact
        );
    }

    #[test]
    fn shift_map_closed_form() {
        // s = 3, t = 1/2: tau = 1/2, den = 2, m = 1 - 3/4, dm = 3/4
        assert_eq!(shift_map(3.0, 0.5), (0.25, 0.75));
        assert_eq!(shift_inverse(3.0, 0.25), 0.5);
        // s = 1/2, t = 1/4: tau = 3/4, den = 5/8, m = 1 - 3/5, dm = 32/25
        let (m, dm) = shift_map(0.5, 0.25);
        assert!((m - 0.4).abs() < 1e-15 && (dm - 1.28).abs() < 1e-15);
        assert!((shift_inverse(0.5, 0.4) - 0.25).abs() < 1e-15);
        let sh = Schedule::shifted(Schedule::RectifiedFlow, 3.0).unwrap();
        let (a, s, da, ds) = sh.eval(0.5);
        assert_eq!((a, s, da, ds), (0.25, 0.75, 0.75, -0.75));
        assert!((sh.log_snr(0.5) - 2.0 * (1.0f64 / 3.0).ln()).abs() < 1e-15);
        assert!((sh.t_from_log_snr(2.0 * (1.0f64 / 3.0).ln()) - 0.5).abs() < 1e-15);
        for (shift, ok) in [(1e6, true), (1e-6, true), (1.1e6, false), (0.9e-6, false)] {
            assert_eq!(
                Schedule::shifted(Schedule::Cosine, shift).is_ok(),
                ok,
                "{shift}"
            );
        }
        assert_eq!(
            arg_of(Schedule::shifted(Schedule::Cosine, f64::NAN)),
            "shift"
        );
    }

    #[test]
    fn dynamic_shift_mu_closed_form_and_errors() {
        // slope (1.2 - 0.4) / (300 - 100) = 0.004, intercept 0.4 - 0.4 = 0
        let mu = dynamic_shift_mu(250.0, 100.0, 300.0, 0.4, 1.2).unwrap();
        assert!((mu - 1.0).abs() < 1e-12, "{mu}");
        let mu = dynamic_shift_mu(50.0, 100.0, 300.0, 0.5, 1.3).unwrap();
        assert!((mu - 0.3).abs() < 1e-12, "{mu}");
        assert_eq!(
            arg_of(dynamic_shift_mu(1.0, 5.0, 5.0, 0.5, 1.0)),
            "max_seq_len"
        );
        let bad = dynamic_shift_mu(f64::INFINITY, 1.0, 2.0, 0.5, 1.0);
        assert_eq!(arg_of(bad), "image_seq_len");
    }

    #[test]
    fn transitions_and_grids_validate_each_argument() {
        assert!(check_transition(0.0, 1.0).is_ok());
        assert_eq!(arg_of(check_transition(-0.1, 0.5)), "t");
        assert_eq!(arg_of(check_transition(0.2, 1.5)), "t_next");
        assert_eq!(arg_of(check_transition(0.2, f64::NAN)), "t_next");
        assert_eq!(arg_of(check_transition(1.0, 1.0)), "t");
        assert_eq!(arg_of(check_transition(0.5, 0.5)), "t_next");
        let g = uniform_grid(4, 0.2, 0.6).unwrap();
        assert_eq!((g.len(), g[0], g[4]), (5, 0.2, 0.6));
        for (x, want) in g.iter().zip([0.2, 0.3, 0.4, 0.5, 0.6]) {
            assert!((x - want).abs() < 1e-15, "{g:?}");
        }
        assert_eq!(uniform_grid(1, 0.0, 1.0).unwrap(), vec![0.0, 1.0]);
        assert_eq!(arg_of(uniform_grid(0, 0.0, 1.0)), "num_steps");
        assert_eq!(arg_of(uniform_grid(3, -0.5, 1.0)), "t_start");
        assert_eq!(arg_of(uniform_grid(3, 0.0, 1.5)), "t_end");
        assert_eq!(arg_of(uniform_grid(3, 0.5, 0.5)), "t_end");
        // 10 steps over one ulp collapse
        assert_eq!(arg_of(uniform_grid(10, 0.5, 0.5f64.next_up())), "num_steps");
        assert_eq!(shifted_grid(2, 3.0).unwrap(), vec![0.0, 0.25, 1.0]);
        assert_eq!(shifted_grid(1, 3.0).unwrap(), vec![0.0, 1.0]);
        assert_eq!(arg_of(shifted_grid(0, 3.0)), "num_steps");
        assert_eq!(arg_of(shifted_grid(4, 0.0)), "shift");
        let msg = msg_of(validate_time_grid(&[0.0, 0.4, 0.3]));
        assert!(
            msg.ends_with("time_grid[1] = 0.4 >= time_grid[2] = 0.3"),
            "{msg}"
        );
        let msg = msg_of(validate_time_grid(&[0.0, f64::NAN]));
        assert!(msg.starts_with("time_grid[1] = NaN"), "{msg}");
        assert!(validate_time_grid(&[0.0, 1.0]).is_ok());
        assert!(validate_time_grid(&[0.3, 0.2]).is_err());
    }

    /// Sizes are checked before allocating: a grid of num_steps + 1 f64, a table of five
    /// vectors of T f64.
    #[test]
    fn size_checks_count_what_is_allocated() {
        use crate::limits::with_available;
        assert!(with_available(80, || uniform_grid(9, 0.0, 1.0)).is_ok());
        assert_eq!(
            arg_of(with_available(79, || uniform_grid(9, 0.0, 1.0))),
            "num_steps"
        );
        assert!(with_available(80, || shifted_grid(9, 2.0)).is_ok());
        assert_eq!(
            arg_of(with_available(79, || shifted_grid(9, 2.0))),
            "num_steps"
        );
        let betas = || VpTable::from_betas(0.1, 0.2, 10, "linear");
        assert!(with_available(400, betas).is_ok());
        assert_eq!(arg_of(with_available(399, betas)), "num_train_timesteps");
    }

    /// The single-value accessors are the components of `eval`.
    #[test]
    fn accessors_are_the_components_of_eval() {
        for s in all() {
            for t in [0.0, 0.1, 0.37, 0.5, 0.9, 1.0] {
                let (a, sg, da, ds) = s.eval(t);
                let got = (s.alpha(t), s.sigma(t), s.d_alpha(t), s.d_sigma(t));
                assert_eq!(got, (a, sg, da, ds), "{} t={t}", s.name());
            }
        }
        // rectified flow: d_alpha = 1, d_sigma = -1 everywhere
        assert_eq!(Schedule::RectifiedFlow.d_alpha(0.3), 1.0);
        assert_eq!(Schedule::RectifiedFlow.d_sigma(0.3), -1.0);
        let c = Schedule::Cosine;
        assert!((c.d_alpha(0.5) - FRAC_PI_2 * (FRAC_PI_2 * 0.5).cos()).abs() < 1e-15);
        assert!((c.d_sigma(0.5) + FRAC_PI_2 * (FRAC_PI_2 * 0.5).sin()).abs() < 1e-15);
    }
}
