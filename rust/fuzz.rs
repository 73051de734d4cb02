//! Property-based fuzzing of the native core (proptest, a bounded number of cases per property so
//! that `cargo test` stays fast): arbitrary inputs never panic, every error is a typed
//! `GlassError`, and the invariants hold — resampling never selects a zero-weight particle (also
//! at the merge's block boundaries), normalised weights sum to 1 at any magnitude, a failed SMC
//! step changes nothing, generated grids are strictly increasing.

use crate::error::GlassError;
use crate::genealogy::{ResampleMode, SmcState};
use crate::interrupt::Never;
use crate::resample::{resample_log_weights, Scheme, Seeds};
use crate::schedule::{self, Schedule};
use proptest::prelude::*;

const SCHEMES: [Scheme; 4] = [
    Scheme::Multinomial,
    Scheme::Stratified,
    Scheme::Systematic,
    Scheme::Residual,
];

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 1000,
        max_shrink_iters: 256,
        ..ProptestConfig::default()
    }
}

/// Log-weights with the special values that matter: -inf (zero weight), NaN, +inf, huge
/// magnitudes, and ordinary values.
fn log_weight() -> impl Strategy<Value = f64> {
    prop_oneof![
        6 => -50.0..50.0f64,
        2 => Just(f64::NEG_INFINITY),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => prop_oneof![Just(1e300), Just(-1e300), Just(f64::MAX), Just(1e16)],
    ]
}

