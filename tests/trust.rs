//! Trust: a temperature flagged `trusted` must be right within its error bars.
//!
//! Handicapped flows (too little training, a flow trained by reverse KL alone that misses
//! modes, a spline bound that cuts the tail) and a hard system (narrow, well-separated modes at
//! low temperature) must produce no confidently wrong point: every temperature whose ⟨U⟩ or
//! C_V is off the exact value by more than 3 reported standard errors and more than 2 % is
//! untrusted. Over more than 100 (system, temperature) points the exact value must lie within
//! 2 reported standard errors at ≥ 90 % of the trusted points. All budgets are step budgets,
//! so the outcome does not depend on the machine's speed.

mod common;

use thermoflow::flows::{builders, io, Conditioning, Transformer};
use thermoflow::sweep::{self, Method, SweepConfig, SweepResult};
use thermoflow::systems;
use thermoflow::train::{train, TrainConfig};

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("thermoflow-trust-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn quick(system: &str, params: &[&str], t: (f64, f64), temps: usize, steps: usize) -> SweepConfig {
    SweepConfig {
        system: system.into(),
        params: params.iter().map(|s| s.to_string()).collect(),
        t_min: t.0,
        t_max: t.1,
        temps,
        train_seconds: None,
        train_steps: Some(steps),
        samples: 10_000,
        // Error bars of 0.5 %: a point off by > 3 SE and > 2 % is then no mere fluctuation.
        cv_tol: Some(0.005),
        max_samples: 500_000,
        witness_sweeps: 10_000,
        repairs: 0,
        // (flow-MCMC not among them: the bounds below were measured without it.)
        methods: vec![
            Method::Importance,
            Method::Temper(Default::default()),
            Method::Anneal,
        ],
        progress: false,
        seed: common::seed(0),
        ..Default::default()
    }
}

/// Points whose ⟨U⟩ or C_V is off by > 3 SE and > 2 % while flagged trusted.
fn confidently_wrong(r: &SweepResult) -> Vec<String> {
    let e = r.exact.as_ref().expect("exact reference");
    let mut bad = Vec::new();
    for i in 0..r.temperatures.len() {
        for (name, v, se, x) in [
            ("U", r.u[i], r.u_se[i], e.u[i]),
            ("Cv", r.cv[i], r.cv_se[i], e.cv[i]),
        ] {
            let off = (v - x).abs();
            if r.trusted[i] && off > 3.0 * se && off > 0.02 * x.abs() {
                bad.push(format!(
                    "{} T={:.3}: {name} {v:.4} ± {se:.4} vs exact {x:.4} (checks {:?})",
                    r.system, r.temperatures[i], r.checks[i]
                ));
            }
        }
    }
    bad
}

fn run(cfg: &SweepConfig) -> SweepResult {
    let (r, _, _) = sweep::run(cfg).unwrap();
    eprintln!("{}", r.table());
    assert_eq!(r.checks.len(), r.temperatures.len());
    assert_eq!(
        r.trusted,
        r.checks
            .iter()
            .map(|c| c.values().all(|c| c.pass))
            .collect::<Vec<_>>(),
        "trusted is the conjunction of the checks"
    );
    r
}

/// Fraction of a sweep's temperatures that are trusted.
fn trusted_fraction(r: &SweepResult) -> f64 {
    r.trusted.iter().filter(|&&t| t).count() as f64 / r.trusted.len() as f64
}

