//! Gauge-equivariant coupling for U(1) link angles on an L × L torus (Kanwar et al., PRL 125,
//! 121601 (2020); Albergo et al., arXiv:2101.08176), with a circular spline as transformer and
//! a periodic CNN conditioner that reads only gauge-invariant plaquettes.
//!
//! Links θ_μ(x) are stored as in [`crate::systems::U1`] (θ[μ·V + i·L + j], V = L²), and the
//! plaquette at x = (i, j) is θ_P(x) = θ_0(x) + θ_1(x + 0̂) − θ_0(x + 1̂) − θ_1(x). A layer
//! (μ, o) updates the links θ_μ(x) on every fourth stripe (row i ≡ o mod 4 for μ = 0, column
//! j ≡ o for μ = 1). Each updated link lies in exactly one **active** plaquette, P(x) itself,
//! with sign s = +1 (μ = 0) or −1 (μ = 1), and in one **passive** one, which changes too; the
//! others are **frozen** and are the context:
//!
//! ```text
//! c = CNN([m_F cos θ_P, m_F sin θ_P, φ(T)]),   P = wrap(θ_P(x)),   P' = h(P; c(x))
//! forward:  θ'_μ(x) = wrap(θ_μ(x) + s (P' − P)),   log|det J| = Σ_active log h'(P)
//! inverse:  P' = wrap(θ'_P(x)),  P = h⁻¹(P'),  θ_μ(x) = wrap(θ'_μ(x) − s (P' − P))
//! ```
//!
//! with wrap(φ) ∈ [−π, π) (exact in floating point, see `wrap_angle`). The link's new active
//! plaquette is P + (P' − P) = P' up to 2π, which the inverse reads back. h is the
//! rational-quadratic spline on [−π, π] with boundary derivatives 1 ([`crate::engine::rqs`]): it
//! fixes ±π and its derivative matches across the seam, so it is a diffeomorphism of the circle
//! (Rezende et al. 2020). A spline alone leaves the density of its plaquette at ±π as it was
//! (slope 1 there), where the target's is e^{−2β} of its peak; so h composes `splines` of them
//! half a turn apart, h = R^{n−1} ∘ h_n ∘ R ∘ ⋯ ∘ R ∘ h_1 with R(P) = wrap(P + π) (R² = 1),
//! log h' = Σ log h_i' (each h_i with its own 3K − 1 parameters from the CNN). The CNN's last
//! convolution and the splines run at the active sites only (a quarter of the plaquettes).
//!
//! **Gauge equivariance.** A gauge transformation θ_μ(x) → θ_μ(x) + α(x) − α(x + μ̂) leaves
//! every plaquette unchanged, so the context, P, P' and the log-determinant are unchanged and
//! the update s (P' − P) commutes with it: with a uniform base on the links, log q(θ) is gauge
//! invariant. The last convolution starts at zero: every spline is then the identity.
//!
//! Stripes must not touch across the periodic boundary (two active rows side by side would
//! put two updated links in one plaquette): L ≡ 1 (mod 4) is refused.

use std::f64::consts::PI;

use serde::{Deserialize, Serialize};

use super::lattice_coupling::{conv_stack, conv_stack_count, conv_stack_params};
use super::params::{ParamSet, Scope};
use super::Bijection;
use crate::engine::rqs::Rqs;
use crate::engine::{Dim, Var};

/// Gauge-equivariant coupling of U(1) links with a circular spline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GaugeCoupling {
    l: usize,
    cond_dim: usize,
    /// Direction of the updated links.
    mu: usize,
    /// Stripe offset o ∈ 0..4.
    offset: usize,
    /// Spline bins K.
    pub bins: usize,
    /// Splines per active plaquette, composed with half turns between them (saved models from
    /// before this field have 1).
    #[serde(default = "one_spline")]
    pub splines: usize,
    /// Channels: input (2 + condition features), hidden…, output `splines` × (3K − 1).
    pub channels: Vec<usize>,
    /// Convolution weights `w{k}` (9 × C_in·C_out) and biases `b{k}`.
    pub params: ParamSet,
}

