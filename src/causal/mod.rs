//! Causal flows: an autoregressive flow over variables in a causal order (MATH.md §8).
//!
//! Variable j has parents pa(j) (all earlier in the order) and the mechanism
//!
//! ```text
//! x_j = μ_j(x_pa(j)) + σ_j(x_pa(j)) · z_j,   z_j ~ N(0, 1),   (μ_j, log σ_j) = MLP_j(x_pa(j))
//! log q(x) = Σ_j [ log N(z_j; 0, 1) − log σ_j(x_pa(j)) ]
//! ```
//!
//! trained by maximum likelihood on observational data (the inverse x → z needs no
//! sequential pass). Then:
//! * **observational sampling**: draw z, compute x_1, x_2, … in order;
//! * **intervention** do(x_k = a): replace x_k's mechanism by the constant a, push the
//!   descendants through the learned mechanisms;
//! * **counterfactual** for an observed unit: abduct z_j = (x_j − μ_j)/σ_j, intervene, recompute
//!   the descendants with the same z;
//! * **conditional** E[x_t | x_k = a] through the learned mechanisms: sample the variables
//!   before k, weight each draw by q(x_k = a | its parents), then average the downstream mean
//!   (self-normalised, delta-method error) — exact for the learned model, no kernel smoothing.
//!
//! The built-in SCM is confounded and linear-Gaussian: W = ε_W, X = a W + ε_X,
//! Y = b X + c W + ε_Y, with closed forms E[Y | do(X = x)] = b x,
//! E[Y | X = x] = (b + c a σ_W²/(a² σ_W² + σ_X²)) x, and the counterfactual
//! y' = y + b (x' − x) for a unit (w, x, y) under do(X = x').

pub mod experiment;

pub use experiment::{read_csv, run_causal, CausalConfig, CausalReport, Data};

use ndarray::{Array2, ArrayView2};
use rand::Rng;
use rand_distr::StandardNormal;
use serde::Serialize;

use crate::engine::{Adam, Dim, GraphBuilder, Program};
use crate::error::{input_err, Error, Result};
use crate::estimators::{Estimate, Weights};
use crate::flows::params::{Declared, Scope};
use crate::flows::{Activation, Mlp};
use crate::systems::{ParamSpec, Params};
use crate::train::losses::minibatch_steps;

/// A DAG over named variables, in causal order.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Dag {
    /// Variable names in causal order.
    pub names: Vec<String>,
    /// Parents of each variable (indices of earlier variables).
    pub parents: Vec<Vec<usize>>,
}

