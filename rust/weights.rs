//! Log-space importance weights: validation policy, log-sum-exp normalisation, ESS and the log of
//! the mean weight (the evidence increment). All arithmetic in float64.
//!
//! Policy: a NaN log-weight is a `DegenerateWeights` error naming the first bad index; +inf is an
//! `InvalidInput` error; -inf is a legal zero weight, but a row that is entirely -inf is a
//! `DegenerateWeights` error naming the row. Nothing is ever silently mapped to index 0.

use crate::error::{degenerate, invalid, Result};
use crate::interrupt::{Interrupt, CHUNK};

fn row_suffix(row: Option<usize>) -> String {
    match row {
        Some(b) => format!(" (row {b})"),
        None => String::new(),
    }
}

/// Maximum (NaNs ignored) and whether any entry is NaN, in one pass with four independent
/// running maxima (a single max chain is latency-bound).
#[inline]
pub fn max_and_nan(v: &[f64]) -> (f64, bool) {
    let mut m = [f64::NEG_INFINITY; 4];
    let mut nan = false;
    let chunks = v.chunks_exact(4);
    let rem = chunks.remainder();
    for c in chunks {
        for j in 0..4 {
            nan |= c[j].is_nan();
            m[j] = if c[j] > m[j] { c[j] } else { m[j] };
        }
    }
    for &x in rem {
        nan |= x.is_nan();
        m[0] = if x > m[0] { x } else { m[0] };
    }
    let a = if m[1] > m[0] { m[1] } else { m[0] };
    let b = if m[3] > m[2] { m[3] } else { m[2] };
    (if b > a { b } else { a }, nan)
}

/// `max_and_nan` over chunks, asking `intr` between them.
pub fn max_and_nan_chunked(v: &[f64], intr: &dyn Interrupt) -> Result<(f64, bool)> {
    let mut m = f64::NEG_INFINITY;
    let mut nan = false;
    for c in v.chunks(CHUNK) {
        let (cm, cn) = max_and_nan(c);
        m = if cm > m { cm } else { m };
        nan |= cn;
        intr.check()?;
    }
    Ok((m, nan))
}

/// Validate one row of log-weights (named `name`) and return its maximum (finite).
pub fn check_row(lw: &[f64], name: &str, row: Option<usize>, intr: &dyn Interrupt) -> Result<f64> {
    if lw.is_empty() {
        return Err(invalid(
            name,
            format!("{name} must contain at least one particle"),
        ));
    }
    let (m, nan) = max_and_nan_chunked(lw, intr)?;
    if nan {
        let i = lw.iter().position(|x| x.is_nan()).unwrap_or(0);
        return Err(degenerate(format!(
            "{name} contains NaN at index {i}{}",
            row_suffix(row)
        )));
    }
    if m == f64::INFINITY {
        let i = lw.iter().position(|&x| x == f64::INFINITY).unwrap_or(0);
        return Err(invalid(
            name,
            format!(
                "{name} contains +inf at index {i}{}; log-weights must be < +inf",
                row_suffix(row)
            ),
        ));
    }
    if m == f64::NEG_INFINITY {
        return Err(degenerate(format!(
            "all {name} are -inf{}: no particle has positive weight",
            match row {
                Some(b) => format!(" in row {b}"),
                None => String::new(),
            }
        )));
    }
    Ok(m)
}

/// Below this, `exp_poly_fma` returns exactly 0 (and above it a positive normal number).
pub(crate) const EXP_FLUSH: f64 = -708.0;

