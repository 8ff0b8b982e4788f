//! The sweep, end to end through the command line (run with `cargo test --release`).

mod common;

use std::path::PathBuf;

use rand::SeedableRng;
use thermoflow::estimators::Weights;
use thermoflow::exact::quadrature_expectation;
use thermoflow::flows::io;
use thermoflow::systems;

/// The long sweeps each get the whole machine (their training budget is wall-clock time).
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

use common::bin;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("thermoflow-sweep-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

/// Run a sweep with a step budget (so that the outcome does not depend on the machine) and
/// `--cv-tol 0.005`, and check the JSON: C_V within 2 % of exact at every temperature of the
/// 32-point grid over [0.5, 3], every temperature trusted (whatever repairs that took), the
/// tolerance reached wherever importance sampling made the estimate, and `target_reached`
/// saying what the error bar says everywhere. (A temperature the repairs hand to sequential
/// Monte Carlo can stop short of the tolerance within `--max-samples`: harmonic at seed 1,
/// T = 0.903, C_V 0.982 ± 0.014 against 1 (1.5 %); the six seeds after it reached it
/// everywhere.)
fn sweep_within_two_percent(system: &str, extra: &[&str]) -> serde_json::Value {
    let _machine = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let seed = common::seed(1).to_string();
    let json = tmp(&format!("{system}.json"));
    let html = tmp(&format!("{system}.html"));
    let mut cmd = bin();
    cmd.args([
        "sweep", "--system", system, "--tmin", "0.5", "--tmax", "3", "--temps", "32",
    ])
    .args([
        "--train-steps",
        "4000",
        "--cv-tol",
        "0.005",
        "--seed",
        &seed,
        "--quiet",
    ])
    .arg("--json")
    .arg(&json)
    .arg("--html")
    .arg(&html)
    .args(extra);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = common::read_json(&json);
    assert_eq!(v["system"], system);
    check_shape(&v, 32);
    assert_eq!(v["config"]["train_steps"], 4000);
    assert_eq!(v["config"]["cv_tol"], 0.005);
    let cv = v["Cv"].as_array().unwrap();
    let exact = v["exact"]["Cv"].as_array().unwrap();
    for i in 0..32 {
        let (a, b) = (cv[i].as_f64().unwrap(), exact[i].as_f64().unwrap());
        let t = v["temperatures"][i].as_f64().unwrap();
        assert!(
            ((a - b) / b).abs() < 0.02,
            "{system} T={t}: C_V {a} vs exact {b}"
        );
        assert_eq!(
            v["trusted"][i], true,
            "{system} T={t} not trusted: {}",
            v["verdict"]
        );
        let rel = v["Cv_se"][i].as_f64().unwrap() / a.abs();
        assert_eq!(
            v["target_reached"][i],
            rel <= 0.005,
            "{system} T={t}: target_reached against the relative error {rel}"
        );
        if v["method"][i] == "importance" {
            assert!(rel <= 0.005, "{system} T={t}: tolerance ({rel})");
        }
    }
    check_report(&html);
    v
}

/// Every per-temperature array of the sweep's JSON has one entry per temperature, and the run
/// summary is there.
fn check_shape(v: &serde_json::Value, n: usize) {
    for key in [
        "temperatures",
        "U",
        "U_se",
        "Cv",
        "Cv_se",
        "Cv_deriv",
        "Cv_deriv_se",
        "logZ",
        "logZ_se",
        "F",
        "S",
        "ess_fraction",
        "trusted",
        "samples_used",
        "target_reached",
        "checks",
        "method",
        "pareto_k",
    ] {
        assert_eq!(
            v[key].as_array().unwrap_or_else(|| panic!("{key}")).len(),
            n,
            "{key}"
        );
    }
    assert!(v["verdict"].is_string() && v["witness"]["points"].is_array());
    assert!(v["thermoflow_version"].is_string());
}

/// The HTML report is self-contained: plotly.js embedded, no CDN.
fn check_report(html: &std::path::Path) {
    let page = std::fs::read_to_string(html).unwrap();
    // (plotly.js itself mentions its CDN for map data; what matters is that no script is fetched.)
    assert!(
        !page.contains("<script src="),
        "report loads scripts from the network"
    );
    assert!(page.contains("Plotly.newPlot") && page.len() > 1_000_000);
}

/// `|value − exact| ≤ 4.5 SE + 0.2 %` for ⟨U⟩ and C_V at every temperature of a sweep's JSON
/// (or every trusted one); the largest |z| seen is returned.
fn within_error_bars(v: &serde_json::Value, trusted_only: bool) -> f64 {
    let mut worst = 0.0f64;
    for (key, se) in [("U", "U_se"), ("Cv", "Cv_se")] {
        for i in 0..v["temperatures"].as_array().unwrap().len() {
            let (a, s, x) = (
                v[key][i].as_f64().unwrap(),
                v[se][i].as_f64().unwrap(),
                v["exact"][key][i].as_f64().unwrap(),
            );
            let t = v["temperatures"][i].as_f64().unwrap();
            if trusted_only && v["trusted"][i] != true {
                continue;
            }
            // Measured largest |z| over THERMOFLOW_TEST_SEED = 1–6 (tests/zspread.sh) for the short
            // harmonic sweep: 1.6–2.8 over its 16 comparisons.
            assert!(
                common::within(key, a, s, x, 4.5, 0.002 * x.abs()),
                "T = {t}: {key} {a} ± {s} vs exact {x} ({})",
                v["method"][i]
            );
            worst = worst.max((a - x).abs() / s);
        }
    }
    worst
}

/// The fast end-to-end sweep: harmonic springs, 8 temperatures, 300 training steps, C_V to
/// 1 %, JSON and HTML written. Every temperature is trusted and reaches the tolerance, and
/// ⟨U⟩ and C_V agree with the closed form within 4.5 reported SE + 0.2 %. Measured over seeds
/// 1–6: all 8 trusted each time, largest |z| per run 1.3–2.9 over the 16 comparisons.
#[test]
fn a_short_harmonic_sweep_is_exact_within_its_error_bars() {
    let seed = common::seed(1).to_string();
    let (json, html) = (tmp("short-harmonic.json"), tmp("short-harmonic.html"));
    common::run_ok(
        bin()
            .args([
                "sweep", "--system", "harmonic", "--tmin", "0.5", "--tmax", "3",
            ])
            .args(["--temps", "8", "--train-steps", "300", "--cv-tol", "0.01"])
            .args(["--seed", &seed, "--quiet", "--json"])
            .arg(&json)
            .arg("--html")
            .arg(&html),
    );
    let v = common::read_json(&json);
    assert_eq!(v["system"], "harmonic");
    check_shape(&v, 8);
    assert_eq!(v["config"]["train_steps"], 300);
    assert_eq!(v["config"]["cv_tol"], 0.01);
    for i in 0..8 {
        assert_eq!(v["trusted"][i], true, "T index {i}: {}", v["verdict"]);
        assert_eq!(v["target_reached"][i], true, "T index {i}: tolerance");
    }
    let worst = within_error_bars(&v, false);
    eprintln!("largest |z| {worst:.2}");
    check_report(&html);
}

/// The sweep on 2-D U(1) gauge links: the gauge-equivariant flow trained over the range, the
/// character expansion as the exact column (⟨U⟩, C_V and log Z over the links' Lebesgue
/// measure). L = 4, 3 temperatures, 300 training steps: trusted points within 4.5 SE + 0.2 %
/// of the exact values, log Z too (a reference over the Haar measure would be off by
/// 2V log 2π = 58.8), and the system's observables, the plaquette and Q², within 4.5 SE of
/// theirs (THERMOFLOW_TEST_SEED = 1–6: Q²'s z rms 1.06, largest 2.34 of 18; the plaquette is
/// −U/V, so its z is ⟨U⟩'s).
#[test]
fn a_u1_sweep_matches_the_character_expansion() {
    let seed = common::seed(1).to_string();
    let json = tmp("u1-sweep.json");
    common::run_ok(
        bin()
            .args(["sweep", "--system", "u1", "--param", "L=4"])
            .args(["--observe", "plaquette", "--observe", "q2"])
            .args(["--tmin", "0.5", "--tmax", "1", "--temps", "3"])
            .args(["--train-steps", "300", "--cv-tol", "0.02"])
            .args([
                "--witness-sweeps",
                "5000",
                "--seed",
                &seed,
                "--quiet",
                "--json",
            ])
            .arg(&json),
    );
    let v = common::read_json(&json);
    check_shape(&v, 3);
    let trusted = (0..3).filter(|&i| v["trusted"][i] == true).count();
    assert!(trusted >= 2, "{} trusted: {}", trusted, v["verdict"]);
    let worst = within_error_bars(&v, true);
    for i in (0..3).filter(|&i| v["trusted"][i] == true) {
        let (a, s, x) = (
            v["logZ"][i].as_f64().unwrap(),
            v["logZ_se"][i].as_f64().unwrap(),
            v["exact"]["logZ"][i].as_f64().unwrap(),
        );
        assert!(
            common::within("log Z", a, s, x, 4.5, 0.0),
            "log Z {a} ± {s} vs {x}"
        );
        for o in v["observables"].as_array().unwrap() {
            let f = |k: &str| o[k][i].as_f64().unwrap();
            let name = o["name"].as_str().unwrap();
            assert!(
                common::within(name, f("value"), f("se"), f("exact"), 4.5, 0.0),
                "{name}: {o}"
            );
        }
    }
    eprintln!("largest |z| {worst:.2}");
}

/// The sweep on XY spins on the 2 × 2 torus, whose exact column is the ring's character
/// expansion (`exact::xy_exact`): the checkerboard flow of circular splines trained over [0.5, 2]
/// for 1000 steps, 4 temperatures. At least 3 of 4 trusted; trusted points' ⟨U⟩, C_V (4.5 SE +
/// 0.2 %) and log Z where estimated (4.5 SE) agree with the exact values; the system's observable |M|/V is
/// estimated at every temperature, from near order (> 0.9 at T = 0.5) to disorder, and the
/// helicity modulus (on this torus −⟨U⟩/2V) agrees with its exact value as ⟨U⟩ does. Measured
/// over THERMOFLOW_TEST_SEED = 1–10: every run passed, z rms 0.93 over 120 comparisons, largest
/// |z| per run 0.8–2.7; 7–8 s a run; Υ (2026-12-07) z rms 0.92 over 40, largest 2.59.
#[test]
fn an_xy_sweep_matches_the_exact_two_by_two_torus() {
    let seed = common::seed(1).to_string();
    let json = tmp("xy-sweep.json");
    common::run_ok(
        bin()
            .args([
                "sweep",
                "--system",
                "xy",
                "--param",
                "L=2",
                "--observe",
                "abs_m",
                "--observe",
                "helicity",
            ])
            .args(["--tmin", "0.5", "--tmax", "2", "--temps", "4"])
            .args(["--train-steps", "1000", "--cv-tol", "0.02"])
            .args([
                "--witness-sweeps",
                "5000",
                "--seed",
                &seed,
                "--quiet",
                "--json",
            ])
            .arg(&json),
    );
    let v = common::read_json(&json);
    check_shape(&v, 4);
    let trusted: Vec<usize> = (0..4).filter(|&i| v["trusted"][i] == true).collect();
    assert!(trusted.len() >= 3, "{trusted:?} trusted: {}", v["verdict"]);
    let worst = within_error_bars(&v, true);
    // log Z where importance sampling estimated it (flow-MCMC and tempering do not).
    for &i in &trusted {
        let (Some(a), Some(s)) = (v["logZ"][i].as_f64(), v["logZ_se"][i].as_f64()) else {
            continue;
        };
        let x = v["exact"]["logZ"][i].as_f64().unwrap();
        assert!(
            common::within("log Z", a, s, x, 4.5, 0.0),
            "log Z {a} ± {s} vs {x}"
        );
    }
    let m = &v["observables"][0];
    assert_eq!(m["name"], "abs_m");
    let m: Vec<f64> = (0..4).map(|i| m["value"][i].as_f64().unwrap()).collect();
    assert!(
        m[0] > 0.9 && m.windows(2).all(|w| w[1] < w[0]),
        "|M|/V {m:?}"
    );
    let h = &v["observables"][1];
    assert_eq!(h["name"], "helicity");
    for &i in &trusted {
        let f = |k: &str| h[k][i].as_f64().unwrap();
        assert!(
            common::within(
                "Υ",
                f("value"),
                f("se"),
                f("exact"),
                4.5,
                0.002 * f("exact")
            ),
            "T index {i}: {h}"
        );
    }
    eprintln!("largest |z| {worst:.2}");
}

/// Observables (`--observe`) on the tilted 1-D double well, ⟨x⟩, ⟨x²/T⟩ (an observable of the
/// temperature too, so each method must evaluate it at its own) and ⟨2x − x²/T⟩, and derived
/// quantities (`--derive`): the variance ⟨x²⟩ − ⟨x⟩² and the linear 2⟨x⟩ − ⟨x²/T⟩, which must
/// equal the third observable, value and error (the delta method through the methods' own
/// groups), at 4 temperatures over [0.5, 3] against quadrature, by each estimator with its own error model: importance sampling
/// (with flow-MCMC where the weights' tail fails), then flow-MCMC, tempering and the anneal
/// each alone at every temperature. Every estimate within 4.5 reported SE of the exact value,
/// the variance within 5; the table, JSON and CSV carry them, and the witness compares them
/// everywhere. Measured over THERMOFLOW_TEST_SEED = 1–10: z rms 1.11 (importance, 46
/// estimates), 1.06 (flow-MCMC, 114), 1.03 (tempering, 80), 1.01 (anneal, 80); largest |z| per
/// run 1.6–3.0 of 32. With the observable of T and the derived quantities (2026-12-07, seeds
/// 1–10, 160 estimates each): ⟨x⟩ z rms 1.06, largest 3.0; ⟨x²/T⟩ 1.04, 2.6; ⟨2x − x²/T⟩ 1.00,
/// 3.2; the variance 1.18, 4.08 (tempering) and 3.6 (the anneal), both low: its delta-method
/// error is about a fifth short here, where a few visits to the shallow well move it and
/// tempering's and the anneal's few replicas give its error a t distribution's tails. By the
/// jackknife (bias-corrected, `Influence::combine`), the same: z rms 1.17, the worst −4.08
/// (tempering, T = 0.5), the rms 1.18 and 1.26 at the two coldest temperatures.
#[test]
fn observables_match_quadrature_within_their_error_bars() {
    let seed = common::seed(1).to_string();
    for methods in ["is,flow-mcmc", "flow-mcmc", "temper", "anneal"] {
        let (json, csv) = (tmp(&format!("obs-{methods}.json")), tmp("obs.csv"));
        let out = common::run_ok(
            bin()
                .args(["sweep", "--system", "double-well-1d", "--tmin", "0.5"])
                .args(["--tmax", "3", "--temps", "4", "--train-steps", "1000"])
                .args([
                    "--samples",
                    "10000",
                    "--cv-tol",
                    "0.03",
                    "--methods",
                    methods,
                ])
                .args(["--observe", "x0", "--observe", "x2t = x0^2/T"])
                .args(["--observe", "l = 2*x0 - x0^2/T", "--seed", &seed])
                .args([
                    "--derive",
                    "var = x2t*T - x0^2",
                    "--derive",
                    "lin = 2*x0 - x2t",
                ])
                .args(["--witness-sweeps", "4000", "--quiet", "--json"])
                .arg(&json)
                .arg("--csv")
                .arg(&csv),
        );
        let table = String::from_utf8_lossy(&out.stdout);
        assert!(table.contains("⟨x2t⟩ ± se (exact)"), "{table}");
        assert!(table.contains(" var ± se (exact)"), "{table}");
        let v = common::read_json(&json);
        let obs = v["observables"].as_array().unwrap();
        assert_eq!(obs.len(), 5);
        assert_eq!(obs[1]["name"], "x2t");
        assert!(obs[3]["derived"] == true && obs[2]["derived"] == false);
        let column = |o: usize, k: &str| -> Vec<f64> {
            (0..4).map(|i| obs[o][k][i].as_f64().unwrap()).collect()
        };
        let (lin, l) = (
            (column(4, "value"), column(4, "se")),
            (column(2, "value"), column(2, "se")),
        );
        for ((a, sa), (b, sb)) in lin.0.iter().zip(&lin.1).zip(l.0.iter().zip(&l.1)) {
            assert!(
                (a - b).abs() < 1e-9 * b.abs() && (sa / sb - 1.0).abs() < 1e-6,
                "{methods}: derived {a} ± {sa} vs observable {b} ± {sb}"
            );
        }
        for o in obs {
            for i in 0..4 {
                let (a, s, x) = (
                    o["value"][i].as_f64().unwrap(),
                    o["se"][i].as_f64().unwrap(),
                    o["exact"][i].as_f64().unwrap(),
                );
                let label = format!("{} ({})", o["name"], v["method"][i]);
                let k = if o["name"] == "var" { 5.0 } else { 4.5 };
                assert!(
                    s > 0.0 && common::within(&label, a, s, x, k, 0.0),
                    "{methods}, T = {}: {label} {a} ± {s} vs exact {x}",
                    v["temperatures"][i]
                );
            }
        }
        // The witness's comparison is made everywhere, within 6: the check's own limit is 4,
        // and over seeds 1–10 × the four methods 159 of 160 read ≤ 2.31 and one 4.6 (seed 5,
        // tempering against the anneal, whose ⟨U⟩ there was 3.4 off too: that point untrusted).
        for i in 0..4 {
            let c = &v["checks"][i]["witness_observables"];
            let z = c["value"].as_f64().unwrap();
            assert!(z <= 6.0, "{methods}, T index {i}: {c}");
        }
        let by = match methods {
            "temper" => "tempering",
            "anneal" => "smc",
            m => m,
        };
        if methods != "is,flow-mcmc" {
            assert!((0..4).all(|i| v["method"][i] == by), "{}", v["method"]);
        }
        let text = std::fs::read_to_string(&csv).unwrap();
        let header = text.lines().next().unwrap();
        assert!(
            header.ends_with(",x0,x0_se,x0_exact,x2t,x2t_se,x2t_exact,l,l_se,l_exact,var,var_se,var_exact,lin,lin_se,lin_exact"),
            "{header}"
        );
        // The sweep's own columns are names no observable can take.
        let own: Vec<&str> = header.split(',').take_while(|c| *c != "x0").collect();
        assert!(
            own.iter()
                .all(|c| thermoflow::observables::RESERVED.contains(c)),
            "{own:?}"
        );
    }
}

/// `--peak` locates the heat capacity's maximum of the 2-D double well within 4 of its
/// errors of quadrature's T* = 2.0428, trusted, in the table and the JSON; on the harmonic
/// system, whose C_V is flat, the peak it finds is not trusted (its curvature unresolved, or
/// none at all) and no exact peak is given. Measured on 16 temperatures over seeds 1–14 (the sweep's grids):
/// z from −1.22 to 1.49, windows of 5 and 7 points.
#[test]
fn the_heat_capacity_peak_matches_quadrature() {
    let seed = common::seed(1).to_string();
    let json = tmp("peak.json");
    let out = common::run_ok(
        bin()
            .args([
                "sweep",
                "--system",
                "double-well-2d",
                "--temps",
                "16",
                "--peak",
            ])
            .args(["--seed", &seed, "--quiet", "--json"])
            .arg(&json),
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("C_V peak: T* = "), "{table}");
    let v = common::read_json(&json);
    let p = &v["cv_peak"];
    let (t, se, exact) = (
        p["peak"]["t"]["value"].as_f64().unwrap(),
        p["peak"]["t"]["se"].as_f64().unwrap(),
        p["exact"][0].as_f64().unwrap(),
    );
    assert!((exact - 2.0428).abs() < 1e-3, "{p}");
    assert!(common::within("T*", t, se, exact, 4.0, 0.0), "{p}");
    assert!(p["trusted"] == true, "{p}");
    let c = &p["peak"]["cv"];
    let cv_exact = p["exact"][1].as_f64().unwrap();
    assert!(
        common::within(
            "C_V(T*)",
            c["value"].as_f64().unwrap(),
            c["se"].as_f64().unwrap(),
            cv_exact,
            4.0,
            0.0
        ),
        "{p}"
    );

    let json = tmp("peak-flat.json");
    let out = common::run_ok(
        bin()
            .args(["sweep", "--system", "harmonic", "--temps", "8", "--peak"])
            .args(["--methods", "is", "--repairs", "0", "--seed", &seed])
            .args(["--quiet", "--json"])
            .arg(&json),
    );
    // A peak found and not trusted, or none found (the largest C_V at an end): both say so.
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("C_V peak"), "{table}");
    let p = &common::read_json(&json)["cv_peak"];
    assert!(p["trusted"] == false && p["exact"].is_null(), "{p}");
}