impl Dag {
    /// Parse `"W; X <- W; Y <- W, X"` (variables in causal order, parents after `<-`).
    pub fn parse(s: &str) -> Result<Dag> {
        let mut names: Vec<String> = Vec::new();
        let mut parents = Vec::new();
        for item in s.split(';').map(str::trim).filter(|i| !i.is_empty()) {
            let (name, pa) = match item.split_once("<-") {
                Some((n, p)) => (
                    n.trim(),
                    p.split(',')
                        .map(str::trim)
                        .filter(|p| !p.is_empty())
                        .collect::<Vec<_>>(),
                ),
                None => (item, vec![]),
            };
            if name.is_empty() || names.iter().any(|n| n == name) {
                return input_err(format!(
                    "variable {name:?} is empty or declared twice in the DAG"
                ));
            }
            let idx = pa
                .iter()
                .map(|p| {
                    names.iter().position(|n| n == p).ok_or_else(|| {
                        Error::Input(format!(
                            "parent {p:?} of {name:?} must be declared before it (causal order)"
                        ))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            names.push(name.to_string());
            parents.push(idx);
        }
        if names.is_empty() {
            return input_err("empty DAG");
        }
        Ok(Dag { names, parents })
    }

    /// Index of a variable.
    pub fn index(&self, name: &str) -> Result<usize> {
        self.names
            .iter()
            .position(|n| n == name)
            .ok_or_else(|| Error::Input(format!("no variable {name:?}")))
    }
}

/// An autoregressive affine flow over a DAG.
#[derive(Clone, Debug)]
pub struct CausalFlow {
    /// The graph.
    pub dag: Dag,
    /// One conditioner per variable: parents → (μ, log σ).
    pub mechanisms: Vec<Mlp>,
}

impl CausalFlow {
    /// Mechanisms with `hidden` units (one hidden layer), identity at start.
    pub fn new(dag: Dag, hidden: usize, seed: u64) -> CausalFlow {
        let mechanisms = dag
            .parents
            .iter()
            .enumerate()
            .map(|(j, pa)| {
                Mlp::new(
                    pa.len(),
                    hidden,
                    1,
                    2,
                    Activation::Tanh,
                    crate::rng::derive(seed, "causal/mechanism", j as u64),
                )
            })
            .collect();
        CausalFlow { dag, mechanisms }
    }

    fn n(&self) -> usize {
        self.dag.names.len()
    }

    /// Fit by maximum likelihood on rows of `x` (columns in causal order); returns the final
    /// mean negative log-likelihood.
    pub fn fit(
        &mut self,
        x: ArrayView2<f64>,
        steps: usize,
        batch: usize,
        lr: f64,
        seed: u64,
    ) -> Result<f64> {
        crate::systems::check_batch(self.n(), &x)?;
        let g = GraphBuilder::new();
        let loss = {
            let declared = Declared::default();
            let s = Scope::root(&g, &declared, true);
            let xv = g.batch_input("x", &[self.n()]);
            let mut nll = None;
            for (j, m) in self.mechanisms.iter().enumerate() {
                let (mu, log_sigma) = mechanism(&s, m, j, &self.dag.parents[j], xv);
                let z = (xv.slice(1, j, j + 1).sum(1) - mu) * log_sigma.neg().exp();
                let term = z.square().mul_scalar(0.5) + log_sigma;
                nll = Some(nll.map_or(term, |a| a + term));
            }
            nll.unwrap()
                .mean(0)
                .add_scalar(0.5 * self.n() as f64 * (2.0 * std::f64::consts::PI).ln())
                .output("loss")
        };
        let mut prog: Program<f32> = Program::compile(g, &[], Some(loss))?.on_selected_device()?;
        let mut opt = Adam::new(lr).with_clip(10.0);
        let last = minibatch_steps(&mut prog, x, &[], steps, batch, &mut opt, seed)?;
        for (j, m) in self.mechanisms.iter_mut().enumerate() {
            for t in &mut m.params.tensors {
                t.values = prog.param(&format!("mech{j}.{}", t.name))?;
            }
        }
        Ok(last)
    }

    /// (μ_j, σ_j) for each row of parent values `pa` (`rows × |pa(j)|`).
    fn mechanism_values(&self, j: usize, pa: &Array2<f64>) -> Result<(Vec<f64>, Vec<f64>)> {
        let g = GraphBuilder::new();
        let k = self.dag.parents[j].len();
        let outs = {
            let declared = Declared::default();
            let s = Scope::root(&g, &declared, false);
            let rows = g.batch_input("pa", &[k.max(1)]);
            let m = &self.mechanisms[j];
            let out = m.apply(&s.child(&format!("mech{j}")), (k > 0).then_some(rows));
            let out = if k == 0 {
                out + rows.mul_scalar(0.0)
            } else {
                out
            };
            [
                out.slice(1, 0, 1).output("mu"),
                out.slice(1, 1, 2).exp().output("sigma"),
            ]
        };
        let mut p: Program<f64> = Program::compile(g, &outs, None)?;
        let data: Vec<f64> = if k == 0 {
            vec![0.0; pa.nrows()]
        } else {
            pa.iter().copied().collect()
        };
        let mut o = p.run(&[("pa", &data)])?;
        Ok((o.take("mu")?, o.take("sigma")?))
    }

    fn parents_of(&self, j: usize, x: &Array2<f64>) -> Array2<f64> {
        let pa = &self.dag.parents[j];
        Array2::from_shape_fn((x.nrows(), pa.len()), |(r, c)| x[[r, pa[c]]])
    }

    /// Push noise `z` (rows × variables) through the mechanisms in causal order, with the
    /// variables in `fixed` set to constants (interventions).
    pub fn push(&self, z: &Array2<f64>, fixed: &[(usize, f64)]) -> Result<Array2<f64>> {
        let mut x = Array2::zeros(z.dim());
        for j in 0..self.n() {
            if let Some(&(_, a)) = fixed.iter().find(|(k, _)| *k == j) {
                x.column_mut(j).fill(a);
                continue;
            }
            let (mu, sigma) = self.mechanism_values(j, &self.parents_of(j, &x))?;
            for r in 0..x.nrows() {
                x[[r, j]] = mu[r] + sigma[r] * z[[r, j]];
            }
        }
        Ok(x)
    }

    /// Observational samples (`n` rows), or interventional ones with `fixed`.
    pub fn sample(
        &self,
        n: usize,
        fixed: &[(usize, f64)],
        rng: &mut impl Rng,
    ) -> Result<Array2<f64>> {
        let z = Array2::from_shape_fn((n, self.n()), |_| rng.sample(StandardNormal));
        self.push(&z, fixed)
    }

    /// Abduct the noise of observed units (rows in causal order).
    pub fn abduct(&self, x: &Array2<f64>) -> Result<Array2<f64>> {
        let mut z = Array2::zeros(x.dim());
        for j in 0..self.n() {
            let (mu, sigma) = self.mechanism_values(j, &self.parents_of(j, x))?;
            for r in 0..x.nrows() {
                z[[r, j]] = (x[[r, j]] - mu[r]) / sigma[r];
            }
        }
        Ok(z)
    }

    /// Counterfactuals: what each observed unit would have been under `fixed`.
    pub fn counterfactual(&self, x: &Array2<f64>, fixed: &[(usize, f64)]) -> Result<Array2<f64>> {
        self.push(&self.abduct(x)?, fixed)
    }

    /// E[x_target | do(x_k = a)] with its Monte Carlo standard error.
    pub fn interventional_mean(
        &self,
        target: usize,
        k: usize,
        a: f64,
        n: usize,
        seed: u64,
    ) -> Result<Estimate> {
        let mut rng = crate::rng::seeded(seed);
        let x = self.sample(n, &[(k, a)], &mut rng)?;
        Weights::uniform(n)?.mean(&x.column(target).to_vec())
    }

    /// E[x_target | x_k = a] under the learned model: draw the variables before k, weight by
    /// q(x_k = a | parents), complete the rest with x_k = a, average (self-normalised).
    pub fn conditional_mean(
        &self,
        target: usize,
        k: usize,
        a: f64,
        n: usize,
        seed: u64,
    ) -> Result<Estimate> {
        let mut rng = crate::rng::seeded(seed);
        let x = self.sample(n, &[(k, a)], &mut rng)?;
        let (mu, sigma) = self.mechanism_values(k, &self.parents_of(k, &x))?;
        let log_w: Vec<f64> = (0..n)
            .map(|r| -0.5 * ((a - mu[r]) / sigma[r]).powi(2) - sigma[r].ln())
            .collect();
        Weights::from_log(&log_w)?.mean(&x.column(target).to_vec())
    }
}

fn mechanism<'g>(
    s: &Scope<'g>,
    m: &Mlp,
    j: usize,
    parents: &[usize],
    x: crate::engine::Var<'g>,
) -> (crate::engine::Var<'g>, crate::engine::Var<'g>) {
    let input = parents
        .iter()
        .map(|&p| x.slice(1, p, p + 1))
        .reduce(|a, b| a.concat(b, 1));
    let out = m.apply(&s.child(&format!("mech{j}")), input);
    let out = if input.is_none() {
        out + x
            .slice(1, 0, 1)
            .mul_scalar(0.0)
            .sum(1)
            .expand(1, Dim::Fixed(2))
    } else {
        out
    };
    (
        out.slice(1, 0, 1).sum(1),
        out.slice(1, 1, 2).sum(1).clamp(-8.0, 8.0),
    )
}

/// The confounded linear-Gaussian SCM W → X, W → Y, X → Y.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct LinearScm {
    /// X = a W + ε_X
    pub a: f64,
    /// Y = b X + c W + ε_Y
    pub b: f64,
    /// Confounding strength of W on Y.
    pub c: f64,
    /// sd of W.
    pub sigma_w: f64,
    /// sd of ε_X.
    pub sigma_x: f64,
    /// sd of ε_Y.
    pub sigma_y: f64,
}

/// The SCM's parameters for `key=value` input, with their defaults (the [`Default`]).
pub const LINEAR_SCM_PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "a",
        default: 1.0,
        doc: "W → X",
    },
    ParamSpec {
        name: "b",
        default: 0.5,
        doc: "X → Y",
    },
    ParamSpec {
        name: "c",
        default: 1.0,
        doc: "W → Y",
    },
    ParamSpec {
        name: "sigma_w",
        default: 1.0,
        doc: "sd of W",
    },
    ParamSpec {
        name: "sigma_x",
        default: 1.0,
        doc: "sd of X's noise",
    },
    ParamSpec {
        name: "sigma_y",
        default: 0.5,
        doc: "sd of Y's noise",
    },
];