/// exp(x) for x <= 0 (including -inf -> 0) by Cody-Waite reduction x = k ln2 + r,
/// |r| <= ln2/2, a degree-12 Taylor polynomial (truncation < 2e-16 relative) and scaling by 2^k
/// through the exponent bits. Results below e^-708 (~3e-308) flush to 0: it is only applied to
/// log-weights minus their maximum, so the lost mass is < N * 3e-308 of the largest weight.
/// Written without branches so that the loop in `exp_shifted_avx2` vectorises (4 lanes + FMA).
#[inline(always)]
fn exp_poly_fma(x: f64) -> f64 {
    const LOG2E: f64 = std::f64::consts::LOG2_E;
    const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000); // fdlibm ln2_hi
    const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76); // fdlibm ln2_lo
    const MAGIC: f64 = 6_755_399_441_055_744.0; // 1.5 * 2^52
    let tiny = x < EXP_FLUSH;
    let xc = if tiny { -708.0 } else { x };
    let t = xc.mul_add(LOG2E, MAGIC);
    let kf = t - MAGIC;
    let r = kf.mul_add(-LN2_LO, kf.mul_add(-LN2_HI, xc));
    let mut p: f64 = 1.0 / 479_001_600.0;
    for c in [
        1.0 / 39_916_800.0,
        1.0 / 3_628_800.0,
        1.0 / 362_880.0,
        1.0 / 40_320.0,
        1.0 / 5_040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = p.mul_add(r, c);
    }
    let k = t.to_bits().wrapping_sub(MAGIC.to_bits());
    let scale = f64::from_bits(k.wrapping_add(1023) << 52);
    if tiny {
        0.0
    } else {
        p * scale
    }
}

/// The loop itself, compiled for the build's baseline CPU here and, inlined into
/// `exp_shifted_avx2`, for AVX2+FMA there.
#[inline(always)]
fn exp_shifted_portable(lw: &[f64], m: f64, out: &mut [f64]) {
    for (o, &x) in out.iter_mut().zip(lw) {
        *o = exp_poly_fma(x - m);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn exp_shifted_avx2(lw: &[f64], m: f64, out: &mut [f64]) {
    exp_shifted_portable(lw, m, out)
}

pub(crate) fn exp_shifted_chunk(lw: &[f64], m: f64, out: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the required CPU features were detected just above.
            unsafe { exp_shifted_avx2(lw, m, out) };
            return;
        }
    }
    exp_shifted_portable(lw, m, out)
}

/// Fill `out[i] = exp(lw[i] - m)` (m >= every lw[i]) and return (sum, sum of squares), in
/// chunks with `intr` asked between them.
/// Always the same polynomial (fused multiply-adds are exactly rounded in hardware and in the
/// software fallback alike), so every CPU — and every rank of a distributed run — gets
/// bit-identical weights; AVX2+FMA, detected at run time, only makes it faster.
pub fn exp_shifted(
    lw: &[f64],
    m: f64,
    out: &mut [f64],
    intr: &dyn Interrupt,
) -> Result<(f64, f64)> {
    let out = &mut out[..lw.len()];
    let mut acc = Sums::default();
    for (x, o) in lw.chunks(CHUNK).zip(out.chunks_mut(CHUNK)) {
        exp_shifted_chunk(x, m, o);
        acc.add(o);
        intr.check()?;
    }
    Ok(acc.finish())
}

/// Running (sum, sum of squares) with four independent accumulators; adding a sequence in
/// pieces whose lengths are multiples of 4 gives the same bits as adding it at once.
#[derive(Default)]
pub struct Sums {
    s: [f64; 4],
    q: [f64; 4],
}

impl Sums {
    #[inline]
    pub fn add(&mut self, v: &[f64]) {
        let chunks = v.chunks_exact(4);
        let rem = chunks.remainder();
        for c in chunks {
            for ((s, q), &x) in self.s.iter_mut().zip(&mut self.q).zip(c) {
                *s += x;
                *q += x * x;
            }
        }
        for &x in rem {
            self.s[0] += x;
            self.q[0] += x * x;
        }
    }
    pub fn finish(&self) -> (f64, f64) {
        let (s, q) = (self.s, self.q);
        ((s[0] + s[1]) + (s[2] + s[3]), (q[0] + q[1]) + (q[2] + q[3]))
    }
}

/// Thread-local scratch buffers larger than this many entries (16 MiB of f64) are released after
/// each call instead of being kept for the next one: small calls avoid page faults, a 1e8-particle
/// call does not leave gigabytes allocated per thread.
pub const SCRATCH_KEEP: usize = 1 << 21;

/// Run `f` with a thread-local buffer cleared to length 0 (kept across calls up to
/// `SCRATCH_KEEP` entries; re-entrant use gets a fresh buffer).
pub fn with_thread_buffer<R>(
    key: &'static std::thread::LocalKey<std::cell::RefCell<Vec<f64>>>,
    f: impl FnOnce(&mut Vec<f64>) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut v) => {
            v.clear();
            let r = f(&mut v);
            if v.capacity() > SCRATCH_KEEP {
                crate::interrupt::release(std::mem::take(&mut *v));
            }
            r
        }
        Err(_) => f(&mut Vec::new()),
    })
}

