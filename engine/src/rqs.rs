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
//! W̄_j ← W̄_j + X̄_k·𝟙(j < k) (X is a cumulative sum), through the softmax
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

/// Build a lane array (the loop the compiler vectorises): `lanes!(|l| f(l))`. A macro, not a
/// function taking a closure: a closure the optimiser leaves out of line is compiled at the
/// baseline instruction set, outside the executor's per-level copies ([`super::simd`]).
macro_rules! lanes {
    (|$l:ident| $body:expr) => {{
        let mut a = [Default::default(); L];
        for ($l, v) in a.iter_mut().enumerate() {
            *v = $body;
        }
        a
    }};
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
    #[inline(always)]
    pub fn apply<T: Scalar>(&self, v: &[T], theta: &[T], out: &mut [T]) {
        self.apply_with::<T, false>(v, theta, out)
    }

    /// [`Rqs::apply`] with the exponentials' and logarithms' multiply-adds fused when `FMA`
    /// (only where the CPU has FMA).
    #[inline(always)]
    pub fn apply_with<T: Scalar, const FMA: bool>(&self, v: &[T], theta: &[T], out: &mut [T]) {
        let p = self.n_params();
        let mut w = Lanes::new(self.bins);
        for (c, (xs, o)) in v.chunks(L).zip(out.chunks_mut(2 * L)).enumerate() {
            w.load(xs, &theta[c * L * p..(c * L + xs.len()) * p], p);
            self.values::<T, FMA>(&mut w);
            for (l, o) in o.chunks_exact_mut(2).enumerate() {
                o[0] = w.y[l];
                o[1] = w.ld[l];
            }
        }
    }

    /// Adjoint: given the output adjoints `g[2i]` (value) and `g[2i + 1]` (log-derivative),
    /// write `out[i·(P+1)]` = ∂L/∂v_i and `out[i·(P+1) + 1 + j]` = ∂L/∂θ_ij.
    #[inline(always)]
    pub fn adjoint<T: Scalar>(&self, v: &[T], theta: &[T], g: &[T], out: &mut [T]) {
        self.adjoint_with::<T, false>(v, theta, g, out)
    }

    /// [`Rqs::adjoint`] with fused multiply-adds in its exponentials and logarithms when
    /// `FMA` (only where the CPU has FMA).
    #[inline(always)]
    pub fn adjoint_with<T: Scalar, const FMA: bool>(
        &self,
        v: &[T],
        theta: &[T],
        g: &[T],
        out: &mut [T],
    ) {
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
            self.values::<T, FMA>(&mut w);
            self.adjoints(&mut w);
            let gt = &w.gt[..p];
            for (l, o) in o.chunks_exact_mut(p + 1).enumerate() {
                o[0] = w.gx[l];
                // Zipped rather than indexed: no bounds check per parameter (the transpose
                // was 5 % of a d = 16 training step).
                for (t, row) in o[1..].iter_mut().zip(gt) {
                    *t = row[l];
                }
            }
        }
    }

    /// Values (and everything the adjoint needs) of the L coordinates in `w`.
    ///
    /// Rows are copied into local arrays before each lane loop: the compiler then knows they
    /// do not alias and vectorises the loop.
    #[inline(always)]
    fn values<T: Scalar, const FMA: bool>(&self, w: &mut Lanes<T>) {
        let k = self.bins;
        let (zero, one, two, four) = (T::default(), one::<T>(), c::<T>(2.0), c::<T>(4.0));
        let b = c::<T>(self.bound);
        let nb = zero - b;
        let x = w.x;
        w.inside = lanes!(|l| nb < x[l] && x[l] < b);
        let xc: V<T> = lanes!(|l| {
            if x[l] < nb {
                nb
            } else if x[l] > b {
                b
            } else {
                x[l]
            }
        });
        // Knots of both axes: softmax, sizes, lower knots.
        let scale = c::<T>(2.0 * self.bound * (1.0 - MIN_BIN * k as f64));
        let floor = c::<T>(2.0 * self.bound * MIN_BIN);
        for (axis, at) in [(0usize, 0usize), (1, k)] {
            let mut mx = w.th[at];
            for j in 1..k {
                let t = w.th[at + j];
                mx = lanes!(|l| if t[l] > mx[l] { t[l] } else { mx[l] });
            }
            let mut sum = [zero; L];
            for j in 0..k {
                let t = w.th[at + j];
                let e: V<T> = lanes!(|l| exp::<T, FMA>(t[l] - mx[l]));
                sum = lanes!(|l| sum[l] + e[l]);
                w.p[axis][j] = e;
            }
            let inv: V<T> = lanes!(|l| one / sum[l]);
            let mut acc = [nb; L];
            for j in 0..k {
                let e = w.p[axis][j];
                let p: V<T> = lanes!(|l| e[l] * inv[l]);
                let size: V<T> = lanes!(|l| floor + scale * p[l]);
                w.p[axis][j] = p;
                w.size[axis][j] = size;
                w.lo[axis][j] = acc;
                acc = lanes!(|l| acc[l] + size[l]);
            }
        }
        // The bin: knots of the located axis at or below the clamped input, minus one.
        let located = usize::from(self.inverse);
        let mut kf = [zero; L];
        for j in 1..k {
            let lo = w.lo[located][j];
            kf = lanes!(|l| kf[l] + if xc[l] >= lo[l] { one } else { zero });
        }
        // The cell, by selects over the bins (no per-lane indexing).
        let (mut cx, mut cw, mut cy, mut ch) = ([zero; L], [one; L], [zero; L], [one; L]);
        for j in 0..k {
            let jf = c::<T>(j as f64);
            let (x0, w0, y0, h0) = (w.lo[0][j], w.size[0][j], w.lo[1][j], w.size[1][j]);
            cx = lanes!(|l| if kf[l] == jf { x0[l] } else { cx[l] });
            cw = lanes!(|l| if kf[l] == jf { w0[l] } else { cw[l] });
            cy = lanes!(|l| if kf[l] == jf { y0[l] } else { cy[l] });
            ch = lanes!(|l| if kf[l] == jf { h0[l] } else { ch[l] });
        }
        // Raw parameters of D_k (θ_d,k−1) and D_{k+1} (θ_d,k): interior knots only.
        let (mut u0, mut u1) = ([zero; L], [zero; L]);
        for j in 0..k.saturating_sub(1) {
            let (jf, jf1) = (c::<T>(j as f64), c::<T>(j as f64 + 1.0));
            let t = w.th[2 * k + j];
            u0 = lanes!(|l| if kf[l] == jf1 { t[l] } else { u0[l] });
            u1 = lanes!(|l| if kf[l] == jf { t[l] } else { u1[l] });
        }
        let c0 = c::<T>(((1.0 - MIN_DERIVATIVE).exp() - 1.0).ln());
        let (md, last) = (c::<T>(MIN_DERIVATIVE), c::<T>(k as f64 - 1.0));
        let sp0: [(T, T); L] = lanes!(|l| softplus::<T, FMA>(u0[l] + c0));
        let sp1: [(T, T); L] = lanes!(|l| softplus::<T, FMA>(u1[l] + c0));
        let d0: V<T> = lanes!(|l| if kf[l] > zero { md + sp0[l].0 } else { one });
        let d1: V<T> = lanes!(|l| if kf[l] < last { md + sp1[l].0 } else { one });
        w.sig0 = lanes!(|l| if kf[l] > zero { sp0[l].1 } else { zero });
        w.sig1 = lanes!(|l| if kf[l] < last { sp1[l].1 } else { zero });
        // ξ: from the input's position in the bin, or the stable root of the quadratic.
        let s: V<T> = lanes!(|l| ch[l] / cw[l]);
        let delta: V<T> = lanes!(|l| d1[l] + d0[l] - two * s[l]);
        let raw_xi: V<T> = if self.inverse {
            lanes!(|l| {
                let dy = xc[l] - cy[l];
                let a = ch[l] * (s[l] - d0[l]) + dy * delta[l];
                let bq = ch[l] * d0[l] - dy * delta[l];
                let cq = zero - s[l] * dy;
                let disc = bq * bq - four * a * cq;
                let disc = if disc > zero { disc } else { zero };
                two * cq / (zero - bq - disc.sqrt())
            })
        } else {
            lanes!(|l| (xc[l] - cx[l]) / cw[l])
        };
        w.clamped = lanes!(|l| !(raw_xi[l] >= zero && raw_xi[l] <= one));
        let xi: V<T> = lanes!(|l| {
            if raw_xi[l] < zero {
                zero
            } else if raw_xi[l] > one {
                one
            } else {
                raw_xi[l]
            }
        });
        // The map and its log-derivative.
        let inside = w.inside;
        let mut y = [zero; L];
        let mut ld = [zero; L];
        for l in 0..L {
            let (om, xl) = (one - xi[l], xi[l]);
            let t = xl * om;
            let den = s[l] + delta[l] * t;
            let pp = d1[l] * xl * xl + two * s[l] * t + d0[l] * om * om;
            let lg = ln::<T, FMA>(s[l] * s[l] * pp) - two * ln::<T, FMA>(den);
            let val = if self.inverse {
                cx[l] + xl * cw[l]
            } else {
                cy[l] + ch[l] * (s[l] * xl * xl + d0[l] * t) / den
            };
            y[l] = if inside[l] { val } else { x[l] };
            let lg = if self.inverse { zero - lg } else { lg };
            ld[l] = if inside[l] { lg } else { zero };
        }
        (w.y, w.ld, w.xi, w.kf, w.d0, w.d1) = (y, ld, xi, kf, d0, d1);
        w.cell = [cx, cw, cy, ch];
    }

    /// Adjoints of the L coordinates in `w` (after [`Rqs::values`]): `w.gx`, `w.gt`.
    #[inline(always)]
    fn adjoints<T: Scalar>(&self, w: &mut Lanes<T>) {
        let k = self.bins;
        let zero = T::default();
        // Adjoints of the cell (X, W, Y, H, D_k, D_{k+1}) per lane.
        let (cw, ch, d0, d1, xi) = (w.cell[1], w.cell[3], w.d0, w.d1, w.xi);
        let (gy, gl, inside, clamped) = (w.gy, w.gl, w.inside, w.clamped);
        let per_lane: [(T, [T; 6]); L] = lanes!(|l| {
            let cell = CellVals {
                w: cw[l],
                h: ch[l],
                d0: d0[l],
                d1: d1[l],
                xi: xi[l],
            };
            let gv = gy[l];
            let (gx, adj) = if self.inverse {
                // Outputs x = X + ξW and −log g'(ξ); ξ solves Φ(ξ) = y (implicit function).
                let first = cell.adjoint(zero, zero - gl[l]);
                let xi_bar = first.xi + gv * cw[l];
                let lambda = xi_bar / (cw[l] * cell.slope());
                let second = cell.adjoint(zero - lambda, zero);
                let adj = [
                    gv,
                    gv * xi[l] + first.w + second.w,
                    zero - lambda,
                    first.h + second.h,
                    first.d0 + second.d0,
                    first.d1 + second.d1,
                ];
                (lambda, adj)
            } else {
                let r = cell.adjoint(gv, gl[l]);
                let free = !clamped[l];
                let gx = if free { r.xi / cw[l] } else { zero };
                let w_from_xi = if free { r.xi * xi[l] / cw[l] } else { zero };
                (gx, [zero - gx, r.w - w_from_xi, gv, r.h, r.d0, r.d1])
            };
            if inside[l] {
                (gx, adj)
            } else {
                (gv, [zero; 6])
            }
        });
        w.gx = lanes!(|l| per_lane[l].0);
        let mut a = [[zero; L]; 6];
        for (m, am) in a.iter_mut().enumerate() {
            *am = lanes!(|l| per_lane[l].1[m]);
        }
        // Through the knots: W̄_j = W̄_k [j = k] + X̄_k [j < k], the affine floor, the softmax.
        let kf = w.kf;
        let scale = c::<T>(2.0 * self.bound * (1.0 - MIN_BIN * k as f64));
        for (axis, at, xb, sb) in [(0usize, 0usize, 0usize, 1usize), (1, k, 2, 3)] {
            let (xbar, sbar) = (a[xb], a[sb]);
            let mut dot = [zero; L];
            for j in 0..k {
                let jf = c::<T>(j as f64);
                let p = w.p[axis][j];
                let pb: V<T> = lanes!(|l| {
                    scale
                        * if jf < kf[l] {
                            xbar[l]
                        } else if jf == kf[l] {
                            sbar[l]
                        } else {
                            zero
                        }
                });
                dot = lanes!(|l| dot[l] + p[l] * pb[l]);
                w.gt[at + j] = pb;
            }
            for j in 0..k {
                let (p, pb) = (w.p[axis][j], w.gt[at + j]);
                w.gt[at + j] = lanes!(|l| p[l] * (pb[l] - dot[l]));
            }
        }
        // Through softplus: θ̄_d,j gets D̄_k σ(·) when j = k − 1 and D̄_{k+1} σ(·) when j = k.
        let (s0, s1) = (w.sig0, w.sig1);
        for j in 0..k.saturating_sub(1) {
            let (jf, jf1) = (c::<T>(j as f64), c::<T>(j as f64 + 1.0));
            w.gt[2 * k + j] = lanes!(|l| {
                let from0 = if kf[l] == jf1 { a[4][l] * s0[l] } else { zero };
                let from1 = if kf[l] == jf { a[5][l] * s1[l] } else { zero };
                from0 + from1
            });
        }
    }
}