#[test]
#[ignore = "verify: ~1 min"]
fn handicapped_flows_are_never_confidently_wrong() {
    let mut wrong = Vec::new();
    // Honest is not enough: a sweep that answers nothing fails too. The repairs (tempering,
    // annealing) must leave most of each grid trusted.
    let mut answered = Vec::new();
    // Too little training.
    let r = run(&quick("double-well-2d", &[], (0.5, 3.0), 12, 40));
    // Importance sampling with it is not trusted everywhere: tempering or annealing takes over or the
    // points stay untrusted.
    assert!(
        r.trusted
            .iter()
            .zip(&r.method)
            .any(|(t, m)| !t || m != "importance"),
        "a 40-step flow is trusted everywhere by importance sampling"
    );
    wrong.extend(confidently_wrong(&r));
    answered.push(("40 training steps", trusted_fraction(&r)));
    // A spline bound that cuts the tail: samples beyond ±1 (in √T units) are left untransformed.
    let mut cfg = quick("double-well-2d", &["b=2"], (0.5, 3.0), 12, 600);
    cfg.flow.transformer = Transformer::Spline {
        bins: 8,
        bound: 1.0,
    };
    let r = run(&cfg);
    wrong.extend(confidently_wrong(&r));
    answered.push(("spline bound 1", trusted_fraction(&r)));
    // Reverse KL alone (no tempering data): mode-seeking, it misses modes of the mixture.
    let e = systems::build("mixture", &["sigma=0.4"]).unwrap();
    let mut flow = builders::coupling_flow(
        2,
        Conditioning::Temperature {
            t_min: 0.5,
            t_max: 2.0,
        },
        &thermoflow::flows::default_flow(),
    )
    .unwrap();
    let mut tc = TrainConfig::new(0.5, 2.0);
    tc.seconds = None;
    tc.seed = common::seed(0);
    tc.steps = Some(600);
    tc.pt_sweeps = 0;
    train(&mut flow, e.as_ref(), &tc, &mut []).unwrap();
    let path = tmp("reverse-only.json");
    let params: serde_json::Map<String, serde_json::Value> = e
        .params()
        .into_iter()
        .map(|(k, v)| (k, serde_json::json!(v)))
        .collect();
    io::save(
        &flow,
        serde_json::json!({"system": "mixture", "params": params}),
        &path,
    )
    .unwrap();
    let mut cfg = quick("mixture", &["sigma=0.4"], (0.5, 2.0), 12, 1);
    cfg.load_model = Some(path);
    let r = run(&cfg);
    assert!(
        r.trusted
            .iter()
            .zip(&r.method)
            .any(|(t, m)| !t || m != "importance"),
        "a reverse-KL-only flow on 8 modes is trusted everywhere by importance sampling"
    );
    wrong.extend(confidently_wrong(&r));
    answered.push(("reverse KL only", trusted_fraction(&r)));
    eprintln!("trusted fractions: {answered:?}");
    assert!(wrong.is_empty(), "confidently wrong:\n{}", wrong.join("\n"));
    for (case, f) in answered {
        assert!(
            f >= 0.5,
            "{case}: only {:.0} % of the grid trusted",
            100.0 * f
        );
    }
}

#[test]
#[ignore = "verify: ~1 min"]
fn narrow_modes_at_low_temperature_are_right_or_untrusted() {
    // Eight modes of width 0.25 on a ring of radius 4: barriers of ≈ 18 k_BT at T = 0.3.
    // With the whole repair machinery: continued training, then flow-MCMC where only k̂ fails.
    let mut cfg = quick("mixture", &["sigma=0.25"], (0.3, 1.5), 12, 1500);
    cfg.repairs = 1;
    cfg.methods = Method::all();
    let r = run(&cfg);
    let wrong = confidently_wrong(&r);
    assert!(wrong.is_empty(), "confidently wrong:\n{}", wrong.join("\n"));
}

/// Over > 100 (system, temperature) points the exact value lies within 2 reported SE at
/// ≥ 90 % of the trusted ones (for ⟨U⟩ and for C_V), and no trusted point is confidently wrong.
#[test]
#[ignore = "verify: ~2 min"]
fn error_bars_of_trusted_points_cover_the_truth() {
    let cases: Vec<(&str, Vec<&str>, (f64, f64))> = vec![
        ("harmonic", vec!["k_couple=1"], (0.5, 3.0)),
        ("double-well-1d", vec![], (0.5, 3.0)),
        ("double-well-2d", vec!["b=2", "c=0.5"], (0.5, 3.0)),
        ("mixture", vec!["n_modes=4", "radius=2"], (0.7, 2.0)),
        ("muller-brown", vec![], (0.5, 2.0)),
    ];
    let (mut points, mut trusted, mut cover_u, mut cover_cv) = (0, 0, 0, 0);
    let mut wrong = Vec::new();
    for (system, params, range) in cases {
        let r = run(&quick(system, &params, range, 24, 1500));
        let e = r.exact.as_ref().unwrap();
        for i in 0..r.temperatures.len() {
            points += 1;
            if !r.trusted[i] {
                continue;
            }
            trusted += 1;
            cover_u += ((r.u[i] - e.u[i]).abs() <= 2.0 * r.u_se[i]) as usize;
            cover_cv += ((r.cv[i] - e.cv[i]).abs() <= 2.0 * r.cv_se[i]) as usize;
        }
        wrong.extend(confidently_wrong(&r));
    }
    eprintln!("{points} points, {trusted} trusted; within 2 SE: U {cover_u}, C_V {cover_cv}");
    assert!(points >= 100);
    assert!(
        trusted * 2 >= points,
        "only {trusted} of {points} points trusted: coverage would say little"
    );
    assert!(
        cover_u as f64 >= 0.9 * trusted as f64,
        "U covered at {cover_u}/{trusted}"
    );
    assert!(
        cover_cv as f64 >= 0.9 * trusted as f64,
        "C_V covered at {cover_cv}/{trusted}"
    );
    assert!(wrong.is_empty(), "confidently wrong:\n{}", wrong.join("\n"));
}
