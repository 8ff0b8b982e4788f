//! The bijection contract, run over every transform (conditioned and not), in f64:
//! inverse(forward(z)) == z, forward(inverse(x)) == x, log-det == log|det J| of a central
//! finite-difference Jacobian, forward log-det == −inverse log-det, zero parameters give the
//! identity, and batch 1 agrees with batch 4096 per sample.

mod common;

use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Exp, StandardNormal};
use thermoflow::engine::{GraphBuilder, Program};
use thermoflow::flows::params::{Declared, Scope};
use thermoflow::flows::{
    builders, io, ActNorm, Bijection, Conditioning, Coupling, Flow, GaugeCoupling, LatticeCoupling,
    Layer, LinearFlow, LuLinear, Permutation, Radial, SpinCoupling, SpinFrame, SumRatio,
};
use thermoflow::flows::{Activation, Transformer};

struct Entry {
    name: &'static str,
    layer: Layer,
    /// Zero parameters give the identity (false: the layer has a fixed non-identity part).
    identity_at_zero: bool,
    /// Inputs must be positive (the seed's example).
    positive: bool,
    /// Inputs are angles in [−π, π) (gauge links, planar spins).
    angles: bool,
}

fn spline(bins: usize, bound: f64) -> Transformer {
    Transformer::Spline { bins, bound }
}

fn table() -> Vec<Entry> {
    let act = Activation::Tanh;
    let e = |name, layer, identity_at_zero| Entry {
        name,
        layer,
        identity_at_zero,
        positive: false,
        angles: false,
    };
    vec![
        e(
            "affine coupling",
            Layer::Coupling(Coupling::new(
                3,
                0,
                false,
                Transformer::Affine,
                8,
                2,
                act,
                1,
            )),
            true,
        ),
        e(
            "affine coupling, conditioned, flipped",
            Layer::Coupling(Coupling::new(
                4,
                2,
                true,
                Transformer::Affine,
                8,
                2,
                Activation::Silu,
                2,
            )),
            true,
        ),
        e(
            "spline coupling",
            Layer::Coupling(Coupling::new(3, 0, false, spline(8, 3.0), 8, 2, act, 3)),
            true,
        ),
        e(
            "spline coupling, conditioned, flipped",
            Layer::Coupling(Coupling::new(4, 1, true, spline(5, 3.0), 8, 1, act, 4)),
            true,
        ),
        e(
            "spline coupling, 1-D conditioned",
            Layer::Coupling(Coupling::new(1, 1, false, spline(6, 3.0), 8, 1, act, 5)),
            true,
        ),
        e("radial", Layer::Radial(Radial::new(3, 0, 8, 6)), true),
        e(
            "radial, conditioned",
            Layer::Radial(Radial::new(2, 1, 8, 7)),
            true,
        ),
        e("linear", Layer::Linear(LinearFlow::new(3)), true),
        e("lu linear", Layer::LuLinear(LuLinear::new(4, 8)), false),
        e(
            "reverse",
            Layer::Permutation(Permutation::reverse(3)),
            false,
        ),
        e(
            "permutation",
            Layer::Permutation(Permutation::new(vec![2, 0, 3, 1]).unwrap()),
            false,
        ),
        e("actnorm", Layer::ActNorm(ActNorm::new(3)), true),
        e(
            "lattice coupling 3×3",
            Layer::LatticeCoupling(LatticeCoupling::new(3, 0, 0, 4, 1, 9)),
            true,
        ),
        e(
            "lattice coupling 4×4, conditioned",
            Layer::LatticeCoupling(LatticeCoupling::new(4, 1, 1, 3, 2, 10)),
            true,
        ),
        Entry {
            name: "sum-ratio (seed example)",
            layer: Layer::SumRatio(SumRatio::default()),
            identity_at_zero: false,
            positive: true,
            angles: false,
        },
        Entry {
            name: "gauge coupling 4×4, μ = 0, conditioned",
            layer: Layer::GaugeCoupling(GaugeCoupling::new(4, 1, 0, 1, 6, 1, 4, 1, 11)),
            identity_at_zero: true,
            positive: false,
            angles: true,
        },
        Entry {
            name: "gauge coupling 3×3, μ = 1",
            layer: Layer::GaugeCoupling(GaugeCoupling::new(3, 0, 1, 2, 5, 1, 3, 2, 12)),
            identity_at_zero: true,
            positive: false,
            angles: true,
        },
        Entry {
            name: "gauge coupling 4×4, μ = 1, two splines, conditioned",
            layer: Layer::GaugeCoupling(GaugeCoupling::new(4, 1, 1, 3, 5, 2, 4, 1, 13)),
            identity_at_zero: true,
            positive: false,
            angles: true,
        },
        Entry {
            name: "gauge coupling 6×6, μ = 0, three splines",
            layer: Layer::GaugeCoupling(GaugeCoupling::new(6, 0, 0, 2, 4, 3, 3, 1, 14)),
            identity_at_zero: true,
            positive: false,
            angles: true,
        },
        Entry {
            name: "spin coupling 4×4, parity 0, conditioned",
            layer: Layer::SpinCoupling(SpinCoupling::new(4, 1, 0, 6, 1, 4, 1, 15)),
            identity_at_zero: true,
            positive: false,
            angles: true,
        },
        Entry {
            name: "spin coupling 2×2, parity 1, two splines",
            layer: Layer::SpinCoupling(SpinCoupling::new(2, 0, 1, 5, 2, 3, 2, 16)),
            identity_at_zero: true,
            positive: false,
            angles: true,
        },
        Entry {
            name: "spin coupling 4×4, parity 0, pinned, two splines, conditioned",
            layer: Layer::SpinCoupling(SpinCoupling::new(4, 1, 0, 5, 2, 3, 1, 18).pinned()),
            identity_at_zero: true,
            positive: false,
            angles: true,
        },
        Entry {
            name: "spin frame, 9 spins",
            layer: Layer::SpinFrame(SpinFrame::new(9)),
            identity_at_zero: false,
            positive: false,
            angles: true,
        },
        Entry {
            name: "spin coupling 6×6, parity 1, three splines, conditioned",
            layer: Layer::SpinCoupling(SpinCoupling::new(6, 1, 1, 4, 3, 3, 1, 17)),
            identity_at_zero: true,
            positive: false,
            angles: true,
        },
    ]
}

