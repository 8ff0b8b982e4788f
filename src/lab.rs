//! Notebook conveniences (the evcxr Jupyter kernel preloads [`crate::prelude`]).
//!
//! Everything here is `Clone + 'static` so it can live across cells, displays itself as the
//! last value of a cell (`evcxr_display`: HTML tables, plotly figures, flow summaries), and
//! returns `Result` with readable messages. Long work prints progress *lines* to stderr,
//! which Jupyter shows while the cell runs.
//!
//! `THERMOFLOW_QUICK=1` shrinks training budgets and sample sizes (used by CI to execute every
//! notebook in a few minutes): see [`size`].

use std::sync::Arc;

use ndarray::Array2;
use plotly::Plot;

use crate::engine::{GraphBuilder, Program};
use crate::error::Result;
use crate::flows::params::{Declared, Scope};
use crate::flows::{Bijection, Flow, Layer};
use crate::observables::Observable;
use crate::sweep::{self, SweepConfig, SweepResult};
use crate::systems::Energy;

/// Whether `THERMOFLOW_QUICK` asks for small runs.
pub fn quick() -> bool {
    std::env::var("THERMOFLOW_QUICK")
        .map(|v| !v.is_empty() && v != "0")
        .unwrap_or(false)
}

/// `normal`, or `small` when [`quick`].
pub fn size(normal: usize, small: usize) -> usize {
    if quick() {
        small
    } else {
        normal
    }
}

/// An exercise's check cell: the student's `answer` against the `exact` value, within `rel_tol`
/// (relative). Prints ✓ or ✗ with both numbers and returns whether it passed.
pub fn check(what: &str, answer: f64, exact: f64, rel_tol: f64) -> bool {
    let ok = answer.is_finite() && (answer - exact).abs() <= rel_tol * exact.abs().max(1e-12);
    let num = |v: f64| {
        if v != 0.0 && !(1e-3..1e5).contains(&v.abs()) {
            format!("{v:.4e}")
        } else {
            format!("{v:.5}")
        }
    };
    println!(
        "{} {what}: your answer {}, exact {} (tolerance {} %){}",
        if ok { "✓" } else { "✗" },
        num(answer),
        num(exact),
        num(100.0 * rel_tol),
        if ok { "" } else { " — not yet: try again" }
    );
    ok
}

fn html(content: &str) {
    println!("EVCXR_BEGIN_CONTENT text/html\n{content}\nEVCXR_END_CONTENT");
}

/// A sweep set up cell by cell: `Sweep::new("double-well-2d").range(0.5, 3.0, 16).run()?`,
/// or on your own potential: `Sweep::with_energy(systems::custom("well", 2, |x| …)?)`.
#[derive(Clone)]
pub struct Sweep {
    cfg: SweepConfig,
    energy: Option<Arc<dyn Energy>>,
}

impl std::fmt::Debug for Sweep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sweep")
            .field("cfg", &self.cfg)
            .field(
                "energy",
                &self.energy.as_ref().map(|e| e.name().to_string()),
            )
            .finish()
    }
}

