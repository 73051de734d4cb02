//! O(N) resampling schemes (multinomial, stratified, systematic, residual; SSP and killing in
//! `ssp_killing`). `Scheme::ALL` is the one registry of their names.
//!
//! Every scheme generates its uniforms already sorted (systematic/stratified by construction,
//! multinomial through normalised exponential spacings) and walks them against the running CDF of
//! the weights once. The walk never passes the last particle with positive weight, so rounding in
//! the CDF can neither produce an index >= N nor select a zero-weight particle.
//!
//! Randomness: PCG-64 (`rand_pcg::Pcg64`). `row_rng(seed, stream)` seeds the 128-bit state from
//! `seed` (SplitMix64-expanded) and selects the PCG stream `stream`; batched calls use stream b for
//! row b of an integer seed, or (seeds[b], stream 0) for a list of seeds.

use crate::error::{invalid, Result};
use crate::interrupt::{Interrupt, CHUNK};
use crate::limits::{bytes_of, ensure_fits};
use crate::weights::{check_batch, with_thread_buffer};
use rand::RngCore;
use rand_pcg::Pcg64;
use std::str::FromStr;

/// Resampling scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Multinomial,
    Stratified,
    Systematic,
    Residual,
    /// Srinivasan sampling process (see `ssp_killing`).
    Ssp,
    /// Keep i with probability W_i / max W, else a multinomial draw; needs M = N.
    Killing,
}

impl FromStr for Scheme {
    type Err = crate::error::GlassError;
    fn from_str(s: &str) -> Result<Self> {
        Scheme::ALL
            .into_iter()
            .find(|scheme| scheme.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<String> = Scheme::ALL
                    .iter()
                    .map(|x| format!("{:?}", x.as_str()))
                    .collect();
                invalid(
                    "scheme",
                    format!("scheme must be one of {}; got {s:?}", names.join(", ")),
                )
            })
    }
}

impl Scheme {
    /// Every scheme, in the order shown to users (the registry: names live only here).
    pub const ALL: [Scheme; 6] = [
        Scheme::Systematic,
        Scheme::Stratified,
        Scheme::Multinomial,
        Scheme::Residual,
        Scheme::Ssp,
        Scheme::Killing,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Scheme::Multinomial => "multinomial",
            Scheme::Stratified => "stratified",
            Scheme::Systematic => "systematic",
            Scheme::Residual => "residual",
            Scheme::Ssp => "ssp",
            Scheme::Killing => "killing",
        }
    }

    /// Whether the scheme can draw a number of ancestors other than the number of particles.
    pub fn any_num_samples(&self) -> bool {
        *self != Scheme::Killing
    }
}

/// Seeding of a batch of rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seeds {
    /// Row b uses stream b of Pcg64(seed).
    Single(u64),
    /// Row b uses stream 0 of Pcg64(seeds[b]).
    PerRow(Vec<u64>),
}

impl Seeds {
    /// One generator per row, checking that a seed list has one seed per row.
    pub fn rngs(&self, rows: usize) -> Result<Vec<Pcg64>> {
        match self {
            Seeds::Single(s) => Ok((0..rows).map(|b| row_rng(*s, b as u64)).collect()),
            Seeds::PerRow(v) => {
                if v.len() != rows {
                    return Err(invalid(
                        "seed",
                        format!(
                            "seed: a list of seeds needs one seed per row ({rows}), got {}",
                            v.len()
                        ),
                    ));
                }
                Ok(v.iter().map(|&s| row_rng(s, 0)).collect())
            }
        }
    }
}

fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The generator for (seed, stream).
pub fn row_rng(seed: u64, stream: u64) -> Pcg64 {
    let mut sm = seed;
    let hi = splitmix64(&mut sm) as u128;
    let lo = splitmix64(&mut sm) as u128;
    Pcg64::new((hi << 64) | lo, stream as u128)
}

/// Uniform in [0, 1) with 53 random bits.
#[inline]
pub fn uniform(rng: &mut Pcg64) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Standard exponential (-log of a uniform in (0, 1]).
#[inline]
fn exponential(rng: &mut Pcg64) -> f64 {
    -(1.0 - uniform(rng)).ln()
}

/// Sequential merge of sorted targets (in units of the unnormalised weights) against the running
/// CDF of the weights, resumable across chunks of targets.
struct Walk {
    j: usize,
    c: f64,
    next_check: usize,
}

impl Walk {
    fn new(w: &[f64]) -> Self {
        Self {
            j: 0,
            c: w[0],
            next_check: CHUNK,
        }
    }

    /// The walk never passes `last`, the last particle with positive weight.
    #[inline]
    fn run(
        &mut self,
        w: &[f64],
        last: usize,
        targets: impl Iterator<Item = f64>,
        out: &mut [i64],
        intr: &dyn Interrupt,
    ) -> Result<()> {
        for (o, x) in out.iter_mut().zip(targets) {
            while x >= self.c && self.j < last {
                self.j += 1;
                self.c += w[self.j];
                if self.j >= self.next_check {
                    // a few targets can walk over many particles: check here too
                    intr.check()?;
                    self.next_check += CHUNK;
                }
            }
            *o = self.j as i64;
        }
        Ok(())
    }
}

/// Blocks of the CDF (see `scatter_merge`): a fixed number, so the result never depends on how
/// many threads compute it.
const LANES: usize = 4;

/// From this many particles on, systematic and stratified merges run their blocks on scoped
/// threads (by default; measured in docs/benchmarks/native.md: below it thread start-up costs
/// more than the split saves).
pub const PARALLEL_MIN: usize = 1 << 18;

/// Threads a merge over `n` particles uses by default: 1 below `PARALLEL_MIN`, else the
/// available parallelism as 1, 2 or 4 (a divisor of LANES). Threads are scoped to the call, so
/// nothing outlives it (safe across fork(), e.g. in DataLoader workers).
pub fn default_threads(n: usize) -> usize {
    if n < PARALLEL_MIN {
        return 1;
    }
    match std::thread::available_parallelism().map_or(1, |p| p.get()) {
        1 => 1,
        2 | 3 => 2,
        _ => LANES,
    }
}

/// Interruption for the helper threads of a parallel call: the calling thread asks the real
/// `Interrupt` and raises `stop`; helpers only look at `stop`.
struct Shared<'a> {
    intr: &'a dyn Interrupt,
    stop: std::sync::atomic::AtomicBool,
}

struct Helper<'a>(&'a Shared<'a>);
struct Caller<'a>(&'a Shared<'a>);

impl Interrupt for Helper<'_> {
    fn check(&self) -> Result<()> {
        if self.0.stop.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(crate::error::GlassError::Interrupted);
        }
        Ok(())
    }
}