fn randomise(layer: &mut Layer, seed: u64, scale: f64) {
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    for (_, set) in layer.param_sets_mut() {
        for t in &mut set.tensors {
            for v in &mut t.values {
                *v = scale * r.sample::<f64, _>(StandardNormal);
            }
        }
    }
}

/// f64 program: inputs z, xin, cond → x = f(z), ldf, z2 = f⁻¹(x), ldi, zi = f⁻¹(xin), x2 = f(zi).
fn contract_program(layer: &Layer) -> Program<f64> {
    let g = GraphBuilder::new();
    let outs = {
        let declared = Declared::default();
        let s = Scope::root(&g, &declared, true);
        let d = layer.dim();
        let z = g.batch_input("z", &[d]);
        let xin = g.batch_input("xin", &[d]);
        let c = (layer.cond_dim() > 0).then(|| g.batch_input("cond", &[layer.cond_dim()]));
        let (x, ldf) = layer.forward_and_log_det(&s, z, c);
        let (z2, ldi) = layer.inverse_and_log_det(&s, x, c);
        let (zi, _) = layer.inverse_and_log_det(&s, xin, c);
        let x2 = layer.forward(&s, zi, c);
        [
            x.output("x"),
            ldf.output("ldf"),
            z2.output("z2"),
            ldi.output("ldi"),
            x2.output("x2"),
        ]
    };
    Program::compile(g, &outs, None).unwrap()
}

fn det(mut a: Vec<f64>, n: usize) -> f64 {
    let mut d = 1.0;
    for c in 0..n {
        let p = (c..n)
            .max_by(|&i, &j| a[i * n + c].abs().partial_cmp(&a[j * n + c].abs()).unwrap())
            .unwrap();
        if p != c {
            for k in 0..n {
                a.swap(c * n + k, p * n + k);
            }
            d = -d;
        }
        let piv = a[c * n + c];
        d *= piv;
        for i in c + 1..n {
            let f = a[i * n + c] / piv;
            for k in c..n {
                a[i * n + k] -= f * a[c * n + k];
            }
        }
    }
    d
}

fn inputs(entry: &Entry, n: usize, seed: u64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let d = entry.layer.dim();
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    let (z, xin): (Vec<f64>, Vec<f64>) = if entry.positive {
        let ex = Exp::new(1.3).unwrap();
        let z = (0..n * d).map(|_| ex.sample(&mut r) + 1e-3).collect();
        let xin = (0..n)
            .flat_map(|_| [ex.sample(&mut r) + 0.1, r.random_range(0.05..0.95)])
            .collect();
        (z, xin)
    } else if entry.angles {
        let pi = std::f64::consts::PI;
        (
            (0..n * d).map(|_| r.random_range(-pi..pi)).collect(),
            (0..n * d).map(|_| r.random_range(-pi..pi)).collect(),
        )
    } else {
        (
            (0..n * d)
                .map(|_| 2.0 * r.sample::<f64, _>(StandardNormal))
                .collect(),
            (0..n * d)
                .map(|_| 2.0 * r.sample::<f64, _>(StandardNormal))
                .collect(),
        )
    };
    let c: Vec<f64> = (0..n * entry.layer.cond_dim())
        .map(|_| r.random_range(-1.0..1.0))
        .collect();
    (z, xin, c)
}

fn run(
    p: &mut Program<f64>,
    layer: &Layer,
    z: &[f64],
    xin: &[f64],
    c: &[f64],
) -> thermoflow::engine::Outputs<f64> {
    let mut ins: Vec<(&str, &[f64])> = vec![("z", z), ("xin", xin)];
    if layer.cond_dim() > 0 {
        ins.push(("cond", c));
    }
    p.run(&ins).unwrap()
}

