//! The monotonic rational-quadratic spline (Durkan et al. 2019) as **one fused kernel** per
//! element: knots from the raw parameters, bin search, the map and its log-derivative, and
//! the exact adjoint of all of it. Built from primitives the same spline is about a hundred
//! graph nodes per coordinate (softmax, cumulative sums, a one-hot gather per bin parameter);
//! here it is a few dozen flops and 2K + K − 1 exponentials.
//!
//! Per coordinate, from θ = (θ_w ∈ ℝᴷ, θ_h ∈ ℝᴷ, θ_d ∈ ℝᴷ⁻¹), on [−B, B], identity outside:
//!
//! ```text
//! W_j = 2B (m + (1 − K m) softmax(θ_w)_j),  X_j = −B + Σ_{i<j} W_i   (heights H, Y alike)
//! D_0 = D_K = 1,  D_j = m_d + softplus(θ_d,j−1 + c₀),  c₀ = log(e^{1−m_d} − 1)
//! bin k = #{j : X_j ≤ x} − 1,  ξ = (x − X_k)/W_k,  s = H_k/W_k,  t = ξ(1 − ξ)
//! g(x) = Y_k + H_k (s ξ² + D_k t) / (s + (D_{k+1} + D_k − 2s) t)
//! log g'(x) = log(s² (D_{k+1} ξ² + 2 s t + D_k (1 − ξ)²)) − 2 log(s + (D_{k+1} + D_k − 2s) t)
//! ```
//!
//! The inverse solves the quadratic in ξ (Durkan et al., eq. 6–8) on the y-knots and returns
//! x = X_k + ξ W_k with −log g'. The input is clamped into [−B, B] before any of this, so an
//! input far outside never reaches the formulas (no NaN from an unused branch).
//!
//! **Adjoint.** Reverse mode through the formulas above, written out by hand: the output
//! adjoints (ȳ, l̄) give ξ̄ and (W̄_k, X̄_k, H̄_k, Ȳ_k, D̄_k, D̄_{k+1}); then
//! W̄_j ← W̄_j + X̄_k [j < k] (X is a cumulative sum), through the softmax
//! θ̄_j = p_j (p̄_j − Σ_i p_i p̄_i), and through softplus θ̄_d = D̄ σ(θ_d + c₀). For the inverse
//! ξ is the root of Φ(ξ, θ) = y, so by implicit differentiation λ = ξ̄ / (∂Φ/∂ξ) gives
//! ȳ_in = λ and the parameters receive −λ ∂Φ/∂θ, the forward adjoint seeded with −λ.
//! Checked against finite differences and against the graph-built spline in the tests.

use super::scalar::Scalar;

/// Largest number of bins the fused kernel takes.
pub const MAX_BINS: usize = 64;
/// Minimum bin width and height (as a fraction of 2B).
pub const MIN_BIN: f64 = 1e-3;
/// Minimum knot derivative.
pub const MIN_DERIVATIVE: f64 = 1e-3;

/// A spline's static description.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rqs {
    /// Number of bins K.
    pub bins: usize,
    /// Tail bound B.
    pub bound: f64,
    /// Inverse map (y → x) instead of x → y.
    pub inverse: bool,
}

impl Rqs {
    /// Raw parameters per coordinate: 3K − 1.
    pub fn n_params(&self) -> usize {
        3 * self.bins - 1
    }

    /// Check the description (the lowering calls this).
    pub fn validate(&self) -> Result<(), String> {
        if self.bins < 1 || self.bins > MAX_BINS {
            return Err(format!("spline bins {} not in 1..={MAX_BINS}", self.bins));
        }
        if !(self.bound.is_finite() && self.bound > 0.0) {
            return Err(format!("spline bound {} must be positive", self.bound));
        }
        Ok(())
    }

