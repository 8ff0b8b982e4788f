//! The general coupling layer (in the style of zuko's `GeneralCouplingTransform`): one
//! conditioner, any scalar [`Transformer`].
//!
//! Split x = (x_A, x_B) (the halves alternate between layers through `flip`); the conditioner
//! reads [x_A, c] and gives the transformer's parameters θ for every coordinate of x_B:
//!
//! ```text
//! forward:  y_A = z_A,  y_B,i = g(z_B,i; θ_i),    log|det J|   = Σ_i log g'(z_B,i; θ_i)
//! inverse:  z_B,i = g⁻¹(y_B,i; θ_i),              log|det J⁻¹| = −Σ_i log g'(z_B,i; θ_i)
//! ```
//!
//! The conditioner's last layer starts at zero, so a new layer is the identity.

use serde::{Deserialize, Serialize};

use super::bijection::Bijection;
use super::mlp::{Activation, Mlp};
use super::params::{ParamSet, Scope};
use super::transformer::Transformer;
use crate::engine::Var;
use crate::error::{input_err, Result};

/// A coupling layer: conditioner MLP + scalar transformer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Coupling {
    dim: usize,
    cond_dim: usize,
    flip: bool,
    /// The scalar map applied to the transformed half.
    pub transformer: Transformer,
    /// Conditioner producing the transformer's parameters.
    pub conditioner: Mlp,
}

impl Coupling {
    /// A coupling on `dim` coordinates reading `cond_dim` condition features; the
    /// conditioner has `depth` hidden layers of `width` units.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dim: usize,
        cond_dim: usize,
        flip: bool,
        transformer: Transformer,
        width: usize,
        depth: usize,
        act: Activation,
        seed: u64,
    ) -> Self {
        let (n_in, n_out) = conditioner_io(dim, cond_dim, flip, &transformer);
        Coupling {
            dim,
            cond_dim,
            flip,
            transformer,
            conditioner: Mlp::new(n_in, width, depth, n_out, act, seed),
        }
    }

    /// A layer from its parts (used when loading files).
    pub(crate) fn from_parts(
        dim: usize,
        cond_dim: usize,
        flip: bool,
        transformer: Transformer,
        conditioner: Mlp,
    ) -> Coupling {
        Coupling {
            dim,
            cond_dim,
            flip,
            transformer,
            conditioner,
        }
    }

    /// A fresh layer with the architecture this one declares (its hyperparameters and
    /// conditioner sizes), after checking that architecture is consistent.
    pub(crate) fn template(&self) -> Result<Coupling> {
        self.transformer.check()?;
        let (n_in, n_out) = conditioner_io(self.dim, self.cond_dim, self.flip, &self.transformer);
        let sizes = &self.conditioner.sizes;
        if sizes.first() != Some(&n_in) || sizes.last() != Some(&n_out) {
            return input_err(format!(
                "conditioner sizes {sizes:?} do not fit the layer: it needs {n_in} inputs and \
                 {n_out} outputs"
            ));
        }
        Ok(Coupling {
            conditioner: self.conditioner.template()?,
            ..self.clone()
        })
    }

    fn transform<'g>(
        &self,
        s: &Scope<'g>,
        v: Var<'g>,
        c: Option<Var<'g>>,
        inverse: bool,
    ) -> (Var<'g>, Var<'g>) {
        let (ra, rb) = split(self.dim, self.flip);
        let (a, b) = (
            (ra.1 > ra.0).then(|| v.slice(1, ra.0, ra.1)),
            v.slice(1, rb.0, rb.1),
        );
        let input = match (a, c) {
            (Some(a), Some(c)) => Some(a.concat(c, 1)),
            (Some(a), None) => Some(a),
            (None, c) => c,
        };
        let raw = self.conditioner.apply(&s.child("conditioner"), input);
        let (y, ld) = self.transformer.apply(raw, b, inverse);
        let out = match (a, self.flip) {
            (None, _) => y,
            (Some(a), false) => a.concat(y, 1),
            (Some(a), true) => y.concat(a, 1),
        };
        (out, ld.sum(1))
    }
}

/// Column ranges (untouched, transformed) of a coupling on `d` coordinates: the first ⌊d/2⌋
/// columns and the rest, swapped when `flip`.
fn split(d: usize, flip: bool) -> ((usize, usize), (usize, usize)) {
    let h = d / 2;
    if flip {
        ((d - h, d), (0, d - h))
    } else {
        ((0, h), (h, d))
    }
}

/// The conditioner's input and output sizes.
fn conditioner_io(dim: usize, cond_dim: usize, flip: bool, t: &Transformer) -> (usize, usize) {
    let (a, b) = split(dim, flip);
    (
        a.1 - a.0 + cond_dim,
        (b.1 - b.0) * t.params_per_coordinate(),
    )
}

impl Bijection for Coupling {
    fn dim(&self) -> usize {
        self.dim
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
        self.transform(s, z, c, false)
    }
    fn inverse_and_log_det<'g>(
        &self,
        s: &Scope<'g>,
        x: Var<'g>,
        c: Option<Var<'g>>,
    ) -> (Var<'g>, Var<'g>) {
        self.transform(s, x, c, true)
    }
    fn param_sets(&self) -> Vec<(String, &ParamSet)> {
        vec![("conditioner".into(), &self.conditioner.params)]
    }
    fn param_sets_mut(&mut self) -> Vec<(String, &mut ParamSet)> {
        vec![("conditioner".into(), &mut self.conditioner.params)]
    }
    fn describe(&self) -> String {
        format!(
            "Coupling(dim={}, cond={}, flip={}, {:?}, mlp={:?} {:?})",
            self.dim,
            self.cond_dim,
            self.flip,
            self.transformer,
            self.conditioner.sizes,
            self.conditioner.activation
        )
    }
}
