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

use super::scalar::Scalar;

/// An optimiser updates parameters in place from their gradients.
pub trait Optimizer {
    /// Apply one update.
    fn update<T: Scalar>(&mut self, params: &mut [&mut Vec<T>], grads: &[Vec<T>]);
    /// Current learning rate.
    fn lr(&self) -> f64;
    /// Change the learning rate (schedules, back-off after a bad step).
    fn set_lr(&mut self, lr: f64);
}

/// Scale factor that brings the global gradient norm down to `clip`.
pub fn clip_factor<T: Scalar>(grads: &[Vec<T>], clip: Option<f64>) -> f64 {
    let Some(c) = clip else { return 1.0 };
    let norm = grads
        .iter()
        .flatten()
        .map(|g| g.to_f64() * g.to_f64())
        .sum::<f64>()
        .sqrt();
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
}

impl Optimizer for Adam {
    fn update<T: Scalar>(&mut self, params: &mut [&mut Vec<T>], grads: &[Vec<T>]) {
        if self.m.len() != grads.len() {
            self.m = grads.iter().map(|g| vec![0.0; g.len()]).collect();
            self.v = self.m.clone();
        }
        self.t += 1;
        let s = clip_factor(grads, self.clip);
        let bc1 = 1.0 - self.beta1.powi(self.t as i32);
        let bc2 = 1.0 - self.beta2.powi(self.t as i32);
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
}