impl Interrupt for Caller<'_> {
    fn check(&self) -> Result<()> {
        let r = self.0.intr.check();
        if r.is_err() {
            self.0
                .stop
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }
}

/// Run `f(g, item, intr)` for every item, item g on its own scoped thread except item 0, which
/// runs on the calling thread (the one that may ask Python about signals).
fn on_threads<T: Send, R: Send>(
    items: Vec<T>,
    intr: &dyn Interrupt,
    f: impl Fn(usize, T, &dyn Interrupt) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let shared = Shared {
        intr,
        stop: std::sync::atomic::AtomicBool::new(false),
    };
    let helper = Helper(&shared);
    let (f, helper) = (&f, &helper);
    std::thread::scope(|sc| {
        let mut items = items.into_iter();
        let first = items.next();
        let handles: Vec<_> = items
            .enumerate()
            .map(|(g, item)| sc.spawn(move || f(g + 1, item, helper)))
            .collect();
        let mut out = Vec::with_capacity(handles.len() + 1);
        let mut err = None;
        if let Some(item) = first {
            match f(0, item, &Caller(&shared)) {
                Ok(r) => out.push(r),
                Err(e) => {
                    shared
                        .stop
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    err = Some(e);
                }
            }
        }
        for h in handles {
            match h.join() {
                Ok(Ok(r)) => out.push(r),
                Ok(Err(e)) => {
                    err.get_or_insert(e);
                }
                Err(p) => std::panic::resume_unwind(p),
            }
        }
        match err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    })
}

/// Particles [j0, j1) of each of the blocks `first..first + G` (clipped to `len`; only the last
/// non-empty block can be shorter): their start index in `ws` and length.
#[inline(always)]
fn block_chunk<const G: usize>(
    len: usize,
    block: usize,
    first: usize,
    j0: usize,
    j1: usize,
) -> [(usize, usize); G] {
    std::array::from_fn(|k| {
        let lo = ((first + k) * block + j0).min(len);
        let hi = ((first + k) * block + j1).min(len);
        (lo, hi - lo)
    })
}

/// Where the grouped merge reads the weights of particles [lo, lo + len): a stored slice, or
/// exp(lw - m) recomputed per chunk into a small buffer (no N-sized scratch for huge calls; the
/// same polynomial, so the same bits).
trait Weights: Sync {
    fn len(&self) -> usize;
    fn prepare(&self, lo: usize, len: usize, buf: &mut Vec<f64>);
    fn slice<'a>(&'a self, lo: usize, len: usize, buf: &'a [f64]) -> &'a [f64];
}

impl Weights for [f64] {
    fn len(&self) -> usize {
        <[f64]>::len(self)
    }
    fn prepare(&self, _: usize, _: usize, _: &mut Vec<f64>) {}
    fn slice<'a>(&'a self, lo: usize, len: usize, _: &'a [f64]) -> &'a [f64] {
        &self[lo..lo + len]
    }
}

/// exp(lw[i] - m) on demand.
struct LazyExp<'a> {
    lw: &'a [f64],
    m: f64,
}

impl Weights for LazyExp<'_> {
    fn len(&self) -> usize {
        self.lw.len()
    }
    fn prepare(&self, lo: usize, len: usize, buf: &mut Vec<f64>) {
        buf.resize(len, 0.0);
        crate::weights::exp_shifted_chunk(&self.lw[lo..lo + len], self.m, buf);
    }
    fn slice<'a>(&'a self, _: usize, len: usize, buf: &'a [f64]) -> &'a [f64] {
        &buf[..len]
    }
}

/// The chunk [j0, j1) of each of the G blocks as slices (`bufs` hold recomputed weights).
fn chunk_slices<'a, const G: usize>(
    src: &'a (impl Weights + ?Sized),
    span: &[(usize, usize); G],
    bufs: &'a mut [Vec<f64>; G],
) -> [&'a [f64]; G] {
    for (buf, s) in bufs.iter_mut().zip(span) {
        src.prepare(s.0, s.1, buf);
    }
    let bufs: &'a [Vec<f64>; G] = bufs;
    std::array::from_fn(|k| src.slice(span[k].0, span[k].1, &bufs[k]))
}

/// Sums of G consecutive blocks (blocks `first..first + G` of length `block`, clipped to the
/// weights), each added in order, the G chains interleaved.
fn block_sums<const G: usize>(
    src: &(impl Weights + ?Sized),
    block: usize,
    first: usize,
    intr: &dyn Interrupt,
) -> Result<[f64; G]> {
    let step = CHUNK / G;
    let mut part = [0.0f64; G];
    let mut bufs: [Vec<f64>; G] = std::array::from_fn(|_| Vec::new());
    for j0 in (0..block).step_by(step) {
        let span = block_chunk::<G>(src.len(), block, first, j0, (j0 + step).min(block));
        let sl = chunk_slices(src, &span, &mut bufs);
        let common = sl.iter().map(|s| s.len()).min().unwrap_or(0);
        let mut p = part; // a local copy stays in registers
        for j in 0..common {
            for (pk, s) in p.iter_mut().zip(&sl) {
                *pk += s[j];
            }
        }
        // the tail of a shorter block, still in order
        for (pk, s) in p.iter_mut().zip(&sl) {
            for &x in &s[common..] {
                *pk += x;
            }
        }
        part = p;
        intr.check()?;
    }
    Ok(part)
}

/// The merges write each particle's index only at the first output slot it owns; a running max
/// fills the slots in between (indices are nondecreasing along the sorted targets).
fn fill_forward(out: &mut [i64], intr: &dyn Interrupt) -> Result<()> {
    let mut run = 0i64;
    for c in out.chunks_mut(CHUNK) {
        for o in c.iter_mut() {
            run = if *o > run { *o } else { run };
            *o = run;
        }
        intr.check()?;
    }
    Ok(())
}