/// A saved model, loaded with the same seed and settings, gives the trained run's estimates
/// number for number (the same flow draws the same samples), without training; and it refuses
/// to serve another system.
#[test]
fn a_saved_model_reloads_to_the_same_estimates() {
    let model = tmp("reload-model.json");
    let seed = common::seed(4).to_string();
    let run = |name: &str, extra: &[&str]| {
        let json = tmp(name);
        common::run_ok(
            bin()
                .args(["sweep", "--system", "double-well-2d", "--temps", "6"])
                .args(["--methods", "is", "--repairs", "0"])
                .args(["--seed", &seed, "--quiet"])
                .args(extra)
                .arg("--json")
                .arg(&json),
        );
        common::read_json(&json)
    };
    let model_s = model.to_str().unwrap();
    let trained = run(
        "reload-a.json",
        &["--train-steps", "300", "--save-model", model_s],
    );
    let loaded = run("reload-b.json", &["--load-model", model_s]);
    assert_eq!(trained["train"]["loaded"], false);
    assert_eq!(loaded["train"]["loaded"], true);
    assert_eq!(loaded["train"]["steps"], 0);
    for key in ["U", "Cv", "logZ", "ess_fraction", "samples_used", "trusted"] {
        assert_eq!(trained[key], loaded[key], "{key}");
    }
    let out = bin()
        .args(["sweep", "--system", "harmonic", "--load-model", model_s])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("trained for double-well-2d"), "{err}");
}

