//! The trainer's guard and its reproducibility.

use thermoflow::flows::{builders, Conditioning};
use thermoflow::sweep::{self, SweepConfig};
use thermoflow::systems::Energy;
use thermoflow::train::{train, Observer, StepMetrics, TrainConfig};

/// ½|x|², except that its gradient overflows f32 where x₀ > 3.8: a step with such a sample
/// is discarded by the trainer's guard.
struct Overflowing;

impl Energy for Overflowing {
    fn name(&self) -> &str {
        "overflowing"
    }
    fn dim(&self) -> usize {
        2
    }
    fn params(&self) -> Vec<(String, f64)> {
        Vec::new()
    }
    fn energy(&self, x: &[f64]) -> f64 {
        0.5 * (x[0] * x[0] + x[1] * x[1])
    }
    fn energy_grad(&self, x: &[f64], g: &mut [f64]) -> f64 {
        let big = if x[0] > 3.8 { 1e300 } else { 1.0 };
        g[0] = big * x[0];
        g[1] = x[1];
        self.energy(x)
    }
}

#[derive(Default)]
struct Record(Vec<(f64, f64, bool, bool)>);

impl Observer for Record {
    fn observe(&mut self, m: &StepMetrics) {
        let discarded = m.event.as_deref().is_some_and(|e| e.contains("discarded"));
        self.0.push((m.progress, m.lr, discarded, m.warm_start));
    }
}

/// After a discarded step the learning rate stays halved: the cosine schedule must not
/// overwrite the recovery on the next step.
#[test]
fn a_discarded_step_halves_the_learning_rate_for_the_rest_of_training() {
    let e = Overflowing;
    let mut flow = builders::coupling_flow(
        2,
        Conditioning::Temperature {
            t_min: 0.5,
            t_max: 1.0,
        },
        &thermoflow::flows::default_flow(),
    )
    .unwrap();
    let mut tc = TrainConfig::new(0.5, 1.0);
    tc.seconds = None;
    tc.steps = Some(300);
    tc.pt_sweeps = 0;
    tc.seed = 3;
    let mut rec = Record::default();
    let report = train(&mut flow, &e, &tc, &mut [&mut rec]).unwrap();
    // Training steps only: not the warm start, not the closing report (progress 1).
    let steps: Vec<_> = rec.0.iter().filter(|s| !s.3 && s.0 < 1.0).collect();
    let discards = steps.iter().filter(|s| s.2).count();
    assert!(discards >= 1, "no step was discarded: the test needs one");
    assert_eq!(discards, report.restored_steps);
    let schedule = |f: f64| tc.lr * (0.05 + 0.95 * 0.5 * (1.0 + (std::f64::consts::PI * f).cos()));
    let mut halvings = 0;
    for s in &steps {
        let want = schedule(s.0) * 0.5f64.powi(halvings);
        assert!(
            (s.1 - want).abs() <= 1e-12 * want,
            "progress {}: lr {} but the schedule after {halvings} halvings gives {want}",
            s.0,
            s.1
        );
        if s.2 {
            halvings += 1;
        }
    }
}

/// With step budgets the same seed gives the same sweep, number for number, whatever the
/// machine's load: the second run shares the cores with a busy thread. The 20-step flow fails
/// importance sampling, so the run goes through the repairs, tempering and annealing whose
/// budgets once ended on the clock; everything in the result but the timings must match.
#[test]
fn a_step_budget_and_a_seed_give_the_same_sweep_twice() {
    let cfg = SweepConfig {
        params: vec!["c=1".into()],
        temps: 6,
        train_seconds: None,
        train_steps: Some(20),
        samples: 2_000,
        cv_tol: Some(0.02),
        max_samples: 20_000,
        witness_sweeps: 2_000,
        repairs: 1,
        seed: 7,
        progress: false,
        ..Default::default()
    };
    let (a, _, _) = sweep::run(&cfg).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut x = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        })
    };
    let (b, _, _) = sweep::run(&cfg).unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    busy.join().unwrap();
    assert_eq!(a.config["seed"], 7);
    assert_eq!(a.config["train_steps"], 20);
    assert!(
        a.method.iter().any(|m| m != "importance"),
        "no repair path taken: {:?}",
        a.method
    );
    let (ja, jb) = (untimed(&a), untimed(&b));
    assert!(ja == jb, "the two runs differ:\n{ja}\n{jb}");
}

/// A sweep's result as JSON without what measures time: keys naming seconds or rates, and
/// durations ("1.3 s") in its text.
fn untimed(r: &thermoflow::sweep::SweepResult) -> serde_json::Value {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::String(s) => {
                let words: Vec<&str> = s.split(' ').collect();
                *s = words
                    .iter()
                    .enumerate()
                    .map(|(i, w)| {
                        let number = w.trim_start_matches('(').parse::<f64>().is_ok();
                        let unit = words.get(i + 1).is_some_and(|u| u.starts_with('s'));
                        if number && unit && w.contains('.') {
                            "…"
                        } else {
                            w
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" ");
            }
            serde_json::Value::Object(m) => {
                m.retain(|k, _| !(k.contains("seconds") || k.contains("per_s")));
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut v = serde_json::to_value(r).unwrap();
    strip(&mut v);
    v
}
