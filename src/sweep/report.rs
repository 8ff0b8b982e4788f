//! The sweep's result: the JSON schema (see docs/cli.md) and the text table.

use serde::Serialize;

use super::checks::{Checks, WitnessPoint};
use crate::estimators::{heat_capacity_peak, Peak, Thermo, WINDOW_P};
use crate::systems::Energy;

/// Exact values beside the estimates.
#[derive(Clone, Debug, Serialize)]
pub struct ExactCurves {
    /// ⟨U⟩.
    #[serde(rename = "U")]
    pub u: Vec<f64>,
    /// C_V.
    #[serde(rename = "Cv")]
    pub cv: Vec<f64>,
    /// log Z.
    #[serde(rename = "logZ")]
    pub log_z: Vec<f64>,
}

/// One observable's ⟨O⟩(T), or a quantity derived from their averages
/// ([`crate::observables`]).
#[derive(Clone, Debug, Serialize)]
pub struct ObservableCurve {
    /// Its name.
    pub name: String,
    /// ⟨O⟩ per temperature, by the method that estimated ⟨U⟩ there: NaN (null in the JSON)
    /// where none did, or where O is not finite at a sample that counts.
    pub value: Vec<f64>,
    /// Standard errors, from the same samples and error model as ⟨U⟩'s.
    pub se: Vec<f64>,
    /// Exact values where known ([`crate::observables::exact_curves`]), or null.
    pub exact: Option<Vec<f64>>,
    /// A derived quantity f(⟨O_1⟩, …, T) (`--derive`), not an average.
    pub derived: bool,
}

impl ObservableCurve {
    /// `⟨name⟩` for an observable's average, `name` for a derived quantity.
    pub fn label(&self) -> String {
        if self.derived {
            self.name.clone()
        } else {
            format!("⟨{}⟩", self.name)
        }
    }
}

/// Where the heat capacity peaks (`--peak`): the fit to the grid's C_V values and slopes
/// ([`heat_capacity_peak`]) with its own verdict and, where one exists, the exact peak.
#[derive(Clone, Debug, Serialize)]
pub struct PeakReport {
    /// T*, C_V(T*) and the fit (null where there is none).
    pub peak: Option<Peak>,
    /// Why there is none (null where there is).
    pub none: Option<String>,
    /// The curvature resolved, the fit's χ² at p ≥ 0.05, every temperature of its window
    /// trusted: the samplers' own evidence, as for a temperature.
    pub trusted: bool,
    /// What keeps it from being trusted, in words (empty when trusted).
    pub why_not: Vec<String>,
    /// The exact (T*, C_V(T*)), the exact C_V's maximum within one grid step of the window, or
    /// null.
    pub exact: Option<[f64; 2]>,
}

impl PeakReport {
    /// The peak of C_V over `thermo` (the sweep's grid, `trusted` and the `method` that made
    /// it per temperature), with the exact one of `energy` where a reference exists.
    ///
    /// The fit takes its points as independent. Tempering's and the anneal's neighbouring
    /// temperatures are not (one ladder, one population): their errors move together, which
    /// the differences that place T* cancel (its error is then on the safe side) but the level
    /// C_V(T*) does not. Where such a point is in the window, C_V(T*)'s error is therefore at
    /// least that of the grid's C_V nearest T* (the limit of fully correlated neighbours).
    /// Measured on φ⁴ at L = 8 (tempering throughout): two sweeps, seeds 0 and 1, read
    /// C_V(T*) 83.02 ± 0.35 and 84.62 ± 0.28 from the fit alone (3.6 combined errors apart,
    /// where their T* agreed within 0.5) against the points' own errors of 0.67–0.73.
    pub fn new(
        thermo: &[Thermo],
        trusted: &[bool],
        method: &[String],
        energy: &dyn Energy,
    ) -> crate::Result<PeakReport> {
        let mut peak = match heat_capacity_peak(thermo) {
            Ok(p) => p,
            Err(e) => {
                let none = match e {
                    crate::Error::Input(why) => why,
                    other => other.to_string(),
                };
                return Ok(PeakReport {
                    peak: None,
                    trusted: false,
                    why_not: vec![none.clone()],
                    none: Some(none),
                    exact: None,
                });
            }
        };
        // The grid's temperatures the fit spans.
        let window: Vec<usize> = (0..thermo.len())
            .filter(|&i| (peak.window[0] - 1e-12..=peak.window[1] + 1e-12).contains(&thermo[i].t))
            .collect();
        if window
            .iter()
            .any(|&i| matches!(method[i].as_str(), "tempering" | "smc"))
        {
            let nearest = (thermo.iter())
                .filter(|th| th.cv.se.is_finite())
                .min_by(|a, b| {
                    (a.t - peak.t.value)
                        .abs()
                        .total_cmp(&(b.t - peak.t.value).abs())
                });
            if let Some(th) = nearest {
                peak.cv.se = peak.cv.se.max(th.cv.se);
            }
        }
        let mut why_not = Vec::new();
        if !peak.resolved() {
            why_not.push(format!(
                "its curvature is {:.1} of its errors from zero, under {}: more samples or temperatures around the peak, or no peak",
                peak.curvature_z,
                crate::estimators::CURVATURE_Z
            ));
        }
        if peak.p_value < WINDOW_P {
            why_not.push(format!(
                "C_V and its slope do not follow one quartic over the window (χ² {:.1} for {}, p {:.3}): a finer grid around the peak",
                peak.chi2, peak.dof, peak.p_value
            ));
        }
        let untrusted: Vec<String> = (window.iter())
            .filter(|&&i| !trusted[i])
            .map(|&i| format!("{:.3}", thermo[i].t))
            .collect();
        if !untrusted.is_empty() {
            why_not.push(format!(
                "T = {} in its window not trusted",
                untrusted.join(", ")
            ));
        }
        // The exact maximum within one grid step of the window.
        let lo = window
            .first()
            .map_or(peak.window[0], |&i| thermo[i.saturating_sub(1)].t);
        let hi =
            (window.last()).map_or(peak.window[1], |&i| thermo[(i + 1).min(thermo.len() - 1)].t);
        let exact = crate::exact::cv_maximum(energy, lo, hi)?.map(|(t, c)| [t, c]);
        Ok(PeakReport {
            peak: Some(peak),
            none: None,
            trusted: why_not.is_empty(),
            why_not,
            exact,
        })
    }