/// One value per lane.
type V<T> = [T; L];

/// Lanes processed together: the kernels' loops run over them and vectorise.
const L: usize = 16;

/// Working set of L coordinates (parameters transposed: θ_j for all lanes contiguous).
struct Lanes<T> {
    x: [T; L],
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
    #[inline(always)]
    fn new(bins: usize) -> Lanes<T> {
        let z = [T::default(); L];
        let rows = |n: usize| vec![z; n];
        let (k, p) = (bins, 3 * bins - 1);
        Lanes {
            x: z,
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
    #[inline(always)]
    fn load(&mut self, xs: &[T], theta: &[T], p: usize) {
        self.x = [T::default(); L];
        self.x[..xs.len()].copy_from_slice(xs);
        for row in &mut self.th[..p] {
            *row = [T::default(); L];
        }
        let th = &mut self.th[..p];
        for (l, t) in theta.chunks_exact(p).enumerate() {
            for (row, &v) in th.iter_mut().zip(t) {
                row[l] = v;
            }
        }
    }
}

/// Adjoints of ξ and of a cell's W, H, D_k, D_{k+1}.
struct CellBar<T> {
    xi: T,
    w: T,
    h: T,
    d0: T,
    d1: T,
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
    #[inline(always)]
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
    /// ξ a leaf (Ȳ is ȳ itself and X does not enter).
    #[inline(always)]
    fn adjoint(&self, gy: T, gl: T) -> CellBar<T> {
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
        CellBar {
            xi: b_xi,
            w: b_w,
            h: b_h,
            d0: b_d0,
            d1: b_d1,
        }
    }
}

/// softplus(u) = max(u, 0) + ln(1 + e^{−|u|}) and σ(u) from the same e^{−|u|}.
#[inline(always)]
fn softplus<T: Scalar, const FMA: bool>(u: T) -> (T, T) {
    let (zero, one) = (T::default(), one::<T>());
    let pos = u > zero;
    let e = exp::<T, FMA>(if pos { zero - u } else { u });
    let relu = if pos { u } else { zero };
    let sig = if pos { one / (one + e) } else { e / (one + e) };
    (relu + ln::<T, FMA>(one + e), sig)
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
fn ln<T: Scalar, const FMA: bool>(v: T) -> T {
    let l = if FMA { v.log2_fused() } else { v.log2() };
    l * T::from_f64(std::f64::consts::LN_2)
}

#[inline(always)]
fn exp<T: Scalar, const FMA: bool>(v: T) -> T {
    let a = v * T::from_f64(std::f64::consts::LOG2_E);
    if FMA {
        a.exp2_fused()
    } else {
        a.exp2()
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