    /// Map coordinates `v[i]` with parameters `theta[i·P..(i+1)·P]`; `out[2i]` gets the value
    /// and `out[2i + 1]` the log-derivative.
    pub fn apply<T: Scalar>(&self, v: &[T], theta: &[T], out: &mut [T]) {
        let p = self.n_params();
        let mut kn = Knots::empty();
        for (i, (&x, o)) in v.iter().zip(out.chunks_exact_mut(2)).enumerate() {
            let (y, ld) = self.one(x, &theta[i * p..(i + 1) * p], &mut kn);
            o[0] = y;
            o[1] = ld;
        }
    }

    /// Adjoint: given the output adjoints `g[2i]` (value) and `g[2i + 1]` (log-derivative),
    /// write `out[i·(P+1)]` = ∂L/∂v[i] and `out[i·(P+1) + 1 + j]` = ∂L/∂θ_ij.
    pub fn adjoint<T: Scalar>(&self, v: &[T], theta: &[T], g: &[T], out: &mut [T]) {
        let p = self.n_params();
        let mut kn = Knots::empty();
        for (i, (&x, o)) in v.iter().zip(out.chunks_exact_mut(p + 1)).enumerate() {
            let gi = &g[2 * i..2 * i + 2];
            self.one_adjoint(x, &theta[i * p..(i + 1) * p], gi[0], gi[1], &mut kn, o);
        }
    }

    fn inside<T: Scalar>(&self, x: T) -> bool {
        let b = T::from_f64(self.bound);
        T::default() - b < x && x < b
    }

    fn one<T: Scalar>(&self, x: T, theta: &[T], kn: &mut Knots<T>) -> (T, T) {
        if !self.inside(x) {
            return (x, T::default());
        }
        kn.build(theta, self.bins, self.bound);
        if self.inverse {
            let k = kn.h.locate(x, self.bins);
            let (c, _) = kn.cell(theta, self.bins, k);
            let xi = c.solve(x);
            let (_, ld) = c.map(xi);
            (c.x + xi * c.w, T::default() - ld)
        } else {
            let k = kn.w.locate(x, self.bins);
            let (c, _) = kn.cell(theta, self.bins, k);
            c.map(clamp01((x - c.x) / c.w))
        }
    }

    fn one_adjoint<T: Scalar>(
        &self,
        x: T,
        theta: &[T],
        gv: T,
        gl: T,
        kn: &mut Knots<T>,
        out: &mut [T],
    ) {
        out.fill(T::default());
        if !self.inside(x) {
            out[0] = gv;
            return;
        }
        let zero = T::default();
        kn.build(theta, self.bins, self.bound);
        let (k, adj, sig) = if self.inverse {
            // Outputs x = X + ξW and −log g'(ξ); ξ solves Φ(ξ) = y.
            let k = kn.h.locate(x, self.bins);
            let (c, sig) = kn.cell(theta, self.bins, k);
            let xi = c.solve(x);
            let mut a = c.adjoint(xi, zero, zero - gl);
            let xi_bar = a.xi + gv * c.w;
            a.x += gv;
            a.w += gv * xi;
            let lambda = xi_bar / (c.w * c.slope(xi));
            out[0] = lambda;
            let b = c.adjoint(xi, zero - lambda, zero);
            a.add(&b);
            (k, a, sig)
        } else {
            let k = kn.w.locate(x, self.bins);
            let (c, sig) = kn.cell(theta, self.bins, k);
            let u = (x - c.x) / c.w;
            let xi = clamp01(u);
            let mut a = c.adjoint(xi, gv, gl);
            if u == xi {
                out[0] = a.xi / c.w;
                a.x = a.x - a.xi / c.w;
                a.w = a.w - a.xi * xi / c.w;
            }
            (k, a, sig)
        };
        let bins = self.bins;
        let th = &mut out[1..];
        kn.w.pull_back(k, adj.x, adj.w, self.bound, &mut th[..bins]);
        kn.h.pull_back(k, adj.y, adj.h, self.bound, &mut th[bins..2 * bins]);
        // D_k and D_{k+1}; only interior knots 1..K−1 have parameters.
        for (j, dbar, sig) in [(k, adj.d0, sig[0]), (k + 1, adj.d1, sig[1])] {
            if j >= 1 && j < bins {
                th[2 * bins + j - 1] += dbar * sig;
            }
        }
    }
}

