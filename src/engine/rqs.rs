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
//! Checked against finite differences here and against an independent f64 spline in the
//! engine tests.
//!
//! **Lanes.** Coordinates go through 16 at a time with their parameters transposed (θ_j of
//! all 16 contiguous), so that every formula is a loop over lanes that the compiler turns
//! into vector instructions; the bin's knots are picked by masked selects over the K bins,
//! never by per-lane indexing, and there is no branch on the data.

// The kernels are written lane by lane: `for l in 0..L` loops index several arrays in
// lockstep, which is what the compiler turns into vector instructions.
#![allow(clippy::needless_range_loop)]

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
        let mut w = Lanes::new(self.bins);
        for (c, (xs, o)) in v.chunks(L).zip(out.chunks_mut(2 * L)).enumerate() {
            w.load(xs, &theta[c * L * p..(c * L + xs.len()) * p], p);
            self.values(&mut w);
            for (l, o) in o.chunks_exact_mut(2).enumerate() {
                o[0] = w.y[l];
                o[1] = w.ld[l];
            }
        }
    }

    /// Adjoint: given the output adjoints `g[2i]` (value) and `g[2i + 1]` (log-derivative),
    /// write `out[i·(P+1)]` = ∂L/∂v[i] and `out[i·(P+1) + 1 + j]` = ∂L/∂θ_ij.
    pub fn adjoint<T: Scalar>(&self, v: &[T], theta: &[T], g: &[T], out: &mut [T]) {
        let p = self.n_params();
        let mut w = Lanes::new(self.bins);
        for (c, (xs, o)) in v.chunks(L).zip(out.chunks_mut((p + 1) * L)).enumerate() {
            w.load(xs, &theta[c * L * p..(c * L + xs.len()) * p], p);
            (w.gy, w.gl) = ([T::default(); L], [T::default(); L]);
            for (l, gi) in g[2 * c * L..2 * (c * L + xs.len())]
                .chunks_exact(2)
                .enumerate()
            {
                w.gy[l] = gi[0];
                w.gl[l] = gi[1];
            }
            self.values(&mut w);
            self.adjoints(&mut w);
            for (l, o) in o.chunks_exact_mut(p + 1).enumerate() {
                o[0] = w.gx[l];
                for (j, t) in o[1..].iter_mut().enumerate() {
                    *t = w.gt[j][l];
                }
            }
        }
    }

    /// Values (and everything the adjoint needs) of the L coordinates in `w`.
    fn values<T: Scalar>(&self, w: &mut Lanes<T>) {
        let k = self.bins;
        let (zero, one, two, four) = (T::default(), one::<T>(), c::<T>(2.0), c::<T>(4.0));
        let b = c::<T>(self.bound);
        let nb = zero - b;
        for l in 0..L {
            let x = w.x[l];
            w.inside[l] = nb < x && x < b;
            w.xc[l] = if x < nb {
                nb
            } else if x > b {
                b
            } else {
                x
            };
        }
        // Knots of both axes: softmax (a pure map, vectorised over lanes), sizes, positions.
        for (axis, at) in [(0usize, 0usize), (1, k)] {
            let mut mx = w.th[at];
            for j in 1..k {
                for l in 0..L {
                    let t = w.th[at + j][l];
                    mx[l] = if t > mx[l] { t } else { mx[l] };
                }
            }
            let mut sum = [zero; L];
            for j in 0..k {
                for l in 0..L {
                    let e = exp(w.th[at + j][l] - mx[l]);
                    w.p[axis][j][l] = e;
                    sum[l] += e;
                }
            }
            let scale = c::<T>(2.0 * self.bound * (1.0 - MIN_BIN * k as f64));
            let floor = c::<T>(2.0 * self.bound * MIN_BIN);
            let mut acc = [nb; L];
            for j in 0..k {
                for l in 0..L {
                    let p = w.p[axis][j][l] / sum[l];
                    w.p[axis][j][l] = p;
                    w.size[axis][j][l] = floor + scale * p;
                    w.lo[axis][j][l] = acc[l];
                    acc[l] += w.size[axis][j][l];
                }
            }
        }
        // The bin: knots of the located axis at or below the clamped input, minus one.
        let located = usize::from(self.inverse);
        let mut kf = [zero; L];
        for j in 1..k {
            for l in 0..L {
                kf[l] += if w.xc[l] >= w.lo[located][j][l] {
                    one
                } else {
                    zero
                };
            }
        }
        w.kf = kf;
        // The cell, by selects over the bins (no per-lane indexing).
        let (mut cx, mut cw, mut cy, mut ch) = ([zero; L], [one; L], [zero; L], [one; L]);
        for j in 0..k {
            let jf = c::<T>(j as f64);
            for l in 0..L {
                let s = kf[l] == jf;
                cx[l] = if s { w.lo[0][j][l] } else { cx[l] };
                cw[l] = if s { w.size[0][j][l] } else { cw[l] };
                cy[l] = if s { w.lo[1][j][l] } else { cy[l] };
                ch[l] = if s { w.size[1][j][l] } else { ch[l] };
            }
        }
        // Raw parameters of D_k (θ_d,k−1) and D_{k+1} (θ_d,k): interior knots only.
        let (mut u0, mut u1) = ([zero; L], [zero; L]);
        for j in 0..k.saturating_sub(1) {
            let (jf, jf1) = (c::<T>(j as f64), c::<T>(j as f64 + 1.0));
            for l in 0..L {
                let t = w.th[2 * k + j][l];
                u0[l] = if kf[l] == jf1 { t } else { u0[l] };
                u1[l] = if kf[l] == jf { t } else { u1[l] };
            }
        }
        let c0 = c::<T>(((1.0 - MIN_DERIVATIVE).exp() - 1.0).ln());
        let (md, last) = (c::<T>(MIN_DERIVATIVE), c::<T>(k as f64 - 1.0));
        for l in 0..L {
            let (d0, s0) = softplus(u0[l] + c0);
            let (d1, s1) = softplus(u1[l] + c0);
            let (has0, has1) = (kf[l] > zero, kf[l] < last);
            w.d0[l] = if has0 { md + d0 } else { one };
            w.d1[l] = if has1 { md + d1 } else { one };
            w.sig0[l] = if has0 { s0 } else { zero };
            w.sig1[l] = if has1 { s1 } else { zero };
        }
        // The map.
        for l in 0..L {
            let (d0, d1, h, wd) = (w.d0[l], w.d1[l], ch[l], cw[l]);
            let s = h / wd;
            let delta = d1 + d0 - two * s;
            let xi = if self.inverse {
                // The stable root of the quadratic in ξ.
                let dy = w.xc[l] - cy[l];
                let a = h * (s - d0) + dy * delta;
                let bq = h * d0 - dy * delta;
                let cq = zero - s * dy;
                let disc = bq * bq - four * a * cq;
                let disc = if disc > zero { disc } else { zero };
                two * cq / (zero - bq - disc.sqrt())
            } else {
                (w.xc[l] - cx[l]) / wd
            };
            let clamped = xi < zero || xi > one || xi.is_nan();
            let xi = if xi < zero {
                zero
            } else if xi > one {
                one
            } else {
                xi
            };
            let om = one - xi;
            let t = xi * om;
            let den = s + delta * t;
            let pp = d1 * xi * xi + two * s * t + d0 * om * om;
            let ld = ln(s * s * pp) - two * ln(den);
            let val = if self.inverse {
                cx[l] + xi * wd
            } else {
                cy[l] + h * (s * xi * xi + d0 * t) / den
            };
            let inside = w.inside[l];
            w.y[l] = if inside { val } else { w.x[l] };
            let ld = if self.inverse { zero - ld } else { ld };
            w.ld[l] = if inside { ld } else { zero };
            w.xi[l] = xi;
            w.clamped[l] = clamped;
            w.cell[0][l] = cx[l];
            w.cell[1][l] = cw[l];
            w.cell[2][l] = cy[l];
            w.cell[3][l] = ch[l];
        }
    }

    /// Adjoints of the L coordinates in `w` (after [`Rqs::values`]): `w.gx`, `w.gt`.
    fn adjoints<T: Scalar>(&self, w: &mut Lanes<T>) {
        let k = self.bins;
        let zero = T::default();
        // Adjoints of the cell (X, W, Y, H, D_k, D_{k+1}) per lane.
        let mut a = [[zero; L]; 6];
        for l in 0..L {
            let (cw, ch) = (w.cell[1][l], w.cell[3][l]);
            let (d0, d1, xi) = (w.d0[l], w.d1[l], w.xi[l]);
            let (gv, gl) = (w.gy[l], w.gl[l]);
            let cell = CellVals {
                w: cw,
                h: ch,
                d0,
                d1,
                xi,
            };
            let (gx, adj) = if self.inverse {
                // Outputs x = X + ξW and −log g'(ξ); ξ solves Φ(ξ) = y (implicit function).
                let first = cell.adjoint(zero, zero - gl);
                let xi_bar = first[0] + gv * cw;
                let lambda = xi_bar / (cw * cell.slope());
                let second = cell.adjoint(zero - lambda, zero);
                let mut adj = [zero; 6];
                adj[0] = gv;
                adj[1] = gv * xi + first[2] + second[2];
                adj[2] = zero - lambda;
                for m in 3..6 {
                    adj[m] = first[m] + second[m];
                }
                (lambda, adj)
            } else {
                let r = cell.adjoint(gv, gl);
                let (xi_bar, free) = (r[0], !w.clamped[l]);
                let gx = if free { xi_bar / cw } else { zero };
                let mut adj = [zero; 6];
                adj[0] = zero - gx;
                adj[1] = r[2] - if free { xi_bar * xi / cw } else { zero };
                adj[2] = gv;
                adj[3] = r[3];
                adj[4] = r[4];
                adj[5] = r[5];
                (gx, adj)
            };
            let inside = w.inside[l];
            w.gx[l] = if inside { gx } else { gv };
            for m in 0..6 {
                a[m][l] = if inside { adj[m] } else { zero };
            }
        }
        // Through the knots: W̄_j = W̄_k [j = k] + X̄_k [j < k], the affine floor, the softmax.
        let kf = w.kf;
        for (axis, at, xb, sb) in [(0usize, 0usize, 0usize, 1usize), (1, k, 2, 3)] {
            let scale = c::<T>(2.0 * self.bound * (1.0 - MIN_BIN * k as f64));
            let mut dot = [zero; L];
            for j in 0..k {
                let jf = c::<T>(j as f64);
                for l in 0..L {
                    let s_bar = if jf < kf[l] {
                        a[xb][l]
                    } else if jf == kf[l] {
                        a[sb][l]
                    } else {
                        zero
                    };
                    let pb = scale * s_bar;
                    w.gt[at + j][l] = pb;
                    dot[l] += w.p[axis][j][l] * pb;
                }
            }
            for j in 0..k {
                for l in 0..L {
                    w.gt[at + j][l] = w.p[axis][j][l] * (w.gt[at + j][l] - dot[l]);
                }
            }
        }
        // Through softplus: θ̄_d,j gets D̄_k σ(·) when j = k − 1 and D̄_{k+1} σ(·) when j = k.
        for j in 0..k.saturating_sub(1) {
            let (jf, jf1) = (c::<T>(j as f64), c::<T>(j as f64 + 1.0));
            for l in 0..L {
                let from0 = if kf[l] == jf1 {
                    a[4][l] * w.sig0[l]
                } else {
                    zero
                };
                let from1 = if kf[l] == jf {
                    a[5][l] * w.sig1[l]
                } else {
                    zero
                };
                w.gt[2 * k + j][l] = from0 + from1;
            }
        }
    }
}

