//! First-order optimisers over a program's parameters, with global gradient-norm clipping.
//!
//! Adam (Kingma & Ba 2015), with bias correction:
//!
//! ```text
//! m ← β₁ m + (1 − β₁) g,   v ← β₂ v + (1 − β₂) g²,
//! θ ← θ − lr · (m / (1 − β₁ᵗ)) / (√(v / (1 − β₂ᵗ)) + ε)
//! ```
//!
//! SGD: θ ← θ − lr · g. Clipping: if ‖g‖₂ > c over all parameters, g ← g · c/‖g‖₂.
//! Moments are kept in f64 whatever the element type.
//!
//! On a device ([`super::device`]) the update runs there, in f32, appended to the training plan
//! by [`append_update`] (parameters, gradients and moments never cross the bus): both rules
//! are cases of
//!
//! ```text
//! g ← s g,   m ← b₁ m + b₁' g,   v ← b₂ v + b₂' g²,   θ ← θ − a · m / (c₁ √v + c₀)
//! ```
//!
//! whose coefficients the host computes each step ([`Optimizer::coefficients`], from the
//! squared gradient norm read back): Adam with b₁' = 1 − β₁, b₂' = 1 − β₂, the bias corrections
//! folded into a = lr √(1 − β₂ᵗ)/(1 − β₁ᵗ) and c₀ = ε √(1 − β₂ᵗ), c₁ = 1; SGD with b₁ = 0,
//! b₁' = 1, a = lr, c₁ = 0, c₀ = 1.

use super::ir::{BinOp, Ir, Op, RedOp, Src, UnOp};
use super::scalar::Scalar;
use super::view::View;

/// The coefficients [s, b₁, b₁', b₂, b₂', −a, c₁, c₀] of one step of the device rule.
pub type Coefficients = [f64; 8];

/// An optimiser updates parameters in place from their gradients.
pub trait Optimizer {
    /// Apply one update.
    fn update<T: Scalar>(&mut self, params: &mut [&mut Vec<T>], grads: &[Vec<T>]);
    /// Current learning rate.
    fn lr(&self) -> f64;
    /// Change the learning rate (schedules, back-off after a bad step).
    fn set_lr(&mut self, lr: f64);
    /// One step as a device runs it (see the module's formula), given the squared global
    /// gradient norm Σ g²: counts the step, as [`Optimizer::update`] does.
    fn coefficients(&mut self, norm2: f64) -> Coefficients;
}

/// Scale factor that brings the global gradient norm down to `clip`.
pub fn clip_factor<T: Scalar>(grads: &[Vec<T>], clip: Option<f64>) -> f64 {
    let norm2 = grads
        .iter()
        .flatten()
        .map(|g| g.to_f64() * g.to_f64())
        .sum::<f64>();
    clip_scale(norm2, clip)
}

/// Scale factor that brings a gradient of squared norm `norm2` down to norm `clip`.
pub fn clip_scale(norm2: f64, clip: Option<f64>) -> f64 {
    let Some(c) = clip else { return 1.0 };
    let norm = norm2.sqrt();
    if norm > c && norm > 0.0 {
        c / norm
    } else {
        1.0
    }
}

/// Plain stochastic gradient descent.
#[derive(Clone, Debug)]
pub struct Sgd {
    /// Learning rate.
    pub lr: f64,
    /// Global gradient-norm clip.
    pub clip: Option<f64>,
}

