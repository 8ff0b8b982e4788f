//! The `thermoflow` command line: `sweep`, `systems`, `bench`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use thermoflow::sweep::{self, SweepConfig};

const USAGE: &str = "usage:
  thermoflow sweep [--system NAME] [--param key=value ...] [--tmin A] [--tmax B] [--temps N]
                   [--train-seconds S] [--samples M] [--seed K] [--json FILE] [--html FILE]
                   [--save-model FILE | --load-model FILE] [--quiet]
  thermoflow systems
  thermoflow bench engine|flows|sweep [--json] [--reps N]";

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
    cfg.train_seconds = a.parse("--train-seconds")?.unwrap_or(cfg.train_seconds);
    cfg.samples = a.parse("--samples")?.unwrap_or(cfg.samples);
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
    let json = a.switch("--json");
    a.finish()?;
    let report = match what.as_str() {
        "engine" => thermoflow::bench::engine_bench(reps)?,
        "flows" => thermoflow::bench::flows_bench(reps.min(30))?,
        "sweep" => thermoflow::bench::sweep_time_to_accuracy()?,
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