/// The scatter merge of blocks `first..first + G` into `out`, which holds output positions
/// [base, base + out.len()): the positions these blocks own (see `scatter_merge`).
#[allow(clippy::too_many_arguments)]
fn merge_blocks<const G: usize>(
    src: &(impl Weights + ?Sized),
    block: usize,
    first: usize,
    offs: &[f64; LANES],
    scale: f64,
    base: usize,
    out: &mut [i64],
    count_below: &(impl Fn(f64) -> usize + Sync),
    intr: &dyn Interrupt,
) -> Result<()> {
    let step = CHUNK / G;
    let offs: [f64; G] = std::array::from_fn(|k| offs[first + k]);
    for o in out.chunks_mut(CHUNK) {
        o.fill(0);
        intr.check()?;
    }
    // particle i of CDF value c writes i at count_below(c); blocks interleave, so the largest
    // index written at a position is kept (positions before `base` cannot occur: wrapping keeps
    // it to one comparison)
    let mut put = |c: f64, i: usize| {
        let rel = count_below(c * scale).wrapping_sub(base);
        if rel < out.len() {
            let o = &mut out[rel];
            *o = (*o).max(i as i64);
        }
    };
    let mut local = [0.0f64; G];
    let mut bufs: [Vec<f64>; G] = std::array::from_fn(|_| Vec::new());
    for j0 in (0..block).step_by(step) {
        let span = block_chunk::<G>(src.len(), block, first, j0, (j0 + step).min(block));
        let sl = chunk_slices(src, &span, &mut bufs);
        let common = sl.iter().map(|s| s.len()).min().unwrap_or(0);
        let mut l = local;
        for j in 0..common {
            for (((lk, s), w), &o) in l.iter_mut().zip(&span).zip(&sl).zip(&offs) {
                put(o + *lk, s.0 + j);
                *lk += w[j];
            }
        }
        for (((lk, s), w), &o) in l.iter_mut().zip(&span).zip(&sl).zip(&offs) {
            for (j, &x) in w.iter().enumerate().skip(common) {
                put(o + *lk, s.0 + j);
                *lk += x;
            }
        }
        local = l;
        intr.check()?;
    }
    fill_forward(out, intr)
}

/// Scatter-based merge of sorted targets against the CDF, without a data-dependent inner loop.
///
/// `count_below(a)` must return the number of targets strictly below the CDF value c, where
/// a = c * M / total, clamped to [0, M], non-decreasing in a, 0 at a = 0 and M at a = M. Particle
/// i's offspring occupy output positions [start_i, start_{i+1}) with start_i =
/// count_below(C_{i-1}). Each particle writes its index at its start position (the largest index
/// wins, so zero-count particles sharing a position lose) and a running maximum fills the runs.
/// Same O(N) merge as a walk.
///
/// The running CDF is a long floating-point add chain; to expose instruction-level parallelism it
/// is computed in LANES contiguous blocks, interleaved. Block k's CDF is offs[k] + L_k(i), where
/// L_k is the block's own running sum started at 0 and offs[k+1] = offs[k] + L_k(end) in floating
/// point. So the CDF is exactly continuous at block boundaries and non-decreasing everywhere, and
/// a zero weight leaves it unchanged: a zero-weight particle always shares its start position with
/// the next particle and is never selected. `total` is the CDF's own end, offs[LANES].
///
/// Block k writes only positions in [S_k, S_{k+1}], S_k = count_below(offs[k] * scale), and a
/// write at S_{k+1} always loses to the first particle after the block (a larger index at the
/// same position), as does any running maximum carried into S_{k+1}. So groups of consecutive
/// blocks can merge into their own slices [S_first, S_end) independently, on `threads` threads
/// (1, 2 or 4), with the same bits as one thread.
fn scatter_merge(
    w: &[f64],
    last: usize,
    out: &mut [i64],
    count_below: impl Fn(f64) -> usize + Sync,
    threads: usize,
    intr: &dyn Interrupt,
) -> Result<()> {
    match threads {
        0 | 1 => scatter_merge_one_thread(w, last, out, &count_below, intr),
        _ => scatter_on(&w[..=last], out, &count_below, threads, intr),
    }
}

/// The grouped merge on 1, 2 or 4 threads.
fn scatter_on(
    ws: &(impl Weights + ?Sized),
    out: &mut [i64],
    count_below: &(impl Fn(f64) -> usize + Sync),
    threads: usize,
    intr: &dyn Interrupt,
) -> Result<()> {
    match threads {
        0 | 1 => scatter_groups::<LANES>(ws, out, count_below, intr),
        2 | 3 => scatter_groups::<2>(ws, out, count_below, intr),
        _ => scatter_groups::<1>(ws, out, count_below, intr),
    }
}

/// `scatter_merge` on the calling thread: all LANES blocks interleaved in one loop. (The grouped
/// kernels below compute the same bits, `parallel_merge_is_bit_identical`; this one is kept
/// separate because it is the hot path of small SMC steps and the compiler keeps its four chains
/// in registers only in this form.)
fn scatter_merge_one_thread(
    w: &[f64],
    last: usize,
    out: &mut [i64],
    count_below: &impl Fn(f64) -> usize,
    intr: &dyn Interrupt,
) -> Result<()> {
    const STEP: usize = CHUNK / LANES;
    let m = out.len();
    let ws = &w[..=last];
    let len = ws.len();
    let block = len.div_ceil(LANES);
    let mut part = [0.0f64; LANES];
    for j0 in (0..block).step_by(STEP) {
        for j in j0..(j0 + STEP).min(block) {
            for (k, p) in part.iter_mut().enumerate() {
                if let Some(&x) = ws.get(k * block + j) {
                    *p += x;
                }
            }
        }
        intr.check()?;
    }
    let mut offs = [0.0f64; LANES];
    for k in 1..LANES {
        offs[k] = offs[k - 1] + part[k - 1];
    }
    let total = offs[LANES - 1] + part[LANES - 1];
    let scale = m as f64 / total;
    for o in out.chunks_mut(CHUNK) {
        o.fill(0);
        intr.check()?;
    }
    let mut local = [0.0f64; LANES];
    for j0 in (0..block).step_by(STEP) {
        for j in j0..(j0 + STEP).min(block) {
            for (k, lk) in local.iter_mut().enumerate() {
                let i = k * block + j;
                if i < len {
                    let pos = count_below((offs[k] + *lk) * scale);
                    if pos < m {
                        // lanes interleave, so keep the largest index written at a position
                        let o = &mut out[pos];
                        *o = (*o).max(i as i64);
                    }
                    *lk += ws[i];
                }
            }
        }
        intr.check()?;
    }
    fill_forward(out, intr)
}

/// `scatter_merge` over the weights `ws` (up to the last positive one) with the LANES blocks in
/// LANES / G groups of G, one thread per group.
fn scatter_groups<const G: usize>(
    ws: &(impl Weights + ?Sized),
    out: &mut [i64],
    count_below: &(impl Fn(f64) -> usize + Sync),
    intr: &dyn Interrupt,
) -> Result<()> {
    let m = out.len();
    let block = ws.len().div_ceil(LANES);
    let groups: Vec<usize> = (0..LANES / G).collect();
    let parts = on_threads(groups.clone(), intr, |_, g, intr| {
        block_sums::<G>(ws, block, g * G, intr)
    })?;
    let part: Vec<f64> = parts.into_iter().flatten().collect();
    let mut offs = [0.0f64; LANES];
    for k in 1..LANES {
        offs[k] = offs[k - 1] + part[k - 1];
    }
    let total = offs[LANES - 1] + part[LANES - 1];
    let scale = m as f64 / total;
    // the output slice each group owns: [S_{gG}, S_{(g+1)G})
    let mut slices = Vec::with_capacity(groups.len());
    let mut rest = out;
    let mut base = 0usize;
    for g in 0..groups.len() {
        let end = if g + 1 == groups.len() {
            m
        } else {
            count_below(offs[(g + 1) * G] * scale).clamp(base, m)
        };
        let (head, tail) = rest.split_at_mut(end - base);
        slices.push((g, base, head));
        rest = tail;
        base = end;
    }
    on_threads(slices, intr, |_, (g, base, o), intr| {
        merge_blocks::<G>(ws, block, g * G, &offs, scale, base, o, count_below, intr)
    })?;
    Ok(())
}

