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

use std::f64::consts::PI;

use serde::{Deserialize, Serialize};

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
            channels,
            params,
        }
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

    /// The active sites, in increasing order.
    fn active(&self) -> Vec<usize> {
        let l = self.l;
        (0..l * l)
            .filter(|&k| (k / l + k % l) % 2 == self.parity)
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
        let frozen = g.constant_tensor(
            &[v],
            (0..v)
                .map(|k| f64::from(u8::from(!active.contains(&k))))
                .collect(),
        );
        let cos = (x.cos() * frozen).expand(2, Dim::Fixed(1));
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
            "SpinCoupling(L={}, cond={}, parity={}, bins={}, splines={}, channels={:?})",
            self.l, self.cond_dim, self.parity, self.bins, self.splines, self.channels
        )
    }
}
