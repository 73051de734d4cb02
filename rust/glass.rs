//! GLASS transition coefficients (docs/math.md §3): the scalars of the z-conditional kernel and,
//! for each inner time s, the inner CondOT path, the inner-velocity weights and the sufficient
//! statistic / effective time used to query the pretrained denoiser.

use crate::error::{invalid, Result};
use crate::limits::{bytes_of, ensure_fits};
use crate::schedule::{check_transition, Schedule};

/// One table of coefficients for a transition (t -> t_next) with correlation rho.
#[derive(Debug, Clone, PartialEq)]
pub struct GlassCoefficients {
    /// gamma = rho sigma_t' / sigma_t
    pub gamma: f64,
    /// abar = alpha_t' - gamma alpha_t
    pub abar: f64,
    /// sbar = sigma_t' sqrt(1 - rho^2)
    pub sbar: f64,
    pub alpha_t: f64,
    pub sigma_t: f64,
    /// Inner path: a_s = s abar, s_s = (1-s) sigma0 + s sbar.
    pub a_s: Vec<f64>,
    pub s_s: Vec<f64>,
    /// Inner velocity u_s = w1 xbar + w2 zhat + w3 x_t (NaN where s_s = 0).
    pub w1: Vec<f64>,
    pub w2: Vec<f64>,
    pub w3: Vec<f64>,
    /// Precision lam = SNR(t) + a_s^2 / s_s^2 and effective time t* = t(SNR = lam).
    pub lam: Vec<f64>,
    pub t_star: Vec<f64>,
    pub alpha_star: Vec<f64>,
    /// S = c_x x_t + c_y (xbar - gamma x_t); the model is queried at (alpha_star S, t_star).
    pub c_x: Vec<f64>,
    pub c_y: Vec<f64>,
}

