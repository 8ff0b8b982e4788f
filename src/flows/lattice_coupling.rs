//! Checkerboard affine coupling for fields on an L×L periodic lattice, with a convolutional
//! (translation-equivariant) conditioner (Albergo, Kanwar & Shanahan 2019).
//!
//! Sites with (i + j + parity) even are frozen (mask m = 1) and the others are updated:
//!
//! ```text
//! (s̃, t) = CNN([m ⊙ φ, c]),  s = a·tanh(s̃/a) ⊙ (1 − m),  t ← t ⊙ (1 − m)
//! forward: φ' = φ ⊙ e^{s} + t,  log|det J| = Σ_x s_x;   inverse: φ = (φ' − t) ⊙ e^{−s}
//! ```
//!
//! The CNN stacks periodic 3×3 convolutions (tanh between them):
//! out[i, j] = b + Σ_{a, c ∈ {−1, 0, 1}} h[i − a, j − c] · W_{3(a+1)+(c+1)}, indices mod L,
//! computed as one gather of the nine neighbours of every site by a constant table (im2col,
//! the engine's `take`) and one gemm with the stacked weights [9·C_in, C_out]: 9·V·C_in·C_out
//! per sample, translation-equivariant by construction. Condition features enter
//! as constant extra input channels. The last convolution starts at zero: the identity.

use serde::{Deserialize, Serialize};

use super::params::{glorot, init_rng, ParamSet, Scope};
use super::Bijection;
use crate::engine::{Dim, Var};

/// Checkerboard coupling with a periodic CNN conditioner.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatticeCoupling {
    l: usize,
    cond_dim: usize,
    parity: usize,
    /// Channels: input (1 + condition features), hidden…, output 2.
    pub channels: Vec<usize>,
    /// Bound a on |s|.
    pub scale_bound: f64,
    /// Convolution weights `w{k}` (9 × C_in·C_out) and biases `b{k}`.
    pub params: ParamSet,
}

impl LatticeCoupling {
    /// An L×L coupling updating the sites of the given parity, with `hidden` channels in each
    /// of `depth` hidden convolutions.
    pub fn new(
        l: usize,
        cond_dim: usize,
        parity: usize,
        hidden: usize,
        depth: usize,
        seed: u64,
    ) -> Self {
        let mut channels = vec![1 + cond_dim];
        channels.extend(std::iter::repeat_n(hidden, depth));
        channels.push(2);
        Self::with_channels(l, cond_dim, parity, channels, seed)
    }

    /// A coupling with the given channel counts (input 1 + condition features first, 2 last).
    fn with_channels(
        l: usize,
        cond_dim: usize,
        parity: usize,
        channels: Vec<usize>,
        seed: u64,
    ) -> Self {
        let params = conv_stack_params(&channels, seed);
        LatticeCoupling {
            l,
            cond_dim,
            parity: parity % 2,
            channels,
            scale_bound: 3.0,
            params,
        }
    }

    /// A fresh layer with this one's architecture, once it is checked.
    pub(crate) fn template(&self) -> crate::Result<LatticeCoupling> {
        let ch = &self.channels;
        if ch.len() < 2 || ch[0] != 1 + self.cond_dim || ch.last() != Some(&2) || ch.contains(&0) {
            return crate::error::input_err(format!(
                "channels {ch:?} do not fit: 1 + {} inputs, 2 outputs needed",
                self.cond_dim
            ));
        }
        if self.parity > 1 || !(self.scale_bound.is_finite() && self.scale_bound > 0.0) {
            return crate::error::input_err("parity must be 0 or 1 and the scale bound positive");
        }
        super::params::check_count(conv_stack_count(ch), &[&self.params])?;
        Ok(LatticeCoupling {
            scale_bound: self.scale_bound,
            ..Self::with_channels(self.l, self.cond_dim, self.parity, ch.clone(), 0)
        })
    }

