//! System coordinates (chain internal coordinates, cluster centre-of-mass-free modes) pass the
//! bijection contract in f64 — round trips both ways, log-det equal to log|det J| of a central
//! finite-difference Jacobian, forward log-det == −inverse log-det — their gradient pull-back
//! matches finite differences, and a flow read in them has the density it claims: its samples'
//! log q agrees with the density pass, survives saving, and its importance-sampling log Z
//! matches quadrature.

mod common;

use rand::Rng;
use rand_distr::StandardNormal;
use thermoflow::coordinates::{ChainCoordinates, ClusterCoordinates, Coordinates};
use thermoflow::flows::{default_flow, io, system_coupling_flow, Bijection, Conditioning};
use thermoflow::systems::{self, Energy};

fn table() -> Vec<(&'static str, Coordinates)> {
    vec![
        (
            "chain n=2",
            Coordinates::Chain(ChainCoordinates::new(2, 1.0, 100.0, 0.1)),
        ),
        (
            "chain n=3 floppy",
            Coordinates::Chain(ChainCoordinates::new(3, 0.7, 4.0, 1.0)),
        ),
        (
            "chain n=8",
            Coordinates::Chain(ChainCoordinates::new(8, 1.0, 100.0, 0.1)),
        ),
        (
            "cluster n=2",
            Coordinates::Cluster(ClusterCoordinates { n: 2, k_conf: 0.1 }),
        ),
        (
            "cluster n=13",
            Coordinates::Cluster(ClusterCoordinates { n: 13, k_conf: 0.3 }),
        ),
    ]
}

/// A random u: flow coordinates ~ N(0, 1.5²), then the exact ones drawn at T = 0.7.
fn random_u(c: &Coordinates, rng: &mut impl Rng) -> Vec<f64> {
    let y: Vec<f64> = (0..c.flow_dim())
        .map(|_| 1.5 * rng.sample::<f64, _>(StandardNormal))
        .collect();
    c.to_state(&y, 0.7, rng).u
}

fn log_abs_det(mut a: Vec<f64>, n: usize) -> f64 {
    let mut ld = 0.0;
    for col in 0..n {
        let p = (col..n)
            .max_by(|&i, &j| a[i * n + col].abs().total_cmp(&a[j * n + col].abs()))
            .unwrap();
        for k in 0..n {
            a.swap(col * n + k, p * n + k);
        }
        let piv = a[col * n + col];
        ld += piv.abs().ln();
        for i in col + 1..n {
            let f = a[i * n + col] / piv;
            for k in col..n {
                a[i * n + k] -= f * a[col * n + k];
            }
        }
    }
    ld
}

#[test]
fn system_coordinates_pass_the_bijection_contract() {
    let mut rng = thermoflow::rng::seeded(3);
    for (name, c) in table() {
        let d = c.dim();
        assert!(c.flow_dim() < d, "{name}");
        for _ in 0..20 {
            let u = random_u(&c, &mut rng);
            let (x, ld) = c.forward_and_log_det(&u);
            let (u2, ild) = c.inverse_and_log_det(&x);
            for (a, b) in u.iter().zip(&u2) {
                assert!(
                    (a - b).abs() < 1e-9 * (1.0 + a.abs()),
                    "{name}: {u:?} → {u2:?}"
                );
            }
            assert!((ld + ild).abs() < 1e-9, "{name}: {ld} vs {ild}");
            let (x2, _) = c.forward_and_log_det(&u2);
            for (a, b) in x.iter().zip(&x2) {
                assert!((a - b).abs() < 1e-9 * (1.0 + a.abs()), "{name}");
            }
            // Central-difference Jacobian ∂x/∂u.
            let h = 1e-6;
            let mut jac = vec![0.0; d * d];
            for k in 0..d {
                let (mut up, mut dn) = (u.clone(), u.clone());
                up[k] += h;
                dn[k] -= h;
                let (xp, _) = c.forward_and_log_det(&up);
                let (xm, _) = c.forward_and_log_det(&dn);
                for i in 0..d {
                    jac[i * d + k] = (xp[i] - xm[i]) / (2.0 * h);
                }
            }
            let fd = log_abs_det(jac, d);
            assert!((fd - ld).abs() < 1e-5, "{name}: log-det {ld} vs FD {fd}");
        }
    }
}

