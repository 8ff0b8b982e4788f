//! Physics core contract: energies and their gradients, exact references, estimators and
//! samplers, each checked against an independent exact result.

mod common;

use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use thermoflow::estimators::{cv_from_derivative, thermo, thermo_weighted, Weights};
use thermoflow::exact::{harmonic_reference, quadrature, reference};
use thermoflow::mcmc::{parallel_tempering, rwm, PtConfig, RwmConfig};
use thermoflow::systems::{self, Energy, Harmonic};

fn rng(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(common::seed(seed))
}

/// A configuration where the system's energy is moderate (no overlapping atoms).
fn test_point(e: &dyn Energy, r: &mut rand::rngs::StdRng) -> Vec<f64> {
    let d = e.dim();
    match e.name() {
        "lj" => {
            let n = d / 3;
            let side = (n as f64).cbrt().ceil() as usize;
            (0..n)
                .flat_map(|i| {
                    let c = [i % side, (i / side) % side, i / (side * side)];
                    c.map(|v| v as f64 * 1.15)
                })
                .map(|v| v + r.random_range(-0.05..0.05))
                .collect()
        }
        "bead-chain" => (0..d)
            .map(|i| if i % 2 == 0 { (i / 2) as f64 } else { 0.0 } + r.random_range(-0.2..0.2))
            .collect(),
        "muller-brown" => vec![r.random_range(-1.5..1.0), r.random_range(-0.4..2.0)],
        _ => (0..d)
            .map(|_| 1.5 * r.sample::<f64, _>(StandardNormal))
            .collect(),
    }
}

#[test]
fn every_energy_gradient_matches_finite_differences() {
    let mut r = rng(1);
    for info in systems::registry() {
        let e = systems::build::<&str>(info.name, &[]).unwrap();
        for _ in 0..20 {
            let x = test_point(e.as_ref(), &mut r);
            let mut g = vec![0.0; x.len()];
            let u = e.energy_grad(&x, &mut g);
            assert!(
                (u - e.energy(&x)).abs() <= 1e-12 * (1.0 + u.abs()),
                "{}",
                info.name
            );
            for i in 0..x.len() {
                let h = 1e-6 * (1.0 + x[i].abs());
                let mut y = x.clone();
                y[i] += h;
                let up = e.energy(&y);
                y[i] -= 2.0 * h;
                let dn = e.energy(&y);
                let fd = (up - dn) / (2.0 * h);
                assert!(
                    (g[i] - fd).abs() <= 1e-5 * (1.0 + fd.abs()),
                    "{}: ∂U/∂x{i} = {} vs finite difference {fd} at {x:?}",
                    info.name,
                    g[i]
                );
            }
        }
    }
}

/// An energy with no analytic gradient uses the central-difference default.
struct Quartic;
impl Energy for Quartic {
    fn name(&self) -> &str {
        "quartic"
    }
    fn dim(&self) -> usize {
        2
    }
    fn params(&self) -> Vec<(String, f64)> {
        vec![]
    }
    fn energy(&self, x: &[f64]) -> f64 {
        x[0].powi(4) + x[0] * x[1]
    }
}

#[test]
fn default_gradient_is_a_central_difference() {
    let mut g = [0.0; 2];
    Quartic.energy_grad(&[1.3, -0.7], &mut g);
    assert!((g[0] - (4.0 * 1.3f64.powi(3) - 0.7)).abs() < 1e-7);
    assert!((g[1] - 1.3).abs() < 1e-7);
}

#[test]
fn quadrature_matches_closed_forms() {
    let temps = [0.3, 1.0, 2.5, 7.0];
    for n in [1usize, 2] {
        let h = Harmonic::chain(n, 1.0, 2.0).unwrap();
        let exact = harmonic_reference(&h, &temps).unwrap();
        let quad = quadrature(&h, &temps).unwrap();
        for (a, b) in exact.iter().zip(&quad) {
            assert!(
                (a.log_z - b.log_z).abs() < 1e-10,
                "n={n} log Z {} vs {}",
                a.log_z,
                b.log_z
            );
            assert!((a.u - b.u).abs() < 1e-10, "n={n} U {} vs {}", a.u, b.u);
            assert!((a.cv - b.cv).abs() < 1e-10, "n={n} Cv {} vs {}", a.cv, b.cv);
            assert!((a.s - b.s).abs() < 1e-9);
            assert!(b.u_err < 1e-9 && b.log_z_err < 1e-9);
        }
    }
    // The mixture at T = 1 is a normalised density: Z = 1.
    let mix = systems::build::<&str>("mixture", &[]).unwrap();
    let q = quadrature(mix.as_ref(), &[1.0]).unwrap();
    assert!(q[0].log_z.abs() < 1e-10, "log Z = {}", q[0].log_z);
}