    /// One line for the table.
    pub fn line(&self) -> String {
        let Some(p) = &self.peak else {
            return format!("{}\n", self.none.as_deref().unwrap_or("no C_V peak"));
        };
        let exact = self
            .exact
            .map_or(String::new(), |[t, c]| format!(" (exact {t:.4}, {c:.4})"));
        let verdict = if self.trusted {
            "trusted".to_string()
        } else {
            format!("NOT trusted: {}", self.why_not.join("; "))
        };
        format!(
            "C_V peak: T* = {:.4} ± {:.4}, C_V(T*) = {:.4} ± {:.4}{exact}, from C_V and dC_V/dT at {} temperatures over [{:.3}, {:.3}] (χ² {:.1} for {}); {verdict}\n",
            p.t.value, p.t.se, p.cv.value, p.cv.se, p.points, p.window[0], p.window[1], p.chi2, p.dof
        )
    }
}

/// Training summary in the JSON.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TrainSummary {
    /// Steps (0 when the model was loaded and not repaired).
    pub steps: usize,
    /// Seconds (data generation included).
    pub seconds: f64,
    /// Last reverse-KL loss.
    pub final_loss: f64,
    /// Flow samples per second during training.
    pub samples_per_s: f64,
    /// Whether the model was loaded instead of trained.
    pub loaded: bool,
}

/// The witness's part of the JSON.
#[derive(Clone, Debug, Serialize)]
pub struct WitnessSummary {
    /// Rungs on the grid with the witness's estimates and the comparisons.
    pub points: Vec<WitnessPoint>,
    /// Ladder temperatures (the grid's rungs and those above T_max).
    pub rungs: Vec<f64>,
    /// Round trips coldest → hottest → coldest, all ladders.
    pub round_trips: usize,
    /// Ladders.
    pub ladders: usize,
    /// Sweeps after burn-in.
    pub sweeps: usize,
    /// Seconds.
    pub seconds: f64,
}