#[test]
fn the_pull_back_matches_finite_differences() {
    let mut rng = thermoflow::rng::seeded(5);
    for (name, c) in table() {
        let (d, m) = (c.dim(), c.flow_dim());
        for _ in 0..10 {
            let u = random_u(&c, &mut rng);
            let g: Vec<f64> = (0..d).map(|_| rng.sample(StandardNormal)).collect();
            let (gy, gld) = c.pull_back(&u, &g);
            let f = |u: &[f64]| {
                let (x, ld) = c.forward_and_log_det(u);
                (x.iter().zip(&g).map(|(a, b)| a * b).sum::<f64>(), ld)
            };
            let h = 1e-6;
            for k in 0..m {
                let (mut up, mut dn) = (u.clone(), u.clone());
                up[k] += h;
                dn[k] -= h;
                let ((fp, lp), (fm, lm)) = (f(&up), f(&dn));
                let (want, want_ld) = ((fp - fm) / (2.0 * h), (lp - lm) / (2.0 * h));
                assert!(
                    (gy[k] - want).abs() < 1e-5 * (1.0 + want.abs()),
                    "{name} y{k}: {} vs FD {want}",
                    gy[k]
                );
                assert!(
                    (gld[k] - want_ld).abs() < 1e-5 * (1.0 + want_ld.abs()),
                    "{name} y{k}: log-det gradient {} vs FD {want_ld}",
                    gld[k]
                );
            }
        }
    }
}

fn chain(n: usize, k_bend: f64) -> systems::BeadChain {
    systems::BeadChain {
        n,
        k_bend,
        ..Default::default()
    }
}

#[test]
fn a_flow_in_system_coordinates_has_the_density_it_claims() {
    let cond = Conditioning::Temperature {
        t_min: 0.5,
        t_max: 2.0,
    };
    let systems: Vec<std::sync::Arc<dyn Energy>> = vec![
        std::sync::Arc::new(chain(5, 2.0)),
        systems::build::<&str>("lj", &["n=4"]).unwrap(),
    ];
    for e in systems {
        let mut flow = system_coupling_flow(e.as_ref(), cond, &default_flow()).unwrap();
        assert!(flow.coordinates().is_some(), "{}", e.name());
        assert_eq!(flow.dim(), e.dim());
        // Random parameters, so that the layers are not the identity.
        let mut rng = thermoflow::rng::seeded(11);
        for l in flow.layers_mut() {
            for (_, set) in l.param_sets_mut() {
                for t in &mut set.tensors {
                    t.values
                        .iter_mut()
                        .for_each(|v| *v += 0.05 * rng.sample::<f64, _>(StandardNormal));
                }
            }
        }
        let temps: Vec<f64> = (0..300).map(|i| 0.5 + 1.5 * (i % 7) as f64 / 6.0).collect();
        let s = flow
            .sample_mixture(300, &temps, 1.2, 0.1, &mut rng)
            .unwrap();
        let back = flow.log_prob_mixture(s.x.view(), &temps, 1.2, 0.1).unwrap();
        for (a, b) in s.log_q.iter().zip(&back) {
            assert!(
                (a - b).abs() < 2e-3 * (1.0 + a.abs()),
                "{}: {a} vs {b}",
                e.name()
            );
        }
        let path = std::env::temp_dir().join(format!("tf-coords-{}.json", e.name()));
        io::save(&flow, serde_json::json!({}), &path).unwrap();
        let (loaded, _) = io::load(&path).unwrap();
        assert_eq!(loaded.coordinates(), flow.coordinates());
        let again = loaded.log_prob(s.x.view(), &temps).unwrap();
        let direct = flow.log_prob(s.x.view(), &temps).unwrap();
        assert_eq!(again, direct);
    }
}

/// A two-bead chain without bending or excluded volume: U = ½ k_b (l − l0)² + k_c |R|² (the
/// trap ½ k_c n |R|², n = 2), so Z = (π T / k_c) · 2π ∫ l exp(−k_b (l − l0)²/2T) dl.
#[test]
fn importance_sampling_through_chain_coordinates_gives_the_exact_log_z() {
    let e = systems::BeadChain {
        n: 2,
        k_bond: 4.0,
        l0: 0.6,
        k_conf: 0.5,
        ..Default::default()
    };
    let cond = Conditioning::Temperature {
        t_min: 0.5,
        t_max: 2.0,
    };
    let flow = system_coupling_flow(&e, cond, &default_flow()).unwrap();
    let mut rng = thermoflow::rng::seeded(common::seed(2));
    for t in [0.5, 1.0, 2.0] {
        let n = 200_000;
        let s = flow.sample_mixture(n, &[t], 1.2, 0.1, &mut rng).unwrap();
        let lw: Vec<f64> =
            s.x.rows()
                .into_iter()
                .zip(&s.log_q)
                .map(|(x, lq)| -e.energy(x.as_slice().unwrap()) / t - lq)
                .collect();
        let w = thermoflow::estimators::Weights::from_log(&lw).unwrap();
        let est = w.log_mean();
        let (log_z, se) = (est.value, est.se);
        let radial: f64 = (1..200_000)
            .map(|i| {
                let l = i as f64 * 1e-4;
                l * (-e.k_bond * (l - e.l0).powi(2) / (2.0 * t)).exp() * 1e-4
            })
            .sum();
        let exact =
            (std::f64::consts::PI * t / e.k_conf).ln() + (2.0 * std::f64::consts::PI * radial).ln();
        // Measured largest |z| over THERMOFLOW_TEST_SEED = 1–6 (tests/zspread.sh): 0.5–2.2.
        assert!(
            common::within("logZ", log_z, se, exact, 4.0, 1e-3),
            "T = {t}: log Z {log_z} ± {se} vs {exact}"
        );
    }
}