/// Lanes processed together: the kernels' loops run over them and vectorise.
const L: usize = 16;

/// Working set of L coordinates (parameters transposed: θ_j for all lanes contiguous).
struct Lanes<T> {
    x: [T; L],
    xc: [T; L],
    inside: [bool; L],
    th: Vec<[T; L]>,
    p: [Vec<[T; L]>; 2],
    size: [Vec<[T; L]>; 2],
    lo: [Vec<[T; L]>; 2],
    kf: [T; L],
    /// X_k, W_k, Y_k, H_k
    cell: [[T; L]; 4],
    d0: [T; L],
    d1: [T; L],
    sig0: [T; L],
    sig1: [T; L],
    xi: [T; L],
    clamped: [bool; L],
    y: [T; L],
    ld: [T; L],
    gy: [T; L],
    gl: [T; L],
    gx: [T; L],
    gt: Vec<[T; L]>,
}

impl<T: Scalar> Lanes<T> {
    fn new(bins: usize) -> Lanes<T> {
        let z = [T::default(); L];
        let rows = |n: usize| vec![z; n];
        let (k, p) = (bins, 3 * bins - 1);
        Lanes {
            x: z,
            xc: z,
            inside: [false; L],
            th: rows(p),
            p: [rows(k), rows(k)],
            size: [rows(k), rows(k)],
            lo: [rows(k), rows(k)],
            kf: z,
            cell: [z; 4],
            d0: z,
            d1: z,
            sig0: z,
            sig1: z,
            xi: z,
            clamped: [false; L],
            y: z,
            ld: z,
            gy: z,
            gl: z,
            gx: z,
            gt: rows(p),
        }
    }