#[test]
fn every_transform_passes_the_bijection_contract() {
    for (k, mut entry) in table().into_iter().enumerate() {
        let name = entry.name;
        randomise(&mut entry.layer, 100 + k as u64, 0.3);
        let d = entry.layer.dim();
        let mut p = contract_program(&entry.layer);
        let n = 6;
        let (z, xin, c) = inputs(&entry, n, k as u64);
        let out = run(&mut p, &entry.layer, &z, &xin, &c);
        let (ldf, z2, ldi, x2) = (
            out.get("ldf").unwrap(),
            out.get("z2").unwrap(),
            out.get("ldi").unwrap(),
            out.get("x2").unwrap(),
        );
        for i in 0..n * d {
            assert!(
                (z2[i] - z[i]).abs() < 1e-9 * (1.0 + z[i].abs()),
                "{name}: inverse(forward(z)) {} vs {}",
                z2[i],
                z[i]
            );
            assert!(
                (x2[i] - xin[i]).abs() < 1e-9 * (1.0 + xin[i].abs()),
                "{name}: forward(inverse(x)) {} vs {}",
                x2[i],
                xin[i]
            );
        }
        for i in 0..n {
            assert!(
                (ldf[i] + ldi[i]).abs() < 1e-9,
                "{name}: forward log-det {} vs inverse {}",
                ldf[i],
                ldi[i]
            );
        }
        // Finite-difference Jacobian of the forward map, sample by sample.
        for i in 0..n {
            let h = 1e-6;
            let mut zb = Vec::new();
            for j in 0..d {
                for sgn in [1.0, -1.0] {
                    let mut row = z[i * d..(i + 1) * d].to_vec();
                    row[j] += sgn * h;
                    zb.extend(row);
                }
            }
            let cb: Vec<f64> = (0..2 * d)
                .flat_map(|_| {
                    c[i * entry.layer.cond_dim()..(i + 1) * entry.layer.cond_dim()].to_vec()
                })
                .collect();
            let o = run(&mut p, &entry.layer, &zb, &zb, &cb);
            let xs = o.get("x").unwrap();
            let mut jac = vec![0.0; d * d];
            for j in 0..d {
                for r in 0..d {
                    jac[r * d + j] = (xs[(2 * j) * d + r] - xs[(2 * j + 1) * d + r]) / (2.0 * h);
                }
            }
            let fd = det(jac, d).abs().ln();
            assert!(
                (fd - ldf[i]).abs() < 1e-6 * (1.0 + fd.abs()),
                "{name}: log-det {} vs finite difference {fd}",
                ldf[i]
            );
        }
        // Batch 1 vs batch 4096.
        let big = 4096;
        let (zb, xb, cb) = inputs(&entry, big, 1000 + k as u64);
        let ob = run(&mut p, &entry.layer, &zb, &xb, &cb);
        let cd = entry.layer.cond_dim();
        for &i in &[0usize, 1234, big - 1] {
            let o1 = run(
                &mut p,
                &entry.layer,
                &zb[i * d..(i + 1) * d],
                &xb[i * d..(i + 1) * d],
                &cb[i * cd..(i + 1) * cd],
            );
            assert_eq!(
                o1.get("x").unwrap(),
                &ob.get("x").unwrap()[i * d..(i + 1) * d],
                "{name}: batch 1 vs 4096"
            );
            assert_eq!(
                o1.get("ldf").unwrap()[0],
                ob.get("ldf").unwrap()[i],
                "{name}: batch 1 vs 4096"
            );
        }
        // Zero parameters (the sum-ratio map has none and is not volume-preserving).
        if entry.positive {
            continue;
        }
        let mut zero = entry.layer.clone();
        for (_, set) in zero.param_sets_mut() {
            set.zero();
        }
        let mut pz = contract_program(&zero);
        let oz = run(&mut pz, &zero, &z, &xin, &c);
        for i in 0..n {
            assert!(
                oz.get("ldf").unwrap()[i].abs() < 1e-12,
                "{name}: zero params log-det"
            );
        }
        if entry.identity_at_zero {
            for (a, b) in oz.get("x").unwrap().iter().zip(&z) {
                assert!(
                    (a - b).abs() < 1e-12,
                    "{name}: zero params is not the identity"
                );
            }
        }
    }
}

/// Seed example: x, y ~ Exp(λ) i.i.d.; (u, v) = (x + y, x/(x + y)) has p(u, v) = λ² u e^{−λu}.
#[test]
fn seed_worked_example_change_of_variables() {
    let lambda = 1.7;
    let layer = Layer::SumRatio(SumRatio::default());
    let mut p = contract_program(&layer);
    let mut r = rand::rngs::StdRng::seed_from_u64(9);
    let ex = Exp::new(lambda).unwrap();
    let n = 20_000;
    let z: Vec<f64> = (0..2 * n).map(|_| ex.sample(&mut r)).collect();
    let out = run(&mut p, &layer, &z, &z, &[]);
    let (uv, ld) = (out.get("x").unwrap(), out.get("ldf").unwrap());
    let mut us = Vec::with_capacity(n);
    let mut vs = Vec::with_capacity(n);
    for i in 0..n {
        let (x, y) = (z[2 * i], z[2 * i + 1]);
        let (u, v) = (uv[2 * i], uv[2 * i + 1]);
        // Change of variables: log p(u, v) = log p(x) + log p(y) − log|det J|.
        let log_p = 2.0 * lambda.ln() - lambda * (x + y) - ld[i];
        let closed = 2.0 * lambda.ln() + u.ln() - lambda * u;
        assert!((log_p - closed).abs() < 1e-10, "{log_p} vs {closed}");
        us.push(u);
        vs.push(v);
    }
    // Kolmogorov–Smirnov against Gamma(2, λ) and Uniform(0, 1).
    let ks = |xs: &mut Vec<f64>, cdf: &dyn Fn(f64) -> f64| -> f64 {
        xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let n = xs.len() as f64;
        xs.iter()
            .enumerate()
            .map(|(i, &x)| {
                let f = cdf(x);
                (f - i as f64 / n).abs().max(((i + 1) as f64 / n - f).abs())
            })
            .fold(0.0, f64::max)
    };
    let crit = 1.95 / (n as f64).sqrt(); // α = 0.001
    let du = ks(&mut us, &|u| 1.0 - (-lambda * u).exp() * (1.0 + lambda * u));
    let dv = ks(&mut vs, &|v| v.clamp(0.0, 1.0));
    assert!(du < crit, "u is not Gamma(2, λ): D = {du}");
    assert!(dv < crit, "v is not Uniform(0, 1): D = {dv}");
    // And a wrong hypothesis is rejected: u is not Exp(λ).
    let dw = ks(&mut us, &|u| 1.0 - (-lambda * u).exp());
    assert!(dw > crit);
}

