//! A flow: a base distribution pushed through a chain of bijections.
//!
//! ```text
//! x = f_K ∘ … ∘ f_1 (z; c)
//! log q(x | c) = log q₀(z) − Σ_k log|det J_k|
//! ```
//!
//! The base ([`Base`]) is the standard normal N(0, I), or for angles (gauge links) the uniform
//! distribution on the torus [−π, π)ᵈ, log q₀ = −d log 2π, where states are read modulo 2π.
//!
//! Conditioning: raw condition values go through one encoding into the features every
//! conditioner reads. For [`Conditioning::Temperature`] the raw condition is T and the single
//! feature is the log-temperature normalised to [−1, 1] over the trained range,
//! φ(T) = (2 log T − log T_min − log T_max)/(log T_max − log T_min); the chain's output is then
//! scaled by √T (x = √T · f(z; φ(T)), log-det + (d/2) log T), because the Boltzmann width grows
//! like √T and splines must not see high-T samples beyond their bound (MATH.md §6).
//!
//! Every sample may carry its own condition. Compiled f32 programs for sampling and density
//! evaluation are cached and refreshed when the parameters change; clones start with an empty
//! cache. They run on the device selected for the process ([`crate::engine::device`]) when
//! they are compiled, the CPU by default.

use std::cell::RefCell;

use ndarray::{Array2, ArrayView2};
use rand::Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use super::params::{Declared, Scope};
use super::{Bijection, Layer};
use crate::coordinates::Coordinates;
use crate::engine::{GraphBuilder, Program, Scalar, Var};
use crate::error::{input_err, Error, Result};

/// How raw condition values become conditioner features.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Conditioning {
    /// Unconditioned.
    None,
    /// `n` raw features, passed through unchanged.
    Features(usize),
    /// One raw value T > 0, encoded as normalised log T over [t_min, t_max]; output scaled by √T.
    Temperature {
        /// Lower end of the trained range.
        t_min: f64,
        /// Upper end of the trained range.
        t_max: f64,
    },
}

impl Conditioning {
    /// Number of raw condition values per sample.
    pub fn raw_dim(&self) -> usize {
        match self {
            Conditioning::None => 0,
            Conditioning::Features(n) => *n,
            Conditioning::Temperature { .. } => 1,
        }
    }
    /// Number of features the conditioners read.
    pub fn feature_dim(&self) -> usize {
        self.raw_dim()
    }
    /// The feature encoding, host side (the same formula as in the graph).
    pub fn features(&self, raw: &[f64]) -> Vec<f64> {
        match self {
            Conditioning::Temperature { t_min, t_max } => {
                let (a, b) = (t_min.ln(), t_max.ln());
                raw.iter()
                    .map(|t| (2.0 * t.ln() - a - b) / (b - a))
                    .collect()
            }
            _ => raw.to_vec(),
        }
    }
    fn encode<'g>(&self, c: Option<Var<'g>>) -> Option<Var<'g>> {
        match (self, c) {
            (Conditioning::Temperature { t_min, t_max }, Some(t)) => {
                let (a, b) = (t_min.ln(), t_max.ln());
                Some(
                    t.ln()
                        .mul_scalar(2.0 / (b - a))
                        .add_scalar(-(a + b) / (b - a)),
                )
            }
            (Conditioning::None, _) => None,
            (_, c) => c,
        }
    }
}

/// Samples with their log-density under the flow.
#[derive(Clone, Debug)]
pub struct Samples {
    /// States, one per row.
    pub x: Array2<f64>,
    /// log q(x | c).
    pub log_q: Vec<f64>,
}

fn check_mixture(width: f64, fraction: f64) -> Result<()> {
    if !(width >= 1.0 && width.is_finite() && (0.0..1.0).contains(&fraction)) {
        return input_err(format!(
            "defensive mixture needs width ≥ 1 and fraction in [0, 1), got {width}, {fraction}"
        ));
    }
    Ok(())
}

/// log q_mix(x) − log q(x) = log((1 − ε) + ε exp(Δ)), Δ = −d log s + ½|z|²(1 − 1/s²).
fn mixture_log_factor(d: usize, z_sq: f64, width: f64, fraction: f64) -> f64 {
    if fraction == 0.0 {
        return 0.0;
    }
    let delta = -(d as f64) * width.ln() + 0.5 * z_sq * (1.0 - 1.0 / (width * width));
    ((1.0 - fraction) + fraction * delta.exp()).ln()
}