fn finite_or_neg_inf() -> impl Strategy<Value = f64> {
    prop_oneof![8 => -700.0..700.0f64, 2 => Just(f64::NEG_INFINITY)]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn resample_any_input(
        lw in prop::collection::vec(log_weight(), 1..200),
        rows in 1usize..4,
        m in 1usize..400,
        scheme in 0usize..4,
        seed in any::<u64>(),
    ) {
        let n = lw.len() / rows;
        prop_assume!(n >= 1);
        let lw = &lw[..rows * n];
        match resample_log_weights(lw, rows, n, m, SCHEMES[scheme], &Seeds::Single(seed), &Never) {
            Ok(out) => {
                prop_assert_eq!(out.len(), rows * m);
                for (r, o) in out.chunks(m).enumerate() {
                    for &a in o {
                        prop_assert!(a >= 0 && (a as usize) < n);
                        prop_assert!(lw[r * n + a as usize] > f64::NEG_INFINITY, "zero weight chosen");
                    }
                }
            }
            Err(GlassError::DegenerateWeights(_)) => {
                prop_assert!(lw.chunks(n).any(|row| row.iter().any(|x| x.is_nan())
                    || row.iter().all(|&x| x == f64::NEG_INFINITY)));
            }
            Err(GlassError::InvalidInput { .. }) => prop_assert!(lw.contains(&f64::INFINITY)),
            Err(e) => prop_assert!(false, "unexpected {e:?}"),
        }
    }

    /// Heavy particles next to light ones whose weights vanish against them in a running sum,
    /// zero weights at the ends of the merge's four blocks: never selected.
    #[test]
    fn block_boundaries_never_select_zero_weight(
        n in 8usize..2000,
        light in -45.0..-30.0f64,
        heavy_at in prop::collection::vec(0usize..2000, 1..4),
        m_factor in 1usize..4,
        scheme in prop_oneof![Just(Scheme::Systematic), Just(Scheme::Stratified)],
        seed in any::<u64>(),
    ) {
        let mut lw = vec![light; n];
        for h in heavy_at {
            lw[h % n] = 0.0;
        }
        let block = n.div_ceil(4);
        for k in 1..4 {
            lw[(k * block - 1).min(n - 1)] = f64::NEG_INFINITY;
        }
        lw[0] = 0.0;
        let out = resample_log_weights(&lw, 1, n, m_factor * n, scheme, &Seeds::Single(seed), &Never)
            .unwrap();
        prop_assert!(out.iter().all(|&a| lw[a as usize] > f64::NEG_INFINITY));
    }

    #[test]
    fn normalised_weights_sum_to_one(
        lw in prop::collection::vec(finite_or_neg_inf(), 1..100),
        offset in prop_oneof![Just(0.0), Just(1e16), Just(1e300), Just(-1e300), -1e6..1e6f64],
    ) {
        prop_assume!(lw.iter().any(|x| x.is_finite()));
        let lw: Vec<f64> = lw.iter().map(|x| x + offset).collect();
        let mut out = vec![0.0; lw.len()];
        let lm = crate::weights::normalize_row(&lw, &mut out, "log_weights", None, &Never).unwrap();
        let total: f64 = out.iter().map(|x| x.exp()).sum();
        prop_assert!((total - 1.0).abs() < 1e-12, "sum {total}");
        prop_assert!(lm.is_finite());
    }

    #[test]
    fn smc_step_is_atomic(
        g in prop::collection::vec(log_weight(), 12),
        scheme in 0usize..4,
        threshold in prop::option::of(0.0..=1.0f64),
        mode in 0usize..3,
    ) {
        let mut s = SmcState::new(3, 4, SCHEMES[scheme], threshold, &Seeds::Single(7), true).unwrap();
        s.step(&[0.1; 12], ResampleMode::Always, &Never).unwrap();
        let before = (s.log_weights().to_vec(), s.log_evidence().to_vec(), s.num_steps());
        let mode = [ResampleMode::Always, ResampleMode::Never, ResampleMode::Adaptive][mode];
        match s.step(&g, mode, &Never) {
            Ok(out) => {
                prop_assert!(out.ancestors.iter().all(|&a| (0..4).contains(&a)));
                for row in s.log_weights().chunks(4) {
                    let total: f64 = row.iter().map(|x| x.exp()).sum();
                    prop_assert!((total - 1.0).abs() < 1e-12);
                }
            }
            Err(GlassError::DegenerateWeights(_)) | Err(GlassError::InvalidInput { .. }) => {
                let after = (s.log_weights().to_vec(), s.log_evidence().to_vec(), s.num_steps());
                prop_assert_eq!(before, after);
            }
            Err(e) => prop_assert!(false, "unexpected {e:?}"),
        }
    }

    #[test]
    fn grids_are_strictly_increasing_or_refused(
        num_steps in 1usize..2000,
        t_start in prop_oneof![0.0..=1.0f64, Just(0.5), Just(f64::NAN)],
        t_end in prop_oneof![0.0..=1.0f64, Just(0.5000000000000001), Just(f64::INFINITY)],
        shift in prop_oneof![1e-8..1e8f64, Just(0.0), Just(1e300), Just(f64::NAN)],
    ) {
        for g in [schedule::uniform_grid(num_steps, t_start, t_end), schedule::shifted_grid(num_steps, shift)] {
            match g {
                Ok(g) => {
                    prop_assert_eq!(g.len(), num_steps + 1);
                    prop_assert!(schedule::validate_time_grid(&g).is_ok());
                }
                Err(GlassError::InvalidInput { .. }) => {}
                Err(e) => prop_assert!(false, "unexpected {e:?}"),
            }
        }
    }

    #[test]
    fn schedule_and_coefficients_never_panic(
        t in prop_oneof![0.0..=1.0f64, Just(0.0), Just(1.0), Just(1e-300), Just(f64::NAN)],
        t_next in prop_oneof![0.0..=1.0f64, Just(1.0), Just(1e-170)],
        rho in prop_oneof![-1.0..=1.0f64, Just(2.0), Just(f64::NAN)],
        sigma0 in prop_oneof![1e-3..1e3f64, Just(1e-300), Just(1e300), Just(-1.0)],
        s in prop::collection::vec(prop_oneof![0.0..=1.0f64, Just(0.0), Just(1.0), Just(-0.5)], 0..20),
        shift in prop_oneof![1e-6..1e6f64, Just(1e-300)],
    ) {
        for sched in [Schedule::RectifiedFlow, Schedule::Cosine] {
            if let Ok(sch) = Schedule::shifted(sched.clone(), shift) {
                let _ = sch.rho_ddpm(t, t_next);
                let _ = crate::glass::glass_coefficients(&sch, t, t_next, rho, &s, sigma0);
            }
            let _ = sched.rho_ddpm(t, t_next);
            let _ = crate::glass::glass_coefficients(&sched, t, t_next, rho, &s, sigma0);
            if (0.0..=1.0).contains(&t) {
                let (a, s_, _, _) = sched.eval(t);
                prop_assert!(a.is_finite() && s_.is_finite());
            }
        }
    }
}