/// Compute the GLASS coefficient table (see the contract / docs/math.md §3.2 closed form).
///
/// Conventions at the edges: at s = 0, lam = SNR(t), t* = t, alpha* = alpha_t, c_x = 1/alpha_t
/// (so alpha* c_x = 1), c_y = 0; when additionally t = 0 (alpha_t = 0), c_x = c_y = 0 (the model
/// input alpha* S is 0; the caller evaluates D_0(x_0) directly at s = 0 anyway). Where s_s = 0
/// (s = 1 with sbar = 0): lam = inf, t* = 1, alpha* = 1, c_x = 0, c_y = 1/abar, w1 = w2 = w3 = NaN.
pub fn glass_coefficients(
    schedule: &Schedule,
    t: f64,
    t_next: f64,
    rho: f64,
    s: &[f64],
    sigma0: f64,
) -> Result<GlassCoefficients> {
    check_transition(t, t_next)?;
    if !(rho.is_finite() && (-1.0..=1.0).contains(&rho)) {
        return Err(invalid(
            "rho",
            format!("rho must be a finite number in [-1, 1], got {rho}"),
        ));
    }
    if !(sigma0.is_finite() && sigma0 > 0.0) {
        return Err(invalid(
            "sigma0",
            format!("sigma0 must be a finite number > 0, got {sigma0}"),
        ));
    }
    for (i, &si) in s.iter().enumerate() {
        if !(0.0..=1.0).contains(&si) {
            return Err(invalid(
                "s",
                format!("s[{i}] = {si} is not a finite inner time in [0, 1]"),
            ));
        }
    }
    let (alpha_t, sigma_t, _, _) = schedule.eval(t);
    let (alpha_n, sigma_n, _, _) = schedule.eval(t_next);
    let gamma = rho * sigma_n / sigma_t;
    let abar = alpha_n - gamma * alpha_t;
    let sbar = (sigma_n * sigma_n * (1.0 - rho * rho)).max(0.0).sqrt();
    let snr_t = (alpha_t / sigma_t).powi(2);
    let log_snr_t = schedule.log_snr(t);

    let n = s.len();
    ensure_fits(
        "s",
        &format!("the number of inner times s ({n})"),
        bytes_of(&[(n as u128, 8 * 10)]),
    )?;
    let mut out = GlassCoefficients {
        gamma,
        abar,
        sbar,
        alpha_t,
        sigma_t,
        a_s: Vec::with_capacity(n),
        s_s: Vec::with_capacity(n),
        w1: Vec::with_capacity(n),
        w2: Vec::with_capacity(n),
        w3: Vec::with_capacity(n),
        lam: Vec::with_capacity(n),
        t_star: Vec::with_capacity(n),
        alpha_star: Vec::with_capacity(n),
        c_x: Vec::with_capacity(n),
        c_y: Vec::with_capacity(n),
    };
    for &si in s {
        let a_s = si * abar;
        let s_s = (1.0 - si) * sigma0 + si * sbar;
        out.a_s.push(a_s);
        out.s_s.push(s_s);
        if s_s <= 0.0 {
            out.w1.push(f64::NAN);
            out.w2.push(f64::NAN);
            out.w3.push(f64::NAN);
            out.lam.push(f64::INFINITY);
            out.t_star.push(1.0);
            out.alpha_star.push(1.0);
            out.c_x.push(0.0);
            out.c_y.push(1.0 / abar);
            continue;
        }
        let w1 = (sbar - sigma0) / s_s;
        out.w1.push(w1);
        out.w2.push(abar - a_s * w1);
        out.w3.push(-gamma * w1);
        if si == 0.0 || a_s == 0.0 {
            out.lam.push(snr_t);
            out.t_star.push(t);
            out.alpha_star.push(alpha_t);
            out.c_x
                .push(if alpha_t > 0.0 { 1.0 / alpha_t } else { 0.0 });
            out.c_y.push(0.0);
            continue;
        }
        let r = a_s / s_s;
        let lam = snr_t + r * r;
        // log(lam) computed stably: log(snr_t + r^2)
        let log_lam = if snr_t > 0.0 {
            let lr = 2.0 * r.abs().ln();
            let (hi, lo) = if lr > log_snr_t {
                (lr, log_snr_t)
            } else {
                (log_snr_t, lr)
            };
            hi + (lo - hi).exp().ln_1p()
        } else {
            2.0 * r.abs().ln()
        };
        let t_star = schedule.t_from_log_snr(log_lam);
        out.lam.push(lam);
        out.t_star.push(t_star);
        out.alpha_star.push(schedule.alpha(t_star));
        out.c_x.push(alpha_t / (sigma_t * sigma_t * lam));
        out.c_y.push(a_s / (s_s * s_s * lam));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k1_rectified_flow_is_outer_flow() {
        // t = 0, t' = 1, RF, sigma0 = 1: t* = s and alpha* S = xbar_s (docs/math.md §3.2 check)
        let s: Vec<f64> = (0..10).map(|i| i as f64 / 10.0).collect();
        let c = glass_coefficients(&Schedule::RectifiedFlow, 0.0, 1.0, 0.3, &s, 1.0).unwrap();
        assert_eq!(c.gamma, 0.0);
        assert!((c.abar - 1.0).abs() < 1e-15);
        for (i, &si) in s.iter().enumerate().skip(1) {
            assert!((c.t_star[i] - si).abs() < 1e-12, "{} {}", c.t_star[i], si);
            // alpha* S = alpha* c_y xbar must equal xbar
            assert!((c.alpha_star[i] * c.c_y[i] - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn s_zero_and_s_one_edges() {
        let s = [0.0, 0.5, 1.0];
        let c = glass_coefficients(&Schedule::RectifiedFlow, 0.3, 1.0, 0.4, &s, 1.0).unwrap();
        assert!((c.lam[0] - (0.3f64 / 0.7).powi(2)).abs() < 1e-12);
        assert_eq!(c.t_star[0], 0.3);
        assert!((c.alpha_star[0] * c.c_x[0] - 1.0).abs() < 1e-12);
        assert!(c.w1[2].is_nan() && c.lam[2].is_infinite());
        assert_eq!(c.t_star[2], 1.0);
        // w2 equals the simplified CondOT form abar sigma0 / s_s
        assert!((c.w2[1] - c.abar / c.s_s[1]).abs() < 1e-12);
    }

    #[test]
    fn t_star_monotone_and_lambda_closed_form() {
        let sched = Schedule::Cosine;
        let s: Vec<f64> = (0..=20).map(|i| i as f64 / 20.0).collect();
        let c = glass_coefficients(&sched, 0.2, 0.6, 0.4, &s, 1.0).unwrap();
        for i in 1..s.len() {
            assert!(c.t_star[i] >= c.t_star[i - 1]);
            let snr = (sched.alpha(c.t_star[i]) / sched.sigma(c.t_star[i])).powi(2);
            assert!((snr - c.lam[i]).abs() < 1e-9 * c.lam[i]);
        }
        assert!(c.t_star[20] >= 0.6 - 1e-12);
    }

    /// Every field at 0 < t < t' < 1, rho != 0 (both signs), against docs/math.md §3 written out
    /// for rectified flow (alpha = t, sigma = 1 - t, SNR^-1: t = sqrt(l) / (1 + sqrt(l))), with
    /// gamma and abar also as hand-computed numbers so a sign flip cannot cancel out.
    #[test]
    fn closed_form_every_coefficient_rectified_flow() {
        let (t, tn, sigma0) = (0.2f64, 0.6f64, 1.3f64);
        let s = [0.25f64, 0.7];
        for (rho, gamma_hand, abar_hand) in [(0.5f64, 0.25, 0.55), (-0.5, -0.25, 0.65)] {
            let c = glass_coefficients(&Schedule::RectifiedFlow, t, tn, rho, &s, sigma0).unwrap();
            let (at, st, an, sn) = (t, 1.0 - t, tn, 1.0 - tn);
            let gamma = rho * sn / st;
            let abar = an - gamma * at;
            let sbar = sn * (1.0 - rho * rho).sqrt();
            assert!((c.gamma - gamma_hand).abs() < 1e-15 && (gamma - gamma_hand).abs() < 1e-15);
            assert!((c.abar - abar_hand).abs() < 1e-15 && (abar - abar_hand).abs() < 1e-15);
            assert!((c.sbar - sbar).abs() < 1e-15);
            assert!((c.alpha_t - at).abs() < 1e-15 && (c.sigma_t - st).abs() < 1e-15);
            for (i, &si) in s.iter().enumerate() {
                let a_s = si * abar;
                let s_s = (1.0 - si) * sigma0 + si * sbar;
                let w1 = (sbar - sigma0) / s_s;
                let lam = (at / st).powi(2) + (a_s / s_s).powi(2);
                let t_star = lam.sqrt() / (1.0 + lam.sqrt());
                let want = [
                    (c.a_s[i], a_s),
                    (c.s_s[i], s_s),
                    (c.w1[i], w1),
                    (c.w2[i], abar - a_s * w1),
                    (c.w3[i], -gamma * w1),
                    (c.lam[i], lam),
                    (c.t_star[i], t_star),
                    (c.alpha_star[i], t_star),
                    (c.c_x[i], at / (st * st * lam)),
                    (c.c_y[i], a_s / (s_s * s_s * lam)),
                ];
                for (k, (got, exp)) in want.into_iter().enumerate() {
                    assert!(
                        (got - exp).abs() < 1e-12 * exp.abs().max(1.0),
                        "{rho} {si} {k}"
                    );
                }
            }
        }
    }

    #[test]
    fn validation() {
        let rf = Schedule::RectifiedFlow;
        assert!(glass_coefficients(&rf, 0.5, 0.4, 0.0, &[0.0], 1.0).is_err());
        assert!(glass_coefficients(&rf, 0.5, 0.6, 1.5, &[0.0], 1.0).is_err());
        assert!(glass_coefficients(&rf, 0.5, 0.6, 0.5, &[1.5], 1.0).is_err());
        assert!(glass_coefficients(&rf, 0.5, 0.6, 0.5, &[0.5], 0.0).is_err());
        assert!(glass_coefficients(&rf, f64::NAN, 0.6, 0.5, &[0.5], 1.0).is_err());
    }

    /// The table's ten vectors of len(s) f64 are counted before they are allocated.
    #[test]
    fn size_check_counts_ten_vectors_per_inner_time() {
        let s = [0.5; 20];
        let call = || glass_coefficients(&Schedule::RectifiedFlow, 0.2, 0.6, 0.5, &s, 1.0);
        assert!(crate::limits::with_available(80 * 20, call).is_ok());
        match crate::limits::with_available(80 * 20 - 1, call) {
            Err(crate::error::GlassError::InvalidInput { arg, .. }) => assert_eq!(arg, "s"),
            e => panic!("{e:?}"),
        }
    }

    /// At s = 1 with sbar = 0 (t' = 1, or rho = 1): s_s = 0, so lam = inf, t* = 1, alpha* = 1,
    /// c_x = 0 and c_y = 1 / abar; at s = 0 and t = 0 (alpha_t = 0): c_x = c_y = 0.
    #[test]
    fn degenerate_inner_times_follow_the_conventions() {
        let c = glass_coefficients(&Schedule::RectifiedFlow, 0.3, 1.0, 0.4, &[1.0], 1.0).unwrap();
        assert_eq!(c.s_s[0], 0.0);
        assert_eq!((c.alpha_star[0], c.c_x[0]), (1.0, 0.0));
        assert!(c.w2[0].is_nan() && c.w3[0].is_nan());
        assert!((c.c_y[0] - 1.0 / c.abar).abs() < 1e-15 && c.abar > 0.0);
        // rho = 1 gives sbar = 0 before t' = 1 too: abar = 0.6 - (0.4 / 0.7) 0.3 = 3 / 7
        let c = glass_coefficients(&Schedule::RectifiedFlow, 0.3, 0.6, 1.0, &[1.0], 1.0).unwrap();
        assert_eq!((c.sbar, c.s_s[0]), (0.0, 0.0));
        assert!((c.abar - 3.0 / 7.0).abs() < 1e-15);
        assert!((c.c_y[0] - 7.0 / 3.0).abs() < 1e-14);
        let c = glass_coefficients(&Schedule::Cosine, 0.0, 0.5, 0.4, &[0.0, 0.5], 1.0).unwrap();
        assert_eq!(
            (c.alpha_t, c.c_x[0], c.c_y[0], c.t_star[0]),
            (0.0, 0.0, 0.0, 0.0)
        );
        assert_eq!((c.lam[0], c.alpha_star[0]), (0.0, 0.0));
        assert!(c.c_y[1] > 0.0 && c.c_x[1] == 0.0);
    }

    /// SNR(t) = 1e-320 (subnormal) and r^2 ~ 0.1: log(SNR(t) + r^2) must be formed with the larger
    /// term first (the other order overflows exp); likewise r^2 ~ 1e-600 below SNR(t) ~ 1e20.
    #[test]
    fn precision_sum_is_stable_across_700_orders_of_magnitude() {
        let rf = Schedule::RectifiedFlow;
        for (t, tn, s) in [(1e-160, 0.5, 0.5), (1.0 - 1e-10, 1.0 - 1e-11, 1e-300)] {
            let c = glass_coefficients(&rf, t, tn, 0.5, &[s], 1.0).unwrap();
            let r = c.a_s[0] / c.s_s[0];
            let lam = (t / (1.0 - t)).powi(2) + r * r;
            let want = lam.sqrt() / (1.0 + lam.sqrt());
            assert!(
                (c.t_star[0] - want).abs() < 1e-12,
                "{t}: {} vs {want}",
                c.t_star[0]
            );
        }
    }
}
