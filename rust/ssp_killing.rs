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