fn clamp01<T: Scalar>(v: T) -> T {
    let (zero, one) = (T::default(), T::from_f64(1.0));
    if v < zero {
        zero
    } else if v > one {
        one
    } else {
        v
    }
}

fn ln<T: Scalar>(v: T) -> T {
    v.log2() * T::from_f64(std::f64::consts::LN_2)
}

fn exp<T: Scalar>(v: T) -> T {
    (v * T::from_f64(std::f64::consts::LOG2_E)).exp2()
}

/// One axis of knots (widths and positions, or heights and positions).
struct Axis<T> {
    /// softmax probabilities p_j
    p: [T; MAX_BINS],
    /// sizes W_j
    size: [T; MAX_BINS],
    /// lower knots X_j
    lo: [T; MAX_BINS],
}

impl<T: Scalar> Axis<T> {
    fn build(&mut self, theta: &[T], bound: f64) {
        let k = theta.len();
        let mut mx = theta[0];
        for &t in &theta[1..] {
            if t > mx {
                mx = t;
            }
        }
        // A pure map (vectorised), then the sum.
        for (p, &t) in self.p[..k].iter_mut().zip(theta) {
            *p = exp(t - mx);
        }
        let mut sum = T::default();
        for &p in &self.p[..k] {
            sum += p;
        }
        let inv = T::from_f64(1.0) / sum;
        let scale = T::from_f64(2.0 * bound * (1.0 - MIN_BIN * k as f64));
        let floor = T::from_f64(2.0 * bound * MIN_BIN);
        let mut acc = T::from_f64(-bound);
        for j in 0..k {
            self.p[j] = self.p[j] * inv;
            self.size[j] = floor + scale * self.p[j];
            self.lo[j] = acc;
            acc += self.size[j];
        }
    }

    /// The bin of `v`: #{j : X_j ≤ v} − 1 (at least 0).
    fn locate(&self, v: T, bins: usize) -> usize {
        let mut n = 0;
        for &l in &self.lo[..bins] {
            if v >= l {
                n += 1;
            }
        }
        n.max(1) - 1
    }

    /// Pull (X̄_k, W̄_k) back to θ: W̄_j gets W̄_k [j = k] + X̄_k [j < k], then through the
    /// affine floor and the softmax.
    fn pull_back(&self, k: usize, x_bar: T, w_bar: T, bound: f64, out: &mut [T]) {
        let bins = out.len();
        let scale = T::from_f64(2.0 * bound * (1.0 - MIN_BIN * bins as f64));
        let mut dot = T::default();
        for (j, o) in out.iter_mut().enumerate() {
            let s_bar = if j < k {
                x_bar
            } else if j == k {
                w_bar
            } else {
                T::default()
            };
            *o = scale * s_bar;
            dot += self.p[j] * *o;
        }
        for (o, &p) in out.iter_mut().zip(&self.p[..bins]) {
            *o = p * (*o - dot);
        }
    }
}

/// Knots of one coordinate's spline (reused across elements: no allocation).
struct Knots<T> {
    w: Axis<T>,
    h: Axis<T>,
}

/// A knot derivative D_j and, for interior knots, σ(θ_d + c₀) = ∂D_j/∂θ_d.
fn derivative<T: Scalar>(theta: &[T], bins: usize, j: usize) -> (T, T) {
    let one = T::from_f64(1.0);
    if j == 0 || j == bins {
        return (one, T::default());
    }
    let c0 = T::from_f64(((1.0 - MIN_DERIVATIVE).exp() - 1.0).ln());
    let u = theta[2 * bins + j - 1] + c0;
    // softplus(u) = max(u, 0) + ln(1 + e^{−|u|}); σ(u) from the same e^{−|u|}.
    let pos = u > T::default();
    let e = exp(if pos { T::default() - u } else { u });
    let relu = if pos { u } else { T::default() };
    let sig = if pos { one / (one + e) } else { e / (one + e) };
    (T::from_f64(MIN_DERIVATIVE) + relu + ln(one + e), sig)
}

