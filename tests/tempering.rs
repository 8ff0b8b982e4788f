//! Parallel tempering with the conditioned flow's proposals among its moves: against exact
//! quadrature within its own error bars, the same run for the same seed, and the sweep's
//! tempering stage taking over where a barely trained flow fails and annealing is off.

mod common;

use thermoflow::exact::reference;
use thermoflow::flows::{linear_flow, Conditioning};
use thermoflow::mcmc::{parallel_tempering_with, Moves, PtConfig};
use thermoflow::sweep::{self, Method, SweepConfig, Tempering};
use thermoflow::systems;

/// A flow conditioned on T ∈ [0.5, 3] with zero parameters: x = √T z, q(·|T) = N(0, T I).
fn untrained_flow(dim: usize) -> thermoflow::flows::Flow {
    let cond = Conditioning::Temperature {
        t_min: 0.5,
        t_max: 3.0,
    };
    linear_flow(dim, cond).unwrap()
}

/// From the untrained flow (q = N(0, T I): a poor proposal for two wells, yet some proposals
/// land) the ladder's ⟨U⟩ and C_V lie within 4.5 batch-means standard errors of quadrature at
/// every rung; the flow's proposals are made and some accepted; the same seed gives the same
/// run.
#[test]
fn tempering_with_flow_proposals_matches_quadrature() {
    let e = systems::build("double-well-2d", &["c=1"]).unwrap();
    let flow = untrained_flow(2);
    let mut cfg = PtConfig::geometric(0.5, 3.0, 8);
    cfg.n_sweeps = 20_000;
    cfg.seed = common::seed(11);
    cfg.flow_every = 5;
    cfg.moves = Moves::Joint;
    let run = parallel_tempering_with(e.as_ref(), &cfg, Some(&flow)).unwrap();
    assert!(
        run.flow_acceptance > 0.01 && run.flow_acceptance < 1.0,
        "flow acceptance {}",
        run.flow_acceptance
    );
    let exact = reference(e.as_ref(), &cfg.temps).unwrap().unwrap();
    for (m, x) in run.thermo().iter().zip(&exact) {
        for (name, est, truth) in [("U", m.u, x.u), ("Cv", m.cv, x.cv)] {
            // Measured largest |z| over THERMOFLOW_TEST_SEED = 1–6 (tests/zspread.sh): 1.7–2.4 over
            // 16 comparisons.
            assert!(
                common::within(name, est.value, est.se, truth, 4.5, 0.0),
                "T = {:.3}: {name} {:.4} ± {:.4} vs exact {truth:.4}",
                m.t,
                est.value,
                est.se
            );
        }
    }
    let again = parallel_tempering_with(e.as_ref(), &cfg, Some(&flow)).unwrap();
    assert_eq!(run.traces, again.traces);
    // Without the flow the same ladder is plain parallel tempering (no proposals made).
    let plain = parallel_tempering_with(e.as_ref(), &cfg, None).unwrap();
    assert!(plain.flow_acceptance.is_nan());
    let wrong_dim = untrained_flow(3);
    assert!(parallel_tempering_with(e.as_ref(), &cfg, Some(&wrong_dim)).is_err());
}

/// The flow's proposals go on after burn-in only where their weights have a finite variance:
/// the untrained flow's defensive mixture 0.9 N(0, T) + 0.1 N(0, 1.44 T) proposes for a spring
/// U = k x² whose Boltzmann distribution N(0, T/2k) is narrower at k = 1 (bounded weights:
/// every rung keeps them) and wider at k = 1/50 (σ² = 25 T: weights with a Pareto tail of
/// k = 1 − 1.44/25 = 0.94: at most one rung of six keeps them). Both runs agree with the closed
/// form within 4.5 standard errors.
#[test]
fn flow_proposals_continue_only_where_their_weights_have_finite_variance() {
    for (k_wall, kept) in [("1", true), ("0.02", false)] {
        let e = systems::build("harmonic", &["n=1".into(), format!("k_wall={k_wall}")]).unwrap();
        let flow = untrained_flow(1);
        let mut cfg = PtConfig::geometric(0.5, 3.0, 6);
        cfg.n_sweeps = 10_000;
        cfg.burn_in = 2000;
        cfg.seed = common::seed(12);
        cfg.flow_every = 5;
        cfg.moves = Moves::Joint;
        let run = parallel_tempering_with(e.as_ref(), &cfg, Some(&flow)).unwrap();
        let on = run.flow_rungs.iter().filter(|&&on| on).count();
        if kept {
            assert_eq!(on, 6, "k_wall = {k_wall}: {:?}", run.flow_rungs);
        } else {
            // k̂ from ~3200 proposals scatters by about ±0.2 (0.48–1.08 over the six rungs at
            // seed 3, where k = 0.94): one rung in six may slip through.
            assert!(on <= 1, "k_wall = {k_wall}: {:?}", run.flow_rungs);
        }
        let exact = reference(e.as_ref(), &cfg.temps).unwrap().unwrap();
        for (m, x) in run.thermo().iter().zip(&exact) {
            assert!(
                common::within("U", m.u.value, m.u.se, x.u, 4.5, 0.0),
                "k_wall = {k_wall}, T = {:.3}: U {:.4} ± {:.4} vs exact {:.4}",
                m.t,
                m.u.value,
                m.u.se,
                x.u
            );
        }
    }
}