/// Spline robustness: inputs at, just inside, just outside and far outside ±B; extreme
/// parameters. Outputs and gradients stay finite and the inverse stays exact.
#[test]
fn splines_are_robust_at_and_beyond_the_bound() {
    let b = 5.0;
    let mut layer = Coupling::new(2, 0, false, spline(8, b), 8, 1, Activation::Tanh, 1);
    for (case, scale) in [("moderate", 1.0), ("extreme", 40.0)] {
        randomise_spline(&mut layer, scale);
        let points = [
            -1e6,
            -1e3,
            -b - 1.0,
            -b - 1e-6,
            -b,
            -b + 1e-6,
            -0.3,
            0.0,
            2.2,
            b - 1e-6,
            b,
            b + 1e-6,
            b + 1.0,
            1e3,
            1e6,
        ];
        let z: Vec<f64> = points.iter().flat_map(|&v| [0.4, v]).collect();
        let wrapped = Layer::Coupling(layer.clone());
        let mut p = contract_program(&wrapped);
        let out = p.run(&[("z", &z), ("xin", &z)]).unwrap();
        let (x, ldf, z2) = (
            out.get("x").unwrap(),
            out.get("ldf").unwrap(),
            out.get("z2").unwrap(),
        );
        for (i, &v) in points.iter().enumerate() {
            assert!(
                x[2 * i + 1].is_finite() && ldf[i].is_finite(),
                "{case}: non-finite at {v}"
            );
            assert!(
                (z2[2 * i + 1] - v).abs() <= 1e-8 * (1.0 + v.abs()),
                "{case}: inverse at {v}: {}",
                z2[2 * i + 1]
            );
            if v.abs() > b {
                assert_eq!(x[2 * i + 1], v, "{case}: tails are the identity");
            }
        }
        // Gradients with respect to every parameter, through forward and inverse.
        let g = GraphBuilder::new();
        let loss = {
            let declared = Declared::default();
            let s = Scope::root(&g, &declared, true);
            let zv = g.batch_input("z", &[2]);
            let (x, ld) = wrapped.forward_and_log_det(&s, zv, None);
            let (zz, ldi) = wrapped.inverse_and_log_det(&s, zv, None);
            (x.sum_all() + ld.sum_all() + zz.sum_all() + ldi.sum_all()).output("loss")
        };
        let mut pg: Program<f32> = Program::compile(g, &[], Some(loss)).unwrap();
        let zf: Vec<f32> = z.iter().map(|&v| v as f32).collect();
        let (l, _, grads) = pg.run_with_grads(&[("z", &zf)]).unwrap();
        assert!(l.is_finite(), "{case}: loss");
        assert!(
            grads.iter().flatten().all(|g| g.is_finite()),
            "{case}: NaN gradient"
        );
    }
}

fn randomise_spline(layer: &mut Coupling, scale: f64) {
    let mut r = rand::rngs::StdRng::seed_from_u64(scale as u64);
    for t in &mut layer.conditioner.params.tensors {
        for v in &mut t.values {
            *v = scale * r.sample::<f64, _>(StandardNormal);
        }
    }
}

