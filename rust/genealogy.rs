//! Sequential Monte Carlo bookkeeping for B independent groups of N particles: carried normalised
//! log-weights, log-evidence, ESS history, adaptive resampling and the ancestor genealogy.

use crate::error::{invalid, GlassError, Result};
use crate::interrupt::{Interrupt, CHUNK};
use crate::limits::{bytes_of, ensure_fits};
use crate::resample::{resample_weights, Scheme, Seeds};
use rand_pcg::Pcg64;

/// When to resample at a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResampleMode {
    Always,
    Never,
    /// ESS < ess_threshold * N (always if the state has no threshold).
    Adaptive,
}

/// What one step produced.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutput {
    /// [B, N] row-local ancestors (identity for groups that were not resampled).
    pub ancestors: Vec<i64>,
    /// [B] whether each group was resampled.
    pub resampled: Vec<bool>,
    /// [B] ESS after reweighting, before resampling.
    pub ess: Vec<f64>,
}

impl StepOutput {
    /// [B*N] ancestors in the flat batch, b*N + a (for a gather over B*N rows), for `n`
    /// particles per group.
    pub fn flat_ancestors(&self, n: usize) -> Vec<i64> {
        let mut flat = Vec::with_capacity(self.ancestors.len());
        for (r, row) in self.ancestors.chunks_exact(n.max(1)).enumerate() {
            let base = (r * n) as i64;
            flat.extend(row.iter().map(|&a| base + a));
        }
        flat
    }
}

/// The SMC state (see the module docs).
#[derive(Debug, Clone)]
pub struct SmcState {
    b: usize,
    n: usize,
    scheme: Scheme,
    ess_threshold: Option<f64>,
    rngs: Vec<Pcg64>,
    log_w: Vec<f64>,
    log_evidence: Vec<f64>,
    ess_history: Vec<f64>,
    genealogy: Option<Vec<u32>>,
    steps: usize,
    scratch_w: Vec<f64>,
    scratch: Vec<f64>,
    walk_scratch: Vec<f64>,
}

impl SmcState {
    pub fn new(
        num_groups: usize,
        num_particles: usize,
        scheme: Scheme,
        ess_threshold: Option<f64>,
        seeds: &Seeds,
        track_genealogy: bool,
    ) -> Result<Self> {
        if num_groups == 0 {
            return Err(invalid("num_groups", "num_groups must be >= 1, got 0"));
        }
        if num_particles == 0 {
            return Err(invalid(
                "num_particles",
                "num_particles must be >= 1, got 0",
            ));
        }
        if num_particles > u32::MAX as usize {
            return Err(invalid(
                "num_particles",
                format!("num_particles must be < 2^32, got {num_particles}"),
            ));
        }
        if let Some(th) = ess_threshold {
            if !(0.0..=1.0).contains(&th) {
                return Err(invalid(
                    "ess_threshold",
                    format!("ess_threshold must be None or a fraction in [0, 1], got {th}"),
                ));
            }
        }
        let (bu, nu) = (num_groups as u128, num_particles as u128);
        ensure_fits(
            "num_particles",
            &format!("num_groups x num_particles = {num_groups} x {num_particles}"),
            // log-weights and their scratch, per-step ancestors (row-local and flat), one row of
            // exponentiated weights, one generator per group
            bytes_of(&[(bu * nu, 8 * 4), (nu, 8), (bu, 32)]),
        )?;
        let rngs = seeds.rngs(num_groups).map_err(|e| match e {
            GlassError::InvalidInput { msg, .. } => {
                invalid("seeds", msg.replacen("seed:", "seeds:", 1))
            }
            other => other,
        })?;
        let u = -(num_particles as f64).ln();
        Ok(Self {
            b: num_groups,
            n: num_particles,
            scheme,
            ess_threshold,
            rngs,
            log_w: vec![u; num_groups * num_particles],
            log_evidence: vec![0.0; num_groups],
            ess_history: Vec::new(),
            genealogy: if track_genealogy {
                Some(Vec::new())
            } else {
                None
            },
            steps: 0,
            scratch_w: vec![0.0; num_particles],
            scratch: Vec::new(),
            walk_scratch: Vec::new(),
        })
    }