/// The base distribution of a flow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Base {
    /// z ~ N(0, I).
    #[default]
    Normal,
    /// z uniform on [−π, π)ᵈ: every coordinate an angle. No √T scaling; states are wrapped
    /// into [−π, π) before the inverse, so q is periodic in each coordinate.
    Angles,
}

/// A uniform draw from [−π, π).
fn draw_angle(rng: &mut impl Rng) -> f64 {
    (2.0 * rng.random::<f64>() - 1.0) * std::f64::consts::PI
}

/// log of the uniform density on [−π, π)ᵈ.
fn uniform_log_density(d: f64) -> f64 {
    -d * (2.0 * std::f64::consts::PI).ln()
}

/// log q_mix = log((1 − ε) q + ε u) for the angles' defensive mixture with the uniform
/// density u on [−π, π)ᵈ.
fn angles_mixture(log_q: f64, d: usize, fraction: f64) -> f64 {
    if fraction == 0.0 {
        return log_q;
    }
    let (a, b) = (
        (1.0 - fraction).ln() + log_q,
        fraction.ln() + uniform_log_density(d as f64),
    );
    let m = a.max(b);
    m + ((a - m).exp() + (b - m).exp()).ln()
}

/// What a compiled flow program computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Inputs `z` (and `cond`) → outputs `x`, `log_q`.
    Sample,
    /// Inputs `x` (and `cond`) → outputs `z`, `log_q`.
    Density,
}

#[derive(Default)]
struct Cache {
    programs: RefCell<Vec<Cached>>,
}

/// A compiled program: its mode, the parameter version last written to it, and the most rows
/// one run takes.
struct Cached {
    mode: Mode,
    version: u64,
    program: Program<f32>,
    rows: usize,
}

/// The most memory one run of a flow program may hold in its buffers: larger batches run in
/// chunks of as many rows as fit. The buffers grow with the rows (a sample of the U(1) gauge
/// flow at L = 8 materialises most of a megabyte across its kernels: 20 000 rows in one run
/// would hold over 10 GB), and a program keeps a plan per batch size it has run.
pub const RUN_BYTES: usize = 256 << 20;

impl Clone for Cache {
    fn clone(&self) -> Self {
        Cache::default()
    }
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cache({} programs)", self.programs.borrow().len())
    }
}

/// A normalizing flow.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Flow {
    dim: usize,
    conditioning: Conditioning,
    layers: Vec<Layer>,
    /// The system coordinates the layers' output is read in (None: the state itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    coordinates: Option<Coordinates>,
    #[serde(default)]
    base: Base,
    #[serde(skip)]
    cache: Cache,
    #[serde(skip)]
    version: u64,
}

/// Largest batch drawn or scored at once (the program runs it in chunks whose buffers stay
/// within [`RUN_BYTES`]).
pub const MAX_BATCH: usize = 4096;

impl Flow {
    /// A flow from layers (checked for consistent dimensions).
    pub fn new(dim: usize, conditioning: Conditioning, layers: Vec<Layer>) -> Result<Flow> {
        let f = Flow {
            dim,
            conditioning,
            layers,
            coordinates: None,
            base: Base::Normal,
            cache: Cache::default(),
            version: 0,
        };
        f.validate()?;
        Ok(f)
    }

    /// A flow on angles: uniform base on [−π, π)ᵈ ([`Base::Angles`]), layers that map the
    /// torus to itself (e.g. [`super::GaugeCoupling`]).
    pub fn on_angles(dim: usize, conditioning: Conditioning, layers: Vec<Layer>) -> Result<Flow> {
        Ok(Flow {
            base: Base::Angles,
            ..Flow::new(dim, conditioning, layers)?
        })
    }

    /// A flow whose layers model the flow coordinates y of `coordinates` (their output is
    /// mapped to the state on the host; see [`crate::coordinates`]). Needs temperature
    /// conditioning: the exact coordinates' distribution depends on T.
    pub fn with_coordinates(
        coordinates: Coordinates,
        conditioning: Conditioning,
        layers: Vec<Layer>,
    ) -> Result<Flow> {
        let f = Flow {
            dim: coordinates.dim(),
            conditioning,
            layers,
            coordinates: Some(coordinates),
            base: Base::Normal,
            cache: Cache::default(),
            version: 0,
        };
        f.validate()?;
        Ok(f)
    }