    fn mask(&self) -> Vec<f64> {
        let l = self.l;
        (0..l * l)
            .map(|k| {
                if (k / l + k % l + self.parity).is_multiple_of(2) {
                    1.0
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// (s, t), each `[batch, V]`, zero on frozen sites.
    fn shift_scale<'g>(
        &self,
        s: &Scope<'g>,
        phi: Var<'g>,
        c: Option<Var<'g>>,
    ) -> (Var<'g>, Var<'g>) {
        let g = phi.builder();
        let v = self.l * self.l;
        let mask = g.constant_tensor(&[v], self.mask());
        let active = g.constant_tensor(&[v], self.mask().iter().map(|m| 1.0 - m).collect());
        let frozen = phi * mask;
        let mut h = frozen.expand(2, Dim::Fixed(1));
        if let Some(c) = c {
            h = h.concat(c.expand(1, Dim::Fixed(v)), 2);
        }
        let h = conv_stack(s, &self.params, h, self.l, &self.channels, None);
        let raw = h.slice(2, 0, 1).sum(2);
        let t = h.slice(2, 1, 2).sum(2) * active;
        let bound = self.scale_bound;
        let log_scale = raw.mul_scalar(1.0 / bound).tanh().mul_scalar(bound) * active;
        (log_scale, t)
    }
}

/// Site s ∈ 0..9 of the periodic 3×3 stencil at site v of an L×L lattice: v moved by −(a, b)
/// (mod L), s = 3(a + 1) + (b + 1).
fn stencil_site(l: usize, v: usize, s: usize) -> usize {
    let (i, j) = (v / l, v % l);
    let (a, b) = (s / 3, s % 3);
    ((i + l + 1 - a) % l) * l + (j + l + 1 - b) % l
}

/// The sites the stencils at `sites` read, in increasing order.
fn stencil_reach(l: usize, sites: &[usize]) -> Vec<usize> {
    let mut hit = vec![false; l * l];
    for &v in sites {
        for s in 0..9 {
            hit[stencil_site(l, v, s)] = true;
        }
    }
    (0..l * l).filter(|&k| hit[k]).collect()
}

/// The im2col table of the periodic 3×3 stencil on an L×L lattice with `ci` channels, input
/// rows at the sites `input` (increasing, holding every site the stencils read), one output
/// row per site of `sites`: row element (r, s, c), at (r·9 + s)·ci + c, reads input element
/// (row of [`stencil_site`] (sites[r], s), c).
fn stencil_table(l: usize, ci: usize, input: &[usize], sites: &[usize]) -> Vec<usize> {
    let mut row = vec![usize::MAX; l * l];
    for (r, &k) in input.iter().enumerate() {
        row[k] = r;
    }
    let mut t = Vec::with_capacity(sites.len() * 9 * ci);
    for &v in sites {
        for s in 0..9 {
            let r = row[stencil_site(l, v, s)];
            assert!(r != usize::MAX, "a stencil reads a site its input lacks");
            t.extend((0..ci).map(|c| r * ci + c));
        }
    }
    t
}

/// Parameters of a stack of periodic 3×3 convolutions with these channel counts: weights
/// `w{k}` (9·C_in × C_out, Glorot) and biases `b{k}` (zero); the last convolution's weights are
/// zero, so the stack's output starts at zero.
pub(super) fn conv_stack_params(channels: &[usize], seed: u64) -> ParamSet {
    let mut rng = init_rng(seed);
    let mut params = ParamSet::default();
    let nl = channels.len().saturating_sub(1);
    for k in 0..nl {
        let (ci, co) = (channels[k], channels[k + 1]);
        let w = if k + 1 == nl {
            vec![0.0; 9 * ci * co]
        } else {
            glorot(&mut rng, 9 * ci, co)
        };
        params.push(&format!("w{k}"), &[9 * ci, co], w);
        params.push(&format!("b{k}"), &[co], vec![0.0; co]);
    }
    params
}

/// The number of parameters of [`conv_stack_params`] (None on overflow).
pub(super) fn conv_stack_count(channels: &[usize]) -> Option<usize> {
    channels.windows(2).try_fold(0usize, |acc, w| {
        acc.checked_add(w[0].checked_mul(w[1])?.checked_mul(9)?)?
            .checked_add(w[1])
    })
}

/// `h` (`[batch, V, C_0]`) through the stack of [`conv_stack_params`] on an L×L lattice, tanh
/// between convolutions: `[batch, S, C_last]`, the last convolution taken only at the S sites
/// `out` when given (a coupling reads its output at the sites it updates), else at all V.
/// Each earlier convolution is taken only at the sites the next one's stencils reach (for a
/// gauge coupling's stripes, 3 of 4 rows before the last; for a checkerboard, every site).
pub(super) fn conv_stack<'g>(
    s: &Scope<'g>,
    params: &ParamSet,
    mut h: Var<'g>,
    l: usize,
    channels: &[usize],
    out: Option<&[usize]>,
) -> Var<'g> {
    let nl = channels.len() - 1;
    let all: Vec<usize> = (0..l * l).collect();
    // Each convolution's output sites, the last's first.
    let mut sites = vec![out.map_or_else(|| all.clone(), <[usize]>::to_vec)];
    while sites.len() < nl {
        let reach = stencil_reach(l, &sites[sites.len() - 1]);
        sites.push(reach);
    }
    sites.reverse();
    let mut input = all;
    for (k, (&ci, at)) in channels[..nl].iter().zip(sites).enumerate() {
        let w = s.param(params, &format!("w{k}"));
        let b = s.param(params, &format!("b{k}"));
        h = periodic_conv3x3(h, w, l, ci, &input, &at) + b;
        if k + 1 < nl {
            h = h.tanh();
        }
        input = at;
    }
    h
}

/// Periodic 3×3 convolution of `h` (`[batch, I, C_in]`, rows at the sites `input`) with
/// stencil weights `w` (`[9·C_in, C_out]`) at the output `sites`: one gather by
/// [`stencil_table`] (im2col) and one gemm, `[batch, sites, C_out]`.
fn periodic_conv3x3<'g>(
    h: Var<'g>,
    w: Var<'g>,
    l: usize,
    ci: usize,
    input: &[usize],
    sites: &[usize],
) -> Var<'g> {
    h.take(
        1,
        &stencil_table(l, ci, input, sites),
        &[sites.len(), 9 * ci],
    )
    .matmul(w)
}