/// The sweep's result; serialises to the documented JSON schema.
#[derive(Clone, Debug, Serialize)]
pub struct SweepResult {
    /// System name.
    pub system: String,
    /// All parameters, defaults filled in.
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Temperatures.
    pub temperatures: Vec<f64>,
    /// ⟨U⟩.
    #[serde(rename = "U")]
    pub u: Vec<f64>,
    /// SE of ⟨U⟩.
    #[serde(rename = "U_se")]
    pub u_se: Vec<f64>,
    /// C_V (fluctuation).
    #[serde(rename = "Cv")]
    pub cv: Vec<f64>,
    /// SE of C_V.
    #[serde(rename = "Cv_se")]
    pub cv_se: Vec<f64>,
    /// C_V = d⟨U⟩/dT.
    #[serde(rename = "Cv_deriv")]
    pub cv_deriv: Vec<f64>,
    /// Its SE.
    #[serde(rename = "Cv_deriv_se")]
    pub cv_deriv_se: Vec<f64>,
    /// dC_V/dT = κ₃/T⁴ − 2κ₂/T³ from the same samples (what `--peak` fits beside C_V).
    #[serde(rename = "Cv_slope")]
    pub cv_slope: Vec<f64>,
    /// Its SE.
    #[serde(rename = "Cv_slope_se")]
    pub cv_slope_se: Vec<f64>,
    /// log Z.
    #[serde(rename = "logZ")]
    pub log_z: Vec<f64>,
    /// SE of log Z.
    #[serde(rename = "logZ_se")]
    pub log_z_se: Vec<f64>,
    /// F = −T log Z.
    #[serde(rename = "F")]
    pub f: Vec<f64>,
    /// S = (⟨U⟩ − F)/T.
    #[serde(rename = "S")]
    pub s: Vec<f64>,
    /// ESS / N.
    pub ess_fraction: Vec<f64>,
    /// Pareto k̂ of the importance weights.
    pub pareto_k: Vec<f64>,
    /// Samples drawn per temperature.
    pub samples_used: Vec<usize>,
    /// How ⟨U⟩ and C_V were estimated per temperature: `importance`, `flow-mcmc`, `smc` or
    /// `tempering`.
    pub method: Vec<String>,
    /// The flow-MCMC runs (acceptance, stuck chains, chains, steps) where used, else null.
    pub flow_mcmc: Vec<Option<super::flow_mcmc::ChainEstimate>>,
    /// The sequential Monte Carlo run (rungs, particles, replicas, per temperature its
    /// hysteresis, energy correlation and acceptance) where one ran: the witness of tempered
    /// points, and the estimate where `method` is `smc`.
    pub smc: Option<crate::mcmc::SmcRun>,
    /// The parallel-tempering runs (rungs, ladders, sweeps, round trips, flow and exchange
    /// acceptance, per temperature its split check, round trips per ladder, acceptance and
    /// τ_int) where they replaced failing estimates.
    pub tempering: Option<super::temper::TemperRun>,
    /// Whether the C_V tolerance was reached per temperature.
    pub target_reached: Vec<bool>,
    /// Every check per temperature: name → {pass, value, limit}.
    pub checks: Vec<Checks>,
    /// All checks pass, per temperature.
    pub trusted: Vec<bool>,
    /// In words: what failed and where, or that everything passed.
    pub verdict: String,
    /// What the sweep did to repair failing temperatures.
    pub repairs: Vec<String>,
    /// The independent witness.
    pub witness: Option<WitnessSummary>,
    /// Exact curves, or null.
    pub exact: Option<ExactCurves>,
    /// Where C_V peaks (with `--peak`; absent without).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cv_peak: Option<PeakReport>,
    /// The observables' averages, in the order they were given (empty without any).
    pub observables: Vec<ObservableCurve>,
    /// Training summary.
    pub train: TrainSummary,
    /// Samples per temperature in the first round.
    pub samples: usize,
    /// Seconds spent sampling and estimating (all rounds).
    pub estimate_seconds: f64,
    /// Flow samples per second during importance sampling, energies included (0 without it).
    pub estimate_samples_per_s: f64,
    /// Seed, budgets and flow settings of the run.
    pub config: serde_json::Value,
    /// Crate version.
    pub thermoflow_version: String,
    /// Loss history (step, seconds, loss) for the plot; not part of the JSON.
    #[serde(skip)]
    pub loss_history: Vec<(usize, f64, f64)>,
    /// Per-temperature estimates with all errors; not part of the JSON.
    #[serde(skip)]
    pub thermo: Vec<Thermo>,
}

