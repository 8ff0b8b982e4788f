//! `double-well-1d`: U(x) = a x⁴ − b x² + c x (defaults a = 0.25, b = 3, c = 1).
//!
//! Two wells near x = ±√(b/2a) tilted by c; the barrier at x ≈ 0 is ≈ b²/4a high.

use super::{named, positive, Energy, ParamSpec, Params, SystemInfo};
use crate::error::Result;

const SPECS: &[ParamSpec] = &[
    ParamSpec {
        name: "a",
        default: 0.25,
        doc: "quartic coefficient (> 0)",
    },
    ParamSpec {
        name: "b",
        default: 3.0,
        doc: "quadratic coefficient (barrier)",
    },
    ParamSpec {
        name: "c",
        default: 1.0,
        doc: "tilt",
    },
];

pub(super) const INFO: SystemInfo = SystemInfo {
    name: "double-well-1d",
    doc: "U = a x⁴ − b x² + c x",
    params: SPECS,
};

/// The tilted quartic double well on a line.
#[derive(Clone, Debug)]
pub struct DoubleWell1d {
    /// Quartic coefficient.
    pub a: f64,
    /// Quadratic coefficient.
    pub b: f64,
    /// Tilt.
    pub c: f64,
}

impl DoubleWell1d {
    pub(super) fn from_params(p: &Params) -> Result<DoubleWell1d> {
        let v = p.resolve(INFO.name, SPECS, &[])?;
        Ok(DoubleWell1d {
            a: positive("a", v[0])?,
            b: v[1],
            c: v[2],
        })
    }
}

impl Default for DoubleWell1d {
    fn default() -> Self {
        DoubleWell1d {
            a: 0.25,
            b: 3.0,
            c: 1.0,
        }
    }
}

impl Energy for DoubleWell1d {
    fn name(&self) -> &str {
        INFO.name
    }
    fn dim(&self) -> usize {
        1
    }
    fn params(&self) -> Vec<(String, f64)> {
        named(SPECS, &[self.a, self.b, self.c])
    }
    fn energy(&self, x: &[f64]) -> f64 {
        let x = x[0];
        self.a * x.powi(4) - self.b * x * x + self.c * x
    }
    fn energy_grad(&self, x: &[f64], g: &mut [f64]) -> f64 {
        let x0 = x[0];
        g[0] = 4.0 * self.a * x0.powi(3) - 2.0 * self.b * x0 + self.c;
        self.energy(x)
    }
    fn bounds(&self) -> Option<Vec<(f64, f64)>> {
        let r = 2.0 * (self.b.abs() / self.a).sqrt() + 3.0;
        Some(vec![(-r, r)])
    }
}
