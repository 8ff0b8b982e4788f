//! Observers of long work (argmin style): the trainer reports metrics after every step, and a
//! sampler such as flow-MCMC after every step of its chains (with `acceptance` set); observers
//! decide what to do with them (print progress, record history, …).
//!
//! Long loops also poll [`interrupted`]: the command line sets it on the first Ctrl-C
//! ([`stop_on_interrupt`]), training ends at its next step as if its budget were spent, and
//! what was computed so far is still reported and saved.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Metrics of one training step.
#[derive(Clone, Debug, Serialize)]
pub struct StepMetrics {
    /// Step number (1-based).
    pub step: usize,
    /// Seconds since training started.
    pub seconds: f64,
    /// Fraction of the budget used (time or steps).
    pub progress: f64,
    /// Reverse-KL loss mean(log q + U/T) over the batch; during the warm start, the
    /// forward-KL loss −mean log q(x_data) instead (see `warm_start`).
    pub loss: f64,
    /// Whether this step belongs to the forward-KL warm start.
    pub warm_start: bool,
    /// Learning rate used.
    pub lr: f64,
    /// Per temperature bin: (T_low, T_high, ESS fraction of the batch's samples in the bin).
    pub ess_by_bin: Vec<(f64, f64, f64)>,
    /// Flow samples per second so far.
    pub samples_per_s: f64,
    /// Samples dropped so far for a non-finite energy.
    pub bad_samples: usize,
    /// Something the user should know (a restored step, a phase change).
    pub event: Option<String>,
    /// Set by samplers: acceptance rate so far (the step is a Markov-chain step, not training).
    pub acceptance: Option<f64>,
}

/// Receives metrics after each step.
pub trait Observer {
    /// Called after every step.
    fn observe(&mut self, m: &StepMetrics);
}

/// Records every step (for the loss plot and the JSON report).
#[derive(Clone, Debug, Default)]
pub struct History {
    /// (step, seconds, reverse-KL loss) after the warm start.
    pub loss: Vec<(usize, f64, f64)>,
    /// Events with their step.
    pub events: Vec<(usize, String)>,
}

impl Observer for History {
    fn observe(&mut self, m: &StepMetrics) {
        if !m.warm_start && m.acceptance.is_none() {
            self.loss.push((m.step, m.seconds, m.loss));
        }
        if let Some(e) = &m.event {
            self.events.push((m.step, e.clone()));
        }
    }
}

/// A progress bar on stderr: redrawn in place on a terminal, one line per update otherwise
/// (notebooks show lines as they come).
pub struct Progress {
    every: Duration,
    last: Option<Instant>,
    tty: bool,
}

impl Progress {
    /// Update at most every `seconds`.
    pub fn new(seconds: f64) -> Progress {
        Progress {
            every: Duration::from_secs_f64(seconds),
            last: None,
            tty: std::io::stderr().is_terminal(),
        }
    }
}

impl Observer for Progress {
    fn observe(&mut self, m: &StepMetrics) {
        let what = if m.acceptance.is_some() {
            "mcmc"
        } else {
            "train"
        };
        if let Some(e) = &m.event {
            if self.tty {
                eprintln!();
            }
            eprintln!("[{what}] step {}: {e}", m.step);
        }
        let due = self.last.is_none_or(|l| l.elapsed() >= self.every) || m.progress >= 1.0;
        if !due {
            return;
        }
        self.last = Some(Instant::now());
        let width = 24;
        let filled = ((m.progress.clamp(0.0, 1.0)) * width as f64).round() as usize;
        let bar: String = "#".repeat(filled) + &"-".repeat(width - filled);
        let (mut lo, mut lo_t) = (f64::INFINITY, f64::NAN);
        for &(a, b, e) in &m.ess_by_bin {
            if e < lo {
                lo = e;
                lo_t = (a * b).sqrt();
            }
        }
        let ess = if lo.is_finite() {
            format!("min ESS {lo:.2} (T≈{lo_t:.2})")
        } else {
            "min ESS   -         ".into()
        };
        let line = if let Some(acc) = m.acceptance {
            format!(
                "[mcmc] [{bar}] {:3.0}% step {:6} {:6.1}s acceptance {acc:.3} {:.0} proposals/s",
                100.0 * m.progress.min(1.0),
                m.step,
                m.seconds,
                m.samples_per_s
            )
        } else {
            format!(
            "[train] [{bar}] {:3.0}% step {:6} {:6.1}s {} {:9.4} lr {:.1e} {ess} {:.0} samples/s",
            100.0 * m.progress.min(1.0),
            m.step,
            m.seconds,
            if m.warm_start { "NLL " } else { "loss" },
            m.loss,
            m.lr,
            m.samples_per_s
        )
        };
        if self.tty {
            eprint!("\r{line}");
            if m.progress >= 1.0 {
                eprintln!();
            }
        } else {
            eprintln!("{line}");
        }
    }
}

/// A count of units done out of a total, on stderr with the rate and the time left: redrawn in
/// place on a terminal at most every second, one line at most every `seconds` otherwise.
pub struct Counter {
    label: String,
    unit: &'static str,
    total: usize,
    done: usize,
    start: Instant,
    last: Instant,
    every: Duration,
    tty: bool,
}

impl Counter {
    /// `total` units of `unit` (plural) under `label` (as `[sweep] round 2`), lines at most
    /// every `seconds` where stderr is not a terminal.
    pub fn new(label: String, unit: &'static str, total: usize, seconds: f64) -> Counter {
        let tty = std::io::stderr().is_terminal();
        Counter {
            label,
            unit,
            total,
            done: 0,
            start: Instant::now(),
            last: Instant::now(),
            every: Duration::from_secs_f64(if tty { 1.0 } else { seconds }),
            tty,
        }
    }

    /// `n` more units done; `at` says where (as `T = 0.45`).
    pub fn add(&mut self, n: usize, at: &str) {
        self.done += n;
        let finished = self.done >= self.total;
        if !finished && self.last.elapsed() < self.every {
            return;
        }
        self.last = Instant::now();
        let rate = self.done as f64 / self.start.elapsed().as_secs_f64().max(1e-9);
        let left = self.total.saturating_sub(self.done) as f64 / rate.max(1e-9);
        let (label, unit) = (&self.label, self.unit);
        let line = format!(
            "{label}: {}/{} {unit} ({:.0} %), {at}, {rate:.0} {unit}/s, about {left:.0} s left",
            self.done,
            self.total,
            100.0 * self.done as f64 / self.total.max(1) as f64,
        );
        if self.tty {
            eprint!("\r{line}\x1b[K");
            if finished {
                eprintln!();
            }
        } else if !finished {
            eprintln!("{line}");
        }
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Whether the user asked long work to stop (see [`stop_on_interrupt`]).
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// Ask long work to stop at its next step, as Ctrl-C does (also for tests and notebooks). The
/// request stays until [`clear_stop`].
pub fn request_stop() {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Let long work run again after [`request_stop`] (a notebook's next cell).
pub fn clear_stop() {
    INTERRUPTED.store(false, Ordering::Relaxed);
}

/// Make the first Ctrl-C stop long work at its next step (training ends, results so far are
/// written); a second one exits at once with status 130.
pub fn stop_on_interrupt() {
    let _ = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::Relaxed) {
            std::process::exit(130);
        }
        eprintln!(
            "\n[thermoflow] interrupted: stopping at the next step (Ctrl-C again to quit now)"
        );
    });
}