#[test]
fn quadrature_box_grows_until_the_tails_vanish() {
    // At T = 200 the default box of the double well is far too small.
    let e = systems::build("double-well-2d", &["k=0.5"]).unwrap();
    let hot = quadrature(e.as_ref(), &[200.0]).unwrap();
    // y is harmonic: ⟨½ k y²⟩ = T/2 exactly; x has ⟨U_x⟩ from the 1-D well.
    let x_only = systems::build::<&str>("double-well-1d", &[]).unwrap();
    let qx = quadrature(x_only.as_ref(), &[200.0]).unwrap();
    assert!((hot[0].u - (qx[0].u + 100.0)).abs() < 1e-6 * hot[0].u.abs());
}

/// Exact Boltzmann samples of a harmonic system at temperature t, with their log-density.
fn harmonic_samples(h: &Harmonic, t: f64, scale: f64, n: usize, seed: u64) -> (Vec<f64>, Vec<f64>) {
    let d = h.dim();
    let l = h.cov_factor();
    let mut r = rng(seed);
    let s = scale * t.sqrt();
    let log_det_l: f64 = (0..d).map(|i| l[i * d + i].ln()).sum();
    let mut u = Vec::with_capacity(n);
    let mut log_q = Vec::with_capacity(n);
    let mut x = vec![0.0; d];
    for _ in 0..n {
        let z: Vec<f64> = (0..d).map(|_| r.sample(StandardNormal)).collect();
        for i in 0..d {
            x[i] = s * (0..=i).map(|k| l[i * d + k] * z[k]).sum::<f64>();
        }
        u.push(h.energy(&x));
        let zz: f64 = z.iter().map(|v| v * v).sum();
        log_q.push(
            -0.5 * zz
                - 0.5 * d as f64 * (2.0 * std::f64::consts::PI).ln()
                - d as f64 * s.ln()
                - log_det_l,
        );
    }
    (u, log_q)
}

/// Measured largest |z| over THERMOFLOW_TEST_SEED = 1–6 (tests/zspread.sh), per test:
/// equipartition from exact samples 0.7–2.7, C_V from d⟨U⟩/dT 1.1–2.2, chain errors 0.3–1.9,
/// tempering against quadrature 1.9–2.7, random-walk Metropolis 0.1–1.5, reweighting a wrong
/// proposal 0.5–1.9: the bounds of 4 SE hold with room at every seed.
fn within(est: f64, se: f64, exact: f64, z: f64) -> bool {
    common::within("estimate", est, se, exact, z, 0.0)
}

#[test]
fn estimators_recover_equipartition_from_exact_samples() {
    let h = Harmonic::chain(2, 1.0, 2.0).unwrap();
    let d = 2.0;
    for (i, &t) in [0.5, 1.0, 3.0].iter().enumerate() {
        let (u, log_q) = harmonic_samples(&h, t, 1.0, 100_000, 10 + i as u64);
        let th = thermo(&u, &log_q, t).unwrap();
        let exact = harmonic_reference(&h, &[t]).unwrap()[0];
        assert!(within(th.u.value, th.u.se, d * t / 2.0, 4.0), "{th:?}");
        assert!(within(th.cv.value, th.cv.se, d / 2.0, 4.0), "{th:?}");
        // q = p exactly: every weight equals Z, so log Ẑ is exact.
        assert!(
            (th.log_z.value - exact.log_z).abs() < 1e-9,
            "{} vs {}",
            th.log_z.value,
            exact.log_z
        );
        assert!(common::within("S", th.s.value, th.s.se, exact.s, 4.0, 1e-9));
        assert!(
            (th.ess_fraction - 1.0).abs() < 1e-12 && th.trusted,
            "{th:?}"
        );
        // Plain equal weights give the same ⟨U⟩ and C_V.
        let w = Weights::uniform(u.len()).unwrap();
        let plain = thermo_weighted(&w, &u, t, false).unwrap();
        assert!((plain.u.value - th.u.value).abs() < 1e-12);
    }
}

