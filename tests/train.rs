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

/// With a step budget the same seed gives the same sweep, number for number.
#[test]
fn a_step_budget_and_a_seed_give_the_same_sweep_twice() {
    let cfg = SweepConfig {
        temps: 4,
        train_seconds: None,
        train_steps: Some(60),
        samples: 2_000,
        cv_tol: None,
        witness_sweeps: 500,
        repairs: 0,
        seed: 7,
        progress: false,
        ..Default::default()
    };
    let (a, _, _) = sweep::run(&cfg).unwrap();
    let (b, _, _) = sweep::run(&cfg).unwrap();
    assert_eq!(a.train.steps, 60);
    assert_eq!(a.u, b.u);
    assert_eq!(a.cv, b.cv);
    assert_eq!(a.trusted, b.trusted);
    assert_eq!(a.config["seed"], 7);
    assert_eq!(a.config["train_steps"], 60);
}
