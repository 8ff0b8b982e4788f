//! The conditioner MLP: input (untouched half of the state, concatenated with the condition
//! features) → `depth` hidden layers of `width` units → output. The last layer is initialised
//! to zero, so a new coupling layer is the identity.
//!
//! h₀ = input, h_{l+1} = act(h_l W_l + b_l), out = h_depth W_last + b_last.
//! With no input at all (1-D state, no condition) the output is the bias alone.

use serde::{Deserialize, Serialize};

use super::params::{glorot, ParamSet, Scope};
use crate::engine::{Dim, Var};

/// Hidden-layer nonlinearity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    /// tanh
    Tanh,
    /// x·σ(x)
    Silu,
    /// max(x, 0)
    Relu,
}

impl Activation {
    fn apply<'g>(self, x: Var<'g>) -> Var<'g> {
        match self {
            Activation::Tanh => x.tanh(),
            Activation::Silu => x.silu(),
            Activation::Relu => x.relu(),
        }
    }
}

/// A multilayer perceptron with named parameters `w0, b0, w1, b1, …`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mlp {
    /// Layer sizes, input first.
    pub sizes: Vec<usize>,
    /// Hidden nonlinearity.
    pub activation: Activation,
    /// Parameters.
    pub params: ParamSet,
}

impl Mlp {
    /// `n_in → [width; depth] → n_out`, hidden layers Glorot-initialised from `seed`, last
    /// layer zero.
    pub fn new(
        n_in: usize,
        width: usize,
        depth: usize,
        n_out: usize,
        activation: Activation,
        seed: u64,
    ) -> Mlp {
        let mut sizes = vec![n_in];
        if n_in > 0 {
            sizes.extend(std::iter::repeat_n(width, depth));
        }
        sizes.push(n_out);
        Mlp::with_sizes(sizes, activation, seed)
    }

    /// An MLP with the given layer sizes (input first), hidden layers Glorot-initialised from
    /// `seed`, last layer zero.
    pub fn with_sizes(sizes: Vec<usize>, activation: Activation, seed: u64) -> Mlp {
        let mut rng = super::params::init_rng(seed);
        let mut params = ParamSet::default();
        let nl = sizes.len() - 1;
        for l in 0..nl {
            let (a, b) = (sizes[l], sizes[l + 1]);
            let w = if l + 1 == nl {
                vec![0.0; a * b]
            } else {
                glorot(&mut rng, a, b)
            };
            if a > 0 {
                params.push(&format!("w{l}"), &[a, b], w);
            }
            params.push(&format!("b{l}"), &[b], vec![0.0; b]);
        }
        Mlp {
            sizes,
            activation,
            params,
        }
    }

    /// A fresh MLP with the sizes this one declares, once they are checked against the stored
    /// parameter count.
    pub(crate) fn template(&self) -> crate::Result<Mlp> {
        let s = &self.sizes;
        if s.len() < 2 || s[1..].contains(&0) {
            return crate::error::input_err(format!("MLP sizes {s:?} are invalid"));
        }
        let declared = s.windows(2).try_fold(0usize, |acc, w| {
            let weights = if w[0] > 0 { w[0].checked_mul(w[1])? } else { 0 };
            acc.checked_add(weights)?.checked_add(w[1])
        });
        super::params::check_count(declared, &[&self.params])?;
        Ok(Mlp::with_sizes(s.clone(), self.activation, 0))
    }

    /// Output `[batch, n_out]` for input `[batch, n_in]` (or `None` when n_in = 0).
    pub fn apply<'g>(&self, s: &Scope<'g>, input: Option<Var<'g>>) -> Var<'g> {
        let nl = self.sizes.len() - 1;
        let Some(mut h) = input else {
            let b = s.param(&self.params, &format!("b{}", nl - 1));
            return b.expand(0, Dim::Batch);
        };
        for l in 0..nl {
            let w = s.param(&self.params, &format!("w{l}"));
            let b = s.param(&self.params, &format!("b{l}"));
            h = h.matmul(w) + b;
            if l + 1 < nl {
                h = self.activation.apply(h);
            }
        }
        h
    }
}