/// Plain parallel tempering on angles (U(1) links on the 2 × 2 torus: eight angles, energy
/// bounded, so at the hot rungs a proposal uniform on the circle is accepted more than the 30 %
/// the step adaptation aims for): ⟨U⟩ and C_V within 4.5 batch-means standard errors of the
/// character expansion at every rung, the sweep's witness's settings (dispersed starts, joint
/// moves). Before the adaptation's ceiling (`mcmc::clamp_log_step`) the hot rungs' steps grew
/// without bound and ⟨U⟩ at T = 0.5 came out 12 standard errors off (the sweep's witness, with
/// twice the sweeps: 40). Largest |z| of the 20 at THERMOFLOW_TEST_SEED = 1–8: 1.5–3.1.
#[test]
fn tempering_on_angles_matches_the_character_expansion() {
    let e = systems::build("u1", &["L=2"]).unwrap();
    let mut cfg = PtConfig::geometric(0.5, 4.0, 10);
    cfg.n_sweeps = 10_000;
    cfg.seed = common::seed(13);
    cfg.moves = Moves::for_system(e.as_ref());
    let mut rng = thermoflow::rng::seeded(cfg.seed);
    cfg.starts = thermoflow::mcmc::dispersed_starts(e.as_ref(), cfg.n_ladders, &mut rng).unwrap();
    let run = parallel_tempering_with(e.as_ref(), &cfg, None).unwrap();
    let exact = reference(e.as_ref(), &cfg.temps).unwrap().unwrap();
    for (m, x) in run.thermo().iter().zip(&exact) {
        for (name, est, truth) in [("U", m.u, x.u), ("Cv", m.cv, x.cv)] {
            assert!(
                common::within(name, est.value, est.se, truth, 4.5, 0.0),
                "T = {:.3}: {name} {:.4} ± {:.4} vs exact {truth:.4}",
                m.t,
                est.value,
                est.se
            );
        }
    }
}

/// A flow trained for 20 steps, no retraining, no flow-MCMC, no annealing: importance sampling
/// fails, tempering replaces the failing temperatures with its own checks (round trips, split
/// halves) instead of the weights' and the anneal as its witness, log Z is not estimated there,
/// and what it leaves trusted agrees with quadrature within 4 reported standard errors.
#[test]
fn sweep_tempers_where_the_flow_fails() {
    let cfg = SweepConfig {
        system: "double-well-2d".into(),
        params: vec!["c=1".into()],
        t_min: 0.5,
        t_max: 3.0,
        temps: 6,
        train_seconds: None,
        train_steps: Some(20),
        samples: 5_000,
        cv_tol: Some(0.01),
        witness_sweeps: 10_000,
        repairs: 0,
        methods: vec![Method::Importance, Method::Temper(Tempering::default())],
        progress: false,
        seed: common::seed(5),
        ..Default::default()
    };
    let (r, _, _) = sweep::run(&cfg).unwrap();
    let used: Vec<usize> = (0..r.temperatures.len())
        .filter(|&i| r.method[i] == "tempering")
        .collect();
    assert!(
        !used.is_empty(),
        "tempering not used: {:?} {}",
        r.method,
        r.verdict
    );
    let run = r.tempering.as_ref().expect("the tempering run is reported");
    assert!(run.round_trips > 0 && run.ladders >= 16);
    let trusted = r.trusted.iter().filter(|&&t| t).count();
    assert!(trusted >= 5, "{}", r.verdict);
    for &i in &used {
        // Checked against the anneal, not against the tempering witness.
        for name in [
            "pt_round_trips",
            "pt_split",
            "witness_cv",
            "witness_resolution",
            "witness_hysteresis",
            "witness_start",
        ] {
            assert!(r.checks[i].contains_key(name), "{name} missing");
        }
        for name in ["missed_mass", "ess", "pareto_k", "witness_mixing"] {
            assert!(!r.checks[i].contains_key(name), "{name} present");
        }
        assert!(r.log_z[i].is_nan());
    }
    // Measured largest |z| over THERMOFLOW_TEST_SEED = 1–6 (tests/zspread.sh): 1.6–2.3 over the
    // trusted points.
    common::trusted_points_within(&r, 4.0);
}

