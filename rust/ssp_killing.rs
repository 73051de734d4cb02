//! The two schemes of `particles` (N. Chopin) beyond the classic four, O(N) and unbiased
//! (E[offspring of i] = M W_i):
//!
//! * SSP, the Srinivasan sampling process (Gerber, Chopin & Whiteley 2019): floor(M W_i) copies,
//!   then the fractional parts are paired off so that each pair's sum is kept and one of the two
//!   becomes 0 or 1, with probabilities that keep every expectation; particle i ends with
//!   floor(M W_i) or ceil(M W_i) offspring, like systematic resampling.
//! * killing (M = N only): particle i keeps its own slot with probability W_i / max W, and every
//!   killed slot is refilled by a multinomial draw.

use crate::error::Result;
use crate::interrupt::{Interrupt, CHUNK};
use crate::resample::{multinomial, uniform};
use rand_pcg::Pcg64;

/// SSP offspring counts of non-negative weights `w` (sum `total` > 0) for `m` draws, written as
/// ancestors (ascending) into `out` (length m). `counts` is scratch of length >= w.len().
pub fn ssp(
    w: &[f64],
    total: f64,
    rng: &mut Pcg64,
    out: &mut [i64],
    intr: &dyn Interrupt,
) -> Result<()> {
    let m = out.len();
    let scale = m as f64 / total;
    let mut counts = vec![0usize; w.len()];
    // the one particle whose fractional part is still open: (index, fraction in (0, 1])
    let mut open: Option<(usize, f64)> = None;
    for (c, wc) in w.chunks(CHUNK).enumerate() {
        for (k, &wi) in wc.iter().enumerate() {
            let i = c * CHUNK + k;
            let mw = wi * scale;
            let fl = mw.floor();
            counts[i] = fl as usize;
            let f = mw - fl;
            if f <= 0.0 {
                continue;
            }
            open = Some(match open {
                None => (i, f),
                Some((j, g)) => pair(i, f, j, g, uniform(rng), &mut counts),
            });
        }
        intr.check()?;
    }
    // the fractions sum to an integer: what is left open is 0 or 1 up to rounding
    let given: usize = counts.iter().sum();
    if given < m {
        let last = w.iter().rposition(|&x| x > 0.0).unwrap_or(w.len() - 1);
        counts[open.map_or(last, |(j, _)| j)] += m - given;
    }
    let mut k = 0usize;
    for (i, &c) in counts.iter().enumerate() {
        let c = c.min(m - k); // rounding can only over-give by the open particle's one
        out[k..k + c].fill(i as i64);
        k += c;
    }
    Ok(())
}

/// Resolve the pair (i, f), (j, g) of open fractions with uniform `u`: keeps E[fraction] of both;
/// one of them leaves the pair with 0 or 1 (1: one more offspring), the other stays open.
fn pair(i: usize, f: f64, j: usize, g: f64, u: f64, counts: &mut [usize]) -> (usize, f64) {
    let s = f + g;
    if s <= 1.0 {
        // one of them takes the whole sum: j with probability g / s
        if u * s < g {
            (j, s)
        } else {
            (i, s)
        }
    } else {
        // one of them is rounded up to 1: j with probability (1 - f) / (2 - s)
        if u * (2.0 - s) < 1.0 - f {
            counts[j] += 1;
            (i, s - 1.0)
        } else {
            counts[i] += 1;
            (j, s - 1.0)
        }
    }
}