#[test]
fn save_and_load_round_trip_and_reject_corrupt_files() {
    let cfg = builders::CouplingConfig {
        layers: 3,
        hidden: 8,
        transformer: Transformer::Spline {
            bins: 4,
            bound: 4.0,
        },
        ..Default::default()
    };
    let mut flow = builders::coupling_flow(
        2,
        Conditioning::Temperature {
            t_min: 0.5,
            t_max: 3.0,
        },
        &cfg,
    )
    .unwrap();
    for (i, l) in flow.layers_mut().iter_mut().enumerate() {
        randomise(l, i as u64, 0.2);
    }
    let dir = std::env::temp_dir().join(format!("thermoflow-io-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("flow.json");
    io::save(
        &flow,
        serde_json::json!({"system": "double-well-2d"}),
        &path,
    )
    .unwrap();
    let (back, meta) = io::load(&path).unwrap();
    assert_eq!(meta["system"], "double-well-2d");
    // Every parameter comes back bit for bit.
    assert_eq!(back.layers(), flow.layers());
    let x = Array2::from_shape_fn((5, 2), |(i, j)| i as f64 * 0.3 - j as f64);
    assert_eq!(
        flow.log_prob(x.view(), &[1.2]).unwrap(),
        back.log_prob(x.view(), &[1.2]).unwrap()
    );
    let text = std::fs::read_to_string(&path).unwrap();
    for bad in [
        &text[..text.len() / 2],
        "{}",
        "not json",
        &text.replace("thermoflow-flow", "other"),
    ] {
        assert!(io::from_str(bad).is_err());
    }
    // A parameter with the wrong number of values.
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["flow"]["layers"][0]["Coupling"]["conditioner"]["params"]["tensors"][0]["values"]
        .as_array_mut()
        .unwrap()
        .pop();
    assert!(io::from_str(&v.to_string()).is_err());
    assert!(io::load(&dir.join("missing.json")).is_err());
    // Bad conditions at use time.
    assert!(flow.log_prob(x.view(), &[-1.0]).is_err());
    assert!(flow.log_prob(x.view(), &[1.0, 2.0]).is_err());
    assert!(flow.log_prob(Array2::zeros((2, 3)).view(), &[1.0]).is_err());
    std::fs::remove_dir_all(&dir).ok();
}

/// Files written before the general coupling (layers `AffineCoupling` with `scale_bound` and
/// `SplineCoupling` with `bins` and `bound`) load as the same flow.
#[test]
fn version_one_coupling_files_still_load() {
    let act = Activation::Tanh;
    let mut layers = vec![
        Layer::Coupling(Coupling::new(
            3,
            1,
            false,
            Transformer::Affine,
            8,
            2,
            act,
            1,
        )),
        Layer::Coupling(Coupling::new(3, 1, true, spline(6, 4.0), 8, 2, act, 2)),
    ];
    for (i, l) in layers.iter_mut().enumerate() {
        randomise(l, 10 + i as u64, 0.3);
    }
    let cond = Conditioning::Temperature {
        t_min: 0.5,
        t_max: 2.0,
    };
    let flow = Flow::new(3, cond, layers).unwrap();
    let dir = std::env::temp_dir().join(format!("thermoflow-v1-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("flow.json");
    io::save(&flow, serde_json::json!({}), &path).unwrap();
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    // Rewrite the layers as version 1 spelled them.
    for l in v["flow"]["layers"].as_array_mut().unwrap() {
        let mut c = l["Coupling"].take();
        let t = c["transformer"].take();
        let old = c.as_object_mut().unwrap();
        old.remove("transformer");
        *l = if t == "Affine" {
            old.insert("scale_bound".into(), 3.0.into());
            serde_json::json!({ "AffineCoupling": old })
        } else {
            old.insert("bins".into(), t["Spline"]["bins"].clone());
            old.insert("bound".into(), t["Spline"]["bound"].clone());
            serde_json::json!({ "SplineCoupling": old })
        };
    }
    let text = v.to_string();
    assert!(text.contains("AffineCoupling") && text.contains("SplineCoupling"));
    let (back, _) = io::from_str(&text).unwrap();
    assert_eq!(back.layers(), flow.layers());
    let x = Array2::from_shape_fn((4, 3), |(i, j)| 0.4 * i as f64 - 0.7 * j as f64);
    assert_eq!(
        back.log_prob(x.view(), &[1.1]).unwrap(),
        flow.log_prob(x.view(), &[1.1]).unwrap()
    );
    // A scale bound this version cannot honour is refused, not silently changed.
    let odd = text.replacen("\"scale_bound\":3.0", "\"scale_bound\":2.0", 1);
    assert_ne!(odd, text);
    assert!(io::from_str(&odd)
        .unwrap_err()
        .to_string()
        .contains("scale bound"));
    std::fs::remove_dir_all(&dir).ok();
}

/// A linear flow fitted by maximum likelihood to Boltzmann samples of the two-spring system
/// recovers the covariance T·K⁻¹ (MATH.md §4), within 4 sampling standard errors of the
/// covariance (+ 0.002). Full-batch steps, so the fit is the samples' own covariance: measured
/// |z| ≤ 1.6 over seeds 1–6 (minibatches of 512 added optimiser noise: |z| 4.5 at seed 2).
#[test]
fn linear_flow_fits_the_two_spring_covariance() {
    let h = thermoflow::systems::Harmonic::chain(2, 1.0, 2.0).unwrap();
    let t: f64 = 1.5;
    let l = h.cov_factor();
    let n = 20_000;
    let mut r = rand::rngs::StdRng::seed_from_u64(common::seed(4));
    let x = Array2::from_shape_fn((n, 2), |_| 0.0);
    let mut x = x;
    for i in 0..n {
        let z: [f64; 2] = [r.sample(StandardNormal), r.sample(StandardNormal)];
        x[[i, 0]] = t.sqrt() * l[0] * z[0];
        x[[i, 1]] = t.sqrt() * (l[2] * z[0] + l[3] * z[1]);
    }
    let mut flow = builders::linear_flow(2, Conditioning::None).unwrap();
    thermoflow::train::fit_max_likelihood(&mut flow, x.view(), &[], 3000, n, 0.02, 1).unwrap();
    let Layer::Linear(lin) = &flow.layers()[0] else {
        panic!()
    };
    let m = lin.matrix();
    let cov_fit = [m[0] * m[0], m[0] * m[2], m[2] * m[2] + m[3] * m[3]];
    // Exact T K⁻¹ = T L Lᵀ and its sampling error for n samples.
    let exact = [
        t * l[0] * l[0],
        t * l[0] * l[2],
        t * (l[2] * l[2] + l[3] * l[3]),
    ];
    let se = [
        (2.0 * exact[0] * exact[0] / n as f64).sqrt(),
        ((exact[0] * exact[2] + exact[1] * exact[1]) / n as f64).sqrt(),
        (2.0 * exact[2] * exact[2] / n as f64).sqrt(),
    ];
    for k in 0..3 {
        assert!(
            common::within("cov", cov_fit[k], se[k], exact[k], 4.0, 2e-3),
            "entry {k}: {} vs {} ± {}",
            cov_fit[k],
            exact[k],
            se[k]
        );
    }
    let _ = Flow::summary(&flow);
}

#[test]
fn lattice_coupling_commutes_with_parity_preserving_translations() {
    // Translations by (a, b) with a + b even keep the checkerboard, so a coupling with a
    // periodic convolutional conditioner must commute with them: f(T z) = T f(z).
    let l = 4;
    let mut layer = Layer::LatticeCoupling(LatticeCoupling::new(l, 0, 1, 3, 2, 21));
    randomise(&mut layer, 22, 0.5);
    let mut p = contract_program(&layer);
    let mut r = rand::rngs::StdRng::seed_from_u64(23);
    let z: Vec<f64> = (0..l * l)
        .map(|_| r.sample::<f64, _>(StandardNormal))
        .collect();
    let shift = |v: &[f64], a: usize, b: usize| -> Vec<f64> {
        (0..l * l)
            .map(|k| v[((k / l + a) % l) * l + (k % l + b) % l])
            .collect()
    };
    let x = run(&mut p, &layer, &z, &z, &[]).get("x").unwrap().to_vec();
    for (a, b) in [(1, 1), (2, 0), (0, 2), (3, 1)] {
        let zs = shift(&z, a, b);
        let xs = run(&mut p, &layer, &zs, &zs, &[])
            .get("x")
            .unwrap()
            .to_vec();
        let want = shift(&x, a, b);
        for (u, v) in xs.iter().zip(&want) {
            assert!((u - v).abs() < 1e-12, "shift ({a}, {b}): {u} vs {v}");
        }
    }
    // A parity-changing translation does not commute (the coupling is not trivially
    // equivariant to everything): the check above can fail.
    let zs = shift(&z, 1, 0);
    let xs = run(&mut p, &layer, &zs, &zs, &[])
        .get("x")
        .unwrap()
        .to_vec();
    let want = shift(&x, 1, 0);
    assert!(xs.iter().zip(&want).any(|(u, v)| (u - v).abs() > 1e-6));
}

/// The defensive mixture (1 − ε) q + ε q_s: a fresh coupling flow is x = √T z, so q(·|T) is
/// N(0, T I) and the mixture's density has a closed form; samples carry exactly that density,
/// and `log_prob_mixture` gives it back for any x.
#[test]
fn defensive_mixture_density_has_the_closed_form() {
    let flow = thermoflow::flows::builders::coupling_flow(
        2,
        Conditioning::Temperature {
            t_min: 0.5,
            t_max: 2.0,
        },
        &thermoflow::flows::default_flow(),
    )
    .unwrap();
    let (t, s, eps) = (1.5, 1.3, 0.25);
    let log_n = |x: &[f64], var: f64| {
        -(x[0] * x[0] + x[1] * x[1]) / (2.0 * var) - (2.0 * std::f64::consts::PI * var).ln()
    };
    let exact =
        |x: &[f64]| ((1.0 - eps) * log_n(x, t).exp() + eps * log_n(x, s * s * t).exp()).ln();
    let mut rng = thermoflow::rng::seeded(common::seed(8));
    let smp = flow.sample_mixture(4000, &[t], s, eps, &mut rng).unwrap();
    let back = flow.log_prob_mixture(smp.x.view(), &[t], s, eps).unwrap();
    let mut wide = 0;
    for (i, r) in smp.x.rows().into_iter().enumerate() {
        let x = r.as_slice().unwrap();
        let want = exact(x);
        assert!(
            (smp.log_q[i] - want).abs() < 1e-4,
            "{} vs {want}",
            smp.log_q[i]
        );
        assert!((back[i] - want).abs() < 1e-4, "{} vs {want}", back[i]);
        wide += (x[0] * x[0] + x[1] * x[1] > 4.0 * t) as usize;
    }
    // P(|x|² > 4T) is e^{−2} under q and e^{−2/s²} under q_s: the mixture's tail is heavier.
    let p_tail = (1.0 - eps) * (-2.0f64).exp() + eps * (-2.0 / (s * s)).exp();
    let got = wide as f64 / 4000.0;
    // Measured largest |z| over THERMOFLOW_TEST_SEED = 1–6 (tests/zspread.sh): 0.2–1.6.
    assert!(
        common::within("tail", got, (p_tail / 4000.0).sqrt(), p_tail, 4.0, 0.0),
        "{got} vs {p_tail}"
    );
    assert!(flow.sample_mixture(10, &[t], 0.9, 0.1, &mut rng).is_err());
    assert!(flow.sample_mixture(10, &[t], 1.2, 1.0, &mut rng).is_err());
}

/// The gauge flow's log-density is gauge invariant: log q(θ) does not move (< 10⁻⁴, f32
/// programs) under random gauge transformations θ_μ(x) += α(x) − α(x + μ̂), while it does move
/// when one link alone is shifted (the check can fail); samples carry the density the density
/// program gives back, also for the defensive mixture with the uniform density, whose closed
/// form is checked at zero parameters (the flow then is the uniform base itself).
#[test]
fn gauge_flow_density_is_gauge_invariant() {
    use thermoflow::systems::u1::U1;
    let l = 4;
    let cond = Conditioning::Temperature {
        t_min: 0.3,
        t_max: 1.0,
    };
    let mut flow = builders::gauge_flow(l, cond, 8, 4, 1, 6, 2, 3).unwrap();
    // Parameters of scale 0.1 (two splines per layer) move log q by 1–5 from the uniform base's
    // (a trained flow at β = 5 moves it by about 1.2 per plaquette); much larger random ones
    // make the map so contracting that f32 round trips lose 10⁻³ and more (measured with one
    // spline: 4–17 at scale 0.3, with f64 round trips of 10⁻⁸–10⁻⁶; with two at scale 0.12,
    // log q 2.8 from uniform, 1.7·10⁻⁴ at worst of 256), a conditioning issue of the random
    // flow, not gauge.
    for (i, layer) in flow.layers_mut().iter_mut().enumerate() {
        randomise(layer, 40 + i as u64, 0.1);
    }
    let u1 = U1::new(l).unwrap();
    let mut rng = thermoflow::rng::seeded(common::seed(31));
    let t = 0.5;
    let smp = flow.sample_and_log_prob(64, &[t], &mut rng).unwrap();
    let back = flow.log_prob(smp.x.view(), &[t]).unwrap();
    let mut moved = smp.x.clone();
    let mut one_link = smp.x.clone();
    for (i, mut row) in moved.rows_mut().into_iter().enumerate() {
        let alpha: Vec<f64> = (0..l * l).map(|_| rng.random_range(-3.0..3.0)).collect();
        u1.gauge_transform(row.as_slice_mut().unwrap(), &alpha);
        one_link[[i, 5]] += 0.7;
    }
    let gauged = flow.log_prob(moved.view(), &[t]).unwrap();
    let shifted = flow.log_prob(one_link.view(), &[t]).unwrap();
    let mut largest_shift: f64 = 0.0;
    for i in 0..64 {
        assert!(
            (back[i] - smp.log_q[i]).abs() < 1e-4,
            "density {} vs sample {}",
            back[i],
            smp.log_q[i]
        );
        assert!(
            (gauged[i] - back[i]).abs() < 1e-4,
            "gauge transformed {} vs {}",
            gauged[i],
            back[i]
        );
        largest_shift = largest_shift.max((shifted[i] - back[i]).abs());
    }
    assert!(largest_shift > 1e-2, "a moved link left log q unchanged");
    let uniform = -(2.0 * (l * l) as f64) * (2.0 * std::f64::consts::PI).ln();
    let mean_gap = back.iter().map(|v| v - uniform).sum::<f64>() / 64.0;
    assert!(
        mean_gap > 0.5,
        "the random flow is nearly the uniform base: {mean_gap}"
    );
    // Defensive mixture: consistent between sampling and density evaluation.
    let mix = flow.sample_mixture(200, &[t], 1.0, 0.3, &mut rng).unwrap();
    let mix_back = flow.log_prob_mixture(mix.x.view(), &[t], 1.0, 0.3).unwrap();
    for (a, b) in mix.log_q.iter().zip(&mix_back) {
        assert!((a - b).abs() < 1e-4, "mixture sample {a} vs density {b}");
    }
    // At zero parameters q is uniform, and so is the mixture.
    for layer in flow.layers_mut() {
        for (_, set) in layer.param_sets_mut() {
            set.zero();
        }
    }
    for v in flow.log_prob_mixture(smp.x.view(), &[t], 1.0, 0.3).unwrap() {
        assert!((v - uniform).abs() < 1e-3, "{v} vs {uniform}");
    }
}

/// The spin flow's symmetries. Its couplings alone (unpinned) give a log-density invariant
/// under the lattice translations that keep the checkerboard ((i, j) → (i + 1, j + 1) and
/// (i + 2, j)): their convolutions are periodic; a translation by one site, which swaps the
/// sublattices, moves it. The flow the systems train (pinned couplings in spin 0's frame, then
/// the frame's turn) gives one invariant under a global rotation θ → θ + α, as the XY energy is.
/// Both move when one spin alone turns (the checks can fail); samples carry the density the
/// density program gives back; the flow saves and loads; odd L is refused.
#[test]
fn spin_flow_symmetries() {
    let l = 4;
    let cond = Conditioning::Temperature {
        t_min: 0.7,
        t_max: 1.5,
    };
    let mut rng = thermoflow::rng::seeded(common::seed(32));
    let t = 1.0;
    let couplings: Vec<Layer> = (0..4)
        .map(|i| Layer::SpinCoupling(SpinCoupling::new(l, 1, i % 2, 6, 2, 4, 1, 60 + i as u64)))
        .collect();
    let mut unpinned = Flow::on_angles(l * l, cond, couplings).unwrap();
    let mut framed = builders::spin_flow(l, cond, 4, 4, 1, 6, 2, 3).unwrap();
    assert!(matches!(framed.layers().last(), Some(Layer::SpinFrame(_))));
    for flow in [&mut unpinned, &mut framed] {
        for (i, layer) in flow.layers_mut().iter_mut().enumerate() {
            randomise(layer, 50 + i as u64, 0.1);
        }
    }
    // log q at rows changed by `change`, against log q at the samples.
    let moved = |flow: &Flow, change: &dyn Fn(&mut [f64], &[f64])| {
        let smp = flow
            .sample_and_log_prob(64, &[t], &mut thermoflow::rng::seeded(7))
            .unwrap();
        let back = flow.log_prob(smp.x.view(), &[t]).unwrap();
        for (a, b) in back.iter().zip(&smp.log_q) {
            assert!((a - b).abs() < 1e-4, "density {a} vs sample {b}");
        }
        let mut y = smp.x.clone();
        for (mut row, src) in y.rows_mut().into_iter().zip(smp.x.rows()) {
            change(row.as_slice_mut().unwrap(), src.as_slice().unwrap());
        }
        let after = flow.log_prob(y.view(), &[t]).unwrap();
        after
            .iter()
            .zip(&back)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max)
    };
    let translate = |di: usize, dj: usize| {
        move |row: &mut [f64], src: &[f64]| {
            for i in 0..l {
                for j in 0..l {
                    row[((i + di) % l) * l + (j + dj) % l] = src[i * l + j];
                }
            }
        }
    };
    let alpha: f64 = rng.random_range(-3.0..3.0);
    let rotate = |row: &mut [f64], _: &[f64]| row.iter_mut().for_each(|v| *v += alpha);
    let turn_one = |row: &mut [f64], _: &[f64]| row[5] += 0.7;
    assert!(
        moved(&unpinned, &translate(1, 1)) < 1e-4,
        "(1, 1) moved log q"
    );
    assert!(
        moved(&unpinned, &translate(2, 0)) < 1e-4,
        "(2, 0) moved log q"
    );
    assert!(
        moved(&unpinned, &translate(0, 1)) > 1e-2,
        "swapping the sublattices left log q"
    );
    assert!(
        moved(&unpinned, &turn_one) > 1e-2,
        "a turned spin left log q unchanged"
    );
    assert!(
        moved(&framed, &rotate) < 1e-4,
        "a global rotation moved log q"
    );
    assert!(
        moved(&framed, &turn_one) > 1e-2,
        "a turned spin left log q unchanged"
    );
    // Saved and loaded: the same layers, checked against their architecture.
    let path = std::env::temp_dir().join(format!("thermoflow-spins-{}.json", std::process::id()));
    io::save(&framed, serde_json::json!({"system": "xy"}), &path).unwrap();
    let (loaded, _) = io::load(&path).unwrap();
    assert_eq!(loaded.layers(), framed.layers());
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).ok();
    let bad = text.replacen("\"parity\":1", "\"parity\":2", 1);
    assert_ne!(bad, text);
    assert!(io::from_str(&bad).is_err(), "a parity of 2 loaded");
    assert!(builders::spin_flow(3, cond, 2, 4, 1, 6, 2, 3).is_err());
    assert!(builders::spin_flow(4, cond, 2, 4, 1, 6, 0, 3).is_err());
}

/// Batches whose buffers would exceed [`thermoflow::flows::flow::RUN_BYTES`] run in chunks
/// (the L = 8 gauge flow materialises most of a megabyte per row, so a few hundred rows per
/// run): 700 rows at their own temperatures score as one unchunked run of the density program
/// scores them.
#[test]
fn large_batches_run_in_chunks_with_the_same_results() {
    use thermoflow::flows::flow::Mode;
    let cond = Conditioning::Temperature {
        t_min: 0.2,
        t_max: 1.0,
    };
    let mut flow = builders::gauge_flow(8, cond, 16, 8, 2, 8, 2, 1).unwrap();
    for (i, layer) in flow.layers_mut().iter_mut().enumerate() {
        randomise(layer, 70 + i as u64, 0.05);
    }
    let n = 700;
    let mut rng = thermoflow::rng::seeded(common::seed(5));
    let temps: Vec<f64> = (0..n).map(|_| rng.random_range(0.2..1.0)).collect();
    let smp = flow.sample_and_log_prob(n, &temps, &mut rng).unwrap();
    let chunked = flow.log_prob(smp.x.view(), &temps).unwrap();
    let mut whole: Program<f32> = flow.compile(Mode::Density).unwrap();
    let x: Vec<f32> = smp.x.iter().map(|&v| v as f32).collect();
    let t: Vec<f32> = temps.iter().map(|&v| v as f32).collect();
    let out = whole.run(&[("x", &x), ("cond", &t)]).unwrap();
    let lq = out.get("log_q").unwrap();
    assert_eq!(lq.len(), n);
    for i in 0..n {
        assert!(
            (chunked[i] - lq[i] as f64).abs() < 1e-3,
            "row {i}: chunked {} vs one run {}",
            chunked[i],
            lq[i]
        );
        assert!((chunked[i] - smp.log_q[i]).abs() < 1e-3, "row {i}");
    }
}