#[test]
fn reweighting_a_wrong_proposal_recovers_and_ess_drops_as_theory_says() {
    let h = Harmonic::chain(2, 1.0, 2.0).unwrap();
    let (t, s, d) = (1.5, 1.3f64, 2);
    let (u, log_q) = harmonic_samples(&h, t, s, 200_000, 77);
    let th = thermo(&u, &log_q, t).unwrap();
    let exact = harmonic_reference(&h, &[t]).unwrap()[0];
    assert!(within(th.u.value, th.u.se, exact.u, 4.0), "{th:?}");
    assert!(within(th.cv.value, th.cv.se, exact.cv, 4.0), "{th:?}");
    assert!(
        within(th.log_z.value, th.log_z.se, exact.log_z, 4.0),
        "{th:?}"
    );
    assert!(within(th.f.value, th.f.se, exact.f, 4.0), "{th:?}");
    assert!(within(th.s.value, th.s.se, exact.s, 4.0), "{th:?}");
    // For p = N(0, Σ), q = N(0, s²Σ): N/ESS → E_q[w²]/E_q[w]² = (s/√(2 − 1/s²))^d.
    let theory = ((2.0 - 1.0 / (s * s)).sqrt() / s).powi(d);
    assert!(
        (th.ess_fraction - theory).abs() < 0.02,
        "{} vs {theory}",
        th.ess_fraction
    );
}

#[test]
fn cv_from_the_derivative_of_u_matches() {
    let h = Harmonic::chain(2, 1.0, 2.0).unwrap();
    let temps: Vec<f64> = (0..8).map(|i| 0.5 + 0.25 * i as f64).collect();
    let us: Vec<_> = temps
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            let (u, q) = harmonic_samples(&h, t, 1.0, 50_000, 200 + i as u64);
            thermo(&u, &q, t).unwrap().u
        })
        .collect();
    for c in cv_from_derivative(&temps, &us).unwrap() {
        assert!(within(c.value, c.se, 1.0, 4.0), "{c:?}");
    }
    assert!(cv_from_derivative(&[1.0, 1.0], &us[..2]).is_err());
}

#[test]
fn parallel_tempering_agrees_with_quadrature() {
    for (name, t_min, t_max, init) in [
        ("double-well-2d", 0.5, 3.0, vec![0.0, 0.0]),
        ("muller-brown", 0.6, 4.0, vec![-0.55, 1.45]),
    ] {
        let e = systems::build::<&str>(name, &[]).unwrap();
        let mut cfg = PtConfig::geometric(t_min, t_max, 8);
        cfg.init = Some(init);
        cfg.seed = common::seed(5);
        cfg.n_ladders = 16;
        cfg.n_sweeps = 25_000;
        cfg.step = 0.3;
        let run = parallel_tempering(e.as_ref(), &cfg).unwrap();
        let exact = reference(e.as_ref(), &cfg.temps).unwrap().unwrap();
        for (m, x) in run.thermo().iter().zip(&exact) {
            // Error bars must be informative, not vacuous.
            assert!(
                m.u.se < 0.02 * (1.0 + x.u.abs()) && m.cv.se < 0.05 * x.cv,
                "{name}: {m:?}"
            );
            assert!(
                within(m.u.value, m.u.se, x.u, 4.0),
                "{name} T={}: U {:?} vs {}",
                m.t,
                m.u,
                x.u
            );
            assert!(
                within(m.cv.value, m.cv.se, x.cv, 4.0),
                "{name} T={}: Cv {:?} vs {}",
                m.t,
                m.cv,
                x.cv
            );
            assert!(
                m.tau_int >= 0.5 && m.acceptance > 0.1 && m.acceptance < 0.7,
                "{m:?}"
            );
        }
        assert!(
            run.swap_acceptance.iter().all(|&a| a > 0.05),
            "{:?}",
            run.swap_acceptance
        );
        // Reproducible.
        let again = parallel_tempering(e.as_ref(), &cfg).unwrap();
        assert_eq!(again.traces[0][0][..100], run.traces[0][0][..100]);
    }
}