impl<T: Scalar> Knots<T> {
    fn empty() -> Knots<T> {
        let z = [T::default(); MAX_BINS];
        Knots {
            w: Axis {
                p: z,
                size: z,
                lo: z,
            },
            h: Axis {
                p: z,
                size: z,
                lo: z,
            },
        }
    }

    /// Widths and heights (all bins: the bin search needs every knot).
    fn build(&mut self, theta: &[T], bins: usize, bound: f64) {
        self.w.build(&theta[..bins], bound);
        self.h.build(&theta[bins..2 * bins], bound);
    }

    /// Bin k's cell (only its two derivatives are computed) and ∂D_k/∂θ, ∂D_{k+1}/∂θ.
    fn cell(&self, theta: &[T], bins: usize, k: usize) -> (Cell<T>, [T; 2]) {
        let (d0, s0) = derivative(theta, bins, k);
        let (d1, s1) = derivative(theta, bins, k + 1);
        let c = Cell {
            x: self.w.lo[k],
            w: self.w.size[k],
            y: self.h.lo[k],
            h: self.h.size[k],
            d0,
            d1,
        };
        (c, [s0, s1])
    }
}

/// The bin a point falls in: its knots and end derivatives.
struct Cell<T> {
    x: T,
    w: T,
    y: T,
    h: T,
    d0: T,
    d1: T,
}

/// Adjoints of a cell's quantities (and of ξ).
#[derive(Default)]
struct CellAdjoint<T> {
    xi: T,
    x: T,
    w: T,
    y: T,
    h: T,
    d0: T,
    d1: T,
}

impl<T: Scalar> CellAdjoint<T> {
    fn add(&mut self, o: &CellAdjoint<T>) {
        self.x += o.x;
        self.w += o.w;
        self.y += o.y;
        self.h += o.h;
        self.d0 += o.d0;
        self.d1 += o.d1;
    }
}

impl<T: Scalar> Cell<T> {
    /// (g, log g') at relative position ξ.
    fn map(&self, xi: T) -> (T, T) {
        let one = T::from_f64(1.0);
        let two = T::from_f64(2.0);
        let s = self.h / self.w;
        let om = one - xi;
        let t = xi * om;
        let den = s + (self.d1 + self.d0 - two * s) * t;
        let num = self.h * (s * xi * xi + self.d0 * t);
        let dnum = s * s * (self.d1 * xi * xi + two * s * t + self.d0 * om * om);
        (self.y + num / den, ln(dnum) - two * ln(den))
    }

    /// g'(x) at relative position ξ.
    fn slope(&self, xi: T) -> T {
        let one = T::from_f64(1.0);
        let two = T::from_f64(2.0);
        let s = self.h / self.w;
        let om = one - xi;
        let t = xi * om;
        let den = s + (self.d1 + self.d0 - two * s) * t;
        s * s * (self.d1 * xi * xi + two * s * t + self.d0 * om * om) / (den * den)
    }

    /// ξ with g(X + ξW) = y (the stable root of the quadratic), clamped to [0, 1].
    fn solve(&self, y: T) -> T {
        let (zero, two, four) = (T::default(), T::from_f64(2.0), T::from_f64(4.0));
        let s = self.h / self.w;
        let delta = self.d1 + self.d0 - two * s;
        let dy = y - self.y;
        let a = self.h * (s - self.d0) + dy * delta;
        let b = self.h * self.d0 - dy * delta;
        let c = zero - s * dy;
        let disc = b * b - four * a * c;
        let disc = if disc > zero { disc } else { zero };
        clamp01(two * c / (zero - b - disc.sqrt()))
    }

