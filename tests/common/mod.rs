//! What the integration tests share: the binary, running it to success, reading its JSON.
#![allow(dead_code)] // each test file uses what it needs

pub mod kernels;
pub mod training;

use std::path::Path;
use std::process::{Command, Output};

/// The thermoflow binary of this build.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_thermoflow"))
}

/// Run `cmd` and require success, showing its stderr otherwise.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A JSON file the binary wrote.
pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The seed of a statistical test: `base` at the default `THERMOFLOW_TEST_SEED` (1), and for
/// `THERMOFLOW_TEST_SEED=s` another fixed stream per test, so a bound measured at one seed is
/// checked at others (`THERMOFLOW_TEST_SEED=2 cargo test --release -- --ignored`).
pub fn seed(base: u64) -> u64 {
    let s = test_seed();
    base.wrapping_add((s - 1).wrapping_mul(1_000_003))
}

/// `THERMOFLOW_TEST_SEED` (default 1; 0 or anything unparsable is refused).
pub fn test_seed() -> u64 {
    match std::env::var("THERMOFLOW_TEST_SEED") {
        Err(_) => 1,
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(s) if s >= 1 => s,
            _ => panic!("THERMOFLOW_TEST_SEED must be a positive integer, got {v:?}"),
        },
    }
}

/// Every trusted temperature of a sweep with an exact reference has ⟨U⟩ and C_V within `k` of
/// their reported standard errors of it (each z printed by [`within`]).
pub fn trusted_points_within(r: &thermoflow::sweep::SweepResult, k: f64) {
    let e = r.exact.as_ref().expect("an exact reference");
    for i in (0..r.temperatures.len()).filter(|&i| r.trusted[i]) {
        for (name, v, se, x) in [
            ("U", r.u[i], r.u_se[i], e.u[i]),
            ("Cv", r.cv[i], r.cv_se[i], e.cv[i]),
        ] {
            assert!(
                within(name, v, se, x, k, 0.0),
                "T = {:.3} ({}): {name} {v:.4} ± {se:.4} vs {x:.4}",
                r.temperatures[i],
                r.method[i]
            );
        }
    }
}

/// Whether `value` lies within `k` standard errors `se` plus an absolute `floor` of `exact`;
/// prints the z-score as `[z] <test> <label> <z>` so that the spread a bound is set from can be
/// measured over seeds (`tests/zspread.sh`).
pub fn within(label: &str, value: f64, se: f64, exact: f64, k: f64, floor: f64) -> bool {
    let z = (value - exact) / se;
    let thread = std::thread::current();
    eprintln!("[z] {} {label} {z:+.3}", thread.name().unwrap_or("main"));
    (value - exact).abs() <= k * se + floor
}