#[test]
fn random_walk_metropolis_samples_the_harmonic_chain() {
    let h = Harmonic::chain(2, 1.0, 2.0).unwrap();
    let x0 = Array2::zeros((32, 2));
    let cfg = RwmConfig {
        n_steps: 20_000,
        burn_in: 2_000,
        seed: common::seed(3),
        ..Default::default()
    };
    let run = rwm(&h, 1.2, x0.view(), &cfg).unwrap();
    let u =
        thermoflow::mcmc::batch_means(&run.traces, 20, |c| c.iter().sum::<f64>() / c.len() as f64);
    assert!(within(u.value, u.se, 1.2, 4.0), "{u:?}");
    assert!((run.acceptance - 0.3).abs() < 0.05, "{}", run.acceptance);
    assert_eq!(run.samples.nrows(), 32 * 2_000);
}

#[test]
fn bad_input_is_an_error() {
    let e = systems::build::<&str>("double-well-2d", &[]).unwrap();
    // Wrong dimension and non-finite coordinates.
    assert!(e.energies(Array2::zeros((3, 3)).view()).is_err());
    let mut x = Array2::zeros((3, 2));
    x[[1, 0]] = f64::NAN;
    assert!(e.energies(x.view()).is_err());
    assert!(e.gradients(x.view()).is_err());
    // Temperatures.
    for t in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(thermo(&[1.0], &[0.0], t).is_err());
        assert!(quadrature(e.as_ref(), &[t]).is_err());
        assert!(rwm(
            e.as_ref(),
            t,
            Array2::zeros((1, 2)).view(),
            &RwmConfig::default()
        )
        .is_err());
    }
    // Unknown system, unknown parameter, bad values.
    assert!(systems::build::<&str>("ising", &[]).is_err());
    assert!(systems::build("double-well-2d", &["q=1"]).is_err());
    assert!(systems::build("double-well-2d", &["a=nan"]).is_err());
    assert!(systems::build("double-well-2d", &["a"]).is_err());
    assert!(systems::build("double-well-2d", &["a=-1"]).is_err());
    assert!(systems::build("phi4", &["L=2.5"]).is_err());
    assert!(
        systems::build("harmonic", &["K=1,2;2,1"]).is_err(),
        "not positive definite"
    );
    // U = ½ xᵀKx with the K given: U(1, 2) = ½ (2 − 4 + 8) = 3.
    let k = systems::build("harmonic", &["K=2,-1;-1,2"]).unwrap();
    assert_eq!((k.dim(), k.energy(&[1.0, 2.0])), (2, 3.0));
    assert!(quadrature(systems::build::<&str>("lj", &[]).unwrap().as_ref(), &[1.0]).is_err());
}

#[test]
fn nan_energies_get_zero_weight_and_are_counted() {
    let u = vec![1.0, f64::NAN, 2.0, f64::INFINITY, 1.5];
    let lq = vec![0.0, 0.0, 0.0, 0.0, f64::NAN];
    let th = thermo(&u, &lq, 1.0).unwrap();
    assert_eq!(th.n_bad, 3);
    assert!(!th.trusted);
    assert!(th.u.value.is_finite() && th.cv.value.is_finite());
    let w = (-1.0f64).exp() + (-2.0f64).exp();
    let mean = ((-1.0f64).exp() + 2.0 * (-2.0f64).exp()) / w;
    assert!((th.u.value - mean).abs() < 1e-12);
    // log Ẑ keeps all 5 samples in N.
    assert!((th.log_z.value - (w / 5.0).ln()).abs() < 1e-12);
    assert!(thermo(&[f64::NAN], &[0.0], 1.0).is_err());
}