    /// Coordinates `xs` (up to L; missing lanes get 0 and unit-free parameters) and their
    /// parameters, transposed.
    fn load(&mut self, xs: &[T], theta: &[T], p: usize) {
        self.x = [T::default(); L];
        self.x[..xs.len()].copy_from_slice(xs);
        for row in &mut self.th[..p] {
            *row = [T::default(); L];
        }
        for (l, t) in theta.chunks_exact(p).enumerate() {
            for (j, &v) in t.iter().enumerate() {
                self.th[j][l] = v;
            }
        }
    }
}

/// A cell's values at ξ (X and Y do not enter the derivatives).
struct CellVals<T> {
    w: T,
    h: T,
    d0: T,
    d1: T,
    xi: T,
}

impl<T: Scalar> CellVals<T> {
    /// g'(x) at ξ.
    fn slope(&self) -> T {
        let (one, two) = (one::<T>(), c::<T>(2.0));
        let (d0, d1, xi) = (self.d0, self.d1, self.xi);
        let s = self.h / self.w;
        let om = one - xi;
        let t = xi * om;
        let den = s + (d1 + d0 - two * s) * t;
        s * s * (d1 * xi * xi + two * s * t + d0 * om * om) / (den * den)
    }

    /// Reverse mode through y = Y + H (sξ² + D_k t)/den and ld = log(s² p) − 2 log den with
    /// ξ a leaf: [ξ̄, X̄ (0), W̄, Ȳ (= ȳ, not returned here), D̄_k, D̄_{k+1}] with H̄ in slot 3.
    fn adjoint(&self, gy: T, gl: T) -> [T; 6] {
        let (zero, one, two) = (T::default(), one::<T>(), c::<T>(2.0));
        let (d0, d1, h, w, xi) = (self.d0, self.d1, self.h, self.w, self.xi);
        let s = h / w;
        let om = one - xi;
        let t = xi * om;
        let den = s + (d1 + d0 - two * s) * t;
        let q = s * xi * xi + d0 * t;
        let r = h * q / den;
        let p = d1 * xi * xi + two * s * t + d0 * om * om;
        let num_bar = gy / den;
        let den_bar = zero - gy * r / den - two * gl / den;
        let mut s_bar = two * gl / s;
        let p_bar = gl / p;
        let mut b_d1 = p_bar * xi * xi;
        let mut b_xi = p_bar * (two * d1 * xi - two * d0 * om);
        let mut b_d0 = p_bar * om * om;
        s_bar += p_bar * two * t;
        let mut t_bar = p_bar * two * s;
        let mut b_h = num_bar * q;
        let q_bar = num_bar * h;
        s_bar += q_bar * xi * xi;
        b_xi += q_bar * two * s * xi;
        b_d0 += q_bar * t;
        t_bar += q_bar * d0;
        s_bar += den_bar * (one - two * t);
        b_d1 += den_bar * t;
        b_d0 += den_bar * t;
        t_bar += den_bar * (d1 + d0 - two * s);
        b_xi += t_bar * (one - two * xi);
        b_h += s_bar / w;
        let b_w = zero - s_bar * s / w;
        [b_xi, zero, b_w, b_h, b_d0, b_d1]
    }
}

/// softplus(u) = max(u, 0) + ln(1 + e^{−|u|}) and σ(u) from the same e^{−|u|}.
#[inline(always)]
fn softplus<T: Scalar>(u: T) -> (T, T) {
    let (zero, one) = (T::default(), one::<T>());
    let pos = u > zero;
    let e = exp(if pos { zero - u } else { u });
    let relu = if pos { u } else { zero };
    let sig = if pos { one / (one + e) } else { e / (one + e) };
    (relu + ln(one + e), sig)
}

#[inline(always)]
fn c<T: Scalar>(v: f64) -> T {
    T::from_f64(v)
}

#[inline(always)]
fn one<T: Scalar>() -> T {
    T::from_f64(1.0)
}

#[inline(always)]
fn ln<T: Scalar>(v: T) -> T {
    v.log2() * T::from_f64(std::f64::consts::LN_2)
}

#[inline(always)]
fn exp<T: Scalar>(v: T) -> T {
    (v * T::from_f64(std::f64::consts::LOG2_E)).exp2()
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
