//! Checkerboard coupling of planar spins (angles θ_x on an L × L torus, [`crate::systems::Xy`])
//! with a circular spline as transformer and a periodic CNN conditioner — the lattice coupling's
//! checkerboard ([`super::LatticeCoupling`]) with the gauge coupling's circular splines
//! ([`super::GaugeCoupling`]). Sites with (i + j) ≡ parity (mod 2) are **active**, the others
//! **frozen** (the nearest-neighbour energy couples each active spin to frozen ones only):
//!
//! ```text
//! c = CNN([m_F cos θ, m_F sin θ, φ(T)]),   θ'_x = h(θ_x; c(x)) at active x, θ'_x = θ_x else,
//! log|det J| = Σ_active log h'(θ_x),       inverse: θ_x = h⁻¹(θ'_x; c(x))
//! ```
//!
//! with θ wrapped into [−π, π) first, and h the composition of `splines` circular splines half a
//! turn apart (`gauge_coupling::circular_splines`): a diffeomorphism of the circle, so the
//! flow maps the torus to itself and the uniform base on it ([`super::Flow::on_angles`]) gives a
//! normalised density. The frozen spins enter only through cos and sin, so c is periodic in
//! them. The CNN is translation-equivariant (periodic 3 × 3 convolutions) and its last
//! convolution starts at zero, where every spline is the identity.
//!
//! The checkerboard must not touch itself across the boundary: L odd is refused.
//!
//! **The spins' frame.** The XY energy depends only on differences of angles, so p is uniform
//! over a global rotation, which a flow from the uniform base would have to build out of the
//! spins themselves. Instead the flow models the angles relative to spin 0, ψ_x = θ_x − θ_0, and
//! θ_0 itself as the base's uniform draw: a *pinned* coupling never moves spin 0 and reads it
//! as ψ_0 = 0 (cos 1, sin 0), and [`SpinFrame`] at the end turns the frame,
//!
//! ```text
//! forward:  θ_0 = z_0,  θ_x = wrap(z_x + z_0) (x ≠ 0);   inverse: z_x = wrap(θ_x − θ_0);
//! log|det J| = 0
//! ```
//!
//! (a shear of the torus onto itself). In that frame the ordered phase is one mode, ψ ≈ 0, with
//! spin waves about it, and not a ring of them.

use std::f64::consts::PI;

use serde::{Deserialize, Serialize};

use super::bijection::zero_log_det;
use super::gauge_coupling::{circular_splines, shifted, wrap_angle};
use super::lattice_coupling::{conv_stack, conv_stack_count, conv_stack_params};
use super::params::{ParamSet, Scope};
use super::Bijection;
use crate::engine::rqs::Rqs;
use crate::engine::{Dim, Var};

/// Checkerboard coupling of planar spins with circular splines.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpinCoupling {
    l: usize,
    cond_dim: usize,
    /// Active sites: (i + j) ≡ parity (mod 2).
    parity: usize,
    /// Spline bins K.
    pub bins: usize,
    /// Splines per active site, composed half a turn apart.
    pub splines: usize,
    /// Spin 0 is the frame's reference: never moved, read as angle 0 ([`SpinFrame`]).
    #[serde(default)]
    pub pinned: bool,
    /// Channels: input (2 + condition features), hidden…, output `splines` × (3K − 1).
    pub channels: Vec<usize>,
    /// Convolution weights `w{k}` (9 × C_in·C_out) and biases `b{k}`.
    pub params: ParamSet,
}