#[test]
fn phi4_symmetries_preserve_the_action() {
    let phi = systems::Phi4::new(6, -4.0, 8.0).unwrap();
    let mut r = rand::rngs::StdRng::seed_from_u64(31);
    let x: Vec<f64> = (0..36).map(|_| r.random_range(-1.5..1.5)).collect();
    let s0 = phi.energy(&x);
    let mut changed = 0;
    for _ in 0..50 {
        let mut y = x.clone();
        phi.random_symmetry(&mut y, &mut r);
        assert!((phi.energy(&y) - s0).abs() < 1e-9 * s0.abs().max(1.0));
        let sorted_abs = |v: &[f64]| {
            let mut a: Vec<f64> = v.iter().map(|x| x.abs()).collect();
            a.sort_by(|p, q| p.partial_cmp(q).unwrap());
            a
        };
        assert_eq!(
            sorted_abs(&x),
            sorted_abs(&y),
            "a symmetry permutes sites (up to a global sign)"
        );
        changed += (y != x) as usize;
    }
    assert!(
        changed > 40,
        "the symmetries act: {changed} of 50 changed the field"
    );
    assert!(systems::Phi4::new(1, -4.0, 8.0).is_err());
    assert!(systems::Phi4::new(8, f64::NAN, 8.0).is_err());
}

/// Errors from independent chains: exact samples cut into 64 chains give ⟨U⟩ and C_V of the
/// two-spring system within their errors, and an error close to the i.i.d. one; the same
/// chains made sticky (every value repeated 10 times: 10 times the samples, the same
/// information) keep that error, where the i.i.d. formula would claim one √10 times smaller.
#[test]
fn chain_errors_cover_and_see_autocorrelation() {
    use thermoflow::estimators::thermo_chains;
    let h = Harmonic::chain(2, 1.0, 2.0).unwrap();
    let t = 1.2;
    let (u, _) = harmonic_samples(&h, t, 1.0, 64_000, 91);
    let chains: Vec<Vec<f64>> = u.chunks(1000).map(|c| c.to_vec()).collect();
    let th = thermo_chains(&chains, t).unwrap();
    assert!(within(th.u.value, th.u.se, t, 4.0), "{th:?}");
    assert!(within(th.cv.value, th.cv.se, 1.0, 4.0), "{th:?}");
    let iid = thermo_weighted(&Weights::uniform(u.len()).unwrap(), &u, t, false).unwrap();
    assert!(
        (th.u.se / iid.u.se - 1.0).abs() < 0.3,
        "{} vs {}",
        th.u.se,
        iid.u.se
    );
    let sticky: Vec<Vec<f64>> = chains
        .iter()
        .map(|c| c.iter().flat_map(|v| std::iter::repeat_n(*v, 10)).collect())
        .collect();
    let st = thermo_chains(&sticky, t).unwrap();
    let pooled: Vec<f64> = sticky.iter().flatten().copied().collect();
    let naive =
        thermo_weighted(&Weights::uniform(pooled.len()).unwrap(), &pooled, t, false).unwrap();
    assert!((st.u.value - th.u.value).abs() < 1e-9);
    // An observable's mean in the same groups (here U itself) has ⟨U⟩'s value and error.
    let groups: Vec<usize> = (0..sticky.len()).flat_map(|c| [c; 10_000]).collect();
    let w = Weights::uniform(pooled.len()).unwrap();
    let o = w.mean_grouped(&pooled, &groups, sticky.len()).unwrap();
    assert!((o.value - st.u.value).abs() < 1e-9 && (o.se / st.u.se - 1.0).abs() < 1e-9);
    assert!(w.mean_grouped(&pooled, &groups[1..], sticky.len()).is_err());
    assert!(
        (st.u.se / th.u.se - 1.0).abs() < 1e-6,
        "{} vs {}",
        st.u.se,
        th.u.se
    );
    // (64 chains estimate the error to about ±9 %.)
    let ratio = st.u.se / naive.u.se / 10f64.sqrt();
    assert!((0.7..1.3).contains(&ratio), "{} vs {}", st.u.se, naive.u.se);
    assert!(thermo_chains(&chains[..1], t).is_err());
}
