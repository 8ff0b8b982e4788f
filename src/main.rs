//! The `thermoflow` command line: `sweep`, `systems`, `bench`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use thermoflow::sweep::{self, SweepConfig};

const USAGE: &str = "usage:
  thermoflow sweep [--system NAME] [--param key=value ...] [--tmin A] [--tmax B] [--temps N]
                   [--train-seconds S] [--train-steps N] [--samples M] [--cv-tol R]
                   [--max-samples M] [--estimate-seconds S] [--witness-sweeps N] [--repairs N]
                   [--seed K] [--json FILE] [--html FILE]
                   [--save-model FILE | --load-model FILE] [--quiet]
  thermoflow mcmc [--system NAME] [--param key=value ...] [--sampler flow|hmc|rwm] [--temp T]
                  [--steps N] [--chains C] [--train-seconds S] [--seed K] [--json FILE]
                  [--save-flow FILE] [--quiet]
  thermoflow rare [--system NAME] [--param key=value ...] --event x0>0|x1<-2|U>3 [--temp T]
                  [--samples M] [--train-seconds S] [--seed K] [--json FILE] [--quiet]
  thermoflow causal [--param a=1 --param b=0.5 ...] [--csv FILE --dag 'W; X <- W; Y <- W, X'
                    --treatment X --target Y] [--values -1,0,1,2] [--n N] [--steps S] [--seed K]
                    [--json FILE]
  thermoflow backmap [--system bead-chain] [--param key=value ...] [--temp T] [--group G]
                     [--steps N] [--seed K] [--json FILE]
  thermoflow systems
  thermoflow bench engine|flows|sweep|mcmc [--json] [--reps N] [--train-seconds S] [--steps N]
                   [--cv-tol R]";

/// A command-line failure: usage errors exit with 2, everything else with 1.
enum Failure {
    Usage(String),
    Run(String),
}

impl From<thermoflow::Error> for Failure {
    fn from(e: thermoflow::Error) -> Failure {
        Failure::Run(e.to_string())
    }
}

/// Flags of the form `--name value` (repeatable) and `--switch`.
struct Args {
    items: Vec<String>,
}

impl Args {
    fn value(&mut self, name: &str) -> Result<Option<String>, Failure> {
        let Some(i) = self.items.iter().position(|a| a == name) else {
            return Ok(None);
        };
        if i + 1 >= self.items.len() || self.items[i + 1].starts_with("--") {
            return Err(Failure::Usage(format!("{name} needs a value")));
        }
        let v = self.items.remove(i + 1);
        self.items.remove(i);
        if self.items.iter().any(|a| a == name) {
            return Err(Failure::Usage(format!("{name} given twice")));
        }
        Ok(Some(v))
    }
    fn values(&mut self, name: &str) -> Result<Vec<String>, Failure> {
        let mut out = Vec::new();
        while let Some(i) = self.items.iter().position(|a| a == name) {
            if i + 1 >= self.items.len() || self.items[i + 1].starts_with("--") {
                return Err(Failure::Usage(format!("{name} needs a value")));
            }
            out.push(self.items.remove(i + 1));
            self.items.remove(i);
        }
        Ok(out)
    }
    fn switch(&mut self, name: &str) -> bool {
        match self.items.iter().position(|a| a == name) {
            Some(i) => {
                self.items.remove(i);
                true
            }
            None => false,
        }
    }
    fn parse<T: std::str::FromStr>(&mut self, name: &str) -> Result<Option<T>, Failure> {
        match self.value(name)? {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| Failure::Usage(format!("{name}: cannot parse {v:?}"))),
        }
    }
    fn finish(self) -> Result<(), Failure> {
        match self.items.first() {
            None => Ok(()),
            Some(a) => Err(Failure::Usage(format!("unexpected argument {a:?}"))),
        }
    }
}

fn write_file(path: &str, text: &str) -> Result<(), Failure> {
    std::fs::write(path, text).map_err(|e| Failure::Run(format!("cannot write {path}: {e}")))
}