    pub fn num_groups(&self) -> usize {
        self.b
    }
    pub fn num_particles(&self) -> usize {
        self.n
    }
    pub fn num_steps(&self) -> usize {
        self.steps
    }
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }
    pub fn ess_threshold(&self) -> Option<f64> {
        self.ess_threshold
    }
    pub fn tracks_genealogy(&self) -> bool {
        self.genealogy.is_some()
    }
    /// Normalised log-weights [B, N] (row-major).
    pub fn log_weights(&self) -> &[f64] {
        &self.log_w
    }
    /// Accumulated log-evidence log Z_b per group.
    pub fn log_evidence(&self) -> &[f64] {
        &self.log_evidence
    }
    /// ESS per step and group, [steps, B] row-major.
    pub fn ess_history(&self) -> &[f64] {
        &self.ess_history
    }
    /// Ancestors per step, [steps, B, N] row-major (None if not tracked).
    pub fn genealogy(&self) -> Option<&[u32]> {
        self.genealogy.as_deref()
    }

    /// Lineage [steps + 1, B, N]: entry (k, b, i) is the index at step k of the ancestor of final
    /// particle i of group b. None if the genealogy is not tracked.
    pub fn trace(&self) -> Option<Vec<i64>> {
        let g = self.genealogy.as_ref()?;
        let bn = self.b * self.n;
        let mut out = vec![0i64; (self.steps + 1) * bn];
        for r in 0..self.b {
            for i in 0..self.n {
                out[self.steps * bn + r * self.n + i] = i as i64;
            }
        }
        for k in (0..self.steps).rev() {
            for r in 0..self.b {
                let base = r * self.n;
                for i in 0..self.n {
                    let child = out[(k + 1) * bn + base + i] as usize;
                    out[k * bn + base + i] = g[k * bn + base + child] as i64;
                }
            }
        }
        Some(out)
    }

    /// Room for one more step of ancestors (B*N u32) in the genealogy, taken before anything
    /// changes: growing it past the available memory is an `InvalidInput` error naming
    /// `track_genealogy`, not an aborted process (a failed reallocation aborts in Rust).
    fn reserve_genealogy(&mut self) -> Result<()> {
        let (b, n, steps) = (self.b, self.n, self.steps);
        let Some(gen) = self.genealogy.as_mut() else {
            return Ok(());
        };
        let need = gen.len() + b * n;
        if need <= gen.capacity() {
            return Ok(());
        }
        // amortised doubling (O(1) copies per entry); the old buffer is copied into the new one,
        // so both are alive at the peak
        let new_cap = need.max(2 * gen.capacity());
        ensure_fits(
            "track_genealogy",
            &format!(
                "track_genealogy=True (step {} of {b} x {n} particles; the genealogy keeps every \
                 step's ancestors, pass track_genealogy=False to keep none)",
                steps + 1
            ),
            bytes_of(&[(new_cap as u128, 4), (gen.len() as u128, 4)]),
        )?;
        gen.try_reserve_exact(new_cap - gen.len()).map_err(|e| {
            invalid(
                "track_genealogy",
                format!(
                    "track_genealogy=True: cannot grow the genealogy to {new_cap} entries ({e})"
                ),
            )
        })
    }

    /// One SMC step with log-potentials `g` ([B, N] row-major). Atomic: on error (including an
    /// interruption by `intr`, asked between chunks of work) nothing changes.
    pub fn step(
        &mut self,
        g: &[f64],
        mode: ResampleMode,
        intr: &dyn Interrupt,
    ) -> Result<StepOutput> {
        let (b, n) = (self.b, self.n);
        if g.len() != b * n {
            return Err(invalid(
                "log_potentials",
                format!(
                    "log_potentials must have {b} x {n} = {} entries, got {}",
                    b * n,
                    g.len()
                ),
            ));
        }
        self.reserve_genealogy()?;
        // one fused pass: reweighted log-weights, per-row maxima, NaN/+inf flag on the potentials
        let mut rew = std::mem::take(&mut self.scratch);
        let fused = fused_reweight(&mut rew, &self.log_w, g, b, n, intr);
        let rew = {
            self.scratch = rew;
            &mut self.scratch
        };
        let (maxes, bad) = fused?;
        if bad {
            check_potentials(g, b, n)?;
        }
        if let Some(r) = maxes.iter().position(|&m| m == f64::NEG_INFINITY) {
            return Err(crate::error::degenerate(format!(
                "all log_weights + log_potentials are -inf{}: no particle has positive weight",
                if b > 1 {
                    format!(" in row {r}")
                } else {
                    String::new()
                }
            )));
        }
        // everything below writes to copies (rew becomes the new log-weights, rngs are cloned)
        // that are committed only once every group is done
        let mut rngs = self.rngs.clone();
        let mut log_evidence = self.log_evidence.clone();
        let mut ancestors = vec![0i64; b * n];
        let mut resampled = vec![false; b];
        let mut ess = vec![0.0; b];
        let log_n = (n as f64).ln();
        for r in 0..b {
            let row = &mut rew[r * n..(r + 1) * n];
            let (total, sum2) =
                crate::weights::exp_shifted(row, maxes[r], &mut self.scratch_w, intr)?;
            let ls = total.ln();
            log_evidence[r] += maxes[r] + ls;
            let e = total * total / sum2;
            ess[r] = e;
            let do_resample = match mode {
                ResampleMode::Always => true,
                ResampleMode::Never => false,
                ResampleMode::Adaptive => match self.ess_threshold {
                    None => true,
                    Some(th) => e < th * n as f64,
                },
            };
            resampled[r] = do_resample;
            let anc = &mut ancestors[r * n..(r + 1) * n];
            if do_resample {
                resample_weights(
                    &self.scratch_w,
                    total,
                    self.scheme,
                    &mut rngs[r],
                    anc,
                    &mut self.walk_scratch,
                    intr,
                )?;
                row.fill(-log_n);
            } else {
                for (i, a) in anc.iter_mut().enumerate() {
                    *a = i as i64;
                }
                // subtract the maximum first: full precision at any magnitude
                let m = maxes[r];
                for x in row.iter_mut() {
                    *x = (*x - m) - ls;
                }
            }
            intr.check()?;
        }
        std::mem::swap(&mut self.log_w, &mut self.scratch);
        self.rngs = rngs;
        self.log_evidence = log_evidence;
        self.ess_history.extend_from_slice(&ess);
        if let Some(gen) = self.genealogy.as_mut() {
            gen.extend(ancestors.iter().map(|&a| a as u32));
        }
        self.steps += 1;
        Ok(StepOutput {
            ancestors,
            resampled,
            ess,
        })
    }
}