/// floor of a finite a >= 0 as an integer (truncation), and whether a has a fractional part.
#[inline(always)]
fn floor_frac(a: f64) -> (usize, f64) {
    let fl = a as i64;
    (fl as usize, a - fl as f64)
}

/// Systematic: targets (k + u) total / M; count below a is ceil(a - u) clamped to [0, M].
fn systematic_count(u: f64, m: usize) -> impl Fn(f64) -> usize + Sync {
    let mf = m as f64;
    move |a| {
        let x = a - u;
        let x = if x < 0.0 {
            0.0
        } else if x > mf {
            mf
        } else {
            x
        };
        let (fl, fr) = floor_frac(x);
        fl + usize::from(fr > 0.0)
    }
}

fn systematic_scatter(
    w: &[f64],
    last: usize,
    u: f64,
    out: &mut [i64],
    threads: usize,
    intr: &dyn Interrupt,
) -> Result<()> {
    let count = systematic_count(u, out.len());
    scatter_merge(w, last, out, count, threads, intr)
}

/// Stratified: targets (k + U_k) total / M; count below a is floor(a) + [U_floor(a) < frac(a)].
fn stratified_scatter(
    w: &[f64],
    last: usize,
    us: &[f64],
    out: &mut [i64],
    threads: usize,
    intr: &dyn Interrupt,
) -> Result<()> {
    let m = out.len();
    let mf = m as f64;
    scatter_merge(
        w,
        last,
        out,
        |a| {
            let x = if a > mf { mf } else { a };
            let (fl, fr) = floor_frac(x);
            let extra = match us.get(fl) {
                Some(&uk) => usize::from(uk < fr),
                None => 0,
            };
            fl + extra
        },
        threads,
        intr,
    )
}

/// Resample `out.len()` ancestors from non-negative unnormalised weights `w` with sum `total`
/// (> 0). `scratch` is grown as needed (stratified, multinomial, residual). `intr` is asked
/// between chunks; on `Err` the contents of `out` are unspecified. Systematic and stratified
/// use `default_threads(w.len())` threads (the same bits on any number).
pub fn resample_weights(
    w: &[f64],
    total: f64,
    scheme: Scheme,
    rng: &mut Pcg64,
    out: &mut [i64],
    scratch: &mut Vec<f64>,
    intr: &dyn Interrupt,
) -> Result<()> {
    let threads = default_threads(w.len());
    resample_weights_on(w, total, scheme, rng, out, scratch, threads, intr)
}

/// `resample_weights` on an explicit number of threads (systematic and stratified; the others
/// are sequential).
#[allow(clippy::too_many_arguments)]
pub fn resample_weights_on(
    w: &[f64],
    total: f64,
    scheme: Scheme,
    rng: &mut Pcg64,
    out: &mut [i64],
    scratch: &mut Vec<f64>,
    threads: usize,
    intr: &dyn Interrupt,
) -> Result<()> {
    let m = out.len();
    if m == 0 {
        return Ok(());
    }
    let last = w.iter().rposition(|&x| x > 0.0).unwrap_or(w.len() - 1);
    match scheme {
        Scheme::Systematic => {
            let u = uniform(rng);
            systematic_scatter(w, last, u, out, threads, intr)
        }
        Scheme::Stratified => {
            scratch.clear();
            scratch.reserve(m);
            for c0 in (0..m).step_by(CHUNK) {
                scratch.extend((c0..(c0 + CHUNK).min(m)).map(|_| uniform(rng)));
                intr.check()?;
            }
            stratified_scatter(w, last, scratch, out, threads, intr)
        }
        Scheme::Multinomial => multinomial(w, last, total, rng, out, scratch, intr),
        Scheme::Ssp => crate::ssp_killing::ssp(w, total, rng, out, intr),
        Scheme::Killing => crate::ssp_killing::killing(w, last, total, rng, out, scratch, intr),
        Scheme::Residual => {
            // deterministic floor(M W_i) copies, then multinomial on the residual weights
            let scale = m as f64 / total;
            let mut k = 0usize;
            scratch.clear();
            scratch.reserve(w.len());
            for (c, wc) in w.chunks(CHUNK).enumerate() {
                for (i, &wi) in wc.iter().enumerate() {
                    let nw = wi * scale;
                    let f = nw.floor();
                    scratch.push(nw - f);
                    let cnt = (f as usize).min(m - k);
                    out[k..k + cnt].fill((c * CHUNK + i) as i64);
                    k += cnt;
                }
                intr.check()?;
            }
            if k < m {
                let res: Vec<f64> = std::mem::take(scratch);
                let rtot: f64 = res.iter().sum();
                let rlast = res.iter().rposition(|&x| x > 0.0);
                match rlast {
                    Some(rl) if rtot > 0.0 => {
                        multinomial(&res, rl, rtot, rng, &mut out[k..], scratch, intr)?;
                    }
                    _ => {
                        // residuals vanished through rounding: fall back to the weights themselves
                        multinomial(w, last, total, rng, &mut out[k..], scratch, intr)?;
                    }
                }
            }
            Ok(())
        }
    }
}

/// Multinomial draws into `out` (ascending), from weights `w` (sum `total`, last positive entry at
/// `last`).
pub(crate) fn multinomial(
    w: &[f64],
    last: usize,
    total: f64,
    rng: &mut Pcg64,
    out: &mut [i64],
    scratch: &mut Vec<f64>,
    intr: &dyn Interrupt,
) -> Result<()> {
    // sorted uniforms as normalised partial sums of M + 1 exponentials
    let m = out.len();
    scratch.clear();
    scratch.reserve(m);
    let mut acc = 0.0;
    for c0 in (0..m).step_by(CHUNK) {
        for _ in c0..(c0 + CHUNK).min(m) {
            acc += exponential(rng);
            scratch.push(acc);
        }
        intr.check()?;
    }
    acc += exponential(rng);
    let scale = total / acc;
    let mut walk = Walk::new(w);
    for (e, o) in scratch.chunks(CHUNK).zip(out.chunks_mut(CHUNK)) {
        walk.run(w, last, e.iter().map(|&e| e * scale), o, intr)?;
        intr.check()?;
    }
    Ok(())
}