fn cmd_sweep(mut a: Args) -> Result<(), Failure> {
    let mut cfg = SweepConfig::default();
    if let Some(s) = a.value("--system")? {
        cfg.system = s;
    }
    cfg.params = a.values("--param")?;
    cfg.t_min = a.parse("--tmin")?.unwrap_or(cfg.t_min);
    cfg.t_max = a.parse("--tmax")?.unwrap_or(cfg.t_max);
    cfg.temps = a.parse("--temps")?.unwrap_or(cfg.temps);
    let train_seconds: Option<f64> = a.parse("--train-seconds")?;
    cfg.train_steps = a.parse("--train-steps")?;
    // A step budget alone makes the run reproducible on any machine: no default time limit.
    cfg.train_seconds = match (train_seconds, cfg.train_steps) {
        (Some(s), _) => Some(s),
        (None, Some(_)) => None,
        (None, None) => cfg.train_seconds,
    };
    cfg.samples = a.parse("--samples")?.unwrap_or(cfg.samples);
    cfg.max_samples = a
        .parse("--max-samples")?
        .unwrap_or(cfg.max_samples.max(cfg.samples));
    if let Some(tol) = a.parse::<f64>("--cv-tol")? {
        // --cv-tol 0: one round of --samples, no tolerance.
        cfg.cv_tol = (tol != 0.0).then_some(tol);
    }
    cfg.estimate_seconds = a.parse("--estimate-seconds")?;
    cfg.witness_sweeps = a.parse("--witness-sweeps")?.unwrap_or(cfg.witness_sweeps);
    cfg.repairs = a.parse("--repairs")?.unwrap_or(cfg.repairs);
    cfg.seed = a.parse("--seed")?.unwrap_or(cfg.seed);
    let json = a.value("--json")?;
    let html = a.value("--html")?;
    cfg.save_model = a.value("--save-model")?.map(PathBuf::from);
    cfg.load_model = a.value("--load-model")?.map(PathBuf::from);
    cfg.progress = !a.switch("--quiet");
    a.finish()?;
    if cfg.save_model.is_some() && cfg.load_model.is_some() {
        return Err(Failure::Usage(
            "give --save-model or --load-model, not both".into(),
        ));
    }
    let (result, flow, energy) = sweep::run(&cfg)?;
    out(&result.table());
    if let Some(path) = json {
        let text =
            serde_json::to_string_pretty(&result).map_err(|e| Failure::Run(e.to_string()))?;
        write_file(&path, &text)?;
    }
    if let Some(path) = html {
        let figs = thermoflow::plot::sweep_figures(&result, &flow, energy.as_ref())?;
        let title = format!("thermoflow sweep: {}", result.system);
        write_file(
            &path,
            &thermoflow::plot::report_html(&title, &result.table(), &figs),
        )?;
        eprintln!("[sweep] wrote {path}");
    }
    Ok(())
}

fn cmd_rare(mut a: Args) -> Result<(), Failure> {
    let system = a
        .value("--system")?
        .unwrap_or_else(|| "double-well-2d".into());
    let params = a.values("--param")?;
    let event = a
        .value("--event")?
        .ok_or_else(|| Failure::Usage("--event is required".into()))?;
    let t: f64 = a.parse("--temp")?.unwrap_or(0.4);
    let samples: usize = a.parse("--samples")?.unwrap_or(100_000);
    let secs: f64 = a.parse("--train-seconds")?.unwrap_or(20.0);
    let seed: u64 = a.parse("--seed")?.unwrap_or(0);
    let json = a.value("--json")?;
    let quiet = a.switch("--quiet");
    a.finish()?;
    let event = thermoflow::rare::Event::parse(&event)?;
    let energy = thermoflow::systems::build(&system, &params)?;
    let r = thermoflow::rare::estimate(energy, event, t, samples, secs, seed, !quiet)?;
    out(&format!(
        "P({event:?}) at T = {t}: {:.4e} ± {:.2e}  exact {}  variance reduction per evaluation {:.3e}\n",
        r.p,
        r.p_se,
        r.p_exact.map(|p| format!("{p:.4e}")).unwrap_or_else(|| "n/a".into()),
        r.variance_reduction
    ));
    if let Some(path) = json {
        let mut v = serde_json::to_value(&r).map_err(|e| Failure::Run(e.to_string()))?;
        v["system"] = serde_json::json!(system);
        v["temperature"] = serde_json::json!(t);
        v["event"] = serde_json::json!(format!("{event:?}"));
        write_file(&path, &serde_json::to_string_pretty(&v).unwrap())?;
    }
    Ok(())
}