/// wrap(φ) ∈ [−π, π): y = fmod(φ, 2π) ∈ (−2π, 2π), then y − 2π where y ≥ π and y + 2π where
/// y < −π. Exact in floating point (fmod is exact, and so are those two additions by Sterbenz's
/// lemma), so wrapping adds no rounding; an offset form such as fmod(φ + 5π, 2π) − π rounds
/// every angle to the spacing of floats near 5π (2·10⁻⁶ in f32), which measured 2·10⁻⁴ in an
/// f32 round trip of log q through 8 layers.
pub(crate) fn wrap_angle(x: Var<'_>) -> Var<'_> {
    let g = x.builder();
    let y = x.rem(g.constant(2.0 * PI));
    let turns = y.lt(g.constant(-PI)) - y.ge(g.constant(PI));
    y + turns.mul_scalar(2.0 * PI)
}

/// The plaquettes θ_P(x) (not wrapped), `[batch, V]`, of links `[batch, 2V]`.
pub(crate) fn plaquettes(links: Var<'_>, l: usize) -> Var<'_> {
    let v = l * l;
    let g = links.builder();
    let mut table = Vec::with_capacity(4 * v);
    for i in 0..l {
        for j in 0..l {
            table.extend([
                i * l + j,
                v + i * l + (j + 1) % l,
                ((i + 1) % l) * l + j,
                v + i * l + j,
            ]);
        }
    }
    let signs = g.constant_tensor(&[4], vec![1.0, 1.0, -1.0, -1.0]);
    (links.take(1, &table, &[v, 4]) * signs).sum(2)
}

fn one_spline() -> usize {
    1
}

/// The half turn P ↦ wrap(P + π) (its own inverse), between composed splines.
fn half_turn(p: Var<'_>) -> Var<'_> {
    wrap_angle(p.add_scalar(PI))
}

/// wrap(x + δ) where coordinate `at[a]` of x (`[batch, d]`) moves by δ[:, a] (`[batch, A]`)
/// and the others stay.
pub(crate) fn shifted<'g>(x: Var<'g>, d: usize, at: &[usize], delta: Var<'g>) -> Var<'g> {
    // Coordinates that do not move read the zero appended to δ.
    let mut slot = vec![at.len(); d];
    for (a, &k) in at.iter().enumerate() {
        slot[k] = a;
    }
    wrap_angle(x + delta.pad(1, 0, 1).take(1, &slot, &[d]))
}

/// h = R^{n−1} ∘ h_n ∘ R ∘ ⋯ ∘ R ∘ h_1 (R the half turn) applied to angles `old` in [−π, π)
/// (`[batch, A]`), each h_i a K-bin circular spline ([`Rqs`] on [−π, π] with boundary
/// derivatives 1) whose 3K − 1 parameters are slice i of `theta`'s last axis (`[batch, A,
/// n(3K − 1)]`); with `spline.inverse` h⁻¹. Returns (h(old), Σ_i log h_i') (−log h' for the
/// inverse). Each spline fixes ±π with derivative 1, but the next one, half a turn on, moves
/// and stretches there, so the composition can thin the density at ±π.
pub(crate) fn circular_splines<'g>(
    old: Var<'g>,
    theta: Var<'g>,
    spline: Rqs,
    splines: usize,
) -> (Var<'g>, Var<'g>) {
    let inverse = spline.inverse;
    let np = spline.n_params();
    let part = |i: usize| theta.slice(2, i * np, (i + 1) * np);
    // An even number of splines has an odd number of half turns between them: one more
    // closes the circle (last forward, first inverse).
    let closing_turn = splines.is_multiple_of(2);
    let mut y = if inverse && closing_turn {
        half_turn(old)
    } else {
        old
    };
    let mut ld_sum = None;
    for k in 0..splines {
        // The inverse takes the splines in reverse order; a half turn between any two.
        let i = if inverse { splines - 1 - k } else { k };
        if k > 0 {
            y = half_turn(y);
        }
        let (next, ld) = y.rqs(part(i), spline);
        y = next;
        ld_sum = Some(ld_sum.map_or(ld, |acc| acc + ld));
    }
    if !inverse && closing_turn {
        y = half_turn(y);
    }
    (
        y,
        ld_sum.expect("a circular coupling has at least one spline"),
    )
}

impl GaugeCoupling {
    /// A layer updating the μ links on stripes ≡ `offset` (mod 4), with `hidden` channels in
    /// each of `depth` hidden convolutions and `splines` K-bin splines.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        l: usize,
        cond_dim: usize,
        mu: usize,
        offset: usize,
        bins: usize,
        splines: usize,
        hidden: usize,
        depth: usize,
        seed: u64,
    ) -> Self {
        let mut channels = vec![2 + cond_dim];
        channels.extend(std::iter::repeat_n(hidden, depth));
        channels.push(splines * (3 * bins - 1));
        Self::with_channels(l, cond_dim, mu, offset, bins, splines, channels, seed)
    }

    #[allow(clippy::too_many_arguments)]
    fn with_channels(
        l: usize,
        cond_dim: usize,
        mu: usize,
        offset: usize,
        bins: usize,
        splines: usize,
        channels: Vec<usize>,
        seed: u64,
    ) -> Self {
        let params = conv_stack_params(&channels, seed);
        GaugeCoupling {
            l,
            cond_dim,
            mu,
            offset,
            bins,
            splines,
            channels,
            params,
        }
    }

    /// Whether the lattice side admits the stripes (L ≥ 2, L ≢ 1 mod 4).
    pub fn lattice_fits(l: usize) -> bool {
        l >= 2 && l % 4 != 1
    }

    /// A fresh layer with this one's architecture, once it is checked.
    pub(crate) fn template(&self) -> crate::Result<GaugeCoupling> {
        let ch = &self.channels;
        let spline = self.spline(false);
        if let Err(e) = spline.validate() {
            return crate::error::input_err(e);
        }
        let outputs = self.splines * spline.n_params();
        if ch.len() < 2
            || ch[0] != 2 + self.cond_dim
            || ch.last() != Some(&outputs)
            || ch.contains(&0)
        {
            return crate::error::input_err(format!(
                "channels {ch:?} do not fit: 2 + {} inputs, {outputs} outputs needed",
                self.cond_dim,
            ));
        }
        if self.mu > 1 || self.offset > 3 || !Self::lattice_fits(self.l) {
            return crate::error::input_err(format!(
                "gauge coupling needs μ ∈ {{0, 1}}, offset < 4 and L ≥ 2 with L ≢ 1 (mod 4); got μ = {}, offset {}, L = {}",
                self.mu, self.offset, self.l
            ));
        }
        super::params::check_count(conv_stack_count(ch), &[&self.params])?;
        Ok(Self::with_channels(
            self.l,
            self.cond_dim,
            self.mu,
            self.offset,
            self.bins,
            self.splines,
            ch.clone(),
            0,
        ))
    }

    fn spline(&self, inverse: bool) -> Rqs {
        Rqs {
            bins: self.bins,
            bound: PI,
            inverse,
        }
    }

    /// The stripe coordinate of plaquette site k: its row (μ = 0) or column (μ = 1).
    fn stripe(&self, k: usize) -> usize {
        if self.mu == 0 {
            k / self.l
        } else {
            k % self.l
        }
    }

    /// The active sites (plaquettes on the updated stripes), in increasing order.
    fn active(&self) -> Vec<usize> {
        (0..self.l * self.l)
            .filter(|&k| self.stripe(k) % 4 == self.offset)
            .collect()
    }

    /// The frozen sites' mask (neither on an updated stripe nor on the one after it).
    fn frozen(&self) -> Vec<f64> {
        let l = self.l;
        let on = |s: usize| s % 4 == self.offset;
        (0..l * l)
            .map(|k| {
                let s = self.stripe(k);
                f64::from(u8::from(!on(s) && !on((s + 1) % l)))
            })
            .collect()
    }

    /// The spline parameters at the active sites, `[batch, A, 3K − 1]`, from the frozen
    /// plaquettes (wrapped, `[batch, V]`) and the condition features.
    fn conditioner<'g>(&self, s: &Scope<'g>, p: Var<'g>, c: Option<Var<'g>>) -> Var<'g> {
        let g = p.builder();
        let v = self.l * self.l;
        let frozen = g.constant_tensor(&[v], self.frozen());
        let cos = (p.cos() * frozen).expand(2, Dim::Fixed(1));
        let sin = (p.sin() * frozen).expand(2, Dim::Fixed(1));
        let mut h = cos.concat(sin, 2);
        if let Some(c) = c {
            h = h.concat(c.expand(1, Dim::Fixed(v)), 2);
        }
        conv_stack(
            s,
            &self.params,
            h,
            self.l,
            &self.channels,
            Some(&self.active()),
        )
    }

    /// `h` applied to the active plaquettes of `p` (`[batch, V]`): (old, new, log-derivatives),
    /// each `[batch, A]` ([`circular_splines`]).
    fn transform<'g>(
        &self,
        s: &Scope<'g>,
        p: Var<'g>,
        c: Option<Var<'g>>,
        inverse: bool,
    ) -> (Var<'g>, Var<'g>, Var<'g>) {
        let active = self.active();
        let theta = self.conditioner(s, p, c);
        let old = p.take(1, &active, &[active.len()]);
        let (new, ld) = circular_splines(old, theta, self.spline(inverse), self.splines);
        (old, new, ld)
    }

    /// The links moved by s·(new − old) of each active plaquette (`[batch, A]`), wrapped; and
    /// Σ_active of the log-derivatives `ld`.
    fn moved<'g>(
        &self,
        links: Var<'g>,
        old: Var<'g>,
        new: Var<'g>,
        ld: Var<'g>,
    ) -> (Var<'g>, Var<'g>) {
        let v = self.l * self.l;
        let sign = if self.mu == 0 { 1.0 } else { -1.0 };
        // Link μ·V + k moves by the delta of active site k.
        let at: Vec<usize> = self.active().iter().map(|k| self.mu * v + k).collect();
        let delta = (new - old).mul_scalar(sign);
        (shifted(links, 2 * v, &at, delta), ld.sum(1))
    }
}