impl Sweep {
    /// Defaults of the CLI for `system` (C_V to 1 %, witness, one repair round, tempering and
    /// then annealing where that fails; under `THERMOFLOW_QUICK` one round of samples, a short witness and no repair).
    pub fn new(system: &str) -> Sweep {
        let mut cfg = SweepConfig {
            system: system.to_string(),
            ..SweepConfig::default()
        };
        if quick() {
            // CI's headless notebook run: one round, a short witness, no repair.
            cfg.cv_tol = None;
            cfg.witness_sweeps = 2_000;
            cfg.repairs = 0;
            cfg.methods = vec![sweep::Method::Importance];
        }
        Sweep { cfg, energy: None }
    }
    /// The same defaults for your own system (a [`crate::systems::custom()`] closure, an
    /// [`crate::systems::expression()`], or any [`Energy`]); the run first checks that its
    /// Boltzmann distribution exists, and 1-D and 2-D systems get a quadrature reference.
    pub fn with_energy(energy: impl Energy + 'static) -> Sweep {
        let mut s = Sweep::new(energy.name());
        s.energy = Some(Arc::new(energy));
        s
    }
    /// A `key=value` parameter.
    pub fn param(mut self, kv: &str) -> Sweep {
        self.cfg.params.push(kv.to_string());
        self
    }
    /// Temperature range and number of temperatures.
    pub fn range(mut self, t_min: f64, t_max: f64, temps: usize) -> Sweep {
        self.cfg.t_min = t_min;
        self.cfg.t_max = t_max;
        self.cfg.temps = temps;
        self
    }
    /// A wall-time limit on training instead of the step budget (the result then depends on
    /// the machine's speed).
    pub fn train_seconds(mut self, s: f64) -> Sweep {
        self.cfg.train_seconds = Some(s);
        self
    }
    /// Training budget in steps (instead of seconds: the same result on any machine).
    pub fn train_steps(mut self, n: usize) -> Sweep {
        self.cfg.train_steps = Some(n);
        self.cfg.train_seconds = None;
        self
    }
    /// Target relative standard error of C_V at every temperature (`None`: one round).
    pub fn cv_tol(mut self, r: Option<f64>) -> Sweep {
        self.cfg.cv_tol = r;
        self
    }
    /// Most samples per temperature.
    pub fn max_samples(mut self, n: usize) -> Sweep {
        self.cfg.max_samples = n;
        self
    }
    /// Samples per temperature.
    pub fn samples(mut self, n: usize) -> Sweep {
        self.cfg.samples = n;
        self.cfg.max_samples = self.cfg.max_samples.max(n);
        self
    }
    /// Seed.
    pub fn seed(mut self, s: u64) -> Sweep {
        self.cfg.seed = s;
        self
    }
    /// The estimation methods in the order the sweep escalates through them, as `--methods`
    /// takes them (default `is,flow-mcmc,temper,anneal`; `is` alone under `THERMOFLOW_QUICK`).
    pub fn methods(mut self, list: &str) -> Result<Sweep> {
        self.cfg.methods = sweep::Method::parse_list(list)?;
        Ok(self)
    }
    /// An observable whose average ⟨O⟩(T) is estimated beside ⟨U⟩ (repeatable):
    /// `.observe("r²", |x| x[0] * x[0] + x[1] * x[1])`; [`SweepRun::observable_plots`] draws them.
    pub fn observe(
        mut self,
        name: &str,
        f: impl Fn(&[f64]) -> f64 + Send + Sync + 'static,
    ) -> Sweep {
        self.cfg.observables.push(Observable::new(name, f));
        self
    }
    /// An observable as `--observe` takes it: `"x0"`, `"r2 = x0^2 + x1^2"`, `"b = x0^2/T"` (`T`
    /// the temperature), or the system's own by name (`"abs_m"` on φ⁴, `"helicity"` on XY;
    /// `thermoflow systems` lists them).
    pub fn observe_expr(mut self, text: &str) -> Result<Sweep> {
        self.cfg.observables.push(Observable::parse(text)?);
        Ok(self)
    }
    /// A quantity derived from the averages of the observables added before it, as `--derive`
    /// takes it: `.derive("var = x2 - x0^2")?`, `.derive("binder = 1 - m4/(3*m2^2)")?`
    /// ([`crate::observables::Derived`]; by the jackknife over the samplers' groups).
    pub fn derive(mut self, text: &str) -> Result<Sweep> {
        let d = crate::observables::Derived::parse(text, &self.cfg.observables)?;
        self.cfg.derived.push(d);
        Ok(self)
    }
    /// Also locate the heat capacity's peak (a line of the table; [`SweepRun::heat_capacity_peak`]).
    pub fn peak(mut self) -> Sweep {
        self.cfg.peak = true;
        self
    }
    /// Train (progress lines on stderr) and estimate.
    pub fn run(&self) -> Result<SweepRun> {
        let (result, flow, energy) = match &self.energy {
            Some(e) => sweep::run_energy(&self.cfg, e.clone())?,
            None => sweep::run(&self.cfg)?,
        };
        Ok(SweepRun {
            result,
            flow,
            energy,
        })
    }
}

/// A finished sweep: the result, the trained flow and the system.
#[derive(Clone)]
pub struct SweepRun {
    /// Estimates and exact values.
    pub result: SweepResult,
    /// The trained flow.
    pub flow: Flow,
    /// The system.
    pub energy: Arc<dyn Energy>,
}

impl SweepRun {
    /// Where C_V peaks: T* and C_V(T*) with their errors, whether that can be trusted, and the
    /// exact peak where known ([`sweep::PeakReport`]).
    pub fn heat_capacity_peak(&self) -> Result<sweep::PeakReport> {
        match &self.result.cv_peak {
            Some(p) => Ok(p.clone()),
            None => sweep::PeakReport::new(
                &self.result.thermo,
                &self.result.trusted,
                &self.result.method,
                self.energy.as_ref(),
            ),
        }
    }
    /// ⟨U⟩(T) with error band and exact curve.
    pub fn energy_plot(&self) -> Plot {
        crate::plot::energy_plot(&self.result)
    }
    /// C_V(T), both estimators, exact curve.
    pub fn heat_capacity_plot(&self) -> Plot {
        crate::plot::heat_capacity_plot(&self.result)
    }
    /// Each observable's ⟨O⟩(T) with error band and, where known, the exact curve.
    pub fn observable_plots(&self) -> Vec<Plot> {
        crate::plot::observable_plots(&self.result)
    }
    /// ESS fraction against T.
    pub fn ess_plot(&self) -> Plot {
        crate::plot::ess_plot(&self.result)
    }
    /// Training loss.
    pub fn loss_plot(&self) -> Plot {
        crate::plot::loss_plot(&self.result.loss_history)
    }
    /// Flow and exact densities at `t` (1-D and 2-D systems).
    pub fn density_plots(&self, t: f64) -> Result<Vec<Plot>> {
        crate::plot::density_plots(&self.flow, self.energy.as_ref(), t, 1500, 7)
    }
    /// The flow's density with a temperature slider over (up to 16 of) the sweep's
    /// temperatures (1-D and 2-D systems).
    pub fn density_slider(&self) -> Result<Plot> {
        let picked = crate::plot::slider_temperatures(&self.result.temperatures);
        crate::plot::density_slider(&self.flow, self.energy.as_ref(), &picked)
    }
    /// The results table as HTML (the cell display).
    pub fn evcxr_display(&self) {
        self.result.evcxr_display();
    }
}