impl SweepResult {
    /// A readable table (one row per temperature) ending with the verdict.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{} {}\n{:>7} {:>20} {:>19} {:>19} {:>19} {:>6} {:>6} {:>8} {:>5}\n",
            self.system,
            serde_json::Value::Object(self.params.clone()),
            "T",
            "⟨U⟩ ± se (exact)",
            "C_V ± se (exact)",
            "dU/dT ± se",
            "log Z ± se (exact)",
            "ESS",
            "k̂",
            "samples",
            "trust"
        );
        for i in 0..self.temperatures.len() {
            let ex = |v: Option<&Vec<f64>>| v.map(|v| format!("({:.3})", v[i])).unwrap_or_default();
            let e = self.exact.as_ref();
            s += &format!(
                "{:7.3} {:>20} {:>19} {:>19} {:>19} {:6.3} {:6.2} {:>8} {:>5}\n",
                self.temperatures[i],
                format!(
                    "{:.3}±{:.3}{}",
                    self.u[i],
                    self.u_se[i],
                    ex(e.map(|e| &e.u))
                ),
                format!(
                    "{:.3}±{:.3}{}",
                    self.cv[i],
                    self.cv_se[i],
                    ex(e.map(|e| &e.cv))
                ),
                format!("{:.3}±{:.3}", self.cv_deriv[i], self.cv_deriv_se[i]),
                format!(
                    "{:.3}±{:.3}{}",
                    self.log_z[i],
                    self.log_z_se[i],
                    ex(e.map(|e| &e.log_z))
                ),
                self.ess_fraction[i],
                self.pareto_k[i],
                self.samples_used[i],
                if self.trusted[i] { "yes" } else { "NO" }
            );
            if self.method[i] != "importance" {
                s.pop();
                s += &format!(" ({})\n", self.method[i]);
            }
        }
        s += &self.observables_table();
        if let Some(p) = &self.cv_peak {
            s += &p.line();
        }
        s +=
            &format!(
            "training: {} steps, {:.1} s, final loss {:.4}; estimates: {} samples in {:.1} s{}\n",
            self.train.steps,
            self.train.seconds,
            self.train.final_loss,
            self.samples_used.iter().sum::<usize>(),
            self.estimate_seconds,
            if self.estimate_samples_per_s > 0.0 {
                format!(" ({:.0}/s importance sampling)", self.estimate_samples_per_s)
            } else {
                String::new()
            }
        );
        for r in &self.repairs {
            s += &format!("repair: {r}\n");
        }
        s += &format!("verdict: {}\n", self.verdict);
        s
    }

    /// The observables' block of the table: ⟨O⟩ ± se (exact) per temperature, and where they
    /// were not estimated (nothing without observables).
    fn observables_table(&self) -> String {
        if self.observables.is_empty() {
            return String::new();
        }
        let mut s = format!("{:>7}", "T");
        for o in &self.observables {
            s += &format!(" {:>24}", format!("{} ± se (exact)", o.label()));
        }
        s.push('\n');
        for (i, t) in self.temperatures.iter().enumerate() {
            s += &format!("{t:7.3}");
            for o in &self.observables {
                let exact = (o.exact.as_ref()).map_or(String::new(), |e| format!("({:.4})", e[i]));
                let cell = if o.value[i].is_finite() {
                    format!("{:.4}±{:.4}{exact}", o.value[i], o.se[i])
                } else {
                    format!("—{exact}")
                };
                s += &format!(" {cell:>24}");
            }
            s.push('\n');
        }
        let missing: Vec<usize> = (0..self.temperatures.len())
            .filter(|&i| self.observables.iter().any(|o| !o.value[i].is_finite()))
            .collect();
        if !missing.is_empty() {
            let at: Vec<String> = (missing.iter())
                .map(|&i| format!("{:.3}", self.temperatures[i]))
                .collect();
            s += &format!(
                "observables: not estimated at T = {} (no method estimated ⟨U⟩ there, or an observable is not finite at a sample)\n",
                at.join(", ")
            );
        }
        s
    }

    /// Largest |C_V − exact|/exact over the grid (None without an exact reference).
    pub fn max_cv_rel_error(&self) -> Option<f64> {
        let e = self.exact.as_ref()?;
        Some(
            self.cv
                .iter()
                .zip(&e.cv)
                .map(|(a, b)| ((a - b) / b).abs())
                .fold(0.0, f64::max),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::estimators::Estimate;

    /// C_V(T) = 2 − (T − 1.2)², known to 1 % with its slope at 8 temperatures.
    fn grid() -> Vec<Thermo> {
        (0..8)
            .map(|i| {
                let t = 0.5 + 0.2 * i as f64;
                let mut th = Thermo::unestimated(t);
                th.cv = Estimate {
                    value: 2.0 - (t - 1.2).powi(2),
                    se: 0.02,
                };
                th.dcv_dt = Estimate {
                    value: -2.0 * (t - 1.2),
                    se: 0.05,
                };
                (th.cov[1][1], th.cov[2][2]) = (4e-4, 2.5e-3);
                th
            })
            .collect()
    }

    /// The fit alone gives C_V(T*) an error below each point's; where tempering made the
    /// window's points, whose errors move together, it is floored at the nearest point's.
    #[test]
    fn a_tempered_window_floors_the_peak_height_error() {
        let energy = crate::systems::build::<&str>("harmonic", &[]).unwrap();
        let th = grid();
        let trusted = vec![true; th.len()];
        let at = |m: &str| {
            let method = vec![m.to_string(); th.len()];
            let r = PeakReport::new(&th, &trusted, &method, energy.as_ref()).unwrap();
            r.peak.unwrap()
        };
        let (free, tempered) = (at("importance"), at("tempering"));
        assert!(
            (free.t.value - 1.2).abs() < 1e-9 && free.cv.se < 0.02,
            "{free:?}"
        );
        assert_eq!(tempered.t, free.t);
        assert_eq!(tempered.cv.se, 0.02, "{tempered:?}");
        assert_eq!(at("smc").cv.se, 0.02);
    }
}