    /// Reverse mode through [`Cell::map`] with ξ a leaf: adjoints of ξ and the cell given
    /// ȳ = `gy` and l̄ = `gl`.
    fn adjoint(&self, xi: T, gy: T, gl: T) -> CellAdjoint<T> {
        let one = T::from_f64(1.0);
        let two = T::from_f64(2.0);
        let (d0, d1, h, w) = (self.d0, self.d1, self.h, self.w);
        let s = h / w;
        let om = one - xi;
        let t = xi * om;
        let den = s + (d1 + d0 - two * s) * t;
        let q = s * xi * xi + d0 * t;
        let r = h * q / den;
        let p = d1 * xi * xi + two * s * t + d0 * om * om;
        // y = Y + r, ld = log(s² p) − 2 log den
        let num_bar = gy / den;
        let den_bar = T::default() - gy * r / den - two * gl / den;
        // d(log s²p) = 2 ds/s + dp/p
        let mut s_bar = two * gl / s;
        let p_bar = gl / p;
        let mut a = CellAdjoint {
            y: gy,
            d1: p_bar * xi * xi,
            xi: p_bar * (two * d1 * xi - two * d0 * om),
            d0: p_bar * om * om,
            ..Default::default()
        };
        s_bar += p_bar * two * t;
        let mut t_bar = p_bar * two * s;
        // num = h q
        a.h = num_bar * q;
        let q_bar = num_bar * h;
        s_bar += q_bar * xi * xi;
        a.xi += q_bar * two * s * xi;
        a.d0 += q_bar * t;
        t_bar += q_bar * d0;
        // den = s + (d1 + d0 − 2s) t
        s_bar += den_bar * (one - two * t);
        a.d1 += den_bar * t;
        a.d0 += den_bar * t;
        t_bar += den_bar * (d1 + d0 - two * s);
        // t = ξ(1 − ξ)
        a.xi += t_bar * (one - two * xi);
        // s = h / w
        a.h += s_bar / w;
        a.w = T::default() - s_bar * s / w;
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn theta(p: usize, seed: u64) -> Vec<f64> {
        let mut s = seed;
        (0..p)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) as f64 / (1u64 << 31) as f64 - 0.5) * 3.0
            })
            .collect()
    }

    #[test]
    fn inverse_undoes_forward_and_negates_the_log_derivative() {
        for bins in [1, 2, 8] {
            let f = Rqs {
                bins,
                bound: 3.0,
                inverse: false,
            };
            let inv = Rqs { inverse: true, ..f };
            let th = theta(f.n_params(), bins as u64);
            for x in [-4.0, -2.9, -1.3, 0.0, 0.4, 2.99, 7.0] {
                let mut a = [0.0; 2];
                let mut b = [0.0; 2];
                f.apply(&[x], &th, &mut a);
                inv.apply(&[a[0]], &th, &mut b);
                assert!((b[0] - x).abs() < 1e-10, "bins {bins} x {x}: {b:?}");
                assert!((a[1] + b[1]).abs() < 1e-9, "bins {bins} x {x}: {a:?} {b:?}");
            }
        }
    }

    #[test]
    fn adjoint_matches_finite_differences() {
        for inverse in [false, true] {
            let f = Rqs {
                bins: 5,
                bound: 2.5,
                inverse,
            };
            let p = f.n_params();
            let th = theta(p, 7);
            let (gv, gl) = (0.7, -1.3);
            let loss = |x: f64, th: &[f64]| {
                let mut o = [0.0; 2];
                f.apply(&[x], th, &mut o);
                gv * o[0] + gl * o[1]
            };
            for x in [-3.0, -2.1, -0.77, 0.3, 1.9, 2.6] {
                let mut adj = vec![0.0; p + 1];
                f.adjoint(&[x], &th, &[gv, gl], &mut adj);
                let h = 1e-6;
                let fd = (loss(x + h, &th) - loss(x - h, &th)) / (2.0 * h);
                assert!(
                    (adj[0] - fd).abs() < 1e-6,
                    "{inverse} x {x}: {} vs {fd}",
                    adj[0]
                );
                for j in 0..p {
                    let mut tp = th.clone();
                    tp[j] += h;
                    let mut tm = th.clone();
                    tm[j] -= h;
                    let fd = (loss(x, &tp) - loss(x, &tm)) / (2.0 * h);
                    assert!(
                        (adj[1 + j] - fd).abs() < 1e-6,
                        "{inverse} x {x} θ{j}: {} vs {fd}",
                        adj[1 + j]
                    );
                }
            }
        }
    }
}