impl Optimizer for Sgd {
    fn update<T: Scalar>(&mut self, params: &mut [&mut Vec<T>], grads: &[Vec<T>]) {
        let s = self.lr * clip_factor(grads, self.clip);
        for (p, g) in params.iter_mut().zip(grads) {
            for (p, g) in p.iter_mut().zip(g) {
                *p = T::from_f64(p.to_f64() - s * g.to_f64());
            }
        }
    }
    fn lr(&self) -> f64 {
        self.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
    fn coefficients(&mut self, norm2: f64) -> Coefficients {
        let s = clip_scale(norm2, self.clip);
        [s, 0.0, 1.0, 0.0, 0.0, -self.lr, 0.0, 1.0]
    }
}

/// Adam with bias correction.
#[derive(Clone, Debug)]
pub struct Adam {
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator guard.
    pub eps: f64,
    /// Global gradient-norm clip.
    pub clip: Option<f64>,
    t: u64,
    m: Vec<Vec<f64>>,
    v: Vec<Vec<f64>>,
}

impl Adam {
    /// Adam with the usual defaults (β = 0.9, 0.999; ε = 1e-8) and no clipping.
    pub fn new(lr: f64) -> Adam {
        Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            clip: None,
            t: 0,
            m: Vec::new(),
            v: Vec::new(),
        }
    }
    /// With global gradient-norm clipping at `c`.
    pub fn with_clip(mut self, c: f64) -> Adam {
        self.clip = Some(c);
        self
    }
    /// Steps taken.
    pub fn steps(&self) -> u64 {
        self.t
    }
    /// (1 − β₁ᵗ, 1 − β₂ᵗ) at the current step count.
    fn bias_corrections(&self) -> (f64, f64) {
        let t = self.t.min(i32::MAX as u64) as i32;
        (1.0 - self.beta1.powi(t), 1.0 - self.beta2.powi(t))
    }
}