    /// Check dimensions and parameter shapes (after construction or loading).
    pub fn validate(&self) -> Result<()> {
        if self.dim == 0 {
            return input_err("a flow needs dim ≥ 1");
        }
        if let Some(c) = &self.coordinates {
            c.check()?;
            if c.dim() != self.dim {
                return input_err(format!(
                    "coordinates of dim {} on a flow of dim {}",
                    c.dim(),
                    self.dim
                ));
            }
            if !matches!(self.conditioning, Conditioning::Temperature { .. }) {
                return input_err("system coordinates need a temperature-conditioned flow");
            }
            if self.base != Base::Normal {
                return input_err("system coordinates need the normal base");
            }
        }
        if let Conditioning::Temperature { t_min, t_max } = self.conditioning {
            if !(t_min > 0.0 && t_max > t_min && t_max.is_finite()) {
                return input_err(format!("temperature range [{t_min}, {t_max}] is invalid"));
            }
        }
        for (i, l) in self.layers.iter().enumerate() {
            l.check().map_err(|e| e.context(format!("layer {i}")))?;
            if l.dim() != self.flow_dim() {
                return input_err(format!(
                    "layer {i} has dim {}, the flow has {}",
                    l.dim(),
                    self.flow_dim()
                ));
            }
            if l.cond_dim() != 0 && l.cond_dim() != self.conditioning.feature_dim() {
                return input_err(format!(
                    "layer {i} reads {} condition features, the flow provides {}",
                    l.cond_dim(),
                    self.conditioning.feature_dim()
                ));
            }
            for (scope, set) in l.param_sets() {
                if let Some(t) = set
                    .tensors
                    .iter()
                    .find(|t| t.values.iter().any(|v| !v.is_finite()))
                {
                    return input_err(format!(
                        "layer {i} {scope}: tensor {:?} is not finite",
                        t.name
                    ));
                }
            }
        }
        Ok(())
    }

    /// Dimension of the state.
    pub fn dim(&self) -> usize {
        self.dim
    }
    /// Dimension the layers act on: the state's, or the flow coordinates' of
    /// [`Flow::coordinates`].
    pub fn flow_dim(&self) -> usize {
        self.coordinates.as_ref().map_or(self.dim, |c| c.flow_dim())
    }
    /// The system coordinates the layers' output is read in, if any.
    pub fn coordinates(&self) -> Option<&Coordinates> {
        self.coordinates.as_ref()
    }
    /// The conditioning.
    pub fn conditioning(&self) -> Conditioning {
        self.conditioning
    }
    /// The base distribution.
    pub fn base(&self) -> Base {
        self.base
    }
    /// Fill `z` with draws from the base distribution.
    pub fn draw_base(&self, z: &mut [f32], rng: &mut impl Rng) {
        match self.base {
            Base::Normal => z
                .iter_mut()
                .for_each(|v| *v = rng.sample::<f32, _>(StandardNormal)),
            Base::Angles => z.iter_mut().for_each(|v| *v = draw_angle(rng) as f32),
        }
    }
    /// The layers.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }
    /// Mutable layers (invalidates compiled programs).
    pub fn layers_mut(&mut self) -> &mut [Layer] {
        self.version += 1;
        &mut self.layers
    }
    /// Number of trainable scalars.
    pub fn n_params(&self) -> usize {
        self.param_paths().iter().map(|(_, v)| v.len()).sum()
    }