fn cmd_mcmc(mut a: Args) -> Result<(), Failure> {
    use thermoflow::lattice::{phi4_observables, summarize_phi4, train_phi4_flow, Phi4FlowConfig};
    use thermoflow::mcmc::{
        batch_means, flow_mcmc, hmc, rwm, tau_int, FlowMcmcConfig, HmcConfig, RwmConfig,
    };
    let system = a.value("--system")?.unwrap_or_else(|| "phi4".into());
    let params = a.values("--param")?;
    let sampler = a.value("--sampler")?.unwrap_or_else(|| "hmc".into());
    let flow_sampler = sampler == "flow";
    let t: f64 = a.parse("--temp")?.unwrap_or(1.0);
    let steps: usize = a
        .parse("--steps")?
        .unwrap_or(if flow_sampler { 2000 } else { 5000 });
    let chains: usize = a
        .parse("--chains")?
        .unwrap_or(if flow_sampler { 64 } else { 8 });
    let secs: f64 = a.parse("--train-seconds")?.unwrap_or(120.0);
    let seed: u64 = a.parse("--seed")?.unwrap_or(0);
    let json = a.value("--json")?;
    let save_flow = a.value("--save-flow")?;
    let quiet = a.switch("--quiet");
    a.finish()?;
    thermoflow::systems::check_temperature(t)?;
    if steps < 40 || chains == 0 {
        return Err(Failure::Usage(
            "--steps must be ≥ 40 and --chains ≥ 1".into(),
        ));
    }
    if !(secs.is_finite() && secs > 0.0) {
        return Err(Failure::Usage("--train-seconds must be positive".into()));
    }
    let energy = thermoflow::systems::build(&system, &params)?;
    // The lattice, when the system is φ⁴ (its observables and flow differ).
    let lattice = if system == "phi4" {
        let p = |k: &str| {
            energy
                .params()
                .into_iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v)
                .unwrap_or(f64::NAN)
        };
        Some(thermoflow::systems::Phi4::new(
            p("L") as usize,
            p("m2"),
            p("lambda"),
        )?)
    } else {
        None
    };
    let e = energy.clone();
    let lat = lattice.clone();
    let observe = move |x: &[f64]| -> Vec<f64> {
        match &lat {
            Some(l) => phi4_observables(l, x),
            None => vec![x[0], e.energy(x)],
        }
    };
    let d = energy.dim();
    let x0 = ndarray::Array2::zeros((chains, d));
    let mut bar = thermoflow::train::Progress::new(2.0);
    let mut obs: Vec<&mut dyn thermoflow::train::Observer> = Vec::new();
    if !quiet {
        obs.push(&mut bar);
    }
    let mut training = serde_json::Value::Null;
    let run = match sampler.as_str() {
        "hmc" => {
            let cfg = HmcConfig {
                n_trajectories: steps,
                burn_in: steps / 10,
                n_chains: chains,
                seed,
                ..Default::default()
            };
            hmc(energy.as_ref(), t, &x0, &cfg, &observe)?
        }
        "rwm" => {
            let cfg = RwmConfig {
                n_steps: steps,
                burn_in: steps / 10,
                thin: 1,
                seed,
                ..Default::default()
            };
            let r = rwm(energy.as_ref(), t, x0.view(), &cfg)?;
            // Samples are chain-major: each chain's kept states in a block.
            let n_obs = observe(&vec![0.0; d]).len();
            let per_chain = r.samples.nrows() / chains;
            let mut series = vec![vec![Vec::with_capacity(per_chain); chains]; n_obs];
            for (i, row) in r.samples.rows().into_iter().enumerate() {
                for (k, o) in observe(&row.to_vec()).into_iter().enumerate() {
                    series[k][i / per_chain].push(o);
                }
            }
            thermoflow::mcmc::ChainRun {
                series,
                acceptance: r.acceptance,
                energy_evaluations: r.energy_evaluations,
                seconds: 0.0,
            }
        }
        "flow" => {
            let (flow, report, local_every) = match &lattice {
                Some(l) => {
                    let mut fc = Phi4FlowConfig::new(t);
                    fc.train.seconds = Some(secs);
                    fc.train.seed = seed;
                    let (flow, report) = train_phi4_flow(l, &fc, &mut obs)?;
                    (flow, report, 0)
                }
                None => {
                    let cond = thermoflow::flows::Conditioning::Temperature {
                        t_min: t / 1.25,
                        t_max: t * 1.25,
                    };
                    let mut flow = thermoflow::flows::builders::coupling_flow(
                        d,
                        cond,
                        &thermoflow::sweep::default_flow(),
                    )?;
                    let mut tc = thermoflow::train::TrainConfig::new(t / 1.25, t * 1.25);
                    tc.seconds = Some(secs);
                    tc.seed = seed;
                    let report =
                        thermoflow::train::train(&mut flow, energy.as_ref(), &tc, &mut obs)?;
                    (flow, report, 5)
                }
            };
            training = serde_json::to_value(&report).unwrap_or_default();
            if let Some(path) = &save_flow {
                let meta = serde_json::json!({ "system": system, "params": energy.params() });
                thermoflow::flows::io::save(&flow, meta, std::path::Path::new(path))?;
            }
            let cfg = FlowMcmcConfig {
                n_steps: steps,
                burn_in: steps / 10,
                n_chains: chains,
                local_every,
                local_step: 0.1,
                seed,
            };
            flow_mcmc(&flow, &[t], energy.as_ref(), t, &cfg, &observe, &mut obs)?
        }
        other => {
            return Err(Failure::Usage(format!(
                "unknown sampler {other:?} (flow, hmc or rwm)"
            )))
        }
    };
    let mut v = serde_json::json!({
        "system": system,
        "sampler": sampler,
        "temperature": t,
        "acceptance": run.acceptance,
        "energy_evaluations": run.energy_evaluations,
        "seconds": run.seconds,
    });
    if lattice.is_some() {
        let s = serde_json::to_value(summarize_phi4(&run)?).unwrap_or_default();
        if let (Some(obj), Some(fields)) = (v.as_object_mut(), s.as_object()) {
            obj.extend(fields.clone());
        }
    } else {
        let mean = |k: usize| {
            batch_means(&run.series[k], 20, |c| {
                c.iter().sum::<f64>() / c.len() as f64
            })
        };
        let (x0m, u) = (mean(0), mean(1));
        v["x0"] = serde_json::json!(x0m.value);
        v["x0_se"] = serde_json::json!(x0m.se);
        v["U"] = serde_json::json!(u.value);
        v["U_se"] = serde_json::json!(u.se);
        v["tau_int_x0"] = serde_json::json!(tau_int(&run.series[0]));
    }
    if !training.is_null() {
        v["training"] = training;
    }
    out(&format!("{}\n", serde_json::to_string_pretty(&v).unwrap()));
    if let Some(path) = json {
        write_file(&path, &serde_json::to_string_pretty(&v).unwrap())?;
    }
    Ok(())
}