/// Killing resampling of non-negative weights `w` (sum `total` > 0) with `out.len() == w.len()`:
/// out[i] = i with probability w_i / max w, else a multinomial draw. `scratch` is grown as needed.
pub fn killing(
    w: &[f64],
    last: usize,
    total: f64,
    rng: &mut Pcg64,
    out: &mut [i64],
    scratch: &mut Vec<f64>,
    intr: &dyn Interrupt,
) -> Result<()> {
    let wmax = w.iter().fold(0.0f64, |a, &b| a.max(b));
    let mut killed = Vec::new();
    for (c, oc) in out.chunks_mut(CHUNK).enumerate() {
        for (k, o) in oc.iter_mut().enumerate() {
            let i = c * CHUNK + k;
            *o = i as i64;
            if uniform(rng) * wmax >= w[i] {
                killed.push(i);
            }
        }
        intr.check()?;
    }
    let mut draws = vec![0i64; killed.len()];
    multinomial(w, last, total, rng, &mut draws, scratch, intr)?;
    for (&i, &a) in killed.iter().zip(&draws) {
        out[i] = a;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interrupt::Never;
    use crate::resample::row_rng;

    /// Equal weights over more than one chunk: SSP gives every particle exactly one offspring
    /// and killing keeps every particle in its own slot.
    #[test]
    fn equal_weights_beyond_one_chunk_are_the_identity() {
        let n = CHUNK + 5;
        let w = vec![1.0; n];
        let identity: Vec<i64> = (0..n as i64).collect();
        let mut out = vec![-1i64; n];
        ssp(&w, n as f64, &mut row_rng(1, 0), &mut out, &Never).unwrap();
        assert!(out == identity);
        out.fill(-1);
        let mut scratch = Vec::new();
        killing(
            &w,
            n - 1,
            n as f64,
            &mut row_rng(1, 0),
            &mut out,
            &mut scratch,
            &Never,
        )
        .unwrap();
        assert!(out == identity);
    }

    /// Killing keeps particle i in its slot with probability w_i / max w (unnormalised weights,
    /// max w = 4); a killed slot is refilled by a multinomial draw, so
    /// P(out[1] = 1) = 1/2 + 1/2 * 2/6 = 2/3 for w = (4, 2). 4000 draws: sd = 0.0075.
    #[test]
    fn killing_keeps_with_probability_w_over_max() {
        let w = [4.0, 2.0];
        let reps = 4000;
        let mut kept = 0usize;
        let mut scratch = Vec::new();
        for seed in 0..reps {
            let mut out = [0i64; 2];
            killing(
                &w,
                1,
                6.0,
                &mut row_rng(seed, 0),
                &mut out,
                &mut scratch,
                &Never,
            )
            .unwrap();
            assert_eq!(out[0], 0, "the heaviest particle is never killed");
            kept += usize::from(out[1] == 1);
        }
        let p = kept as f64 / reps as f64;
        let sd = (2.0f64 / 9.0 / reps as f64).sqrt();
        assert!((p - 2.0 / 3.0).abs() < 5.0 * sd, "{p}");
    }

    /// SSP on (M W_i) = (0.5, 0.5, 1.5, 1.5, 2): pairs resolve with the probabilities that keep
    /// each expectation, so E[count_i] = M W_i, each count is floor or ceil, and the total is M.
    #[test]
    fn ssp_counts_are_unbiased_on_fractional_weights() {
        let w = [0.5, 0.5, 1.5, 1.5, 2.0];
        let m = 6usize;
        let reps = 4000u64;
        let mut acc = [0.0f64; 5];
        for seed in 0..reps {
            let mut out = vec![0i64; m];
            ssp(&w, 6.0, &mut row_rng(seed, 2), &mut out, &Never).unwrap();
            assert!(out.windows(2).all(|p| p[0] <= p[1]));
            let c = crate::resample::counts(&out, 5);
            for (i, &ci) in c.iter().enumerate() {
                assert!((ci as f64 - w[i]).abs() < 1.0, "{c:?}");
                acc[i] += ci as f64;
            }
        }
        for i in 0..5 {
            // a count in {floor, ceil} has variance <= 1/4
            let sd = (0.25 / reps as f64).sqrt();
            let mean = acc[i] / reps as f64;
            assert!((mean - w[i]).abs() < 5.0 * sd + 1e-12, "i={i} {mean}");
        }
    }

    /// The pair rule: below a sum of 1, j takes the sum with probability g / s; above, j is
    /// rounded up with probability (1 - f) / (2 - s).
    #[test]
    fn pair_resolution_closed_form() {
        let mut c = [0usize; 2];
        // f = 0.2 (i = 0), g = 0.3 (j = 1): s = 0.5, j wins iff u * 0.5 < 0.3, i.e. u < 0.6
        assert_eq!(pair(0, 0.2, 1, 0.3, 0.59, &mut c), (1, 0.5));
        assert_eq!(pair(0, 0.2, 1, 0.3, 0.61, &mut c), (0, 0.5));
        assert_eq!(c, [0, 0]);
        // f = 0.7, g = 0.6: s = 1.3, j rounded up iff u * 0.7 < 0.3, i.e. u < 3/7
        let (k, r) = pair(0, 0.7, 1, 0.6, 0.42, &mut c);
        assert_eq!((k, c), (0, [0, 1]));
        assert!((r - 0.3).abs() < 1e-15);
        let (k, r) = pair(0, 0.7, 1, 0.6, 0.44, &mut c);
        assert_eq!((k, c), (1, [1, 1]));
        assert!((r - 0.3).abs() < 1e-15);
    }

    /// Fewer draws than particles (every M W_i < 1, nothing given by the floors): the open
    /// fraction gets the one missing draw, and E[count_i] = M W_i (2000 draws, 5 sd of a
    /// Bernoulli mean).
    #[test]
    fn ssp_with_fewer_draws_than_particles() {
        let w = [1.0, 1.0, 2.0];
        let reps = 2000u64;
        for m in [1usize, 2] {
            let mut acc = [0.0f64; 3];
            for seed in 0..reps {
                let mut out = vec![-1i64; m];
                ssp(&w, 4.0, &mut row_rng(seed, 3), &mut out, &Never).unwrap();
                for c in crate::resample::counts(&out, 3).iter().zip(acc.iter_mut()) {
                    *c.1 += *c.0 as f64;
                }
            }
            for (i, a) in acc.iter().enumerate() {
                let p = m as f64 * w[i] / 4.0;
                let sd = (p.min(1.0) * (1.0 - p.min(1.0)) / reps as f64).sqrt();
                assert!(
                    (a / reps as f64 - p).abs() < 5.0 * sd + 1e-12,
                    "m={m} i={i}"
                );
            }
        }
    }
}