/// ⟨U⟩ and C_V of a bead chain without excluded volume (σ → 0), exactly: the centre of mass
/// (2 quadratic degrees of freedom), n − 1 independent bonds with density ∝ l e^{−k_b (l − l0)²/2T}
/// and n − 2 independent turning angles with density ∝ e^{−k_θ (1 − cos θ)/T}, by quadrature.
fn free_chain_exact(c: &systems::BeadChain, t: f64) -> (f64, f64) {
    let moments = |u: &dyn Fn(f64) -> f64, jac: &dyn Fn(f64) -> f64, lo: f64, hi: f64| {
        let n = 200_000;
        let h = (hi - lo) / n as f64;
        let (mut z, mut m1, mut m2) = (0.0, 0.0, 0.0);
        for i in 0..n {
            let x = lo + (i as f64 + 0.5) * h;
            let (e, w) = (u(x), jac(x) * (-u(x) / t).exp());
            z += w;
            m1 += w * e;
            m2 += w * e * e;
        }
        (m1 / z, m2 / z - (m1 / z).powi(2))
    };
    let (ub, vb) = moments(
        &|l| 0.5 * c.k_bond * (l - c.l0).powi(2),
        &|l| l,
        0.0,
        c.l0 + 40.0 / c.k_bond.sqrt(),
    );
    let pi = std::f64::consts::PI;
    let (ua, va) = moments(&|th| c.k_bend * (1.0 - th.cos()), &|_| 1.0, -pi, pi);
    let (nb, na) = ((c.n - 1) as f64, (c.n - 2) as f64);
    (t + nb * ub + na * ua, 1.0 + (nb * vb + na * va) / (t * t))
}

/// Tempering with pivot moves in chain coordinates reproduces the exact ⟨U⟩ and C_V of a free
/// chain (an independent check of the coordinates' Jacobian inside the sampler). Stiff enough
/// (k_θ/T ≥ 4) that no chain folds back: an angle near ±π lies at |y| → ∞ (θ = 2 atan y), a
/// tail a random walk in y samples poorly (measured at k_θ/T = 1: C_V 3 % low).
#[test]
fn tempering_in_chain_coordinates_matches_the_free_chain_exactly() {
    use thermoflow::mcmc::{parallel_tempering, Moves, PtConfig};
    let c = systems::BeadChain {
        n: 6,
        sigma: 0.01,
        k_bend: 4.0,
        ..Default::default()
    };
    let co = Coordinates::for_system(&c).unwrap();
    let mut pt = PtConfig::geometric(0.5, 1.0, 4);
    pt.n_ladders = 8;
    pt.n_sweeps = 100_000;
    pt.burn_in = 4000;
    pt.init = Some(co.forward_and_log_det(&[0.0; 12]).0);
    pt.moves = Moves::Coordinates(co);
    pt.seed = common::seed(0);
    let run = parallel_tempering(&c, &pt).unwrap();
    for th in run.thermo() {
        let (u, cv) = free_chain_exact(&c, th.t);
        eprintln!(
            "T = {:.3}: U {:.4} ± {:.4} (exact {u:.4}), C_V {:.3} ± {:.3} (exact {cv:.3})",
            th.t, th.u.value, th.u.se, th.cv.value, th.cv.se
        );
        // Measured largest |z| over THERMOFLOW_TEST_SEED = 1–6 (tests/zspread.sh): 1.0–3.3 (⟨U⟩ and
        // C_V at 4 temperatures).
        assert!(
            common::within("U", th.u.value, th.u.se, u, 4.0, 0.0),
            "T = {}: U",
            th.t
        );
        assert!(
            common::within("Cv", th.cv.value, th.cv.se, cv, 4.0, 0.0),
            "T = {}: C_V",
            th.t
        );
    }
}