impl Bijection for GaugeCoupling {
    fn dim(&self) -> usize {
        2 * self.l * self.l
    }
    fn cond_dim(&self) -> usize {
        self.cond_dim
    }
    fn forward_and_log_det<'g>(
        &self,
        s: &Scope<'g>,
        z: Var<'g>,
        c: Option<Var<'g>>,
    ) -> (Var<'g>, Var<'g>) {
        let p = wrap_angle(plaquettes(z, self.l));
        let (old, new, ld) = self.transform(s, p, c, false);
        self.moved(z, old, new, ld)
    }
    fn inverse_and_log_det<'g>(
        &self,
        s: &Scope<'g>,
        x: Var<'g>,
        c: Option<Var<'g>>,
    ) -> (Var<'g>, Var<'g>) {
        let p_new = wrap_angle(plaquettes(x, self.l));
        // The inverse spline returns −log h'.
        let (now, before, ld) = self.transform(s, p_new, c, true);
        self.moved(x, now, before, ld)
    }
    fn param_sets(&self) -> Vec<(String, &ParamSet)> {
        vec![(String::new(), &self.params)]
    }
    fn param_sets_mut(&mut self) -> Vec<(String, &mut ParamSet)> {
        vec![(String::new(), &mut self.params)]
    }
    fn describe(&self) -> String {
        format!(
            "GaugeCoupling(L={}, cond={}, μ={}, offset={}, bins={}, splines={}, channels={:?})",
            self.l, self.cond_dim, self.mu, self.offset, self.bins, self.splines, self.channels
        )
    }
}
