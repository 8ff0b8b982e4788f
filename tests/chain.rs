//! The sweep on a polymer: `bead-chain` (n = 8, 16 coordinates) over [0.5, 2] at 8
//! temperatures. Its flow acts on bond lengths and angles (centre of mass and rotation exact);
//! the reference is the project's own long parallel tempering in the same coordinates (pivot
//! moves), five times the witness's length. Step budgets: the result does not depend on the
//! machine's speed.

mod common;

use thermoflow::sweep::witness::{run_witness, WitnessConfig};
use thermoflow::sweep::{self, SweepConfig};

#[test]
#[ignore = "verify: ~4 min"]
fn a_bead_chain_sweep_is_trusted_and_within_3_percent_of_long_tempering() {
    let cfg = SweepConfig {
        system: "bead-chain".into(),
        t_min: 0.5,
        t_max: 2.0,
        temps: 8,
        train_steps: Some(8000),
        cv_tol: Some(0.006),
        progress: false,
        seed: common::seed(0),
        ..Default::default()
    };
    let (r, flow, energy) = sweep::run(&cfg).unwrap();
    assert!(flow.coordinates().is_some(), "{}", flow.summary());
    eprintln!("{}", r.table());
    let reference = run_witness(
        energy.as_ref(),
        &r.temperatures,
        &WitnessConfig {
            sweeps: 100_000,
            ladders: 16,
            seed: common::seed(99),
        },
    )
    .unwrap();
    let mut bad = Vec::new();
    for (i, &t) in r.temperatures.iter().enumerate() {
        let k = reference.rung_of(i).unwrap();
        let h = &reference.thermo[k];
        let rel = (r.cv[i] - h.cv.value).abs() / h.cv.value;
        let z_u = (r.u[i] - h.u.value) / r.u_se[i].hypot(h.u.se);
        eprintln!(
            "T = {t:.3}: C_V {:.3} ± {:.3} vs tempering {:.3} ± {:.3} ({:.1} %), ⟨U⟩ z = {z_u:.1}",
            r.cv[i],
            r.cv_se[i],
            h.cv.value,
            h.cv.se,
            100.0 * rel
        );
        if !r.trusted[i] || rel > 0.03 || z_u.abs() > 4.0 {
            bad.push(format!(
                "T = {t:.3}: trusted {}, C_V off {:.1} %, ⟨U⟩ z {z_u:.1}",
                r.trusted[i],
                100.0 * rel
            ));
        }
    }
    assert!(bad.is_empty(), "{}\n{}", bad.join("\n"), r.verdict);
}
