//! The sweep on a lattice field: φ⁴ (L = 8, m² = −4, λ = 8) over [0.8, 1.25], its
//! translation-equivariant lattice flow conditioned over the whole range, against the project's
//! own long HMC at every temperature: ⟨S⟩ and C_V within 2 %, the system's observables ⟨|M|⟩/V
//! and χ₂ = ⟨M²⟩/V within 2 % too, all trusted. Four temperatures and a step budget keep it to a
//! few minutes; `thermoflow bench sweep --system phi4` runs eight.

mod common;

use ndarray::Array2;
use thermoflow::mcmc::{batch_means, hmc, HmcConfig};
use thermoflow::observables::Observable;
use thermoflow::sweep::{self, SweepConfig};
use thermoflow::systems::{Energy, Phi4};

#[test]
#[ignore = "verify: ~20 min"]
fn a_phi4_sweep_matches_long_hmc_in_action_and_heat_capacity() {
    let cfg = SweepConfig {
        system: "phi4".into(),
        t_min: 0.8,
        t_max: 1.25,
        temps: 4,
        train_steps: Some(5000),
        cv_tol: Some(0.007),
        progress: false,
        seed: common::seed(0),
        observables: vec![
            Observable::parse("abs_m").unwrap(),
            Observable::parse("m2").unwrap(),
        ],
        ..Default::default()
    };
    let (r, _, _) = sweep::run(&cfg).unwrap();
    eprintln!("{}", r.table());
    let phi = Phi4::new(8, -4.0, 8.0).unwrap();
    let mut bad = Vec::new();
    for (i, &t) in r.temperatures.iter().enumerate() {
        let hc = HmcConfig {
            n_trajectories: 40_000,
            burn_in: 1000,
            n_chains: 8,
            seed: common::seed(100 + i as u64),
            ..Default::default()
        };
        let run = hmc(&phi, t, &Array2::zeros((8, 64)), &hc, &|x| {
            let [abs_m, m2] = phi.observables(x);
            vec![phi.energy(x), abs_m, m2]
        })
        .unwrap();
        let s = &run.series[0];
        let u = batch_means(s, 20, |c| c.iter().sum::<f64>() / c.len() as f64);
        let cv = batch_means(s, 20, |c| {
            let m = c.iter().sum::<f64>() / c.len() as f64;
            c.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (c.len() as f64 * t * t)
        });
        let (du, dc) = (
            (r.u[i] - u.value).abs() / u.value,
            (r.cv[i] - cv.value).abs() / cv.value,
        );
        eprintln!(
            "T = {t:.3}: ⟨S⟩ {:.3} ± {:.3} vs HMC {:.3} ± {:.3} ({:.2} %); C_V {:.2} ± {:.2} vs HMC {:.2} ± {:.2} ({:.2} %)",
            r.u[i],
            r.u_se[i],
            u.value,
            u.se,
            100.0 * du,
            r.cv[i],
            r.cv_se[i],
            cv.value,
            cv.se,
            100.0 * dc
        );
        for (k, o) in r.observables.iter().enumerate() {
            let m = batch_means(&run.series[k + 1], 20, |c| {
                c.iter().sum::<f64>() / c.len() as f64
            });
            let d = (o.value[i] - m.value).abs() / m.value;
            eprintln!(
                "T = {t:.3}: {} {:.4} ± {:.4} vs HMC {:.4} ± {:.4} ({:.2} %)",
                o.name,
                o.value[i],
                o.se[i],
                m.value,
                m.se,
                100.0 * d
            );
            if d > 0.02 {
                bad.push(format!("T = {t:.3}: {} off {:.2} %", o.name, 100.0 * d));
            }
        }
        if !r.trusted[i] || du > 0.02 || dc > 0.02 {
            bad.push(format!(
                "T = {t:.3}: trusted {}, ⟨S⟩ off {:.2} %, C_V off {:.2} %",
                r.trusted[i],
                100.0 * du,
                100.0 * dc
            ));
        }
    }
    assert!(bad.is_empty(), "{}\n{}", bad.join("\n"), r.verdict);
}