impl SweepResult {
    /// An HTML table of the estimates (observables in columns of their own, after the rest).
    pub fn to_html(&self) -> String {
        let esc = |t: &str| t.replace('&', "&amp;").replace('<', "&lt;");
        let observed: String = (self.observables.iter())
            .map(|o| {
                let exact = if o.exact.is_some() {
                    "<th>exact</th>"
                } else {
                    ""
                };
                format!("<th>{} ± se</th>{exact}", esc(&o.label()))
            })
            .collect();
        let mut s = format!(
            "<p><b>{}</b> {} — {} samples per temperature</p><table><tr><th>T</th><th>⟨U⟩ ± se</th><th>exact</th><th>C_V ± se</th><th>exact</th><th>dU/dT ± se</th><th>log Z ± se</th><th>ESS/N</th><th>trusted</th>{observed}</tr>",
            self.system,
            serde_json::Value::Object(self.params.clone()),
            self.samples
        );
        for i in 0..self.temperatures.len() {
            let ex = |v: Option<&Vec<f64>>| {
                v.map(|v| format!("{:.4}", v[i]))
                    .unwrap_or_else(|| "–".into())
            };
            let e = self.exact.as_ref();
            s += &format!(
                "<tr><td>{:.3}</td><td>{:.4} ± {:.4}</td><td>{}</td><td>{:.4} ± {:.4}</td><td>{}</td><td>{:.3} ± {:.3}</td><td>{:.4} ± {:.4}</td><td>{:.3}</td><td>{}</td>",
                self.temperatures[i], self.u[i], self.u_se[i], ex(e.map(|e| &e.u)), self.cv[i], self.cv_se[i],
                ex(e.map(|e| &e.cv)), self.cv_deriv[i], self.cv_deriv_se[i], self.log_z[i], self.log_z_se[i],
                self.ess_fraction[i], if self.trusted[i] { "yes" } else { "<b>no</b>" }
            );
            for o in &self.observables {
                s += &format!("<td>{:.4} ± {:.4}</td>", o.value[i], o.se[i]);
                if let Some(e) = &o.exact {
                    s += &format!("<td>{:.4}</td>", e[i]);
                }
            }
            s += "</tr>";
        }
        s + &format!(
            "</table><p><b>verdict:</b> {}</p>{}",
            self.verdict.replace('<', "&lt;"),
            self.repairs
                .iter()
                .map(|r| format!("<p>repair: {}</p>", r.replace('<', "&lt;")))
                .collect::<String>()
        )
    }
    /// Jupyter display: the HTML table.
    pub fn evcxr_display(&self) {
        html(&self.to_html());
    }
}

impl Flow {
    /// Jupyter display: the architecture summary.
    pub fn evcxr_display(&self) {
        html(&format!(
            "<pre>{}</pre>",
            self.summary().replace('<', "&lt;")
        ));
    }
}

/// Apply one transform to the rows of `z` in f64: (x = f(z), log|det ∂f/∂z|) forward, or
/// (z = f⁻¹(x), log|det ∂f⁻¹/∂x|) when `inverse`; `cond` holds condition features per row
/// (empty when unconditioned).
pub fn apply(
    layer: &Layer,
    z: &Array2<f64>,
    cond: &[f64],
    inverse: bool,
) -> Result<(Array2<f64>, Vec<f64>)> {
    crate::systems::check_batch(layer.dim(), &z.view())?;
    let g = GraphBuilder::new();
    let outs = {
        let declared = Declared::default();
        let s = Scope::root(&g, &declared, false);
        let x = g.batch_input("z", &[layer.dim()]);
        let c = (layer.cond_dim() > 0).then(|| g.batch_input("cond", &[layer.cond_dim()]));
        let (y, ld) = if inverse {
            layer.inverse_and_log_det(&s, x, c)
        } else {
            layer.forward_and_log_det(&s, x, c)
        };
        [y.output("y"), ld.output("log_det")]
    };
    let mut p: Program<f64> = Program::compile(g, &outs, None)?;
    let data: Vec<f64> = z.iter().copied().collect();
    let mut inputs: Vec<(&str, &[f64])> = vec![("z", &data)];
    if layer.cond_dim() > 0 {
        inputs.push(("cond", cond));
    }
    let mut out = p.run(&inputs)?;
    let y = Array2::from_shape_vec(z.dim(), out.take("y")?)
        .map_err(|e| crate::Error::Engine(e.to_string()))?;
    Ok((y, out.take("log_det")?))
}
