//! Midpoint-rule quadrature on a box for 1-D and 2-D systems.
//!
//! The box starts from the system's [`Energy::bounds`] hint and grows (×1.5 per side, up to
//! 12 times) until the Boltzmann weight on its boundary cells is below 10⁻¹⁶ of the maximum at
//! every requested temperature. The integrals are then taken on an n- and a 2n-point grid per
//! axis; the 2n values are reported and |Q_2n − Q_n| is the error estimate. U is evaluated on
//! each grid once and reused for every temperature; weights are summed in log-sum-exp form.

use super::Reference;
use crate::error::{input_err, Error, Result};
use crate::systems::{check_temperature, Energy};

struct Grid {
    u: Vec<f64>,
    log_cell: f64,
    n: usize,
    d: usize,
    bounds: Vec<(f64, f64)>,
}

impl Grid {
    fn point(&self, idx: usize, x: &mut [f64]) {
        let mut r = idx;
        for k in (0..self.d).rev() {
            let (a, b) = self.bounds[k];
            let h = (b - a) / self.n as f64;
            x[k] = a + (r % self.n) as f64 * h + 0.5 * h;
            r /= self.n;
        }
    }
}

fn grid(e: &dyn Energy, bounds: &[(f64, f64)], n: usize) -> Result<Grid> {
    let d = bounds.len();
    let h: Vec<f64> = bounds.iter().map(|(a, b)| (b - a) / n as f64).collect();
    let total = n.pow(d as u32);
    let mut u = Vec::with_capacity(total);
    let mut x = vec![0.0; d];
    for idx in 0..total {
        let mut r = idx;
        for k in (0..d).rev() {
            x[k] = bounds[k].0 + (r % n) as f64 * h[k] + 0.5 * h[k];
            r /= n;
        }
        let v = e.energy(&x);
        if v.is_nan() {
            return Err(Error::Input(format!(
                "energy is NaN at {x:?} inside the quadrature box"
            )));
        }
        u.push(v);
    }
    Ok(Grid {
        u,
        log_cell: h.iter().map(|v| v.ln()).sum(),
        n,
        d,
        bounds: bounds.to_vec(),
    })
}

fn edge_fraction(g: &Grid, t: f64) -> f64 {
    let lw: Vec<f64> = g.u.iter().map(|u| -u / t).collect();
    let mx = lw.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let mut edge = f64::NEG_INFINITY;
    for (i, &l) in lw.iter().enumerate() {
        let mut r = i;
        let mut on_edge = false;
        for _ in 0..g.d {
            let c = r % g.n;
            on_edge |= c == 0 || c == g.n - 1;
            r /= g.n;
        }
        if on_edge {
            edge = edge.max(l);
        }
    }
    (edge - mx).exp()
}

fn integrate(g: &Grid, t: f64) -> (f64, f64, f64) {
    let lw: Vec<f64> = g.u.iter().map(|u| -u / t).collect();
    let mx = lw.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let (mut s0, mut s1) = (0.0, 0.0);
    for (&l, &u) in lw.iter().zip(&g.u) {
        if u.is_finite() {
            let w = (l - mx).exp();
            s0 += w;
            s1 += w * u;
        }
    }
    let mean = s1 / s0;
    let mut s2 = 0.0;
    for (&l, &u) in lw.iter().zip(&g.u) {
        if u.is_finite() {
            s2 += (l - mx).exp() * (u - mean).powi(2);
        }
    }
    let log_z = mx + s0.ln() + g.log_cell;
    (log_z, mean, s2 / s0 / (t * t))
}

/// Box and grids (coarse n, fine 2n per axis) for the requested temperatures.
fn grids(e: &dyn Energy, temps: &[f64]) -> Result<(Grid, Grid)> {
    let d = e.dim();
    if d == 0 || d > 2 {
        return input_err(format!(
            "quadrature needs a 1-D or 2-D system, {} has {d}",
            e.name()
        ));
    }
    for &t in temps {
        check_temperature(t)?;
    }
    let n = if d == 1 { 4000 } else { 320 };
    let mut bounds = e.bounds().unwrap_or_else(|| vec![(-10.0, 10.0); d]);
    let mut coarse = grid(e, &bounds, n)?;
    let mut grown = 0;
    while temps.iter().any(|&t| edge_fraction(&coarse, t) > 1e-16) {
        grown += 1;
        if grown > 12 {
            return Err(Error::Engine(format!(
                "{}: Boltzmann weight does not vanish on the quadrature box {bounds:?}",
                e.name()
            )));
        }
        bounds = bounds
            .iter()
            .map(|(a, b)| {
                let (c, h) = (0.5 * (a + b), 0.75 * (b - a));
                (c - h, c + h)
            })
            .collect();
        coarse = grid(e, &bounds, n)?;
    }
    let fine = grid(e, &bounds, 2 * n)?;
    Ok((coarse, fine))
}

fn expectation(g: &Grid, t: f64, f: &dyn Fn(&[f64]) -> f64) -> f64 {
    let mx = g.u.iter().map(|u| -u / t).fold(f64::NEG_INFINITY, f64::max);
    let mut x = vec![0.0; g.d];
    let (mut s0, mut s1) = (0.0, 0.0);
    for (i, &u) in g.u.iter().enumerate() {
        if u.is_finite() {
            let w = (-u / t - mx).exp();
            g.point(i, &mut x);
            s0 += w;
            s1 += w * f(&x);
        }
    }
    s1 / s0
}

/// Exact Boltzmann expectation ⟨f(x)⟩_T of a 1-D or 2-D system, with its error estimate
/// |Q_2n − Q_n|.
pub fn quadrature_expectation(
    e: &dyn Energy,
    t: f64,
    f: &dyn Fn(&[f64]) -> f64,
) -> Result<(f64, f64)> {
    Ok(quadrature_expectations(e, &[t], &[|x: &[f64], _| f(x)])?[0][0])
}

/// [`quadrature_expectation`] of each function f(x, T) in `fs` at each temperature T in
/// `temps`, on one box and pair of grids: `[f][t]` = (value, error estimate).
pub fn quadrature_expectations<F: Fn(&[f64], f64) -> f64>(
    e: &dyn Energy,
    temps: &[f64],
    fs: &[F],
) -> Result<Vec<Vec<(f64, f64)>>> {
    let (coarse, fine) = grids(e, temps)?;
    Ok(fs
        .iter()
        .map(|f| {
            (temps.iter())
                .map(|&t| {
                    let g = |x: &[f64]| f(x, t);
                    let (a, b) = (expectation(&coarse, t, &g), expectation(&fine, t, &g));
                    (b, (b - a).abs())
                })
                .collect()
        })
        .collect())
}

/// Exact ⟨U⟩, C_V, log Z, F, S by quadrature for a 1-D or 2-D system.
pub fn quadrature(e: &dyn Energy, temps: &[f64]) -> Result<Vec<Reference>> {
    let (coarse, fine) = grids(e, temps)?;
    Ok(temps
        .iter()
        .map(|&t| {
            let (z1, u1, c1) = integrate(&coarse, t);
            let (z2, u2, c2) = integrate(&fine, t);
            Reference::new(
                t,
                u2,
                c2,
                z2,
                [(u2 - u1).abs(), (c2 - c1).abs(), (z2 - z1).abs()],
            )
        })
        .collect())
}