#[test]
#[ignore = "verify: ~1 min"]
fn harmonic_sweep_matches_equipartition() {
    let v = sweep_within_two_percent("harmonic", &[]);
    assert_eq!(v["params"]["n"], 2.0);
    assert_eq!(v["params"]["k_couple"], 2.0);
}

#[test]
#[ignore = "verify: ~1 min"]
fn double_well_sweep_matches_quadrature_and_populates_both_modes() {
    let model = tmp("dw.json");
    let model_s = model.to_str().unwrap().to_string();
    sweep_within_two_percent("double-well-2d", &["--save-model", &model_s]);
    // Both wells: the reweighted fraction with x > 0 matches the exact one.
    let (flow, meta) = io::load(&model).unwrap();
    assert_eq!(meta["system"], "double-well-2d");
    let e = systems::build::<&str>("double-well-2d", &[]).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    for t in [0.75, 1.0] {
        let s = flow.sample_and_log_prob(200_000, &[t], &mut rng).unwrap();
        let u: Vec<f64> =
            s.x.rows()
                .into_iter()
                .map(|r| e.energy(r.as_slice().unwrap()))
                .collect();
        let right: Vec<f64> =
            s.x.column(0)
                .iter()
                .map(|&x| if x > 0.0 { 1.0 } else { 0.0 })
                .collect();
        let w = Weights::boltzmann(&u, &s.log_q, t).unwrap();
        let est = w.mean(&right).unwrap();
        let (exact, _) =
            quadrature_expectation(e.as_ref(), t, &|x| if x[0] > 0.0 { 1.0 } else { 0.0 }).unwrap();
        let n_right = right.iter().filter(|&&r| r > 0.0).count();
        assert!(
            n_right > 50,
            "T={t}: only {n_right} samples in the minor well"
        );
        assert!(
            common::within("P(x>0)", est.value, est.se, exact, 4.0, 0.0),
            "T={t}: P(x>0) = {} ± {} vs exact {exact}",
            est.value,
            est.se
        );
    }
    // Reloading the model gives the same estimates without training.
    let json = tmp("dw-loaded.json");
    common::run_ok(
        bin()
            .args([
                "sweep",
                "--temps",
                "4",
                "--samples",
                "20000",
                "--quiet",
                "--load-model",
                &model_s,
                "--json",
            ])
            .arg(&json),
    );
    let v: serde_json::Value = common::read_json(&json);
    assert_eq!(v["train"]["loaded"], true);
    within_error_bars(&v, true);
    // ... and refuses to serve another system.
    let out = bin()
        .args(["sweep", "--system", "harmonic", "--load-model", &model_s])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("trained for double-well-2d"), "{err}");
}

#[test]
fn systems_lists_every_system_with_defaults() {
    let out = bin().arg("systems").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for s in systems::registry() {
        assert!(text.contains(s.name));
        for p in s.params {
            assert!(text.contains(p.name));
        }
    }
    assert!(
        text.contains("observables (--observe NAME): abs_m, m2"),
        "{text}"
    );
}