/// Tempering given a ladder that cannot cross the barrier of a tilted double well (b = 8: a
/// barrier of 64, 16 kT at T_max = 4; its hottest rung T_max, every ladder started in the
/// deeper well, no flow proposals): one well at every rung, so its estimates miss the shallower
/// well (a quarter of the mass at T_max) while its own checks pass. The witness that checks it
/// is not another run of tempering but the anneal from the trained flow, which is sound there
/// (its passes agree; at T_max it agrees with the parallel-tempering witness, whose ladder
/// reaches 2 T_max and crosses) and disagrees: no tempered point is trusted. `--methods temper`
/// alone: no importance sampling before it.
#[test]
fn tempering_that_cannot_cross_a_barrier_is_caught_by_its_independent_witness() {
    let rigged = Tempering {
        flow_proposals: false,
        hottest: 1.0,
        starts: Some(vec![vec![-4.0]]),
    };
    let cfg = SweepConfig {
        system: "double-well-1d".into(),
        params: vec!["b=8".into(), "c=0.5".into()],
        t_min: 1.0,
        t_max: 4.0,
        temps: 4,
        train_seconds: None,
        train_steps: Some(1500),
        samples: 5_000,
        cv_tol: None,
        witness_sweeps: 10_000,
        methods: vec![Method::Temper(rigged)],
        progress: false,
        seed: common::seed(6),
        ..Default::default()
    };
    let (r, _, _) = sweep::run(&cfg).unwrap();
    let e = r.exact.as_ref().unwrap();
    let n = r.temperatures.len();
    assert!(r.method.iter().all(|m| m == "tempering"), "{:?}", r.method);
    // The rig: tempering's own checks pass, and its ⟨U⟩ at T_max is far off the truth.
    for name in ["pt_round_trips", "pt_split"] {
        assert!(r.checks[n - 1][name].pass, "{name}: {:?}", r.checks[n - 1]);
    }
    // Measured over THERMOFLOW_TEST_SEED = 1–5: |z| 80–116.
    assert!(
        !common::within("rigged U", r.u[n - 1], r.u_se[n - 1], e.u[n - 1], 10.0, 0.0),
        "the rigged ladder crossed"
    );
    // Its witness is the anneal; where its own checks say it is sound it is right within its
    // errors and disagrees; where they do not (its start, the flow at T_max, missed the shallow
    // well) it is no evidence. Nothing is trusted either way. Measured over seeds 1–5: sound at
    // 1–4 (anneal |z| ≤ 1.4 against quadrature, witness_start ≤ 2.3); at 5 the flow missed the
    // shallow well, the anneal's ⟨U⟩ was off by 38 SE and witness_start was 18.3. At seeds 4
    // and 9 of 1–16 T_min (⟨U⟩ 25 of the ladder's errors off, C_V 35 % low) passed as trusted
    // against an anneal 6.6 and 11.5× less precise, until the anneal was made to resolve
    // tempering's errors (`witness_resolution`); seeds 1–16 pass since (2026-12-07).
    let anneal = &r.smc.as_ref().expect("the anneal is reported").points[n - 1].thermo;
    let c = &r.checks[n - 1];
    assert!(
        !c.contains_key("witness_mixing"),
        "checked by tempering's witness"
    );
    eprintln!(
        "[z] {} witness_start {:.3}",
        std::thread::current().name().unwrap_or("main"),
        c["witness_start"].value
    );
    let right = common::within(
        "anneal U",
        anneal.u.value,
        anneal.u.se,
        e.u[n - 1],
        4.0,
        0.0,
    );
    if c["witness_start"].pass && c["witness_hysteresis"].pass {
        assert!(right, "a wrong anneal passed as sound: {c:?}");
        assert!(!c["witness_u"].pass, "{c:?}");
    }
    assert!(r.trusted.iter().all(|t| !t), "{}", r.verdict);
}
