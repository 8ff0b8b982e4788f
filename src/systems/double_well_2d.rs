//! `double-well-2d`: U(x, y) = a x⁴ − b x² + c x + ½ k y² (defaults a = 0.25, b = 3, c = 1,
//! k = 1): the 1-D tilted double well in x times a harmonic degree of freedom in y.

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
    ParamSpec {
        name: "k",
        default: 1.0,
        doc: "spring constant in y (> 0)",
    },
];

pub(super) const INFO: SystemInfo = SystemInfo {
    name: "double-well-2d",
    doc: "U = a x⁴ − b x² + c x + ½ k y²",
    params: SPECS,
};

/// The tilted double well in x with a harmonic y.
#[derive(Clone, Debug)]
pub struct DoubleWell2d {
    /// Quartic coefficient.
    pub a: f64,
    /// Quadratic coefficient.
    pub b: f64,
    /// Tilt.
    pub c: f64,
    /// Spring constant in y.
    pub k: f64,
}

impl DoubleWell2d {
    pub(super) fn from_params(p: &Params) -> Result<DoubleWell2d> {
        let v = p.resolve(INFO.name, SPECS, &[])?;
        Ok(DoubleWell2d {
            a: positive("a", v[0])?,
            b: v[1],
            c: v[2],
            k: positive("k", v[3])?,
        })
    }
}

impl Default for DoubleWell2d {
    fn default() -> Self {
        DoubleWell2d {
            a: 0.25,
            b: 3.0,
            c: 1.0,
            k: 1.0,
        }
    }
}

impl Energy for DoubleWell2d {
    fn name(&self) -> &str {
        INFO.name
    }
    fn dim(&self) -> usize {
        2
    }
    fn params(&self) -> Vec<(String, f64)> {
        named(SPECS, &[self.a, self.b, self.c, self.k])
    }
    fn energy(&self, x: &[f64]) -> f64 {
        let (x0, y) = (x[0], x[1]);
        self.a * x0.powi(4) - self.b * x0 * x0 + self.c * x0 + 0.5 * self.k * y * y
    }
    fn energy_grad(&self, x: &[f64], g: &mut [f64]) -> f64 {
        let (x0, y) = (x[0], x[1]);
        g[0] = 4.0 * self.a * x0.powi(3) - 2.0 * self.b * x0 + self.c;
        g[1] = self.k * y;
        self.energy(x)
    }
    fn bounds(&self) -> Option<Vec<(f64, f64)>> {
        let r = 2.0 * (self.b.abs() / self.a).sqrt() + 3.0;
        let ry = 8.0 / self.k.sqrt();
        Some(vec![(-r, r), (-ry, ry)])
    }
}