    /// Every parameter tensor with its full graph path.
    pub fn param_paths(&self) -> Vec<(String, Vec<f64>)> {
        let mut out = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            for (set, ps) in l.param_sets() {
                for t in &ps.tensors {
                    out.push((join_path(i, &set, &t.name), t.values.clone()));
                }
            }
        }
        out
    }

    /// Copy parameters into a compiled program (tensors absent from it are skipped).
    pub fn write_params<T: Scalar>(&self, p: &mut Program<T>) -> Result<()> {
        for (path, v) in self.param_paths() {
            if p.param(&path).is_ok() {
                p.set_param(&path, &v)?;
            }
        }
        Ok(())
    }

    /// Read trained parameters back from a program.
    pub fn read_params<T: Scalar>(&mut self, p: &mut Program<T>) -> Result<()> {
        self.version += 1;
        for (i, l) in self.layers.iter_mut().enumerate() {
            for (set, ps) in l.param_sets_mut() {
                for t in &mut ps.tensors {
                    if let Ok(v) = p.param(&join_path(i, &set, &t.name)) {
                        if v.iter().any(|x| !x.is_finite()) {
                            return Err(Error::Engine(format!(
                                "parameter {} became non-finite",
                                t.name
                            )));
                        }
                        t.values = v;
                    }
                }
            }
        }
        Ok(())
    }

    fn features<'g>(&self, c: Option<Var<'g>>) -> Option<Var<'g>> {
        self.conditioning.encode(c)
    }

    /// Graph: x = f(z; c) and Σ log|det J| (`[batch]`). `c` holds raw condition values.
    pub fn build_forward<'g>(
        &self,
        s: &Scope<'g>,
        z: Var<'g>,
        c: Option<Var<'g>>,
    ) -> (Var<'g>, Var<'g>) {
        let feats = self.features(c);
        let mut x = z;
        let mut ld: Option<Var<'g>> = None;
        for (i, l) in self.layers.iter().enumerate() {
            let (y, d) = l.forward_and_log_det(&s.child(&format!("layers.{i}")), x, feats);
            x = y;
            ld = Some(ld.map_or(d, |a| a + d));
        }
        let mut ld = ld.unwrap_or_else(|| super::bijection::zero_log_det(z));
        if let (Conditioning::Temperature { .. }, Some(t), Base::Normal) =
            (self.conditioning, c, self.base)
        {
            x = x * t.sqrt();
            ld = ld + t.ln().sum(1).mul_scalar(0.5 * self.flow_dim() as f64);
        }
        (x, ld)
    }

    /// Graph: z = f⁻¹(x; c) and Σ log|det J⁻¹| (`[batch]`).
    pub fn build_inverse<'g>(
        &self,
        s: &Scope<'g>,
        x: Var<'g>,
        c: Option<Var<'g>>,
    ) -> (Var<'g>, Var<'g>) {
        let feats = self.features(c);
        let mut z = x;
        let mut ld = super::bijection::zero_log_det(x);
        match (self.conditioning, c, self.base) {
            (Conditioning::Temperature { .. }, Some(t), Base::Normal) => {
                z = z / t.sqrt();
                ld = ld - t.ln().sum(1).mul_scalar(0.5 * self.flow_dim() as f64);
            }
            (_, _, Base::Angles) => z = super::gauge_coupling::wrap_angle(z),
            _ => {}
        }
        for (i, l) in self.layers.iter().enumerate().rev() {
            let (y, d) = l.inverse_and_log_det(&s.child(&format!("layers.{i}")), z, feats);
            z = y;
            ld = ld + d;
        }
        (z, ld)
    }

    /// log q₀(z) per sample: log N(z; 0, I), or −d log 2π for angles.
    pub fn base_log_prob<'g>(&self, z: Var<'g>) -> Var<'g> {
        let d = self.flow_dim() as f64;
        match self.base {
            Base::Normal => {
                let c = -0.5 * d * (2.0 * std::f64::consts::PI).ln();
                z.square().sum(1).mul_scalar(-0.5).add_scalar(c)
            }
            Base::Angles => super::bijection::zero_log_det(z).add_scalar(uniform_log_density(d)),
        }
    }

    /// Graph: (x, log q(x|c)) from base samples z.
    pub fn build_sample<'g>(
        &self,
        s: &Scope<'g>,
        z: Var<'g>,
        c: Option<Var<'g>>,
    ) -> (Var<'g>, Var<'g>) {
        let (x, ld) = self.build_forward(s, z, c);
        (x, self.base_log_prob(z) - ld)
    }

    /// Graph: (z, log q(x|c)) from states x.
    pub fn build_log_prob<'g>(
        &self,
        s: &Scope<'g>,
        x: Var<'g>,
        c: Option<Var<'g>>,
    ) -> (Var<'g>, Var<'g>) {
        let (z, ld) = self.build_inverse(s, x, c);
        (z, self.base_log_prob(z) + ld)
    }

    /// Compile a sampling or density program in element type `T` (parameters fixed).
    pub fn compile<T: Scalar>(&self, mode: Mode) -> Result<Program<T>> {
        let g = GraphBuilder::new();
        let outs = {
            let declared = Declared::default();
            let s = Scope::root(&g, &declared, false);
            let inp = g.batch_input(
                if mode == Mode::Sample { "z" } else { "x" },
                &[self.flow_dim()],
            );
            let c = (self.conditioning.raw_dim() > 0)
                .then(|| g.batch_input("cond", &[self.conditioning.raw_dim()]));
            let (out, lq) = match mode {
                Mode::Sample => self.build_sample(&s, inp, c),
                Mode::Density => self.build_log_prob(&s, inp, c),
            };
            let name = if mode == Mode::Sample { "x" } else { "z" };
            [out.output(name), lq.output("log_q")]
        };
        Program::compile(g, &outs, None)
    }

    fn check_cond(&self, n: usize, cond: &[f64]) -> Result<Vec<f64>> {
        let c = self.conditioning.raw_dim();
        let full = if c == 0 {
            if !cond.is_empty() {
                return input_err("this flow takes no condition");
            }
            vec![]
        } else if cond.len() == c {
            cond.repeat(n)
        } else if cond.len() == n * c {
            cond.to_vec()
        } else {
            return input_err(format!(
                "condition has {} values; expected {c} (shared) or {} (one per sample)",
                cond.len(),
                n * c
            ));
        };
        if full.iter().any(|v| !v.is_finite()) {
            return input_err("condition values must be finite");
        }
        if matches!(self.conditioning, Conditioning::Temperature { .. })
            && full.iter().any(|&t| t <= 0.0)
        {
            return input_err("temperatures must be positive");
        }
        Ok(full)
    }

    fn run_cached(&self, mode: Mode, input: &[f32], cond: &[f32]) -> Result<(Vec<f32>, Vec<f32>)> {
        let mut progs = self.cache.programs.borrow_mut();
        let idx = match progs.iter().position(|c| c.mode == mode) {
            Some(i) => i,
            None => {
                // On the device selected for the process, if any (crate::engine::device).
                let mut prog = self.compile::<f32>(mode)?.on_selected_device()?;
                // Elements a one-row run materialises (its parameters included, so a bound).
                let per_row = 4 * prog.stats(1, false)?.2.max(1);
                let rows = (RUN_BYTES / per_row).max(16);
                progs.push(Cached {
                    mode,
                    version: u64::MAX,
                    program: prog,
                    rows,
                });
                progs.len() - 1
            }
        };
        let Cached {
            version: ver,
            program: prog,
            rows,
            ..
        } = &mut progs[idx];
        if *ver != self.version {
            self.write_params(prog)?;
            *ver = self.version;
        }
        let (name, first) = match mode {
            Mode::Sample => ("z", "x"),
            Mode::Density => ("x", "z"),
        };
        let (width, raw) = (self.flow_dim(), self.conditioning.raw_dim());
        let n = input.len().checked_div(width).unwrap_or(1);
        let (mut ys, mut lqs) = (Vec::with_capacity(input.len()), Vec::with_capacity(n));
        // In chunks of at most `rows` rows (one run when the batch fits).
        let mut lo = 0;
        while lo < n.max(1) {
            let hi = (lo + *rows).min(n);
            let mut inputs: Vec<(&str, &[f32])> = vec![(name, &input[lo * width..hi * width])];
            if raw > 0 {
                inputs.push(("cond", &cond[lo * raw..hi * raw]));
            }
            let mut out = prog.run(&inputs)?;
            ys.extend(out.take(first)?);
            lqs.extend(out.take("log_q")?);
            lo = hi.max(lo + 1);
        }
        Ok((ys, lqs))
    }

    /// Draw `n` samples with their log-density. `cond`: one raw condition shared by all, or one
    /// per sample (row-major).
    pub fn sample_and_log_prob(
        &self,
        n: usize,
        cond: &[f64],
        rng: &mut impl Rng,
    ) -> Result<Samples> {
        self.sample_mixture(n, cond, 1.0, 0.0, rng)
    }

    /// Draw `n` samples from the **defensive mixture** q_mix = (1 − ε) q + ε q_s, where q_s is
    /// the same flow with a wider base N(0, s² I), and return log q_mix(x). Both components
    /// share the bijection, so z = f⁻¹(x) is the same for both and
    ///
    /// ```text
    /// log q_mix(x) = log q(x) + log((1 − ε) + ε exp(Δ(z))),  Δ(z) = −d log s + ½|z|²(1 − 1/s²)
    /// ```
    ///
    /// at no extra cost (Hesterberg 1995). Where the flow's tails are lighter than the
    /// target's, the weights p/q_mix stay bounded by p/(ε q_s) instead of growing without
    /// limit. `width` s ≥ 1, `fraction` ε ∈ [0, 1). On angles ([`Base::Angles`]) the second
    /// component is the uniform density u on the torus itself, q_mix = (1 − ε) q + ε u (its
    /// draws cost one density pass), which bounds the weights by p/(ε u); `width` is unused.
    pub fn sample_mixture(
        &self,
        n: usize,
        cond: &[f64],
        width: f64,
        fraction: f64,
        rng: &mut impl Rng,
    ) -> Result<Samples> {
        check_mixture(width, fraction)?;
        let cond = self.check_cond(n, cond)?;
        let (d, fd) = (self.dim, self.flow_dim());
        let c = self.conditioning.raw_dim();
        let mut x = Array2::zeros((n, d));
        let mut log_q = Vec::with_capacity(n);
        let mut z = Vec::with_capacity(MAX_BATCH * fd);
        let mut z2 = Vec::with_capacity(MAX_BATCH);
        let mut start = 0;
        while start < n {
            let m = MAX_BATCH.min(n - start);
            z.clear();
            z2.clear();
            for _ in 0..m {
                if self.base == Base::Angles {
                    z.extend((0..fd).map(|_| draw_angle(rng) as f32));
                    z2.push(0.0);
                    continue;
                }
                let scale = if fraction > 0.0 && rng.random::<f64>() < fraction {
                    width as f32
                } else {
                    1.0
                };
                let mut sq = 0.0f64;
                for _ in 0..fd {
                    let v = scale * rng.sample::<f32, _>(StandardNormal);
                    sq += (v as f64) * (v as f64);
                    z.push(v);
                }
                z2.push(sq);
            }
            let cf: Vec<f32> = cond[start * c..(start + m) * c]
                .iter()
                .map(|&v| v as f32)
                .collect();
            let (ys, lq) = self.run_cached(Mode::Sample, &z, &cf)?;
            for (i, (&l, &sq)) in lq.iter().zip(&z2).enumerate() {
                let row = start + i;
                let y = &ys[i * fd..(i + 1) * fd];
                let mut lq = l as f64;
                if self.base == Base::Normal {
                    lq += mixture_log_factor(fd, sq, width, fraction);
                }
                match &self.coordinates {
                    None => {
                        for (j, v) in y.iter().enumerate() {
                            x[[row, j]] = *v as f64;
                        }
                    }
                    Some(co) => {
                        let y: Vec<f64> = y.iter().map(|&v| v as f64).collect();
                        let mapped = co.to_state(&y, cond[row], &mut *rng);
                        x.row_mut(row).assign(&ndarray::ArrayView1::from(&mapped.x));
                        lq += mapped.log_factor;
                    }
                }
                log_q.push(lq);
            }
            start += m;
        }
        if self.base == Base::Angles && fraction > 0.0 {
            // The uniform component: a fraction ε of the rows drawn afresh from it, their log q
            // from the density program; then log q_mix for every row.
            let swap: Vec<usize> = (0..n).filter(|_| rng.random::<f64>() < fraction).collect();
            for &i in &swap {
                x.row_mut(i).iter_mut().for_each(|v| *v = draw_angle(rng));
            }
            if !swap.is_empty() {
                let rows = x.select(ndarray::Axis(0), &swap);
                let cs: Vec<f64> = swap
                    .iter()
                    .flat_map(|&i| cond[i * c..(i + 1) * c].iter().copied())
                    .collect();
                for (&i, l) in swap.iter().zip(self.log_prob(rows.view(), &cs)?) {
                    log_q[i] = l;
                }
            }
            log_q
                .iter_mut()
                .for_each(|l| *l = angles_mixture(*l, d, fraction));
        }
        Ok(Samples { x, log_q })
    }

    /// The layers' coordinates of states `x` (rows) at raw conditions `cond` (as in
    /// [`Flow::log_prob`]) and log q(x) − log q(y) per row: `x` itself and zeros without
    /// [`Flow::coordinates`].
    pub fn to_flow_coordinates(
        &self,
        x: ArrayView2<f64>,
        cond: &[f64],
    ) -> Result<(Array2<f64>, Vec<f64>)> {
        crate::systems::check_batch(self.dim, &x)?;
        let n = x.nrows();
        let Some(co) = &self.coordinates else {
            return Ok((x.to_owned(), vec![0.0; n]));
        };
        let cond = self.check_cond(n, cond)?;
        let fd = co.flow_dim();
        let mut y = Array2::zeros((n, fd));
        let mut factor = Vec::with_capacity(n);
        for (i, r) in x.rows().into_iter().enumerate() {
            let mapped = co.to_flow(&r.to_vec(), cond[i]);
            y.row_mut(i)
                .assign(&ndarray::ArrayView1::from(&mapped.u[..fd]));
            factor.push(mapped.log_factor);
        }
        Ok((y, factor))
    }

    /// Draw `n` samples.
    pub fn sample(&self, n: usize, cond: &[f64], rng: &mut impl Rng) -> Result<Array2<f64>> {
        Ok(self.sample_and_log_prob(n, cond, rng)?.x)
    }

    /// log q(x | c) for each row of `x`.
    pub fn log_prob(&self, x: ArrayView2<f64>, cond: &[f64]) -> Result<Vec<f64>> {
        self.log_prob_mixture(x, cond, 1.0, 0.0)
    }

    /// log q_mix(x | c) of the defensive mixture of [`Flow::sample_mixture`] (width s,
    /// fraction ε) for each row of `x`, from z = f⁻¹(x) and log q(x | c) of one inverse pass.
    pub fn log_prob_mixture(
        &self,
        x: ArrayView2<f64>,
        cond: &[f64],
        width: f64,
        fraction: f64,
    ) -> Result<Vec<f64>> {
        check_mixture(width, fraction)?;
        let (y, factor) = self.to_flow_coordinates(x, cond)?;
        let n = y.nrows();
        let d = self.flow_dim();
        let cond = self.check_cond(n, cond)?;
        let c = self.conditioning.raw_dim();
        let mut out = Vec::with_capacity(n);
        let mut start = 0;
        while start < n {
            let m = MAX_BATCH.min(n - start);
            let ys: Vec<f32> = y
                .slice(ndarray::s![start..start + m, ..])
                .iter()
                .map(|&v| v as f32)
                .collect();
            let cf: Vec<f32> = cond[start * c..(start + m) * c]
                .iter()
                .map(|&v| v as f32)
                .collect();
            let (z, lq) = self.run_cached(Mode::Density, &ys, &cf)?;
            out.extend(lq.iter().enumerate().map(|(i, &l)| {
                if self.base == Base::Angles {
                    return angles_mixture(l as f64, d, fraction);
                }
                let sq: f64 = z[i * d..(i + 1) * d]
                    .iter()
                    .map(|&v| (v as f64) * (v as f64))
                    .sum();
                l as f64 + mixture_log_factor(d, sq, width, fraction) + factor[start + i]
            }));
            start += m;
        }
        Ok(out)
    }

    /// A multi-line summary of the architecture.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "Flow(dim={}, conditioning={:?}, {} layers, {} parameters)\n",
            self.dim,
            self.conditioning,
            self.layers.len(),
            self.n_params()
        );
        for (i, l) in self.layers.iter().enumerate() {
            s += &format!("  {i}: {}\n", l.describe());
        }
        if let Some(c) = &self.coordinates {
            s += &format!("  then: {}\n", c.describe());
        }
        s
    }
}

fn join_path(i: usize, set: &str, name: &str) -> String {
    if set.is_empty() {
        format!("layers.{i}.{name}")
    } else {
        format!("layers.{i}.{set}.{name}")
    }
}