fn cmd_causal(mut a: Args) -> Result<(), Failure> {
    use thermoflow::causal::{CausalFlow, Dag, LinearScm};
    use thermoflow::systems::Params;
    let params = a.values("--param")?;
    let csv = a.value("--csv")?;
    let dag = a.value("--dag")?;
    let treatment = a.value("--treatment")?.unwrap_or_else(|| "X".into());
    let target = a.value("--target")?.unwrap_or_else(|| "Y".into());
    let values: Vec<f64> = match a.value("--values")? {
        Some(v) => v
            .split(',')
            .map(|x| {
                x.trim()
                    .parse::<f64>()
                    .map_err(|_| Failure::Usage(format!("--values: bad number {x:?}")))
            })
            .collect::<Result<_, _>>()?,
        None => vec![-2.0, -1.0, 0.0, 1.0, 2.0],
    };
    let n: usize = a.parse("--n")?.unwrap_or(20_000);
    let steps: usize = a.parse("--steps")?.unwrap_or(10_000);
    let seed: u64 = a.parse("--seed")?.unwrap_or(0);
    let json = a.value("--json")?;
    a.finish()?;
    let mut rng = thermoflow::rng::seeded(seed);
    let (dag, data, scm) = match (csv, dag) {
        (Some(path), Some(dag)) => {
            if !params.is_empty() {
                return Err(Failure::Usage(
                    "--param applies to the built-in SCM, not to --csv data".into(),
                ));
            }
            let dag = Dag::parse(&dag)?;
            let text = std::fs::read_to_string(&path)
                .map_err(|e| Failure::Run(format!("cannot read {path}: {e}")))?;
            let mut lines = text.lines().filter(|l| !l.trim().is_empty());
            let header: Vec<&str> = lines
                .next()
                .ok_or_else(|| Failure::Run(format!("{path} is empty")))?
                .split(',')
                .map(str::trim)
                .collect();
            let cols = dag
                .names
                .iter()
                .map(|nm| {
                    header
                        .iter()
                        .position(|h| h == nm)
                        .ok_or_else(|| Failure::Run(format!("{path} has no column {nm:?}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let mut rows = Vec::new();
            for (i, l) in lines.enumerate() {
                let f: Vec<f64> = l
                    .split(',')
                    .map(|v| v.trim().parse::<f64>())
                    .collect::<Result<_, _>>()
                    .map_err(|_| Failure::Run(format!("{path}: line {} is not numeric", i + 2)))?;
                if f.len() != header.len() || f.iter().any(|v| !v.is_finite()) {
                    return Err(Failure::Run(format!(
                        "{path}: line {} has the wrong number of finite values",
                        i + 2
                    )));
                }
                rows.extend(cols.iter().map(|&c| f[c]));
            }
            let m = rows.len() / dag.names.len();
            if m < 10 {
                return Err(Failure::Run(format!("{path}: too few rows ({m})")));
            }
            (
                dag.clone(),
                ndarray::Array2::from_shape_vec((m, dag.names.len()), rows).unwrap(),
                None,
            )
        }
        (None, None) => {
            let scm = LinearScm::from_params(&Params::parse(&params)?)?;
            (LinearScm::dag(), scm.sample(n, &mut rng), Some(scm))
        }
        _ => {
            return Err(Failure::Usage(
                "give both --csv and --dag, or neither".into(),
            ))
        }
    };
    let (tr, tg) = (dag.index(&treatment)?, dag.index(&target)?);
    let mut flow = CausalFlow::new(dag.clone(), 16, seed);
    let nll = flow.fit(data.view(), steps, 1024, 2e-3, seed)?;
    let mut rows = Vec::new();
    let mut text = format!(
        "causal flow on {:?}, {} samples, final NLL {nll:.4}\n{:>8} {:>22} {:>10} {:>22} {:>10}\n",
        dag.names,
        data.nrows(),
        treatment,
        "E[target|do] ± se",
        "closed",
        "E[target|given] ± se",
        "closed"
    );
    for &x in &values {
        let d = flow.interventional_mean(tg, tr, x, 40_000, seed + 1)?;
        let c = flow.conditional_mean(tg, tr, x, 40_000, seed + 2)?;
        let (dc, cc) = match scm {
            Some(s) => (Some(s.interventional_mean(x)), Some(s.conditional_mean(x))),
            None => (None, None),
        };
        let f = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_else(|| "n/a".into());
        text += &format!(
            "{x:>8.3} {:>22} {:>10} {:>22} {:>10}\n",
            format!("{:.4} ± {:.4}", d.value, d.se),
            f(dc),
            format!("{:.4} ± {:.4}", c.value, c.se),
            f(cc)
        );
        rows.push(serde_json::json!({"value": x, "do_mean": d.value, "do_se": d.se, "do_exact": dc, "cond_mean": c.value, "cond_se": c.se, "cond_exact": cc}));
    }
    out(&text);
    if let Some(path) = json {
        let v = serde_json::json!({"variables": dag.names, "treatment": treatment, "target": target, "final_nll": nll, "scm": scm, "results": rows});
        write_file(&path, &serde_json::to_string_pretty(&v).unwrap())?;
    }
    Ok(())
}

fn cmd_backmap(mut a: Args) -> Result<(), Failure> {
    use thermoflow::backmap::{compare, BackmapConfig};
    let system = a.value("--system")?.unwrap_or_else(|| "bead-chain".into());
    let params = a.values("--param")?;
    let mut cfg = BackmapConfig::default();
    cfg.t = a.parse("--temp")?.unwrap_or(cfg.t);
    cfg.group = a.parse("--group")?.unwrap_or(cfg.group);
    cfg.steps = a.parse("--steps")?.unwrap_or(cfg.steps);
    cfg.seed = a.parse("--seed")?.unwrap_or(cfg.seed);
    let json = a.value("--json")?;
    a.finish()?;
    if system != "bead-chain" {
        return Err(Failure::Usage(
            "backmapping is defined for the bead-chain system".into(),
        ));
    }
    thermoflow::systems::check_temperature(cfg.t)?;
    let energy = thermoflow::systems::build(&system, &params)?;
    let l0 = energy
        .params()
        .iter()
        .find(|(k, _)| k == "l0")
        .map(|(_, v)| *v)
        .unwrap_or(1.0);
    let (with, without) = compare(energy, &cfg, l0)?;
    let v = serde_json::json!({"system": system, "config": cfg, "with_energy_term": with, "without_energy_term": without});
    out(&format!("{}\n", serde_json::to_string_pretty(&v).unwrap()));
    if let Some(path) = json {
        write_file(&path, &serde_json::to_string_pretty(&v).unwrap())?;
    }
    Ok(())
}

fn cmd_systems(a: Args) -> Result<(), Failure> {
    a.finish()?;
    for s in thermoflow::systems::registry() {
        let mut text = format!("{:<15} {}\n", s.name, s.doc);
        for p in s.params {
            text += &format!("    {:<10} = {:<8} {}\n", p.name, p.default, p.doc);
        }
        out(&text);
    }
    Ok(())
}

fn cmd_bench(mut a: Args) -> Result<(), Failure> {
    let what = if a.items.is_empty() {
        String::new()
    } else {
        a.items.remove(0)
    };
    let reps: usize = a.parse("--reps")?.unwrap_or(200);
    let train_seconds: Option<f64> = a.parse("--train-seconds")?;
    let steps: usize = a.parse("--steps")?.unwrap_or(2000);
    let cv_tol: f64 = a.parse("--cv-tol")?.unwrap_or(0.005);
    let json = a.switch("--json");
    a.finish()?;
    let report = match what.as_str() {
        "engine" => thermoflow::bench::engine_bench(reps)?,
        "flows" => thermoflow::bench::flows_bench(reps.min(30))?,
        "sweep" => {
            let secs = train_seconds.unwrap_or(10.0);
            if !(cv_tol.is_finite() && cv_tol > 0.0 && secs.is_finite() && secs > 0.0) {
                return Err(Failure::Usage(
                    "--cv-tol and --train-seconds must be positive".into(),
                ));
            }
            thermoflow::bench::sweep_time_to_accuracy(cv_tol, secs)?
        }
        "mcmc" => {
            let train_seconds = train_seconds.unwrap_or(240.0);
            if !(train_seconds.is_finite() && train_seconds > 0.0) || steps < 40 {
                return Err(Failure::Usage(
                    "--train-seconds must be positive and --steps ≥ 40".into(),
                ));
            }
            thermoflow::bench::mcmc_bench(train_seconds, steps)?
        }
        other => return Err(Failure::Usage(format!("unknown benchmark {other:?}"))),
    };
    if json {
        out(&format!("{report}\n"));
    } else {
        out(&format!(
            "{}\n",
            serde_json::to_string_pretty(&report).unwrap()
        ));
    }
    Ok(())
}

/// Write to stdout; a closed pipe (e.g. `| head`) is not an error worth a panic.
fn out(text: &str) {
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

fn main() -> ExitCode {
    let mut items: Vec<String> = std::env::args().skip(1).collect();
    let cmd = if items.is_empty() {
        String::new()
    } else {
        items.remove(0)
    };
    let args = Args { items };
    let r = match cmd.as_str() {
        "sweep" => cmd_sweep(args),
        "systems" => cmd_systems(args),
        "mcmc" => cmd_mcmc(args),
        "rare" => cmd_rare(args),
        "causal" => cmd_causal(args),
        "backmap" => cmd_backmap(args),
        "bench" => cmd_bench(args),
        "help" | "--help" | "-h" => {
            out(&format!("{USAGE}\n"));
            Ok(())
        }
        other => Err(Failure::Usage(format!("unknown command {other:?}"))),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(m)) => {
            eprintln!("thermoflow: {m}\n{USAGE}");
            ExitCode::from(2)
        }
        Err(Failure::Run(m)) => {
            eprintln!("thermoflow: {m}");
            ExitCode::from(1)
        }
    }
}