thread_local! {
    /// Per-thread buffer for uniforms / residuals (bounded: see `weights::SCRATCH_KEEP`).
    static UNIFORMS: std::cell::RefCell<Vec<f64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Resample every row of a [B, N] row-major batch of log-weights; returns [B, M] row-local
/// ancestor indices. `intr` is asked between chunks of work.
pub fn resample_log_weights(
    lw: &[f64],
    b: usize,
    n: usize,
    num_samples: usize,
    scheme: Scheme,
    seeds: &Seeds,
    intr: &dyn Interrupt,
) -> Result<Vec<i64>> {
    let maxes = check_batch(lw, b, n, "log_weights", intr)?;
    if num_samples == 0 {
        return Err(invalid("num_samples", "num_samples must be >= 1, got 0"));
    }
    if !scheme.any_num_samples() && num_samples != n {
        return Err(invalid(
            "num_samples",
            format!(
                "scheme {:?} draws exactly one ancestor per particle: num_samples must be {n} \
                 (or None), got {num_samples}",
                scheme.as_str()
            ),
        ));
    }
    let mut rngs = seeds.rngs(b)?;
    let (bu, mu, nu) = (b as u128, num_samples as u128, n as u128);
    ensure_fits(
        "num_samples",
        &if b > 1 {
            format!("num_samples = {num_samples} (for {b} rows)")
        } else {
            format!("num_samples = {num_samples}")
        },
        // ancestors, uniforms, exponentiated weights
        bytes_of(&[(bu * mu, 8), (mu, 8), (nu, 8)]),
    )?;
    let mut out = vec![0i64; b * num_samples];
    if scheme == Scheme::Systematic && n > crate::weights::SCRATCH_KEEP {
        // huge rows: the merge recomputes the exponentials per chunk instead of storing them
        // (peak memory = input + output), the same bits as the stored path
        let rows = rngs.iter_mut().zip(out.chunks_exact_mut(num_samples));
        let mut done = Ok(());
        for (r, (rng, o)) in rows.enumerate() {
            let (row, m) = (&lw[r * n..(r + 1) * n], maxes[r]);
            let flush = crate::weights::EXP_FLUSH;
            let last = row.iter().rposition(|&x| x - m >= flush).unwrap_or(n - 1);
            let count = systematic_count(uniform(rng), num_samples);
            let src = LazyExp {
                lw: &row[..=last],
                m,
            };
            done = scatter_on(&src, o, &count, default_threads(n), intr);
            if done.is_err() {
                break;
            }
        }
        return match done {
            Ok(()) => Ok(out),
            Err(e) => {
                crate::interrupt::release(out);
                Err(e)
            }
        };
    }
    let done = with_thread_buffer(&UNIFORMS, |scratch| {
        crate::weights::with_scratch(n, |w| {
            let rows = rngs.iter_mut().zip(out.chunks_exact_mut(num_samples));
            for (r, (rng, o)) in rows.enumerate() {
                let row = &lw[r * n..(r + 1) * n];
                let (total, _) = crate::weights::exp_shifted(row, maxes[r], w, intr)?;
                resample_weights(w, total, scheme, rng, o, scratch, intr)?;
            }
            Ok(())
        })
    });
    match done {
        Ok(()) => Ok(out),
        Err(e) => {
            crate::interrupt::release(out);
            Err(e)
        }
    }
}

/// Offspring counts of each particle.
pub fn counts(ancestors: &[i64], n: usize) -> Vec<usize> {
    let mut c = vec![0usize; n];
    for &a in ancestors {
        c[a as usize] += 1;
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stored-weights reference of `resample_log_weights` for one row: exp(lw - max lw),
    /// then `resample_weights_on` with `row_rng(seed, 0)` on `threads` threads, `m` draws.
    fn stored_path(lw: &[f64], scheme: Scheme, seed: u64, m: usize, threads: usize) -> Vec<i64> {
        let mx = lw.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let mut w = vec![0.0; lw.len()];
        let (total, _) = crate::weights::exp_shifted(lw, mx, &mut w, &Never).unwrap();
        let mut out = vec![0i64; m];
        let mut rng = row_rng(seed, 0);
        let mut scratch = Vec::new();
        resample_weights_on(
            &w,
            total,
            scheme,
            &mut rng,
            &mut out,
            &mut scratch,
            threads,
            &Never,
        )
        .unwrap();
        out
    }
    use crate::interrupt::Never;

    const ALL: [Scheme; 6] = Scheme::ALL;

    fn weights(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = row_rng(seed, 99);
        (0..n).map(|_| 3.0 * uniform(&mut rng) - 1.5).collect()
    }

    #[test]
    fn in_range_sum_and_sorted() {
        for &s in &ALL {
            for n in [1usize, 2, 7, 100] {
                let lw = weights(n, 1);
                let out = resample_log_weights(&lw, 1, n, n, s, &Seeds::Single(3), &Never).unwrap();
                assert_eq!(out.len(), n);
                assert!(out.iter().all(|&a| a >= 0 && (a as usize) < n));
                if s != Scheme::Residual && s != Scheme::Killing {
                    assert!(out.windows(2).all(|p| p[0] <= p[1]), "{s:?}");
                }
            }
        }
    }

    #[test]
    fn systematic_and_stratified_bounds() {
        let n = 50;
        let lw = weights(n, 7);
        let m = lw.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = lw.iter().map(|x| (x - m).exp()).collect();
        let tot: f64 = w.iter().sum();
        for seed in 0..200 {
            // each count within [floor, ceil] of its expectation (stratified: within one more)
            for (scheme, slack) in [
                (Scheme::Systematic, 1e-9),
                (Scheme::Ssp, 1e-9),
                (Scheme::Stratified, 1.0),
            ] {
                let a = resample_log_weights(&lw, 1, n, n, scheme, &Seeds::Single(seed), &Never)
                    .unwrap();
                let c = counts(&a, n);
                for i in 0..n {
                    let e = n as f64 * w[i] / tot;
                    assert!(
                        (c[i] as f64) >= e.floor() - slack && (c[i] as f64) <= e.ceil() + slack
                    );
                }
            }
            let a =
                resample_log_weights(&lw, 1, n, n, Scheme::Residual, &Seeds::Single(seed), &Never)
                    .unwrap();
            let c = counts(&a, n);
            for i in 0..n {
                assert!(c[i] as f64 >= (n as f64 * w[i] / tot).floor() - 1e-9);
            }
        }
    }

    #[test]
    fn names_round_trip_and_killing_needs_one_draw_per_particle() {
        for s in Scheme::ALL {
            assert_eq!(s.as_str().parse::<Scheme>().unwrap(), s);
        }
        match "bogus".parse::<Scheme>() {
            Err(crate::error::GlassError::InvalidInput { arg, msg }) => {
                assert_eq!(arg, "scheme");
                assert!(
                    Scheme::ALL.iter().all(|s| msg.contains(s.as_str())),
                    "{msg}"
                );
            }
            e => panic!("{e:?}"),
        }
        let lw = [0.0, 1.0, 2.0];
        let seeds = Seeds::Single(0);
        assert!(resample_log_weights(&lw, 1, 3, 4, Scheme::Killing, &seeds, &Never).is_err());
        assert!(resample_log_weights(&lw, 1, 3, 4, Scheme::Ssp, &seeds, &Never).is_ok());
    }

    /// SSP with M != N and weights whose M W_i are exact integers or sum fractions to exactly 1.
    #[test]
    fn ssp_counts_within_floor_ceil_for_any_m() {
        for (n, m) in [(7usize, 3usize), (5, 11), (10, 10), (1, 4)] {
            let lw = weights(n, 11);
            let mx = lw.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let w: Vec<f64> = lw.iter().map(|x| (x - mx).exp()).collect();
            let tot: f64 = w.iter().sum();
            for seed in 0..100 {
                let a =
                    resample_log_weights(&lw, 1, n, m, Scheme::Ssp, &Seeds::Single(seed), &Never)
                        .unwrap();
                assert_eq!(a.len(), m);
                let c = counts(&a, n);
                for i in 0..n {
                    let e = m as f64 * w[i] / tot;
                    assert!(c[i] as f64 >= e.floor() - 1e-9 && c[i] as f64 <= e.ceil() + 1e-9);
                }
            }
        }
        // M W_i = (1, 1, 2): deterministic
        let lw = [0.0, 0.0, 2f64.ln()];
        let a = resample_log_weights(&lw, 1, 3, 4, Scheme::Ssp, &Seeds::Single(1), &Never).unwrap();
        assert_eq!(a, vec![0, 1, 2, 2]);
    }

    #[test]
    fn unbiased() {
        let n = 8;
        let lw: Vec<f64> = (0..n).map(|i| (i as f64 * 0.5) - 2.0).collect();
        let m = lw.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = lw.iter().map(|x| (x - m).exp()).collect();
        let tot: f64 = w.iter().sum();
        let reps = 4000u64;
        for &s in &ALL {
            let (mut acc, mut acc2) = (vec![0.0; n], vec![0.0; n]);
            for seed in 0..reps {
                let a =
                    resample_log_weights(&lw, 1, n, n, s, &Seeds::Single(seed), &Never).unwrap();
                for (i, c) in counts(&a, n).into_iter().enumerate() {
                    acc[i] += c as f64;
                    acc2[i] += (c * c) as f64;
                }
            }
            for i in 0..n {
                let p = w[i] / tot;
                let mean = acc[i] / reps as f64;
                // the multinomial variance bounds the classic schemes' variance; killing's can
                // exceed it, so the larger of it and the sample variance (4000 reps: a 5-sd
                // band fails a correct scheme with probability < 1e-5 per count)
                let var = (acc2[i] / reps as f64 - mean * mean).max(n as f64 * p * (1.0 - p));
                let sd = (var / reps as f64).sqrt();
                assert!(
                    (mean - n as f64 * p).abs() < 5.0 * sd + 1e-9,
                    "{s:?} i={i} {mean}"
                );
            }
        }
    }

    #[test]
    fn zero_weights_never_selected_and_clamped() {
        let lw = [
            f64::NEG_INFINITY,
            0.0,
            f64::NEG_INFINITY,
            0.0,
            f64::NEG_INFINITY,
        ];
        for &s in &ALL {
            let m = if s.any_num_samples() { 64 } else { 5 };
            for seed in 0..50 {
                let a =
                    resample_log_weights(&lw, 1, 5, m, s, &Seeds::Single(seed), &Never).unwrap();
                assert!(a.iter().all(|&x| x == 1 || x == 3), "{s:?} {a:?}");
            }
        }
    }

    /// One big weight, then particles so light that adding one to a running sum near the big
    /// weight changes nothing (w < half an ulp), with zero weights at the ends of the merge's
    /// blocks: a CDF that restarts each block from separately summed offsets leaves a gap there
    /// that the zero-weight particle would own. Targets are placed exactly in those gaps.
    #[test]
    fn zero_weight_at_block_boundary_never_selected() {
        let n = 4000;
        let b = n / 4;
        let mut w = vec![(-36.75f64).exp(); n];
        w[0] = 1.0;
        for k in 1..4 {
            w[k * b - 1] = 0.0;
        }
        let tiny_block: f64 = w[b..2 * b].iter().sum();
        for m in [n, 7 * n] {
            let mf = m as f64;
            for frac in [0.1, 0.5, 0.9, 1.5, 2.5] {
                // a target at 1 + frac * (mass of one light block), in units of total / M
                let total = 1.0 + 3.0 * tiny_block;
                let a = (1.0 + frac * tiny_block) * mf / total;
                let u = a - a.floor();
                let mut out = vec![0i64; m];
                for threads in [1, 2, 4] {
                    systematic_scatter(&w, n - 1, u, &mut out, threads, &Never).unwrap();
                    assert!(
                        out.iter().all(|&i| w[i as usize] > 0.0),
                        "systematic m={m} {frac} threads={threads}"
                    );
                    let us = vec![u; m];
                    stratified_scatter(&w, n - 1, &us, &mut out, threads, &Never).unwrap();
                    assert!(
                        out.iter().all(|&i| w[i as usize] > 0.0),
                        "stratified m={m} {frac} threads={threads}"
                    );
                }
            }
        }
    }

    /// Weights with every hazard for a block split: runs of zeros (at and across block
    /// boundaries, a whole zero block, a zero tail), a few dominant particles, tiny masses.
    fn hazardous_weights(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = row_rng(seed, 5);
        let mut w: Vec<f64> = (0..n)
            .map(|_| {
                let u = uniform(&mut rng);
                if u < 0.3 {
                    0.0
                } else if u < 0.31 {
                    1e3 * uniform(&mut rng)
                } else {
                    (-40.0 * uniform(&mut rng)).exp()
                }
            })
            .collect();
        let b = n.div_ceil(LANES);
        for k in 1..LANES {
            let at = (k * b).min(n);
            w[at.saturating_sub(3)..(at + 3).min(n)].fill(0.0);
        }
        if n >= 8 * LANES {
            w[b..2 * b].fill(0.0); // a whole block without mass
            let tail = n - n / 10;
            w[tail..].fill(0.0);
        }
        w
    }

    #[test]
    fn parallel_merge_is_bit_identical() {
        for (n, m) in [
            (1, 1),
            (3, 5),
            (5, 5),
            (17, 40),
            (1000, 1000),
            (4099, 977),
            (70_001, 70_001),
        ] {
            for seed in 0..6 {
                let w = hazardous_weights(n, seed);
                if !w.iter().any(|&x| x > 0.0) {
                    continue;
                }
                let total: f64 = w.iter().sum();
                for scheme in [Scheme::Systematic, Scheme::Stratified] {
                    let run = |threads: usize| {
                        let mut out = vec![-1i64; m];
                        let mut rng = row_rng(seed, 1);
                        let mut scratch = Vec::new();
                        resample_weights_on(
                            &w,
                            total,
                            scheme,
                            &mut rng,
                            &mut out,
                            &mut scratch,
                            threads,
                            &Never,
                        )
                        .unwrap();
                        out
                    };
                    let one = run(1);
                    assert!(one.iter().all(|&i| w[i as usize] > 0.0), "{scheme:?} n={n}");
                    for threads in [2, 3, 4, 8] {
                        assert_eq!(run(threads), one, "{scheme:?} n={n} m={m} seed={seed}");
                    }
                }
            }
        }
    }

    #[test]
    fn large_calls_use_threads_and_match_one_thread() {
        // above PARALLEL_MIN the default path may split; it must equal the one-thread result
        let n = PARALLEL_MIN + 12_345;
        let lw: Vec<f64> = hazardous_weights(n, 9)
            .iter()
            .map(|&x| if x > 0.0 { x.ln() } else { f64::NEG_INFINITY })
            .collect();
        for scheme in [Scheme::Systematic, Scheme::Stratified] {
            let default =
                resample_log_weights(&lw, 1, n, n, scheme, &Seeds::Single(4), &Never).unwrap();
            let out = stored_path(&lw, scheme, 4, n, 1);
            assert_eq!(default, out, "{scheme:?}");
            assert!(out.iter().all(|&i| lw[i as usize] > f64::NEG_INFINITY));
        }
    }

    #[test]
    fn huge_systematic_without_scratch_matches_stored_weights() {
        // above SCRATCH_KEEP systematic recomputes exp per chunk; compare with the stored path
        let n = crate::weights::SCRATCH_KEEP + 4_321;
        let lw: Vec<f64> = hazardous_weights(n, 11)
            .iter()
            .map(|&x| if x > 0.0 { x.ln() } else { f64::NEG_INFINITY })
            .collect();
        // also shifted to a maximum of 1e-3 and of EXP_FLUSH / 2: the lazy path's cut of the
        // trailing zero weights must use x - max (x / max or x + max cut positive weights there)
        let top = lw.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let shifted = |to: f64| -> Vec<f64> { lw.iter().map(|&x| x - top + to).collect() };
        let rows = [
            lw.clone(),
            shifted(1e-3),
            shifted(crate::weights::EXP_FLUSH / 2.0),
        ];
        for (lw, m) in rows.iter().flat_map(|r| [(r, n), (r, 1000)]) {
            let lazy =
                resample_log_weights(lw, 1, n, m, Scheme::Systematic, &Seeds::Single(8), &Never)
                    .unwrap();
            for threads in [1, 2, 4] {
                let out = stored_path(lw, Scheme::Systematic, 8, m, threads);
                assert_eq!(lazy, out, "m={m} threads={threads}");
            }
            assert!(lazy.iter().all(|&i| lw[i as usize] > f64::NEG_INFINITY));
        }
    }

    #[test]
    fn seeding_rules() {
        let lw = weights(30, 2);
        let mut batch = lw.clone();
        batch.extend_from_slice(&lw);
        let b = resample_log_weights(
            &batch,
            2,
            30,
            30,
            Scheme::Multinomial,
            &Seeds::PerRow(vec![5, 6]),
            &Never,
        )
        .unwrap();
        let r0 = resample_log_weights(
            &lw,
            1,
            30,
            30,
            Scheme::Multinomial,
            &Seeds::Single(5),
            &Never,
        )
        .unwrap();
        let r1 = resample_log_weights(
            &lw,
            1,
            30,
            30,
            Scheme::Multinomial,
            &Seeds::Single(6),
            &Never,
        )
        .unwrap();
        assert_eq!(&b[..30], &r0[..]);
        assert_eq!(&b[30..], &r1[..]);
        let again = resample_log_weights(
            &lw,
            1,
            30,
            30,
            Scheme::Multinomial,
            &Seeds::Single(5),
            &Never,
        )
        .unwrap();
        assert_eq!(r0, again);
        assert!(resample_log_weights(
            &batch,
            2,
            30,
            30,
            Scheme::Systematic,
            &Seeds::PerRow(vec![1]),
            &Never
        )
        .is_err());
        assert!("bogus".parse::<Scheme>().is_err());
    }

    /// B x M ancestors, M uniforms and N weights (8 bytes each) are checked before allocating.
    #[test]
    fn size_check_counts_ancestors_uniforms_and_weights() {
        use crate::limits::with_available;
        let lw = [0.0; 8];
        let call =
            || resample_log_weights(&lw, 2, 4, 3, Scheme::Systematic, &Seeds::Single(1), &Never);
        assert!(with_available(8 * (6 + 3 + 4), call).is_ok());
        match with_available(8 * (6 + 3 + 4) - 1, call) {
            Err(crate::error::GlassError::InvalidInput { arg, msg }) => {
                assert_eq!(arg, "num_samples");
                assert!(
                    msg.starts_with("num_samples = 3 (for 2 rows) is too large"),
                    "{msg}"
                );
            }
            e => panic!("{e:?}"),
        }
        let one = with_available(0, || {
            resample_log_weights(
                &lw[..4],
                1,
                4,
                3,
                Scheme::Systematic,
                &Seeds::Single(1),
                &Never,
            )
        });
        match one {
            Err(crate::error::GlassError::InvalidInput { msg, .. }) => {
                assert!(msg.starts_with("num_samples = 3 is too large"), "{msg}")
            }
            e => panic!("{e:?}"),
        }
    }

    /// An interruption at any of the first checks stops every scheme with `Interrupted`, on one
    /// thread or several (the helpers stop when the calling thread is interrupted).
    #[test]
    fn every_scheme_stops_when_interrupted() {
        use crate::error::GlassError::Interrupted;
        use crate::interrupt::After;
        let n = 3 * CHUNK + 7;
        let lw = weights(n, 5);
        for s in ALL {
            for k in [0, 1, 2] {
                let r = resample_log_weights(&lw, 1, n, n, s, &Seeds::Single(1), &After::new(k));
                assert_eq!(r, Err(Interrupted), "{s:?} k={k}");
            }
            assert!(
                resample_log_weights(&lw, 1, n, n, s, &Seeds::Single(1), &After::new(1000)).is_ok()
            );
        }
        let w: Vec<f64> = lw.iter().map(|x| x.exp()).collect();
        let total: f64 = w.iter().sum();
        for scheme in [Scheme::Systematic, Scheme::Stratified] {
            for threads in [1, 2, 4] {
                for k in [0, 1, 3] {
                    let mut out = vec![0i64; n];
                    let r = resample_weights_on(
                        &w,
                        total,
                        scheme,
                        &mut row_rng(1, 0),
                        &mut out,
                        &mut Vec::new(),
                        threads,
                        &After::new(k),
                    );
                    assert_eq!(r, Err(Interrupted), "{scheme:?} threads={threads} k={k}");
                }
            }
        }
    }

    /// SplitMix64 against its reference output (seed 1234567, Vigna's splitmix64.c); the
    /// generator of (seed, stream) is PCG-64 with state (first output << 64 | second output);
    /// uniforms are the top 53 bits, exponentials -ln(1 - u).
    #[test]
    fn seeding_and_variates_follow_their_definitions() {
        let want = [
            6_457_827_717_110_365_317u64,
            3_203_168_211_198_807_973,
            9_817_491_932_198_370_423,
            4_593_380_528_125_082_431,
            16_408_922_859_458_223_821,
        ];
        let mut x = 1_234_567u64;
        for w in want {
            assert_eq!(splitmix64(&mut x), w);
        }
        let mut a = row_rng(1_234_567, 5);
        let mut b = Pcg64::new((u128::from(want[0]) << 64) | u128::from(want[1]), 5);
        for _ in 0..4 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let (mut c, mut d) = (row_rng(9, 0), row_rng(9, 0));
        for _ in 0..1000 {
            let u = uniform(&mut c);
            assert_eq!(u, (d.next_u64() >> 11) as f64 / 2f64.powi(53));
            assert!((0.0..1.0).contains(&u));
            let e = exponential(&mut c);
            assert_eq!(e, -(1.0 - uniform(&mut d)).ln());
            assert!(e >= 0.0);
        }
    }

    /// The walk never passes the last positive weight, even when the targets overshoot the
    /// CDF's end (here: `total` overstated threefold, a stand-in for rounding).
    #[test]
    fn walk_stops_at_the_last_positive_weight() {
        let w = [0.5, 1.0, 0.0, 0.0];
        for scheme in [Scheme::Multinomial, Scheme::Killing] {
            for seed in 0..20 {
                let mut out = vec![-1i64; 4];
                let mut rng = row_rng(seed, 0);
                resample_weights_on(
                    &w,
                    4.5,
                    scheme,
                    &mut rng,
                    &mut out,
                    &mut Vec::new(),
                    1,
                    &Never,
                )
                .unwrap();
                assert!(out.iter().all(|&a| a == 0 || a == 1), "{scheme:?} {out:?}");
            }
        }
        let lw = [0.0, 1.0];
        let r = resample_log_weights(&lw, 1, 2, 0, Scheme::Multinomial, &Seeds::Single(1), &Never);
        match r {
            Err(crate::error::GlassError::InvalidInput { arg, .. }) => {
                assert_eq!(arg, "num_samples")
            }
            e => panic!("{e:?}"),
        }
    }

    /// Rows above `SCRATCH_KEEP` particles: only systematic recomputes its weights per chunk;
    /// another scheme gives what it gives on stored weights.
    #[test]
    fn huge_rows_of_other_schemes_use_stored_weights() {
        let n = crate::weights::SCRATCH_KEEP + 3;
        let lw: Vec<f64> = (0..n).map(|i| ((i % 97) as f64) * -0.05).collect();
        let got = resample_log_weights(
            &lw,
            1,
            n,
            64,
            Scheme::Multinomial,
            &Seeds::Single(2),
            &Never,
        )
        .unwrap();
        let mut w = vec![0.0; n];
        let (total, _) = crate::weights::exp_shifted(&lw, 0.0, &mut w, &Never).unwrap();
        let mut out = vec![0i64; 64];
        let mut rng = row_rng(2, 0);
        multinomial(
            &w,
            n - 1,
            total,
            &mut rng,
            &mut out,
            &mut Vec::new(),
            &Never,
        )
        .unwrap();
        assert_eq!(got, out);
    }

    /// Residual with every M W_i an integer is deterministic: floor copies only, no draw.
    #[test]
    fn residual_with_integer_counts_draws_nothing() {
        let w = [1.0, 2.0, 1.0];
        let mut rng = row_rng(4, 0);
        let mut out = vec![-1i64; 8];
        resample_weights_on(
            &w,
            4.0,
            Scheme::Residual,
            &mut rng,
            &mut out,
            &mut Vec::new(),
            1,
            &Never,
        )
        .unwrap();
        assert_eq!(out, vec![0, 0, 1, 1, 1, 1, 2, 2]);
        assert!(rng == row_rng(4, 0), "the generator advanced");
    }

    /// Integer counts beyond the first chunk keep their particles' global indices.
    #[test]
    fn residual_integer_counts_span_chunks() {
        let n = CHUNK + 3;
        let w = vec![1.0; n];
        let mut rng = row_rng(4, 0);
        let mut out = vec![-1i64; n];
        resample_weights_on(
            &w,
            n as f64,
            Scheme::Residual,
            &mut rng,
            &mut out,
            &mut Vec::new(),
            1,
            &Never,
        )
        .unwrap();
        assert!(out.iter().enumerate().all(|(i, &a)| a == i as i64));
    }

    /// Each row of a batch is resampled from its own weights with its own generator, on the
    /// stored path and on the recompute-per-chunk path of huge systematic rows.
    #[test]
    fn batch_rows_use_their_own_weights() {
        for (n, m, scheme) in [
            (50, 50, Scheme::Multinomial),
            (crate::weights::SCRATCH_KEEP + 1, 1000, Scheme::Systematic),
        ] {
            // zero weights at every 7th particle and in a long tail
            let mut lw: Vec<f64> = (0..n)
                .map(|i| match i % 7 {
                    _ if i > n - n / 10 => f64::NEG_INFINITY,
                    0 => f64::NEG_INFINITY,
                    k => -0.3 * k as f64,
                })
                .collect();
            // a positive last entry after zero weights: the huge path must not cut the row short
            lw[n - 1] = 0.0;
            let mut second = lw.clone();
            second.reverse();
            lw.extend_from_slice(&second);
            let seeds = Seeds::PerRow(vec![7, 8]);
            let both = resample_log_weights(&lw, 2, n, m, scheme, &seeds, &Never).unwrap();
            for (r, seed) in [(0usize, 7u64), (1, 8)] {
                let out = stored_path(&lw[r * n..(r + 1) * n], scheme, seed, m, 1);
                assert_eq!(&both[r * m..(r + 1) * m], &out[..], "{scheme:?} row {r}");
            }
        }
    }
}
