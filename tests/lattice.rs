//! Flow-MCMC on the φ⁴ lattice (L = 8, m² = −4, λ = 8) against HMC and the published value
//! χ₂ = 0.75 ± 0.01 (Albergo, Kanwar & Shanahan 2019). One test per binary: the training has a
//! step budget, so the result does not depend on the machine's speed.

mod common;

use ndarray::Array2;
use thermoflow::lattice::{phi4_observables, summarize_phi4, train_phi4_flow, Phi4FlowConfig};
use thermoflow::mcmc::{flow_mcmc, hmc, FlowMcmcConfig, HmcConfig};
use thermoflow::systems::Phi4;

#[test]
#[ignore = "verify: ~2.5 min"]
fn phi4_flow_mcmc_reproduces_chi2_and_decorrelates_faster_than_hmc_per_evaluation() {
    let phi = Phi4::new(8, -4.0, 8.0).unwrap();
    let observe = |x: &[f64]| phi4_observables(&phi, x);

    let hc = HmcConfig {
        n_trajectories: 20_000,
        burn_in: 1000,
        n_chains: 8,
        seed: common::seed(11),
        ..Default::default()
    };
    let h =
        summarize_phi4(&hmc(&phi, 1.0, &Array2::zeros((8, 64)), &hc, &observe).unwrap()).unwrap();

    let mut fc = Phi4FlowConfig::new(1.0);
    fc.train.seconds = None;
    fc.train.steps = Some(STEPS);
    let (flow, report) = train_phi4_flow(&phi, &fc, &mut []).unwrap();
    let mc = FlowMcmcConfig {
        n_steps: 8000,
        max_steps: None,
        burn_in: 50,
        n_chains: 128,
        local_every: 0,
        local_step: 0.1,
        seed: common::seed(4),
    };
    let run = flow_mcmc(&flow, &[1.0], &phi, 1.0, &mc, &observe, &mut []).unwrap();
    let f = summarize_phi4(&run).unwrap();
    eprintln!(
        "training: {} steps in {:.0} s\nHMC : chi2 {:.4} ± {:.4}, |M| {:.4} ± {:.5}, acceptance {:.2}, \
         tau {:.2} steps = {:.1} evaluations\nflow: chi2 {:.4} ± {:.4}, |M| {:.4} ± {:.5}, \
         acceptance {:.2}, tau {:.2} steps = {:.1} evaluations",
        report.steps,
        report.seconds,
        h.chi2,
        h.chi2_se,
        h.abs_m,
        h.abs_m_se,
        h.acceptance,
        h.tau_int_abs_m,
        h.tau_abs_m_evaluations,
        f.chi2,
        f.chi2_se,
        f.abs_m,
        f.abs_m_se,
        f.acceptance,
        f.tau_int_abs_m,
        f.tau_abs_m_evaluations
    );
    assert!(
        (f.chi2 - 0.75).abs() <= 0.02,
        "flow chi2 {} ± {} is not 0.75 within 0.02",
        f.chi2,
        f.chi2_se
    );
    let sigma = (f.chi2_se.powi(2) + h.chi2_se.powi(2)).sqrt();
    assert!(
        common::within("chi2 flow-HMC", f.chi2, sigma, h.chi2, 4.0, 0.0),
        "flow {} vs HMC {} (σ {sigma})",
        f.chi2,
        h.chi2
    );
    let sigma_m = (f.abs_m_se.powi(2) + h.abs_m_se.powi(2)).sqrt();
    assert!(common::within(
        "|m| flow-HMC",
        f.abs_m,
        sigma_m,
        h.abs_m,
        4.0,
        0.0
    ));
    assert!(f.acceptance > 0.2, "acceptance {}", f.acceptance);
    assert!(
        f.tau_abs_m_evaluations < h.tau_abs_m_evaluations,
        "flow needs {} evaluations per independent |M|, HMC {}",
        f.tau_abs_m_evaluations,
        h.tau_abs_m_evaluations
    );
}

/// Training steps of the test's flow (≈ 95 s on a 2-core machine).
const STEPS: usize = 2500;