impl Default for LinearScm {
    fn default() -> Self {
        let v: Vec<f64> = LINEAR_SCM_PARAMS.iter().map(|p| p.default).collect();
        LinearScm::from_values(&v)
    }
}

impl LinearScm {
    fn from_values(v: &[f64]) -> LinearScm {
        LinearScm {
            a: v[0],
            b: v[1],
            c: v[2],
            sigma_w: v[3],
            sigma_x: v[4],
            sigma_y: v[5],
        }
    }
    /// From `key=value` parameters ([`LINEAR_SCM_PARAMS`]); noise sds must be positive.
    pub fn from_params(p: &Params) -> Result<LinearScm> {
        let v = p.resolve("causal", LINEAR_SCM_PARAMS, &[])?;
        if v[3..].iter().any(|s| *s <= 0.0) {
            return input_err("noise standard deviations must be > 0");
        }
        Ok(LinearScm::from_values(&v))
    }
    /// Its DAG, variables (W, X, Y).
    pub fn dag() -> Dag {
        Dag::parse("W; X <- W; Y <- W, X").unwrap()
    }
    /// Observational samples, columns (W, X, Y).
    pub fn sample(&self, n: usize, rng: &mut impl Rng) -> Array2<f64> {
        let mut x = Array2::zeros((n, 3));
        for r in 0..n {
            let (e0, e1, e2): (f64, f64, f64) = (
                rng.sample(StandardNormal),
                rng.sample(StandardNormal),
                rng.sample(StandardNormal),
            );
            let w = self.sigma_w * e0;
            let xv = self.a * w + self.sigma_x * e1;
            x[[r, 0]] = w;
            x[[r, 1]] = xv;
            x[[r, 2]] = self.b * xv + self.c * w + self.sigma_y * e2;
        }
        x
    }
    /// E[Y | do(X = x)].
    pub fn interventional_mean(&self, x: f64) -> f64 {
        self.b * x
    }
    /// E[Y | X = x].
    pub fn conditional_mean(&self, x: f64) -> f64 {
        let sw2 = self.sigma_w * self.sigma_w;
        (self.b + self.c * self.a * sw2 / (self.a * self.a * sw2 + self.sigma_x * self.sigma_x)) * x
    }
    /// Y of unit (w, x, y) had X been x'.
    pub fn counterfactual_y(&self, unit: [f64; 3], x_new: f64) -> f64 {
        unit[2] + self.b * (x_new - unit[1])
    }
}