impl Bijection for LatticeCoupling {
    fn dim(&self) -> usize {
        self.l.saturating_mul(self.l)
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
        let (ls, t) = self.shift_scale(s, z, c);
        (z * ls.exp() + t, ls.sum(1))
    }
    fn inverse_and_log_det<'g>(
        &self,
        s: &Scope<'g>,
        x: Var<'g>,
        c: Option<Var<'g>>,
    ) -> (Var<'g>, Var<'g>) {
        let (ls, t) = self.shift_scale(s, x, c);
        ((x - t) * ls.neg().exp(), ls.sum(1).neg())
    }
    fn param_sets(&self) -> Vec<(String, &ParamSet)> {
        vec![(String::new(), &self.params)]
    }
    fn param_sets_mut(&mut self) -> Vec<(String, &mut ParamSet)> {
        vec![(String::new(), &mut self.params)]
    }
    fn describe(&self) -> String {
        format!(
            "LatticeCoupling(L={}, cond={}, parity={}, channels={:?})",
            self.l, self.cond_dim, self.parity, self.channels
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{GraphBuilder, Program};
    use crate::flows::params::Declared;

    /// The stack taken only at some sites (each earlier convolution only where the next reads)
    /// equals the stack at every site read there, for stripes, a checkerboard and scattered
    /// sites, three and four convolutions deep.
    #[test]
    fn the_stack_at_some_sites_is_the_stack_at_every_site_read_there() {
        let l = 8;
        let v = l * l;
        let stripe: Vec<usize> = (0..v).filter(|k| (k / l) % 4 == 1).collect();
        let board: Vec<usize> = (0..v).filter(|k| (k / l + k % l) % 2 == 0).collect();
        let scattered = vec![0, 9, 30, 31, 63];
        for channels in [vec![3, 5, 4, 6], vec![3, 4, 4, 4, 2]] {
            let mut rng = init_rng(7);
            let mut params = ParamSet::default();
            for (k, w) in channels.windows(2).enumerate() {
                params.push(
                    &format!("w{k}"),
                    &[9 * w[0], w[1]],
                    glorot(&mut rng, 9 * w[0], w[1]),
                );
                let b = (0..w[1]).map(|c| 0.1 * c as f64 - 0.2).collect();
                params.push(&format!("b{k}"), &[w[1]], b);
            }
            for out in [&stripe, &board, &scattered] {
                let g = GraphBuilder::new();
                let outs = {
                    let declared = Declared::default();
                    let s = Scope::root(&g, &declared, false);
                    let p = g.batch_input("p", &[v]);
                    let h = (p.expand(2, Dim::Fixed(1)))
                        .concat(p.cos().expand(2, Dim::Fixed(1)), 2)
                        .concat(p.sin().expand(2, Dim::Fixed(1)), 2);
                    let full = conv_stack(&s, &params, h, l, &channels, None);
                    let some = conv_stack(&s, &params, h, l, &channels, Some(out));
                    [full.output("full"), some.output("some")]
                };
                let mut prog = Program::<f64>::compile(g, &outs, None).unwrap();
                let batch = 2;
                let p: Vec<f64> = (0..batch * v)
                    .map(|i| (i as f64 * 0.37).sin() * 3.0)
                    .collect();
                let r = prog.run(&[("p", &p)]).unwrap();
                let (full, some) = (r.get("full").unwrap(), r.get("some").unwrap());
                let co = *channels.last().unwrap();
                assert_eq!(some.len(), batch * out.len() * co);
                for b in 0..batch {
                    for (r, &k) in out.iter().enumerate() {
                        for c in 0..co {
                            let a = full[(b * v + k) * co + c];
                            let e = some[(b * out.len() + r) * co + c];
                            assert!((a - e).abs() < 1e-12, "site {k} channel {c}: {a} vs {e}");
                        }
                    }
                }
            }
        }
    }

    /// A stripe's stencils reach the stripes beside it; the checkerboard's reach every site.
    #[test]
    fn stencils_reach_their_neighbours() {
        let l = 8;
        let stripe: Vec<usize> = (0..l * l).filter(|k| (k / l) % 4 == 1).collect();
        let reach = stencil_reach(l, &stripe);
        assert!(reach.iter().all(|k| (k / l) % 4 != 3));
        assert_eq!(reach.len(), 3 * l * l / 4);
        let board: Vec<usize> = (0..l * l).filter(|k| (k / l + k % l) % 2 == 0).collect();
        assert_eq!(stencil_reach(l, &board).len(), l * l);
    }
}