/// rew = log_w + g (resized to B x N); returns the per-row maxima of rew and whether g has a NaN
/// or +inf.
fn fused_reweight(
    rew: &mut Vec<f64>,
    log_w: &[f64],
    g: &[f64],
    b: usize,
    n: usize,
    intr: &dyn Interrupt,
) -> Result<(Vec<f64>, bool)> {
    rew.clear();
    rew.resize(b * n, 0.0);
    let mut maxes = Vec::with_capacity(b);
    let mut bad = false;
    for r in 0..b {
        let (lo, hi) = (r * n, (r + 1) * n);
        let mut m = f64::NEG_INFINITY;
        for ((o, w), x) in rew[lo..hi]
            .chunks_mut(CHUNK)
            .zip(log_w[lo..hi].chunks(CHUNK))
            .zip(g[lo..hi].chunks(CHUNK))
        {
            for ((o, &w), &x) in o.iter_mut().zip(w).zip(x) {
                bad |= x.is_nan() | (x == f64::INFINITY);
                *o = w + x;
            }
            let cm = crate::weights::max_and_nan(o).0;
            m = if cm > m { cm } else { m };
            intr.check()?;
        }
        maxes.push(m);
    }
    Ok((maxes, bad))
}

fn check_potentials(g: &[f64], b: usize, n: usize) -> Result<()> {
    for (idx, &x) in g.iter().enumerate() {
        if x.is_nan() || x == f64::INFINITY {
            let (r, i) = (idx / n, idx % n);
            let loc = if b > 1 {
                format!("[{r}, {i}]")
            } else {
                format!("[{i}]")
            };
            return Err(if x.is_nan() {
                GlassError::DegenerateWeights(format!("log_potentials contains NaN at index {loc}"))
            } else {
                invalid(
                    "log_potentials",
                    format!(
                        "log_potentials contains +inf at index {loc}; potentials must be < +inf"
                    ),
                )
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interrupt::Never as NoInterrupt;

    #[test]
    fn flat_ancestors_offset_each_group_by_its_first_row() {
        let out = StepOutput {
            ancestors: vec![1, 1, 0, 2, 2, 2],
            resampled: vec![true, true],
            ess: vec![1.0, 1.0],
        };
        assert_eq!(out.flat_ancestors(3), vec![1, 1, 0, 5, 5, 5]);
    }

    fn state(b: usize, n: usize, th: Option<f64>) -> SmcState {
        SmcState::new(b, n, Scheme::Systematic, th, &Seeds::Single(1), true).unwrap()
    }

    #[test]
    fn carries_weights_when_not_resampling() {
        let mut s = state(1, 4, Some(0.0));
        let g = [0.0, 1.0, 2.0, 3.0];
        let out = s.step(&g, ResampleMode::Adaptive, &NoInterrupt).unwrap();
        assert!(!out.resampled[0]);
        assert_eq!(out.ancestors, vec![0, 1, 2, 3]);
        let out2 = s.step(&g, ResampleMode::Never, &NoInterrupt).unwrap();
        assert!(!out2.resampled[0]);
        // carried: weights proportional to exp(2 g)
        let z: f64 = g.iter().map(|x| (2.0 * x).exp()).sum();
        for (w, x) in s.log_weights().iter().zip(g) {
            assert!((w - (2.0 * x - z.ln())).abs() < 1e-12);
        }
        // evidence: log mean of exp(2g)
        assert!((s.log_evidence()[0] - (z / 4.0).ln()).abs() < 1e-12);
    }

    #[test]
    fn evidence_independent_of_resampling() {
        // constant potentials c per step: log Z = steps * c regardless of resampling
        let mut s = state(2, 16, None);
        for _ in 0..5 {
            s.step(&[0.25; 32], ResampleMode::Always, &NoInterrupt)
                .unwrap();
        }
        for &z in s.log_evidence() {
            assert!((z - 1.25).abs() < 1e-12);
        }
        assert_eq!(s.ess_history().len(), 10);
    }

    #[test]
    fn trace_follows_ancestors() {
        let mut s = state(1, 5, None);
        let mut rng = crate::resample::row_rng(4, 0);
        for _ in 0..6 {
            let g: Vec<f64> = (0..5)
                .map(|_| 3.0 * crate::resample::uniform(&mut rng))
                .collect();
            s.step(&g, ResampleMode::Always, &NoInterrupt).unwrap();
        }
        let tr = s.trace().unwrap();
        let gen = s.genealogy().unwrap();
        let n = 5;
        for i in 0..n {
            let mut cur = i;
            for k in (0..6).rev() {
                assert_eq!(tr[(k + 1) * n + i] as usize, cur);
                cur = gen[k * n + cur] as usize;
            }
            assert_eq!(tr[i] as usize, cur);
        }
    }

    #[test]
    fn genealogy_grows_amortised() {
        let mut s = state(2, 3, None);
        for _ in 0..10 {
            s.step(&[0.0; 6], ResampleMode::Always, &NoInterrupt)
                .unwrap();
        }
        let gen = s.genealogy.as_ref().unwrap();
        assert_eq!(gen.len(), 60);
        assert!(gen.capacity() >= 60 && gen.capacity() <= 2 * 60);
    }

    /// The accessors report what the state was built with and what the steps did (the Python
    /// layer reads them; Rust must pin them too).
    #[test]
    fn accessors_report_construction_and_progress() {
        let s = SmcState::new(
            3,
            5,
            Scheme::Multinomial,
            Some(0.4),
            &Seeds::Single(2),
            false,
        )
        .unwrap();
        assert_eq!(
            (s.num_groups(), s.num_particles(), s.num_steps()),
            (3, 5, 0)
        );
        assert_eq!(s.scheme(), Scheme::Multinomial);
        assert_eq!(s.ess_threshold(), Some(0.4));
        assert!(!s.tracks_genealogy());
        assert!(s.genealogy().is_none() && s.trace().is_none());
        assert_eq!(s.log_weights(), &[-(5f64.ln()); 15][..]);
        assert_eq!(s.log_evidence(), &[0.0; 3][..]);
        assert!(s.ess_history().is_empty());
        let mut s = state(2, 3, Some(0.25));
        assert!(s.tracks_genealogy());
        assert_eq!(s.ess_threshold(), Some(0.25));
        for k in 1..=2 {
            s.step(&[0.0; 6], ResampleMode::Always, &NoInterrupt)
                .unwrap();
            assert_eq!(s.num_steps(), k);
        }
        assert_eq!(s.genealogy().unwrap().len(), 2 * 6);
        assert!(state(1, 2, None).ess_threshold().is_none());
    }

    /// Per group and step: ESS = (sum w)^2 / sum w^2 of the reweighted weights, log Z increment =
    /// log sum(W_prev w), carried log-weights normalised; the genealogy is the concatenation of
    /// the step outputs' ancestors and the trace walks them back, for B = 3 groups.
    #[test]
    fn ess_evidence_genealogy_and_trace_per_group() {
        let (b, n, steps) = (3usize, 5usize, 6usize);
        let mut s = state(b, n, Some(0.6));
        let mut rng = crate::resample::row_rng(8, 1);
        let mut lw = vec![-(n as f64).ln(); b * n];
        let mut log_z = vec![0.0; b];
        let mut outs = Vec::new();
        for _ in 0..steps {
            let g: Vec<f64> = (0..b * n)
                .map(|_| 4.0 * crate::resample::uniform(&mut rng) - 2.0)
                .collect();
            let out = s.step(&g, ResampleMode::Adaptive, &NoInterrupt).unwrap();
            for r in 0..b {
                let w: Vec<f64> = (0..n)
                    .map(|i| (lw[r * n + i] + g[r * n + i]).exp())
                    .collect();
                let (sum, sq) = (w.iter().sum::<f64>(), w.iter().map(|x| x * x).sum::<f64>());
                let ess = sum * sum / sq;
                assert!(
                    (out.ess[r] - ess).abs() < 1e-12 * ess,
                    "{} {ess}",
                    out.ess[r]
                );
                assert_eq!(out.resampled[r], ess < 0.6 * n as f64);
                log_z[r] += sum.ln();
                for i in 0..n {
                    lw[r * n + i] = if out.resampled[r] {
                        -(n as f64).ln()
                    } else {
                        (w[i] / sum).ln()
                    };
                }
            }
            let hist = s.ess_history();
            assert_eq!(&hist[hist.len() - b..], &out.ess[..]);
            outs.push(out);
        }
        assert!(outs.iter().any(|o| o.resampled.iter().any(|&x| x)));
        assert!(outs.iter().any(|o| o.resampled.iter().any(|&x| !x)));
        for (got, want) in s.log_weights().iter().zip(&lw) {
            assert!((got - want).abs() < 1e-12, "{got} {want}");
        }
        for (got, want) in s.log_evidence().iter().zip(&log_z) {
            assert!((got - want).abs() < 1e-12, "{got} {want}");
        }
        let gen: Vec<u32> = outs
            .iter()
            .flat_map(|o| o.ancestors.iter().map(|&a| a as u32))
            .collect();
        assert_eq!(s.genealogy().unwrap(), &gen[..]);
        let tr = s.trace().unwrap();
        assert_eq!(tr.len(), (steps + 1) * b * n);
        for r in 0..b {
            for i in 0..n {
                let mut cur = i;
                for k in (0..=steps).rev() {
                    assert_eq!(tr[k * b * n + r * n + i] as usize, cur, "k={k} r={r} i={i}");
                    if k > 0 {
                        cur = outs[k - 1].ancestors[r * n + cur] as usize;
                    }
                }
            }
        }
    }

    /// Adaptive resampling fires on ESS < threshold * N, strictly: equal weights have ESS = N
    /// exactly, which does not trigger threshold 1.
    #[test]
    fn adaptive_threshold_is_strict_and_scaled_by_n() {
        let mut s = state(1, 4, Some(1.0));
        let out = s
            .step(&[0.0; 4], ResampleMode::Adaptive, &NoInterrupt)
            .unwrap();
        assert_eq!(out.ess, vec![4.0]);
        assert!(!out.resampled[0]);
        // ESS = (1 + 3e^-2)^2 / (1 + 3e^-4) ~ 1.71 < 0.9 * 4, > 0.9 / 4
        let g = [2.0, 0.0, 0.0, 0.0];
        let out = s.step(&g, ResampleMode::Adaptive, &NoInterrupt).unwrap();
        assert!(out.ess[0] > 1.0 && out.ess[0] < 2.0);
        let mut s = state(1, 4, Some(0.9));
        assert!(
            s.step(&g, ResampleMode::Adaptive, &NoInterrupt)
                .unwrap()
                .resampled[0]
        );
        let mut s = state(1, 4, Some(0.4));
        assert!(
            !s.step(&g, ResampleMode::Adaptive, &NoInterrupt)
                .unwrap()
                .resampled[0]
        );
    }

    /// The genealogy grows by exact reservations with doubling: capacities B*N, 2 B*N, 4 B*N, ...
    /// (B*N = 3 is below the minimum capacity Vec picks on its own, 4).
    #[test]
    fn genealogy_reserves_exactly_then_doubles() {
        let mut s = state(1, 3, None);
        let mut caps = Vec::new();
        for _ in 0..5 {
            s.step(&[0.0; 3], ResampleMode::Always, &NoInterrupt)
                .unwrap();
            caps.push(s.genealogy.as_ref().unwrap().capacity());
        }
        assert_eq!(caps, vec![3, 6, 12, 12, 24]);
    }

    /// Bad potentials are reported at their [row, column] (or [column] for one group).
    #[test]
    fn bad_potentials_name_their_index() {
        let mut s = state(2, 3, None);
        let mut g = [0.0; 6];
        g[5] = f64::NAN;
        match s.step(&g, ResampleMode::Always, &NoInterrupt) {
            Err(GlassError::DegenerateWeights(m)) => assert!(m.contains("index [1, 2]"), "{m}"),
            e => panic!("{e:?}"),
        }
        g[5] = 0.0;
        g[3] = f64::INFINITY;
        match s.step(&g, ResampleMode::Always, &NoInterrupt) {
            Err(GlassError::InvalidInput { arg, msg }) => {
                assert_eq!(arg, "log_potentials");
                assert!(msg.contains("+inf at index [1, 0]"), "{msg}");
            }
            e => panic!("{e:?}"),
        }
        // every potential +inf: the fused pass alone must flag it
        assert!(matches!(
            s.step(&[f64::INFINITY; 6], ResampleMode::Never, &NoInterrupt),
            Err(GlassError::InvalidInput { .. })
        ));
        let mut s = state(1, 3, None);
        match s.step(&[0.0, 0.0, f64::NAN], ResampleMode::Always, &NoInterrupt) {
            Err(GlassError::DegenerateWeights(m)) => {
                assert!(m.ends_with("NaN at index [2]"), "{m}")
            }
            e => panic!("{e:?}"),
        }
        match s.step(&[0.0; 3], ResampleMode::Never, &NoInterrupt) {
            Ok(out) => assert_eq!(out.ancestors, vec![0, 1, 2]),
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn errors_are_atomic() {
        let mut s = state(2, 3, None);
        let before = s.log_weights().to_vec();
        let g = [
            0.0,
            0.0,
            0.0,
            f64::NEG_INFINITY,
            f64::NEG_INFINITY,
            f64::NEG_INFINITY,
        ];
        match s.step(&g, ResampleMode::Always, &NoInterrupt) {
            Err(GlassError::DegenerateWeights(m)) => assert!(m.contains("row 1"), "{m}"),
            e => panic!("{e:?}"),
        }
        assert!(matches!(
            s.step(&[f64::NAN; 6], ResampleMode::Always, &NoInterrupt),
            Err(GlassError::DegenerateWeights(_))
        ));
        assert!(matches!(
            s.step(
                &[0.0, 0.0, f64::INFINITY, 0.0, 0.0, 0.0],
                ResampleMode::Always,
                &NoInterrupt,
            ),
            Err(GlassError::InvalidInput { .. })
        ));
        assert!(s
            .step(&[0.0; 5], ResampleMode::Always, &NoInterrupt)
            .is_err());
        assert_eq!(s.log_weights(), &before[..]);
        assert_eq!(s.num_steps(), 0);
    }

    /// Growing the genealogy is checked before anything changes: step k + 1 needs the new
    /// buffer and the old one (B*N = 3: 12, then 36, then 72 bytes).
    #[test]
    fn genealogy_growth_is_checked_against_the_memory() {
        let mut s = state(1, 3, None);
        let before = crate::limits::with_available(36, || {
            for _ in 0..2 {
                s.step(&[0.0; 3], ResampleMode::Never, &NoInterrupt)
                    .unwrap();
            }
            let before = s.log_weights().to_vec();
            match s.step(&[1.0, 0.0, 0.0], ResampleMode::Never, &NoInterrupt) {
                Err(GlassError::InvalidInput { arg, msg }) => {
                    assert_eq!(arg, "track_genealogy");
                    assert!(msg.contains("step 3 of 1 x 3 particles"), "{msg}");
                }
                e => panic!("{e:?}"),
            }
            before
        });
        assert_eq!((s.num_steps(), s.log_weights()), (2, &before[..]));
        // without a genealogy nothing grows
        let mut s =
            SmcState::new(1, 3, Scheme::Systematic, None, &Seeds::Single(1), false).unwrap();
        crate::limits::with_available(0, || {
            for _ in 0..3 {
                s.step(&[0.0; 3], ResampleMode::Never, &NoInterrupt)
                    .unwrap();
            }
        });
    }

    /// An interruption at any check leaves the state as it was.
    #[test]
    fn interrupted_steps_change_nothing() {
        use crate::interrupt::After;
        let n = 2 * CHUNK + 3;
        for mode in [ResampleMode::Always, ResampleMode::Never] {
            let mut s = state(2, n, None);
            let g: Vec<f64> = (0..2 * n).map(|i| (i % 7) as f64 * 0.1).collect();
            s.step(&g, ResampleMode::Always, &NoInterrupt).unwrap();
            let (lw, ev) = (s.log_weights().to_vec(), s.log_evidence().to_vec());
            for k in [0, 1, 2, 3, 5, 8, 11] {
                let r = s.step(&g, mode, &After::new(k));
                assert_eq!(r, Err(GlassError::Interrupted), "{mode:?} k={k}");
                assert_eq!(
                    (s.num_steps(), s.log_weights(), s.log_evidence()),
                    (1, &lw[..], &ev[..])
                );
                assert_eq!(s.genealogy().unwrap().len(), 2 * n);
            }
            assert!(s.step(&g, mode, &After::new(1000)).is_ok());
        }
    }
}