impl Optimizer for Adam {
    fn update<T: Scalar>(&mut self, params: &mut [&mut Vec<T>], grads: &[Vec<T>]) {
        if self.m.len() != grads.len() {
            self.m = grads.iter().map(|g| vec![0.0; g.len()]).collect();
            self.v = self.m.clone();
        }
        self.t += 1;
        let s = clip_factor(grads, self.clip);
        let (bc1, bc2) = self.bias_corrections();
        for (k, (p, g)) in params.iter_mut().zip(grads).enumerate() {
            let (m, v) = (&mut self.m[k], &mut self.v[k]);
            for i in 0..g.len() {
                let gi = g[i].to_f64() * s;
                m[i] = self.beta1 * m[i] + (1.0 - self.beta1) * gi;
                v[i] = self.beta2 * v[i] + (1.0 - self.beta2) * gi * gi;
                let upd = self.lr * (m[i] / bc1) / ((v[i] / bc2).sqrt() + self.eps);
                p[i] = T::from_f64(p[i].to_f64() - upd);
            }
        }
    }
    fn lr(&self) -> f64 {
        self.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
    fn coefficients(&mut self, norm2: f64) -> Coefficients {
        self.t += 1;
        let (bc1, bc2) = self.bias_corrections();
        let (b1, b2) = (self.beta1, self.beta2);
        let a = self.lr * bc2.sqrt() / bc1;
        let s = clip_scale(norm2, self.clip);
        [
            s,
            b1,
            1.0 - b1,
            b2,
            1.0 - b2,
            -a,
            1.0,
            self.eps * bc2.sqrt(),
        ]
    }
}

/// One parameter's update on a device: its input node, its gradient's node and the input nodes
/// of its two moments (each of the parameter's length).
#[derive(Clone, Copy, Debug)]
pub struct Slot {
    /// The parameter's input node.
    pub param: usize,
    /// Its gradient (the parameter's buffer layout).
    pub grad: usize,
    /// First moment m.
    pub m: usize,
    /// Second moment v.
    pub v: usize,
}

/// Partial sums of Σ g² are materialised every so many terms: a fused kernel reads each term
/// through a buffer of its own, and a device binds a bounded number of them (wgpu: 32).
const TERMS_PER_KERNEL: usize = 16;

/// Append to a training plan's `ir` the squared global gradient norm Σ g² (a scalar node) and,
/// for every slot, the nodes (θ', m', v') of the module's rule, reading its [`Coefficients`]
/// from the 8-element input node `coeffs`; `required` gets every node the plan must
/// materialise for them.
pub fn append_update(
    ir: &mut Ir,
    coeffs: usize,
    slots: &[Slot],
    required: &mut Vec<usize>,
) -> (usize, Vec<[usize; 3]>) {
    let flat = |ir: &Ir, n: usize| Src {
        node: n,
        view: View::contiguous(&[ir.nodes[n].len]),
    };
    let coef = |k: usize, len: usize| Src {
        node: coeffs,
        view: View {
            offset: k as i64,
            ..View::broadcast_scalar(&[len])
        },
    };
    let bin = |ir: &mut Ir, op: BinOp, a: Src, b: Src| {
        let len = a.view.numel();
        ir.push(Op::Binary(op, a, b), len)
    };
    let mut norm2: Option<usize> = None;
    for (k, s) in slots.iter().enumerate() {
        let g = flat(ir, s.grad);
        let sq = bin(ir, BinOp::Mul, g.clone(), g);
        let sum = ir.push(Op::Reduce(RedOp::Sum, 0, flat(ir, sq)), 1);
        norm2 = Some(match norm2 {
            None => sum,
            Some(acc) => bin(ir, BinOp::Add, flat(ir, acc), flat(ir, sum)),
        });
        if (k + 1) % TERMS_PER_KERNEL == 0 {
            required.extend(norm2);
        }
    }
    let norm2 = norm2.unwrap_or_else(|| ir.push(Op::Const(0.0), 1));
    required.push(norm2);
    let mut out = Vec::with_capacity(slots.len());
    for s in slots {
        let n = ir.nodes[s.param].len;
        // m·b + x·b' for a moment m and its new term x.
        let blend = |ir: &mut Ir, m: usize, x: usize, k: usize| {
            let a = bin(ir, BinOp::Mul, flat(ir, m), coef(k, n));
            let b = bin(ir, BinOp::Mul, flat(ir, x), coef(k + 1, n));
            bin(ir, BinOp::Add, flat(ir, a), flat(ir, b))
        };
        let g = bin(ir, BinOp::Mul, flat(ir, s.grad), coef(0, n));
        let g2 = bin(ir, BinOp::Mul, flat(ir, g), flat(ir, g));
        let m = blend(ir, s.m, g, 1);
        let v = blend(ir, s.v, g2, 3);
        let root = ir.push(Op::Unary(UnOp::Sqrt, v), n);
        let scaled = bin(ir, BinOp::Mul, flat(ir, root), coef(6, n));
        let den = bin(ir, BinOp::Add, flat(ir, scaled), coef(7, n));
        let inv = ir.push(Op::Unary(UnOp::Recip, den), n);
        let step = bin(ir, BinOp::Mul, flat(ir, m), flat(ir, inv));
        let step = bin(ir, BinOp::Mul, flat(ir, step), coef(5, n));
        let theta = bin(ir, BinOp::Add, flat(ir, s.param), flat(ir, step));
        required.extend([theta, m, v]);
        out.push([theta, m, v]);
    }
    (norm2, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The device rule with an optimiser's coefficients, in f64 on the host.
    fn device_rule<O: Optimizer>(
        opt: &mut O,
        p: &mut [f64],
        g: &[f64],
        m: &mut [f64],
        v: &mut [f64],
    ) {
        let norm2 = g.iter().map(|x| x * x).sum();
        let [s, b1, b1c, b2, b2c, na, c1, c0] = opt.coefficients(norm2);
        for i in 0..p.len() {
            let gi = s * g[i];
            m[i] = b1 * m[i] + b1c * gi;
            v[i] = b2 * v[i] + b2c * gi * gi;
            p[i] += na * m[i] / (c1 * v[i].sqrt() + c0);
        }
    }

    /// Six steps of each optimiser (clipped and not) through `update` and through the device
    /// rule's coefficients leave the same parameters.
    #[test]
    fn the_device_rule_is_each_optimisers_update() {
        fn both<O: Optimizer + Clone>(opt: O) {
            let (mut host, mut dev) = (opt.clone(), opt);
            let mut p = vec![0.3, -1.2, 0.0, 2.5];
            let mut q = p.clone();
            let (mut m, mut v) = (vec![0.0; 4], vec![0.0; 4]);
            for step in 0..6 {
                let g: Vec<f64> = (0..4)
                    .map(|i| ((i * 5 + step * 3) % 7) as f64 - 3.0 + 0.1 * p[i])
                    .collect();
                host.update(&mut [&mut p], std::slice::from_ref(&g));
                device_rule(&mut dev, &mut q, &g, &mut m, &mut v);
                for (a, b) in p.iter().zip(&q) {
                    assert!(
                        (a - b).abs() < 1e-12 * (1.0 + a.abs()),
                        "step {step}: {a} vs {b}"
                    );
                }
            }
        }
        both(Sgd {
            lr: 0.1,
            clip: None,
        });
        both(Sgd {
            lr: 0.1,
            clip: Some(0.5),
        });
        both(Adam::new(0.05));
        both(Adam::new(0.05).with_clip(0.5));
    }
}
