//! The sweep's methods one at a time (`--methods`): each alone estimates every temperature, is
//! checked by a witness of another algorithm, and what it leaves trusted agrees with quadrature;
//! importance sampling alone gives the same numbers as the first stage of the full sweep.

mod common;

use thermoflow::sweep::{self, Method, SweepConfig, SweepResult};

/// A double well over [0.5, 3] at 4 temperatures, 500 training steps: enough for the flow to
/// cover both wells, too little for its weights to pass everywhere.
fn config(methods: Vec<Method>, base: u64) -> SweepConfig {
    SweepConfig {
        system: "double-well-2d".into(),
        params: vec!["c=1".into()],
        t_min: 0.5,
        t_max: 3.0,
        temps: 4,
        train_seconds: None,
        train_steps: Some(500),
        samples: 5_000,
        cv_tol: Some(0.05),
        max_samples: 200_000,
        witness_sweeps: 2_000,
        repairs: 0,
        methods,
        progress: false,
        seed: common::seed(base),
        ..Default::default()
    }
}

/// Every trusted point within 4 of its standard errors of quadrature (⟨U⟩ and C_V). Measured
/// largest |z| over THERMOFLOW_TEST_SEED = 1–5 (tests/zspread.sh): 1.4–3.1 for flow-MCMC and
/// annealing alone (16 comparisons), 1.8–2.1 for importance sampling.
fn trusted_points_are_right(r: &SweepResult) {
    common::trusted_points_within(r, 4.0);
}

/// Flow-MCMC alone and annealing alone each estimate all four temperatures by themselves, with
/// their own checks and the witness's, and trust what agrees (the missed-mass check reads the
/// largest weight flow-MCMC's own proposals reached: with no importance sampling before it
/// every witness configuration would otherwise count as missed).
#[test]
fn flow_mcmc_alone_and_annealing_alone_estimate_every_temperature() {
    for (method, name, check) in [
        (Method::FlowMcmc, "flow-mcmc", "mcmc_acceptance"),
        (Method::Anneal, "smc", "smc_hysteresis"),
    ] {
        let (r, _, _) = sweep::run(&config(vec![method], 21)).unwrap();
        assert!(r.method.iter().all(|m| m == name), "{:?}", r.method);
        for c in &r.checks {
            for k in [check, "witness_u", "witness_cv", "missed_mass"] {
                if name == "smc" && k == "missed_mass" {
                    continue;
                }
                assert!(c.contains_key(k), "{name}: {k} missing");
            }
        }
        let trusted = r.trusted.iter().filter(|&&t| t).count();
        assert!(trusted >= 2, "{name}: {}", r.verdict);
        trusted_points_are_right(&r);
    }
}

/// Importance sampling alone: every point is importance-sampled (untrusted where its checks
/// fail, nothing replaces it), with the same numbers as the importance-sampled points of the
/// full sweep from the same seed.
#[test]
fn importance_sampling_alone_is_the_first_stage_of_the_full_sweep() {
    let (alone, _, _) = sweep::run(&config(vec![Method::Importance], 22)).unwrap();
    let (full, _, _) = sweep::run(&config(Method::all(), 22)).unwrap();
    assert!(alone.method.iter().all(|m| m == "importance"));
    let mut compared = 0;
    for i in 0..alone.temperatures.len() {
        if full.method[i] == "importance" {
            assert_eq!(alone.u[i], full.u[i]);
            assert_eq!(alone.cv[i], full.cv[i]);
            assert_eq!(alone.trusted[i], full.trusted[i]);
            compared += 1;
        } else {
            assert!(
                !alone.trusted[i],
                "replaced in the full sweep but trusted alone"
            );
        }
    }
    assert!(compared > 0, "the full sweep replaced every point");
    trusted_points_are_right(&alone);
    trusted_points_are_right(&full);
}
