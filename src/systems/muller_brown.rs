//! `muller-brown`: the Müller–Brown potential (Müller & Brown 1979) times `scale` (0.1):
//!
//! U(x, y) = scale · Σ_{i=1..4} A_i exp[a_i (x − x0_i)² + b_i (x − x0_i)(y − y0_i) + c_i (y − y0_i)²]
//!
//! with A = (−200, −100, −170, 15), a = (−1, −1, −6.5, 0.7), b = (0, 0, 11, 0.6),
//! c = (−10, −10, −6.5, 0.7), x0 = (1, 0, −0.5, −1), y0 = (0, 0.5, 1.5, 1).

use super::{named, Energy, ParamSpec, Params, SystemInfo};
use crate::error::Result;

const A: [f64; 4] = [-200.0, -100.0, -170.0, 15.0];
const AA: [f64; 4] = [-1.0, -1.0, -6.5, 0.7];
const BB: [f64; 4] = [0.0, 0.0, 11.0, 0.6];
const CC: [f64; 4] = [-10.0, -10.0, -6.5, 0.7];
const X0: [f64; 4] = [1.0, 0.0, -0.5, -1.0];
const Y0: [f64; 4] = [0.0, 0.5, 1.5, 1.0];

const SPECS: &[ParamSpec] = &[ParamSpec {
    name: "scale",
    default: 0.1,
    doc: "overall energy scale",
}];

pub(super) const INFO: SystemInfo = SystemInfo {
    name: "muller-brown",
    doc: "Müller–Brown potential times scale",
    params: SPECS,
};

/// The Müller–Brown surface.
#[derive(Clone, Debug)]
pub struct MullerBrown {
    /// Energy scale.
    pub scale: f64,
}

impl MullerBrown {
    pub(super) fn from_params(p: &Params) -> Result<MullerBrown> {
        let v = p.resolve(INFO.name, SPECS, &[])?;
        Ok(MullerBrown {
            scale: super::positive("scale", v[0])?,
        })
    }
}

impl Energy for MullerBrown {
    fn name(&self) -> &str {
        INFO.name
    }
    fn dim(&self) -> usize {
        2
    }
    fn params(&self) -> Vec<(String, f64)> {
        named(SPECS, &[self.scale])
    }
    fn energy(&self, x: &[f64]) -> f64 {
        let mut g = [0.0; 2];
        self.energy_grad(x, &mut g)
    }
    fn energy_grad(&self, x: &[f64], g: &mut [f64]) -> f64 {
        let (mut u, mut gx, mut gy) = (0.0, 0.0, 0.0);
        for i in 0..4 {
            let (dx, dy) = (x[0] - X0[i], x[1] - Y0[i]);
            let e = A[i] * (AA[i] * dx * dx + BB[i] * dx * dy + CC[i] * dy * dy).exp();
            u += e;
            gx += e * (2.0 * AA[i] * dx + BB[i] * dy);
            gy += e * (BB[i] * dx + 2.0 * CC[i] * dy);
        }
        g[0] = self.scale * gx;
        g[1] = self.scale * gy;
        self.scale * u
    }
    fn bounds(&self) -> Option<Vec<(f64, f64)>> {
        Some(vec![(-2.0, 1.5), (-1.0, 2.5)])
    }
}