impl SpinCoupling {
    /// A layer updating the sites of `parity`, with `hidden` channels in each of `depth` hidden
    /// convolutions and `splines` K-bin splines.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        l: usize,
        cond_dim: usize,
        parity: usize,
        bins: usize,
        splines: usize,
        hidden: usize,
        depth: usize,
        seed: u64,
    ) -> Self {
        let mut channels = vec![2 + cond_dim];
        channels.extend(std::iter::repeat_n(hidden, depth));
        channels.push(splines * (3 * bins - 1));
        let params = conv_stack_params(&channels, seed);
        SpinCoupling {
            l,
            cond_dim,
            parity,
            bins,
            splines,
            pinned: false,
            channels,
            params,
        }
    }

    /// The same layer with spin 0 as the frame's reference ([`SpinFrame`]).
    pub fn pinned(mut self) -> Self {
        self.pinned = true;
        self
    }

    /// Whether the lattice side admits the checkerboard (L ≥ 2 and even).
    pub fn lattice_fits(l: usize) -> bool {
        l >= 2 && l.is_multiple_of(2)
    }

    /// A fresh layer with this one's architecture, once it is checked.
    pub(crate) fn template(&self) -> crate::Result<SpinCoupling> {
        let ch = &self.channels;
        let spline = self.spline(false);
        if let Err(e) = spline.validate() {
            return crate::error::input_err(e);
        }
        let outputs = self.splines * spline.n_params();
        if self.splines == 0
            || ch.len() < 2
            || ch[0] != 2 + self.cond_dim
            || ch.last() != Some(&outputs)
            || ch.contains(&0)
        {
            return crate::error::input_err(format!(
                "channels {ch:?} do not fit: 2 + {} inputs, {outputs} outputs needed (≥ 1 spline)",
                self.cond_dim,
            ));
        }
        if self.parity > 1 || !Self::lattice_fits(self.l) {
            return crate::error::input_err(format!(
                "spin coupling needs parity ∈ {{0, 1}} and an even L ≥ 2; got parity {}, L = {}",
                self.parity, self.l
            ));
        }
        super::params::check_count(conv_stack_count(ch), &[&self.params])?;
        let mut fresh = self.clone();
        fresh.params = conv_stack_params(ch, 0);
        Ok(fresh)
    }

    fn spline(&self, inverse: bool) -> Rqs {
        Rqs {
            bins: self.bins,
            bound: PI,
            inverse,
        }
    }

    /// The active sites, in increasing order (spin 0 not, when pinned).
    fn active(&self) -> Vec<usize> {
        let l = self.l;
        (0..l * l)
            .filter(|&k| (k / l + k % l) % 2 == self.parity && !(self.pinned && k == 0))
            .collect()
    }

    /// The sites whose spins the conditioner reads: the other sublattice (without spin 0,
    /// when pinned, which it reads as angle 0).
    fn frozen(&self) -> Vec<f64> {
        let l = self.l;
        (0..l * l)
            .map(|k| {
                let other = (k / l + k % l) % 2 != self.parity;
                f64::from(u8::from(other && !(self.pinned && k == 0)))
            })
            .collect()
    }

    /// The spins moved at the active sites and Σ_active of the log-derivatives: the forward
    /// map, or with `inverse` the inverse (whose log-derivatives are −log h').
    fn apply<'g>(
        &self,
        s: &Scope<'g>,
        x: Var<'g>,
        c: Option<Var<'g>>,
        inverse: bool,
    ) -> (Var<'g>, Var<'g>) {
        let g = x.builder();
        let v = self.l * self.l;
        let x = wrap_angle(x);
        let active = self.active();
        let frozen = g.constant_tensor(&[v], self.frozen());
        let mut cos = x.cos() * frozen;
        if self.pinned {
            let mut reference = vec![0.0; v];
            reference[0] = 1.0;
            cos = cos + g.constant_tensor(&[v], reference);
        }
        let cos = cos.expand(2, Dim::Fixed(1));
        let sin = (x.sin() * frozen).expand(2, Dim::Fixed(1));
        let mut h = cos.concat(sin, 2);
        if let Some(c) = c {
            h = h.concat(c.expand(1, Dim::Fixed(v)), 2);
        }
        let theta = conv_stack(s, &self.params, h, self.l, &self.channels, Some(&active));
        let old = x.take(1, &active, &[active.len()]);
        let (new, ld) = circular_splines(old, theta, self.spline(inverse), self.splines);
        (shifted(x, v, &active, new - old), ld.sum(1))
    }
}

impl Bijection for SpinCoupling {
    fn dim(&self) -> usize {
        self.l * self.l
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
        self.apply(s, z, c, false)
    }
    fn inverse_and_log_det<'g>(
        &self,
        s: &Scope<'g>,
        x: Var<'g>,
        c: Option<Var<'g>>,
    ) -> (Var<'g>, Var<'g>) {
        self.apply(s, x, c, true)
    }
    fn param_sets(&self) -> Vec<(String, &ParamSet)> {
        vec![(String::new(), &self.params)]
    }
    fn param_sets_mut(&mut self) -> Vec<(String, &mut ParamSet)> {
        vec![(String::new(), &mut self.params)]
    }
    fn describe(&self) -> String {
        format!(
            "SpinCoupling(L={}, cond={}, parity={}, bins={}, splines={}, pinned={}, channels={:?})",
            self.l, self.cond_dim, self.parity, self.bins, self.splines, self.pinned, self.channels
        )
    }
}

/// The frame turn after pinned spin couplings (module doc): θ_0 = z_0, θ_x = wrap(z_x + z_0).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpinFrame {
    /// Spins.
    pub dim: usize,
    #[serde(skip)]
    empty: ParamSet,
}

impl SpinFrame {
    /// The frame turn of `dim` ≥ 1 spins.
    pub fn new(dim: usize) -> SpinFrame {
        SpinFrame {
            dim,
            empty: ParamSet::default(),
        }
    }

    /// The same turn, checked.
    pub(crate) fn template(&self) -> crate::Result<SpinFrame> {
        if self.dim == 0 {
            return crate::error::input_err("a spin frame needs at least one spin");
        }
        Ok(SpinFrame::new(self.dim))
    }

    /// wrap(y ± y_0) on every spin but spin 0.
    fn turn<'g>(&self, y: Var<'g>, sign: f64) -> Var<'g> {
        let g = y.builder();
        let mut others = vec![sign; self.dim];
        others[0] = 0.0;
        let y = wrap_angle(y);
        let first = y.take(1, &vec![0; self.dim], &[self.dim]);
        wrap_angle(y + first * g.constant_tensor(&[self.dim], others))
    }
}

impl Bijection for SpinFrame {
    fn dim(&self) -> usize {
        self.dim
    }
    fn cond_dim(&self) -> usize {
        0
    }
    fn forward_and_log_det<'g>(
        &self,
        _s: &Scope<'g>,
        z: Var<'g>,
        _c: Option<Var<'g>>,
    ) -> (Var<'g>, Var<'g>) {
        (self.turn(z, 1.0), zero_log_det(z))
    }
    fn inverse_and_log_det<'g>(
        &self,
        _s: &Scope<'g>,
        x: Var<'g>,
        _c: Option<Var<'g>>,
    ) -> (Var<'g>, Var<'g>) {
        (self.turn(x, -1.0), zero_log_det(x))
    }
    fn param_sets(&self) -> Vec<(String, &ParamSet)> {
        vec![]
    }
    fn param_sets_mut(&mut self) -> Vec<(String, &mut ParamSet)> {
        vec![]
    }
    fn describe(&self) -> String {
        format!("SpinFrame({})", self.dim)
    }
}