#[test]
fn bad_training_data_and_settings_are_errors() {
    use thermoflow::train::{train_with_data, TrainConfig, TrainingData};
    let phi = Phi4::new(4, -4.0, 8.0).unwrap();
    let mut fc = Phi4FlowConfig::new(1.0);
    let cond = thermoflow::flows::Conditioning::Temperature {
        t_min: 0.8,
        t_max: 1.25,
    };
    let mut flow = thermoflow::flows::builders::lattice_flow(4, cond, 2, 2, 1, 0).unwrap();
    let mut tc = TrainConfig::new(0.8, 1.25);
    tc.steps = Some(2);
    tc.seconds = None;
    let data = |rows: usize, temps: Vec<f64>, d: usize| TrainingData {
        x: Array2::zeros((rows, d)),
        temps,
        source: "test".into(),
        seconds: 0.0,
        evaluations: 0,
    };
    let bad = [
        data(3, vec![1.0; 2], 16),
        data(2, vec![1.0, f64::NAN], 16),
        data(2, vec![1.0, -1.0], 16),
        data(2, vec![1.0; 2], 9),
        TrainingData {
            x: Array2::from_elem((2, 16), f64::NAN),
            ..data(2, vec![1.0; 2], 16)
        },
    ];
    for d in bad {
        assert!(train_with_data(&mut flow, &phi, &tc, Some(d), &mut []).is_err());
    }
    assert!(train_with_data(
        &mut flow,
        &phi,
        &tc,
        Some(data(2, vec![1.0; 2], 16)),
        &mut []
    )
    .is_ok());
    fc.layers = 0;
    assert!(train_phi4_flow(&phi, &fc, &mut []).is_err());
    fc.layers = 2;
    fc.train.t_min = -1.0;
    assert!(train_phi4_flow(&phi, &fc, &mut []).is_err());
}

#[test]
fn mcmc_cli_prints_the_phi4_fields_and_rejects_bad_input() {
    let bin = env!("CARGO_BIN_EXE_thermoflow");
    let dir = std::env::temp_dir().join(format!("thermoflow-mcmc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("phi4.json");
    common::run_ok(
        std::process::Command::new(bin)
            .args([
                "mcmc",
                "--system",
                "phi4",
                "--param",
                "L=4",
                "--sampler",
                "flow",
            ])
            .args([
                "--train-steps",
                "100",
                "--steps",
                "60",
                "--chains",
                "8",
                "--quiet",
            ])
            .arg("--json")
            .arg(&json),
    );
    let v: serde_json::Value = common::read_json(&json);
    for key in [
        "chi2",
        "chi2_se",
        "abs_m",
        "abs_m_se",
        "acceptance",
        "tau_int_abs_m",
        "energy_evaluations",
        "seconds",
    ] {
        assert!(v[key].is_number(), "{key} missing in {v}");
    }
    assert!(v["training"]["steps"].as_u64().unwrap() > 0);
    for (bad, code) in [
        (vec!["mcmc", "--sampler", "nope"], 2),
        (vec!["mcmc", "--temp", "-1"], 1),
        (vec!["mcmc", "--sampler", "flow", "--train-seconds", "0"], 2),
        (vec!["mcmc", "--param", "L=1"], 1),
    ] {
        let o = std::process::Command::new(bin).args(&bad).output().unwrap();
        assert_eq!(o.status.code(), Some(code), "{bad:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("panicked"), "{bad:?}: {err}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The sweep builds the translation-equivariant lattice flow for a lattice field, conditioned
/// over the whole requested range, and takes the lattice default budget when none is given.
#[test]
fn a_phi4_sweep_trains_the_lattice_flow_over_the_whole_range() {
    let dir = std::env::temp_dir().join(format!("thermoflow-phi4-sweep-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (model, json) = (dir.join("model.json"), dir.join("sweep.json"));
    common::run_ok(
        std::process::Command::new(env!("CARGO_BIN_EXE_thermoflow"))
            .args([
                "sweep", "--system", "phi4", "--param", "L=4", "--tmin", "0.9", "--tmax", "1.1",
            ])
            .args([
                "--temps",
                "2",
                "--train-steps",
                "10",
                "--samples",
                "200",
                "--cv-tol",
                "0",
            ])
            .args([
                "--witness-sweeps",
                "200",
                "--methods",
                "is",
                "--repairs",
                "0",
                "--quiet",
                "--save-model",
            ])
            .arg(&model)
            .arg("--json")
            .arg(&json),
    );
    let (flow, _) = thermoflow::flows::io::load(&model).unwrap();
    assert!(flow
        .layers()
        .iter()
        .all(|l| matches!(l, thermoflow::flows::Layer::LatticeCoupling(_))));
    assert_eq!(
        flow.conditioning(),
        thermoflow::flows::Conditioning::Temperature {
            t_min: 0.9,
            t_max: 1.1
        }
    );
    let v: serde_json::Value = common::read_json(&json);
    assert_eq!(v["train"]["steps"], 10);
    let phi = thermoflow::systems::build::<&str>("phi4", &[]).unwrap();
    let well = thermoflow::systems::build::<&str>("double-well-2d", &[]).unwrap();
    assert_eq!(thermoflow::sweep::default_train_steps(phi.as_ref()), 10_000);
    assert_eq!(thermoflow::sweep::default_train_steps(well.as_ref()), 5000);
    std::fs::remove_dir_all(&dir).ok();
}