thread_local! {
    /// Per-thread scratch for exponentiated weights.
    static SCRATCH: std::cell::RefCell<Vec<f64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Run `f` with a per-thread scratch buffer of length `n`.
pub fn with_scratch<R>(n: usize, f: impl FnOnce(&mut [f64]) -> R) -> R {
    with_thread_buffer(&SCRATCH, |v| {
        if v.capacity() < n {
            // calloc'd pages are zeroed lazily, while the caller's chunks touch them
            *v = vec![0.0; n];
        }
        v.resize(n, 0.0);
        f(&mut v[..n])
    })
}

/// Normalise one row: `out = (lw - m) - log(sum exp(lw - m))` with m the maximum (subtracting m
/// first keeps full precision at any magnitude); returns log((1/N) sum exp(lw)).
pub fn normalize_row(
    lw: &[f64],
    out: &mut [f64],
    name: &str,
    row: Option<usize>,
    intr: &dyn Interrupt,
) -> Result<f64> {
    let m = check_row(lw, name, row, intr)?;
    let (s, _) = with_scratch(lw.len(), |buf| exp_shifted(lw, m, buf, intr))?;
    let ls = s.ln();
    for (o, &x) in out.iter_mut().zip(lw) {
        *o = (x - m) - ls;
    }
    Ok(m + (ls - (lw.len() as f64).ln()))
}

/// Effective sample size (sum w)^2 / sum w^2 of one row, in [1, N].
pub fn ess_row(lw: &[f64], name: &str, row: Option<usize>, intr: &dyn Interrupt) -> Result<f64> {
    let m = check_row(lw, name, row, intr)?;
    let (s, q) = with_scratch(lw.len(), |buf| exp_shifted(lw, m, buf, intr))?;
    Ok(s * s / q)
}

/// Validate a [B, N] row-major batch; returns the per-row maxima. Errors name the first bad row.
pub fn check_batch(
    lw: &[f64],
    b: usize,
    n: usize,
    name: &str,
    intr: &dyn Interrupt,
) -> Result<Vec<f64>> {
    if n == 0 {
        return Err(invalid(
            name,
            format!("{name} must contain at least one particle per row"),
        ));
    }
    debug_assert_eq!(lw.len(), b * n);
    (0..b)
        .map(|r| {
            check_row(
                &lw[r * n..(r + 1) * n],
                name,
                if b > 1 { Some(r) } else { None },
                intr,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ESS of random log-weights against a plain f64 loop, for N on both sides of the vector
    /// width and of CHUNK (the tail loop of the vectorised sums must count every entry once).
    #[test]
    fn ess_of_random_weights_matches_the_definition_for_any_n() {
        use crate::interrupt::{Never, CHUNK};
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        for n in [
            1usize,
            2,
            3,
            5,
            6,
            7,
            9,
            13,
            31,
            33,
            101,
            1001,
            CHUNK + 5,
            2 * CHUNK + 3,
        ] {
            let lw: Vec<f64> = (0..n).map(|_| 6.0 * next() - 3.0).collect();
            let m = lw.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let (mut sum, mut sq) = (0.0f64, 0.0f64);
            for &x in &lw {
                let w = (x - m).exp();
                sum += w;
                sq += w * w;
            }
            let want = sum * sum / sq;
            let got = ess_row(&lw, "lw", None, &Never).unwrap();
            assert!((got - want).abs() < 1e-10 * want, "n={n}: {got} vs {want}");
        }
    }
    use crate::error::GlassError;
    use crate::interrupt::Never;

    #[test]
    fn normalise_and_evidence() {
        let lw = [0.0f64, 1.0, 2.0, f64::NEG_INFINITY];
        let mut out = [0.0; 4];
        let lm = normalize_row(&lw, &mut out, "log_weights", None, &Never).unwrap();
        let z: f64 = [0.0f64, 1.0, 2.0].iter().map(|x| x.exp()).sum();
        assert!((lm - (z / 4.0).ln()).abs() < 1e-14);
        let tot: f64 = out.iter().map(|x| x.exp()).sum();
        assert!((tot - 1.0).abs() < 1e-14);
        assert_eq!(out[3], f64::NEG_INFINITY);
        // huge offsets do not overflow
        let lw = [1000.0, 1000.0];
        assert!(
            (normalize_row(&lw, &mut [0.0; 2], "x", None, &Never).unwrap() - 1000.0).abs() < 1e-12
        );
    }

    #[test]
    fn normalise_at_extreme_magnitudes() {
        for big in [1e16, 1e300, -1e300, f64::MAX] {
            let lw = [big; 4];
            let mut out = [0.0; 4];
            let lm = normalize_row(&lw, &mut out, "x", None, &Never).unwrap();
            let tot: f64 = out.iter().map(|x| x.exp()).sum();
            assert!((tot - 1.0).abs() < 1e-12, "{big}: {out:?}");
            assert_eq!(lm, big);
        }
    }

    #[test]
    fn chunked_sums_equal_unchunked() {
        let xs: Vec<f64> = (0..CHUNK * 2 + 7)
            .map(|i| (i as f64 * 0.37).sin() - 1.0)
            .collect();
        let mut out = vec![0.0; xs.len()];
        let chunked = exp_shifted(&xs, 0.0, &mut out, &Never).unwrap();
        let mut once = Sums::default();
        once.add(&out);
        assert_eq!(chunked, once.finish());
    }

    #[test]
    fn ess_values() {
        assert!((ess_row(&[0.0; 8], "x", None, &Never).unwrap() - 8.0).abs() < 1e-12);
        let lw = [0.0, f64::NEG_INFINITY, f64::NEG_INFINITY];
        assert!((ess_row(&lw, "x", None, &Never).unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn exp_shifted_accuracy() {
        let xs: Vec<f64> = (0..1_000_000).map(|i| -(i as f64) * 0.000_707_3).collect();
        let mut out = vec![0.0; xs.len()];
        exp_shifted(&xs, 0.0, &mut out, &Never).unwrap();
        let worst = xs
            .iter()
            .zip(&out)
            .map(|(x, o)| ((o - x.exp()) / x.exp()).abs())
            .fold(0.0f64, f64::max);
        assert!(worst < 1e-15, "worst relative error {worst}");
        let mut o3 = [1.0; 3];
        exp_shifted(&[0.0, f64::NEG_INFINITY, -800.0], 0.0, &mut o3, &Never).unwrap();
        assert_eq!(o3, [1.0, 0.0, 0.0]);
        // the dispatched (possibly AVX2) path and the portable path agree bit for bit
        for (x, o) in xs.iter().zip(&out) {
            assert_eq!(exp_poly_fma(*x).to_bits(), o.to_bits(), "x = {x}");
        }
    }

    #[test]
    fn bad_inputs() {
        match check_row(&[0.0, f64::NAN], "log_weights", None, &Never) {
            Err(GlassError::DegenerateWeights(m)) => assert!(m.contains("index 1"), "{m}"),
            e => panic!("{e:?}"),
        }
        match check_row(&[f64::NEG_INFINITY; 3], "log_weights", Some(2), &Never) {
            Err(GlassError::DegenerateWeights(m)) => assert!(m.contains("row 2"), "{m}"),
            e => panic!("{e:?}"),
        }
        assert!(matches!(
            check_row(&[0.0, f64::INFINITY], "log_weights", None, &Never),
            Err(GlassError::InvalidInput { .. })
        ));
        assert!(matches!(
            check_row(&[], "log_weights", None, &Never),
            Err(GlassError::InvalidInput { .. })
        ));
    }

    /// Maximum and NaN flag for every length around the four lanes and every position of the
    /// maximum and of a NaN.
    #[test]
    fn max_and_nan_for_every_position() {
        for n in 1..=11usize {
            for at in 0..n {
                let mut v: Vec<f64> = (0..n).map(|i| -(i as f64) - 1.0).collect();
                v[at] = 5.0;
                assert_eq!(max_and_nan(&v), (5.0, false), "n={n} at={at}");
                assert_eq!(max_and_nan_chunked(&v, &Never).unwrap(), (5.0, false));
                v[at] = f64::NAN;
                let (m, nan) = max_and_nan(&v);
                assert!(nan && m < 0.0, "n={n} at={at}");
                assert!(max_and_nan_chunked(&v, &Never).unwrap().1);
            }
        }
        assert_eq!(max_and_nan(&[]), (f64::NEG_INFINITY, false));
        // across CHUNK boundaries
        let mut v = vec![-1.0; 2 * CHUNK + 3];
        for at in [0, CHUNK - 1, CHUNK, 2 * CHUNK + 2] {
            v[at] = 2.0;
            assert_eq!(max_and_nan_chunked(&v, &Never).unwrap(), (2.0, false));
            v[at] = f64::NAN;
            assert!(max_and_nan_chunked(&v, &Never).unwrap().1);
            v[at] = -1.0;
        }
    }

    #[test]
    fn messages_name_index_and_row() {
        let msg = |r: Result<f64>| match r {
            Err(GlassError::DegenerateWeights(m)) => m,
            Err(GlassError::InvalidInput { msg, .. }) => msg,
            e => panic!("{e:?}"),
        };
        let nan = [0.0, 1.0, f64::NAN];
        assert_eq!(
            msg(check_row(&nan, "lw", None, &Never)),
            "lw contains NaN at index 2"
        );
        assert_eq!(
            msg(check_row(&nan, "lw", Some(3), &Never)),
            "lw contains NaN at index 2 (row 3)"
        );
        assert_eq!(
            msg(check_row(&[0.0, 1.0, f64::INFINITY], "lw", Some(1), &Never)),
            "lw contains +inf at index 2 (row 1); log-weights must be < +inf"
        );
        let batch = [0.0, 0.0, f64::NAN, 0.0];
        match check_batch(&batch, 1, 4, "lw", &Never) {
            Err(GlassError::DegenerateWeights(m)) => assert_eq!(m, "lw contains NaN at index 2"),
            e => panic!("{e:?}"),
        }
        match check_batch(&batch, 2, 2, "lw", &Never) {
            Err(GlassError::DegenerateWeights(m)) => {
                assert_eq!(m, "lw contains NaN at index 0 (row 1)")
            }
            e => panic!("{e:?}"),
        }
        assert_eq!(
            check_batch(&[0.0, 3.0, -1.0, 2.0, 7.0, 1.0], 3, 2, "lw", &Never).unwrap(),
            vec![3.0, 2.0, 7.0]
        );
        assert!(check_batch(&[], 2, 0, "lw", &Never).is_err());
    }

    /// The portable loop (used where AVX2+FMA is missing) gives the same bits as the dispatched
    /// one, with a shift m != 0; the flush to 0 starts strictly below -708.
    #[test]
    fn portable_and_dispatched_exp_agree_with_a_shift() {
        let xs: Vec<f64> = (0..1000).map(|i| 3.0 - 0.7 * i as f64).collect();
        let (mut a, mut b) = (vec![0.0; xs.len()], vec![0.0; xs.len()]);
        exp_shifted_portable(&xs, 3.0, &mut a);
        exp_shifted_chunk(&xs, 3.0, &mut b);
        for ((x, p), d) in xs.iter().zip(&a).zip(&b) {
            assert_eq!(p.to_bits(), d.to_bits(), "x = {x}");
            let want = (x - 3.0).exp();
            assert!((p - want).abs() <= 1e-15 * want, "x = {x}: {p} vs {want}");
        }
        let at = exp_poly_fma(EXP_FLUSH);
        assert!((at - EXP_FLUSH.exp()).abs() < 1e-15 * EXP_FLUSH.exp() && at > 0.0);
        assert_eq!(exp_poly_fma(EXP_FLUSH.next_down()), 0.0);
    }

    #[test]
    fn long_rows_stop_when_interrupted() {
        use crate::interrupt::After;
        let lw = vec![0.5; 2 * CHUNK + 1];
        for k in 0..4 {
            assert_eq!(
                ess_row(&lw, "lw", None, &After::new(k)),
                Err(GlassError::Interrupted)
            );
            let mut out = vec![0.0; lw.len()];
            let r = normalize_row(&lw, &mut out, "lw", None, &After::new(k));
            assert_eq!(r, Err(GlassError::Interrupted));
        }
        assert!((ess_row(&lw, "lw", None, &After::new(6)).unwrap() - lw.len() as f64).abs() < 1e-6);
    }
}
