//! Engine contract: for every primitive, every view kind and the composite graphs flows are
//! made of, the compiled output equals a direct f64 computation, and the compiled gradient
//! equals a central finite difference of that f64 reference. Every fused and reduction kernel
//! of those programs (forward and gradient) is also generated as CUDA C, compiled as C by the
//! host compiler and run on the CPU's inputs: it must give the CPU's results; with the feature
//! `wgpu`, every f32 kernel also as WGSL through wgpu (`cargo test --release --features wgpu
//! --test engine`; CI runs it on Mesa's lavapipe).

mod common;

use rand::{Rng, SeedableRng};
use thermoflow::engine::codegen::{self, Precision};
use thermoflow::engine::{Adam, Dim, GraphBuilder, InputKind, OutputSpec, Program, Var};

type Build = dyn for<'g> Fn(&'g GraphBuilder, &[Var<'g>]) -> Var<'g>;
type Reference = dyn Fn(&[Vec<f64>]) -> Vec<f64>;

struct Case {
    name: &'static str,
    inputs: Vec<(Vec<usize>, Vec<f64>)>,
    build: Box<Build>,
    reference: Box<Reference>,
    /// Inputs that are differentiable (false: only values are checked).
    grad: bool,
}

fn rand_vec(rng: &mut rand::rngs::StdRng, n: usize, lo: f64, hi: f64) -> Vec<f64> {
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

/// Compile a case with every input a parameter, a fixed random readout `r`, and
/// loss = Σ y·r. Returns (y, grads).
fn compiled<T: thermoflow::engine::Scalar>(case: &Case, r: &[f64]) -> (Vec<f64>, Vec<Vec<f64>>) {
    let g = GraphBuilder::new();
    let vars: Vec<Var> = case
        .inputs
        .iter()
        .enumerate()
        .map(|(i, (shape, data))| g.param(&format!("p{i}"), shape, data.clone()))
        .collect();
    let y = (case.build)(&g, &vars);
    let dims: Vec<usize> = y.shape().resolve(1);
    let rv = g.fixed("readout", &dims, r.to_vec());
    let loss = (y * rv).sum_all();
    let (out, loss) = (y.output("y"), loss.output("loss"));
    let mut p: Program<T> = Program::compile(g, &[out], Some(loss)).expect(case.name);
    let (_, outs, grads) = p.run_with_grads(&[]).expect(case.name);
    let y = outs.get("y").unwrap().iter().map(|v| v.to_f64()).collect();
    // The generated kernels of the same program, on the host, against the CPU backend.
    let cases = p
        .inspect(&[], true, |plan, store, _| codegen::cases(plan, store))
        .expect(case.name);
    let (precision, rel) = if std::mem::size_of::<T>() == 8 {
        (Precision::F64, 1e-12)
    } else {
        (Precision::F32, 1e-5)
    };
    common::kernels::check(&cases, precision, rel, case.name);
    // And as WGSL through wgpu (f32 only: WGSL has no f64), with the feature.
    #[cfg(feature = "wgpu")]
    if precision == Precision::F32 {
        let mut kinds = std::collections::BTreeSet::new();
        p.inspect(&[], true, |plan, store, _| {
            common::kernels::check_wgpu(plan, store, rel, case.name, &mut kinds)
        })
        .expect(case.name);
    }
    (y, grads)
}

fn check(case: Case) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(99);
    let y_ref = (case.reference)(
        &case
            .inputs
            .iter()
            .map(|(_, d)| d.clone())
            .collect::<Vec<_>>(),
    );
    let r = rand_vec(&mut rng, y_ref.len(), -1.0, 1.0);
    let (y64, g64) = compiled::<f64>(&case, &r);
    assert_eq!(y64.len(), y_ref.len(), "{}: output length", case.name);
    for (i, (a, b)) in y64.iter().zip(&y_ref).enumerate() {
        assert!(
            (a - b).abs() <= 1e-9 * (1.0 + b.abs()),
            "{}: f64 y[{i}] = {a}, reference {b}",
            case.name
        );
    }
    let (y32, _) = compiled::<f32>(&case, &r);
    for (i, (a, b)) in y32.iter().zip(&y_ref).enumerate() {
        assert!(
            (a - b).abs() <= 2e-4 * (1.0 + b.abs()),
            "{}: f32 y[{i}] = {a}, reference {b}",
            case.name
        );
    }
    if !case.grad {
        return;
    }
    let loss = |vals: &[Vec<f64>]| -> f64 {
        (case.reference)(vals)
            .iter()
            .zip(&r)
            .map(|(y, r)| y * r)
            .sum()
    };
    let base: Vec<Vec<f64>> = case.inputs.iter().map(|(_, d)| d.clone()).collect();
    for (k, g) in g64.iter().enumerate() {
        for i in 0..base[k].len() {
            let h = 1e-6 * (1.0 + base[k][i].abs());
            let mut p = base.clone();
            p[k][i] += h;
            let lp = loss(&p);
            p[k][i] -= 2.0 * h;
            let lm = loss(&p);
            let fd = (lp - lm) / (2.0 * h);
            assert!(
                (g[i] - fd).abs() <= 1e-5 * (1.0 + fd.abs()),
                "{}: d/dp{k}[{i}] = {}, finite difference {fd}",
                case.name,
                g[i]
            );
        }
    }
}

fn map1(f: fn(f64) -> f64) -> Box<Reference> {
    Box::new(move |v| v[0].iter().map(|&x| f(x)).collect())
}
fn map2(f: fn(f64, f64) -> f64) -> Box<Reference> {
    Box::new(move |v| v[0].iter().zip(&v[1]).map(|(&a, &b)| f(a, b)).collect())
}

/// Row-major [r, c] transpose helper for references.
fn at(v: &[f64], cols: usize, i: usize, j: usize) -> f64 {
    v[i * cols + j]
}

#[test]
fn primitives_match_reference_and_finite_differences() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let pos = rand_vec(&mut rng, 12, 0.3, 3.0);
    let any = rand_vec(&mut rng, 12, -2.0, 2.0);
    let any2 = rand_vec(&mut rng, 12, -2.0, 2.0);
    let cases = vec![
        Case {
            name: "log2",
            inputs: vec![(vec![3, 4], pos.clone())],
            build: Box::new(|_, v| v[0].log2()),
            reference: map1(f64::log2),
            grad: true,
        },
        Case {
            name: "exp2",
            inputs: vec![(vec![3, 4], any.clone())],
            build: Box::new(|_, v| v[0].exp2()),
            reference: map1(f64::exp2),
            grad: true,
        },
        Case {
            name: "sin",
            inputs: vec![(vec![12], any.clone())],
            build: Box::new(|_, v| v[0].sin()),
            reference: map1(f64::sin),
            grad: true,
        },
        Case {
            name: "sqrt",
            inputs: vec![(vec![12], pos.clone())],
            build: Box::new(|_, v| v[0].sqrt()),
            reference: map1(f64::sqrt),
            grad: true,
        },
        Case {
            name: "tanh",
            inputs: vec![(vec![12], any.clone())],
            build: Box::new(|_, v| v[0].tanh()),
            reference: map1(f64::tanh),
            grad: true,
        },
        Case {
            name: "recip",
            inputs: vec![(vec![12], pos.clone())],
            build: Box::new(|_, v| v[0].recip()),
            reference: map1(|x| 1.0 / x),
            grad: true,
        },
        Case {
            name: "add",
            inputs: vec![(vec![3, 4], any.clone()), (vec![3, 4], any2.clone())],
            build: Box::new(|_, v| v[0] + v[1]),
            reference: map2(|a, b| a + b),
            grad: true,
        },
        Case {
            name: "mul",
            inputs: vec![(vec![3, 4], any.clone()), (vec![3, 4], any2.clone())],
            build: Box::new(|_, v| v[0] * v[1]),
            reference: map2(|a, b| a * b),
            grad: true,
        },
        Case {
            name: "mod",
            inputs: vec![(vec![12], any.clone()), (vec![12], pos.clone())],
            build: Box::new(|_, v| v[0].rem(v[1])),
            reference: map2(|a, b| a % b),
            grad: true,
        },
        Case {
            name: "less_than",
            inputs: vec![(vec![12], any.clone()), (vec![12], any2.clone())],
            build: Box::new(|_, v| v[0].lt(v[1])),
            reference: map2(|a, b| if a < b { 1.0 } else { 0.0 }),
            grad: true,
        },
        Case {
            name: "sum_reduce axis 0 and 1",
            inputs: vec![(vec![3, 4], any.clone())],
            build: Box::new(|_, v| v[0].sum(0).add(v[0].sum(1).sum(0))),
            reference: Box::new(|v| {
                let tot: f64 = v[0].iter().sum();
                (0..4)
                    .map(|j| (0..3).map(|i| at(&v[0], 4, i, j)).sum::<f64>() + tot)
                    .collect()
            }),
            grad: true,
        },
        Case {
            name: "max_reduce",
            inputs: vec![(vec![3, 4], any.clone())],
            build: Box::new(|_, v| v[0].max(1)),
            reference: Box::new(|v| {
                (0..3)
                    .map(|i| (0..4).map(|j| at(&v[0], 4, i, j)).fold(f64::MIN, f64::max))
                    .collect()
            }),
            grad: true,
        },
        Case {
            name: "contiguous of a transpose",
            inputs: vec![(vec![3, 4], any.clone())],
            build: Box::new(|_, v| v[0].t().contiguous()),
            reference: Box::new(|v| {
                (0..4)
                    .flat_map(|j| (0..3).map(move |i| (i, j)))
                    .map(|(i, j)| at(&v[0], 4, i, j))
                    .collect()
            }),
            grad: true,
        },
    ];
    for c in cases {
        check(c);
    }
}

#[test]
fn views_match_reference_and_finite_differences() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let a = rand_vec(&mut rng, 24, -2.0, 2.0);
    let b = rand_vec(&mut rng, 4, -2.0, 2.0);
    let cases = vec![
        Case {
            name: "broadcast row vector",
            inputs: vec![(vec![6, 4], a.clone()), (vec![4], b.clone())],
            build: Box::new(|_, v| v[0] * v[1]),
            reference: Box::new(|v| (0..24).map(|k| v[0][k] * v[1][k % 4]).collect()),
            grad: true,
        },
        Case {
            name: "expand new axis then reduce it",
            inputs: vec![(vec![4], b.clone())],
            build: Box::new(|_, v| v[0].expand(0, Dim::Fixed(5)).square().sum(0)),
            reference: Box::new(|v| v[0].iter().map(|x| 5.0 * x * x).collect()),
            grad: true,
        },
        Case {
            name: "permute 3-D then sum (scrambled in stock luminal)",
            inputs: vec![(vec![2, 3, 4], a.clone())],
            build: Box::new(|_, v| v[0].permute(&[2, 0, 1]).sum(1)),
            reference: Box::new(|v| {
                // out[k, j] = Σ_i a[i, j, k]
                let mut o = vec![0.0; 12];
                for k in 0..4 {
                    for j in 0..3 {
                        o[k * 3 + j] = (0..2).map(|i| v[0][i * 12 + j * 4 + k]).sum();
                    }
                }
                o
            }),
            grad: true,
        },
        Case {
            name: "slice both ends",
            inputs: vec![(vec![6, 4], a.clone())],
            build: Box::new(|_, v| v[0].slice(0, 1, 4).slice(1, 1, 3).exp()),
            reference: Box::new(|v| {
                (1..4)
                    .flat_map(|i| (1..3).map(move |j| (i, j)))
                    .map(|(i, j)| at(&v[0], 4, i, j).exp())
                    .collect()
            }),
            grad: true,
        },
        Case {
            name: "nested slices compose",
            inputs: vec![(vec![24], a.clone())],
            build: Box::new(|_, v| v[0].slice(0, 4, 20).slice(0, 3, 7)),
            reference: Box::new(|v| v[0][7..11].to_vec()),
            grad: true,
        },
        Case {
            name: "pad then unary (zeros stay zeros in the view)",
            inputs: vec![(vec![6, 4], a.clone())],
            build: Box::new(|_, v| v[0].pad(1, 2, 1).add_scalar(0.5)),
            reference: Box::new(|v| {
                let mut o = Vec::new();
                for i in 0..6 {
                    for j in 0..7 {
                        o.push(
                            if (2..6).contains(&j) {
                                at(&v[0], 4, i, j - 2)
                            } else {
                                0.0
                            } + 0.5,
                        );
                    }
                }
                o
            }),
            grad: true,
        },
        Case {
            name: "reshape",
            inputs: vec![(vec![6, 4], a.clone())],
            build: Box::new(|_, v| v[0].t().reshape(&[Dim::Fixed(3), Dim::Fixed(8)]).sum(1)),
            reference: Box::new(|v| {
                let t: Vec<f64> = (0..4)
                    .flat_map(|j| (0..6).map(move |i| (i, j)))
                    .map(|(i, j)| at(&v[0], 4, i, j))
                    .collect();
                t.chunks(8).map(|c| c.iter().sum()).collect()
            }),
            grad: true,
        },
        Case {
            name: "concat",
            inputs: vec![
                (vec![6, 4], a.clone()),
                (vec![6, 4], a.iter().map(|x| x * 2.0).collect()),
            ],
            build: Box::new(|_, v| v[0].slice(1, 0, 1).concat(v[1].slice(1, 2, 4), 1).square()),
            reference: Box::new(|v| {
                let mut o = Vec::new();
                for i in 0..6 {
                    o.push(at(&v[0], 4, i, 0).powi(2));
                    o.push(at(&v[1], 4, i, 2).powi(2));
                    o.push(at(&v[1], 4, i, 3).powi(2));
                }
                o
            }),
            grad: true,
        },
        Case {
            name: "matmul with a sliced lhs and a transposed rhs",
            inputs: vec![
                (vec![6, 4], a.clone()),
                (vec![3, 2], b.iter().chain(&b[..2]).copied().collect()),
            ],
            build: Box::new(|_, v| v[0].slice(1, 1, 4).matmul(v[1])),
            reference: Box::new(|v| {
                let mut o = Vec::new();
                for i in 0..6 {
                    for j in 0..2 {
                        o.push(
                            (0..3)
                                .map(|k| at(&v[0], 4, i, k + 1) * at(&v[1], 2, k, j))
                                .sum(),
                        );
                    }
                }
                o
            }),
            grad: true,
        },
        Case {
            name: "batched matmul",
            inputs: vec![
                (vec![2, 3, 4], a.clone()),
                (vec![2, 4, 3], a.iter().rev().copied().collect()),
            ],
            build: Box::new(|_, v| v[0].matmul(v[1])),
            reference: Box::new(|v| {
                let mut o = Vec::new();
                for b in 0..2 {
                    for i in 0..3 {
                        for j in 0..3 {
                            o.push(
                                (0..4)
                                    .map(|k| v[0][b * 12 + i * 4 + k] * v[1][b * 12 + k * 3 + j])
                                    .sum(),
                            );
                        }
                    }
                }
                o
            }),
            grad: true,
        },
    ];
    for c in cases {
        check(c);
    }
}

fn mlp_ref(v: &[Vec<f64>], act: fn(f64) -> f64) -> Vec<f64> {
    // x [5,3]; w0 [3,8] b0 [8]; w1 [8,8] b1 [8]; w2 [8,2] b2 [2]
    let dims = [3usize, 8, 8, 2];
    let mut h: Vec<f64> = v[0].clone();
    for l in 0..3 {
        let (w, b) = (&v[1 + 2 * l], &v[2 + 2 * l]);
        let (n_in, n_out) = (dims[l], dims[l + 1]);
        let mut o = vec![0.0; 5 * n_out];
        for i in 0..5 {
            for j in 0..n_out {
                let z: f64 = (0..n_in)
                    .map(|k| h[i * n_in + k] * w[k * n_out + j])
                    .sum::<f64>()
                    + b[j];
                o[i * n_out + j] = if l < 2 { act(z) } else { z };
            }
        }
        h = o;
    }
    h
}

fn mlp_case(name: &'static str, silu: bool) -> Case {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let dims = [3usize, 8, 8, 2];
    let mut inputs = vec![(vec![5, 3], rand_vec(&mut rng, 15, -1.5, 1.5))];
    for l in 0..3 {
        inputs.push((
            vec![dims[l], dims[l + 1]],
            rand_vec(&mut rng, dims[l] * dims[l + 1], -0.8, 0.8),
        ));
        inputs.push((
            vec![dims[l + 1]],
            rand_vec(&mut rng, dims[l + 1], -0.3, 0.3),
        ));
    }
    Case {
        name,
        inputs,
        build: Box::new(move |_, v| {
            let mut h = v[0];
            for l in 0..3 {
                h = h.matmul(v[1 + 2 * l]) + v[2 + 2 * l];
                if l < 2 {
                    h = if silu { h.silu() } else { h.tanh() };
                }
            }
            h
        }),
        reference: if silu {
            Box::new(|v| mlp_ref(v, |z| z / (1.0 + (-z).exp())))
        } else {
            Box::new(|v| mlp_ref(v, f64::tanh))
        },
        grad: true,
    }
}

#[test]
fn composite_graphs_pass_gradient_checks() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let a = rand_vec(&mut rng, 12, -3.0, 3.0);
    check(Case {
        name: "take with repeated table entries (gather; adjoint scatter-adds)",
        inputs: vec![(vec![3, 4], a.clone())],
        build: Box::new(|_, v| v[0].take(1, &[3, 0, 0, 2, 1], &[5]).square()),
        reference: Box::new(|v| {
            let t = [3, 0, 0, 2, 1];
            (0..3)
                .flat_map(|r| t.iter().map(move |&k| r * 4 + k))
                .map(|i| v[0][i] * v[0][i])
                .collect()
        }),
        grad: true,
    });
    // Runs of consecutive positions of every length the executor copies differently (1–3
    // element by element, 4–7 and 8+ in overlapping blocks), backwards and wrapping too.
    let runs: Vec<usize> = [
        (0, 1),
        (5, 3),
        (1, 4),
        (30, 7),
        (2, 8),
        (12, 9),
        (20, 16),
        (9, 17),
    ]
    .iter()
    .flat_map(|&(first, len)| first..first + len)
    .chain([40, 39, 38, 0, 41, 41])
    .collect();
    let b = rand_vec(&mut rng, 2 * 42, -3.0, 3.0);
    check(Case {
        name: "take by runs of 1 to 17 consecutive positions",
        inputs: vec![(vec![2, 42], b)],
        build: Box::new({
            let t = runs.clone();
            move |_, v| v[0].take(1, &t, &[t.len()]).square()
        }),
        reference: Box::new({
            let t = runs.clone();
            move |v| {
                (0..2)
                    .flat_map(|r| t.iter().map(move |&k| r * 42 + k))
                    .map(|i| v[0][i] * v[0][i])
                    .collect()
            }
        }),
        grad: true,
    });
    check(Case {
        name: "take of a permuted view into a 2-D row",
        inputs: vec![(vec![3, 4], a.clone())],
        build: Box::new(|_, v| {
            let y = v[0].permute(&[1, 0]).take(1, &[2, 2, 0, 1], &[2, 2]);
            y * y.sum(2).expand(2, Dim::Fixed(2))
        }),
        reference: Box::new(|v| {
            // p[r][c] = a[c][r] (4 rows of 3); y[r, j] = p[r][t[j]].
            let t = [2, 2, 0, 1];
            let mut o = Vec::new();
            for r in 0..4 {
                let y: Vec<f64> = t.iter().map(|&k| v[0][k * 4 + r]).collect();
                for j in 0..4 {
                    let pair = j / 2 * 2;
                    o.push(y[j] * (y[pair] + y[pair + 1]));
                }
            }
            o
        }),
        grad: true,
    });
    check(mlp_case("mlp tanh", false));
    check(mlp_case("mlp silu", true));
    check(Case {
        name: "softmax",
        inputs: vec![(vec![3, 4], a.clone())],
        build: Box::new(|_, v| v[0].softmax(1)),
        reference: Box::new(|v| {
            let mut o = Vec::new();
            for r in v[0].chunks(4) {
                let s: f64 = r.iter().map(|x| x.exp()).sum();
                o.extend(r.iter().map(|x| x.exp() / s));
            }
            o
        }),
        grad: true,
    });
    check(Case {
        name: "logsumexp",
        inputs: vec![(vec![3, 4], a.clone())],
        build: Box::new(|_, v| v[0].logsumexp(1)),
        reference: Box::new(|v| {
            v[0].chunks(4)
                .map(|r| r.iter().map(|x| x.exp()).sum::<f64>().ln())
                .collect()
        }),
        grad: true,
    });
    check(Case {
        name: "cumsum",
        inputs: vec![(vec![3, 4], a.clone())],
        build: Box::new(|_, v| v[0].cumsum_last()),
        reference: Box::new(|v| {
            v[0].chunks(4)
                .flat_map(|r| {
                    r.iter()
                        .scan(0.0, |s, x| {
                            *s += x;
                            Some(*s)
                        })
                        .collect::<Vec<_>>()
                })
                .collect()
        }),
        grad: true,
    });
    check(Case {
        name: "softplus, abs, clamp",
        inputs: vec![(vec![12], a.clone())],
        build: Box::new(|_, v| v[0].softplus() + v[0].abs() * v[0].clamp(-1.0, 1.0)),
        reference: map1(|x| (1.0 + x.exp()).ln() + x.abs() * x.clamp(-1.0, 1.0)),
        grad: true,
    });
}

/// The spline-shaped graph: bin search as (x ≥ knots).sum() − 1, one-hot gather of per-bin
/// parameters, then a rational function of the position inside the bin.
#[test]
fn spline_shaped_graph_passes_gradient_check() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let k = 5usize;
    let x = vec![-2.7, -1.1, -0.3, 0.45, 1.7, 2.9];
    let knots: Vec<f64> = vec![-3.0, -1.8, -0.6, 0.2, 1.3, 3.0];
    let heights = rand_vec(&mut rng, k, 0.5, 1.5);
    check(Case {
        name: "rqs-shaped",
        inputs: vec![(vec![6], x), (vec![k + 1], knots), (vec![k], heights)],
        build: Box::new(move |_, v| {
            let (x, knots, h) = (v[0], v[1], v[2]);
            let xe = x.expand(1, Dim::Fixed(k + 1));
            let kn = knots.expand(0, Dim::Fixed(6));
            let bin = xe.ge(kn).sum(1).add_scalar(-1.0);
            let oh = bin.one_hot(k);
            let lo = (oh * knots.slice(0, 0, k).expand(0, Dim::Fixed(6))).sum(1);
            let hi = (oh * knots.slice(0, 1, k + 1).expand(0, Dim::Fixed(6))).sum(1);
            let hk = (oh * h.expand(0, Dim::Fixed(6))).sum(1);
            let xi = (x - lo) / (hi - lo);
            hk * xi.square() / (xi.square() + (xi.neg() + 1.0).square())
        }),
        reference: Box::new(move |v| {
            v[0].iter()
                .map(|&x| {
                    let b = v[1].iter().filter(|&&kn| x >= kn).count() - 1;
                    let xi = (x - v[1][b]) / (v[1][b + 1] - v[1][b]);
                    v[2][b] * xi * xi / (xi * xi + (1.0 - xi) * (1.0 - xi))
                })
                .collect()
        }),
        grad: true,
    });
}

/// An independent f64 rational-quadratic spline (Durkan et al. 2019, eq. 4 and its
/// derivative), written out directly: knots from softmax/softplus, bin by linear search.
/// The inverse is found by bisection on the forward map, not by the quadratic formula.
fn rqs_reference(x: f64, th: &[f64], k: usize, b: f64, inverse: bool) -> (f64, f64) {
    use thermoflow::flows::spline::{MIN_BIN, MIN_DERIVATIVE};
    if x <= -b || x >= b {
        return (x, 0.0);
    }
    let sizes = |t: &[f64]| -> Vec<f64> {
        let mx = t.iter().cloned().fold(f64::MIN, f64::max);
        let e: Vec<f64> = t.iter().map(|v| (v - mx).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter()
            .map(|v| 2.0 * b * (MIN_BIN + (1.0 - MIN_BIN * k as f64) * v / s))
            .collect()
    };
    let (w, h) = (sizes(&th[..k]), sizes(&th[k..2 * k]));
    let c0 = ((1.0 - MIN_DERIVATIVE).exp() - 1.0).ln();
    let mut d = vec![1.0; k + 1];
    for j in 1..k {
        d[j] = MIN_DERIVATIVE + (1.0 + (th[2 * k + j - 1] + c0).exp()).ln();
    }
    let fwd = |x: f64| -> (f64, f64) {
        let (mut xl, mut yl, mut i) = (-b, -b, 0);
        while i + 1 < k && x >= xl + w[i] {
            xl += w[i];
            yl += h[i];
            i += 1;
        }
        let (s, xi) = (h[i] / w[i], (x - xl) / w[i]);
        let den = s + (d[i + 1] + d[i] - 2.0 * s) * xi * (1.0 - xi);
        let y = yl + h[i] * (s * xi * xi + d[i] * xi * (1.0 - xi)) / den;
        let dy =
            s * s * (d[i + 1] * xi * xi + 2.0 * s * xi * (1.0 - xi) + d[i] * (1.0 - xi).powi(2))
                / (den * den);
        (y, dy.ln())
    };
    if !inverse {
        return fwd(x);
    }
    let (mut lo, mut hi) = (-b, b);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if fwd(mid).0 < x {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let z = 0.5 * (lo + hi);
    (z, -fwd(z).1)
}

/// The fused spline kernel (values, log-derivatives and the hand-written adjoint for both
/// the coordinates and the raw parameters) against the independent reference and finite
/// differences, forward and inverse, inside the bound and beyond it.
#[test]
fn fused_spline_matches_reference_and_finite_differences() {
    use thermoflow::engine::rqs::Rqs;
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    let (k, b) = (5usize, 2.5);
    let p = 3 * k - 1;
    let x = vec![-3.1, -2.2, -1.37, -0.41, 0.08, 0.93, 1.64, 2.31, 2.9];
    let n = x.len();
    let theta = rand_vec(&mut rng, n * p, -1.5, 1.5);
    for inverse in [false, true] {
        let rqs = Rqs {
            bins: k,
            bound: b,
            inverse,
        };
        check(Case {
            name: if inverse {
                "fused spline inverse"
            } else {
                "fused spline"
            },
            inputs: vec![(vec![n], x.clone()), (vec![n, p], theta.clone())],
            build: Box::new(move |_, v| {
                let (y, ld) = v[0].rqs(v[1], rqs);
                y.concat(ld, 0)
            }),
            reference: Box::new(move |v| {
                let out: Vec<(f64, f64)> = (0..v[0].len())
                    .map(|i| rqs_reference(v[0][i], &v[1][i * p..(i + 1) * p], k, b, inverse))
                    .collect();
                out.iter()
                    .map(|o| o.0)
                    .chain(out.iter().map(|o| o.1))
                    .collect()
            }),
            grad: true,
        });
    }
}

/// Cases that luminal 0.2.0's stock paths get wrong, built with luminal's own typed API.
mod luminal_regressions {
    use super::*;
    use luminal::prelude::symbolic::Expression;
    use luminal::prelude::*;

    fn run_adopted(
        cx: Box<Graph>,
        loads: &[(&str, NodeIndex, Vec<Dim>, Vec<f32>)],
        out: OutputSpec,
    ) -> Vec<f32> {
        let gb = GraphBuilder::adopt(cx);
        for (name, node, dims, _) in loads {
            gb.register(name, *node, dims, InputKind::Data, vec![]);
        }
        let mut p: Program<f32> = Program::compile(gb, &[out], None).unwrap();
        let inputs: Vec<(&str, &[f32])> = loads
            .iter()
            .map(|(n, _, _, d)| (*n, d.as_slice()))
            .collect();
        p.run(&inputs).unwrap().get("y").unwrap().to_vec()
    }

    #[test]
    fn sum_of_arange_slice_bounded_at_both_ends_is_9() {
        let mut cx = Box::new(Graph::new());
        let s = cx
            .arange::<Const<10>>()
            .slice((Expression::from(2)..Expression::from(5),))
            .realize::<R1<3>>()
            .sum_reduce::<R0, _>();
        let y = run_adopted(cx, &[], OutputSpec::node("y", s.id, &[]));
        assert_eq!(y, vec![9.0]);
    }

    #[test]
    fn sum_reduce_over_permuted_3d_view() {
        let mut cx = Box::new(Graph::new());
        let a = cx.named_tensor::<R3<2, 3, 4>>("a");
        let s = a.permute::<R3<4, 2, 3>, _>().sum_reduce::<R2<4, 3>, _>();
        let data: Vec<f32> = (0..24).map(|i| i as f32).collect();
        let y = run_adopted(
            cx,
            &[(
                "a",
                a.id,
                vec![Dim::Fixed(2), Dim::Fixed(3), Dim::Fixed(4)],
                data.clone(),
            )],
            OutputSpec::node("y", s.id, &[Dim::Fixed(4), Dim::Fixed(3)]),
        );
        let mut want = vec![0.0; 12];
        for k in 0..4 {
            for j in 0..3 {
                want[k * 3 + j] = (0..2).map(|i| data[i * 12 + j * 4 + k]).sum();
            }
        }
        assert_eq!(y, want);
    }

    #[test]
    fn matmul_of_an_offset_slice() {
        let mut cx = Box::new(Graph::new());
        let x = cx.named_tensor::<R2<3, 5>>("x");
        let w = cx.named_tensor::<R2<3, 2>>("w");
        let y = x
            .slice((.., Expression::from(2)..))
            .realize::<R2<3, 3>>()
            .matmul(w);
        let xd: Vec<f32> = (0..15).map(|i| i as f32 * 0.5).collect();
        let wd: Vec<f32> = (0..6).map(|i| 1.0 - i as f32 * 0.25).collect();
        let got = run_adopted(
            cx,
            &[
                ("x", x.id, vec![Dim::Fixed(3), Dim::Fixed(5)], xd.clone()),
                ("w", w.id, vec![Dim::Fixed(3), Dim::Fixed(2)], wd.clone()),
            ],
            OutputSpec::node("y", y.id, &[Dim::Fixed(3), Dim::Fixed(2)]),
        );
        for i in 0..3 {
            for j in 0..2 {
                let want: f32 = (0..3).map(|k| xd[i * 5 + 2 + k] * wd[k * 2 + j]).sum();
                assert!(
                    (got[i * 2 + j] - want).abs() < 1e-5,
                    "{i},{j}: {} vs {want}",
                    got[i * 2 + j]
                );
            }
        }
    }

    #[test]
    fn gather_picks_the_right_rows() {
        let mut cx = Box::new(Graph::new());
        let table = cx.named_tensor::<R2<4, 3>>("table");
        let idx = cx.named_tensor::<R1<5>>("idx");
        let y = table.gather(idx);
        let td: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let id = vec![3.0, 0.0, 2.0, 2.0, 1.0];
        let got = run_adopted(
            cx,
            &[
                (
                    "table",
                    table.id,
                    vec![Dim::Fixed(4), Dim::Fixed(3)],
                    td.clone(),
                ),
                ("idx", idx.id, vec![Dim::Fixed(5)], id.clone()),
            ],
            OutputSpec::node("y", y.id, &[Dim::Fixed(5), Dim::Fixed(3)]),
        );
        let want: Vec<f32> = id
            .iter()
            .flat_map(|&r| td[r as usize * 3..r as usize * 3 + 3].to_vec())
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn equals_and_subtraction_are_not_corrupted() {
        let mut cx = Box::new(Graph::new());
        let a = cx.named_tensor::<R1<4>>("a");
        let b = cx.named_tensor::<R1<4>>("b");
        let y = a.equals(b) + (a - b);
        let got = run_adopted(
            cx,
            &[
                ("a", a.id, vec![Dim::Fixed(4)], vec![1.0, 2.0, 3.0, 4.0]),
                ("b", b.id, vec![Dim::Fixed(4)], vec![1.0, 5.0, 3.0, 0.0]),
            ],
            OutputSpec::node("y", y.id, &[Dim::Fixed(4)]),
        );
        assert_eq!(got, vec![1.0, -3.0, 1.0, 4.0]);
    }

    /// luminal's `clip(lo, hi)` is defined as `max(min(x, lo), hi)`, constant `hi` for lo < hi;
    /// our builder's `clamp` clamps.
    #[test]
    fn clamp_clamps() {
        let g = GraphBuilder::new();
        let x = g.input("x", &[5]);
        let y = x.clamp(-1.0, 1.0).output("y");
        let mut p: Program<f32> = Program::compile(g, &[y], None).unwrap();
        let got = p
            .run(&[("x", &[-3.0, -0.5, 0.0, 0.7, 9.0])])
            .unwrap()
            .get("y")
            .unwrap()
            .to_vec();
        assert_eq!(got, vec![-1.0, -0.5, 0.0, 0.7, 1.0]);
    }
}

fn small_program() -> Program<f32> {
    let g = GraphBuilder::new();
    let x = g.batch_input("x", &[2]);
    let w = g.param("w", &[2, 3], vec![1.0, 0.0, -1.0, 0.5, 2.0, 1.0]);
    let y = x.matmul(w).tanh();
    let loss = y.square().mean_all();
    let (y, loss) = (y.output("y"), loss.output("loss"));
    Program::compile(g, &[y], Some(loss)).unwrap()
}

#[test]
fn one_program_serves_every_batch_size_with_fresh_outputs() {
    let mut p = small_program();
    let w = [1.0f64, 0.0, -1.0, 0.5, 2.0, 1.0];
    for &n in &[1usize, 2, 5, 1024, 2] {
        let x: Vec<f32> = (0..2 * n).map(|i| (i as f32 * 0.37).sin()).collect();
        let out = p.run(&[("x", &x)]).unwrap();
        let y = out.get("y").unwrap();
        assert_eq!(y.len(), 3 * n);
        assert_eq!(out.shape("y").unwrap(), &[n, 3]);
        for i in 0..n {
            for j in 0..3 {
                let z = x[2 * i] as f64 * w[j] + x[2 * i + 1] as f64 * w[3 + j];
                assert!((y[3 * i + j] as f64 - z.tanh()).abs() < 1e-5);
            }
        }
    }
}

/// A profiled run times every step of the plan it runs, by kind, with their output elements.
#[test]
fn a_profiled_run_counts_every_step_of_its_plan() {
    let mut p = small_program();
    let x: Vec<f32> = (0..2 * 64).map(|i| (i as f32 * 0.37).sin()).collect();
    let prof = p.profile(&[("x", &x)], false).unwrap();
    let mut want: Vec<(String, usize)> = Vec::new();
    for line in p.describe(64, false).unwrap() {
        let kind = line.split(' ').next().unwrap().to_string();
        match want.iter_mut().find(|w| w.0 == kind) {
            Some(w) => w.1 += 1,
            None => want.push((kind, 1)),
        }
    }
    let got: Vec<(String, usize)> = prof.iter().map(|k| (k.0.clone(), k.1)).collect();
    assert_eq!(got, want);
    let matmul = prof.iter().find(|k| k.0 == "matmul").expect("a matmul");
    assert_eq!(matmul.2, 64 * 3, "{prof:?}");
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let mut p = small_program();
    assert!(p.run(&[]).is_err(), "missing input");
    assert!(p.run(&[("x", &[1.0, 2.0, 3.0])]).is_err(), "ragged rows");
    assert!(
        p.run(&[("x", &[1.0, 2.0]), ("nope", &[1.0])]).is_err(),
        "unknown name"
    );
    assert!(p.run(&[("w", &[1.0; 6])]).is_err(), "param given as data");
    assert!(p.set_param("w", &[1.0; 5]).is_err(), "wrong param size");
    assert!(p.param("x").is_err(), "data is not a param");
}

#[test]
fn non_scalar_loss_is_a_compile_error() {
    let g = GraphBuilder::new();
    let x = g.input("x", &[3]);
    let w = g.param("w", &[3], vec![1.0; 3]);
    let y = (x * w).output("y");
    let r: Result<Program<f32>, _> = Program::compile(g, &[], Some(y));
    assert!(r.is_err());
}

#[test]
fn adam_fits_a_linear_map() {
    // y = x W with W* known; minimise mean((y - x W*)^2).
    let g = GraphBuilder::new();
    let x = g.batch_input("x", &[2]);
    let t = g.batch_input("t", &[1]);
    let w = g.param("w", &[2, 1], vec![0.0, 0.0]);
    let loss = (x.matmul(w) - t).square().mean_all().output("loss");
    let mut p: Program<f32> = Program::compile(g, &[], Some(loss)).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    let mut opt = Adam::new(0.05).with_clip(10.0);
    let mut last = f64::INFINITY;
    for _ in 0..400 {
        let xs: Vec<f32> = (0..128).map(|_| rng.random_range(-1.0..1.0)).collect();
        let ts: Vec<f32> = xs.chunks(2).map(|r| 1.5 * r[0] - 0.5 * r[1]).collect();
        last = p.step(&[("x", &xs), ("t", &ts)], &mut opt).unwrap().0;
    }
    let w = p.param("w").unwrap();
    assert!(last < 1e-4, "loss {last}");
    assert!(
        (w[0] - 1.5).abs() < 1e-2 && (w[1] + 0.5).abs() < 1e-2,
        "{w:?}"
    );
}

/// A reverse-KL-shaped graph: y = tanh(x W) is an output, and the loss reads a late input g
/// (the host's ∇U at y): loss = Σ y·g.
fn late_input_program() -> Program<f32> {
    let g = GraphBuilder::new();
    let x = g.batch_input("x", &[2]);
    let gu = g.batch_input("g", &[3]);
    let w = g.param("w", &[2, 3], vec![1.0, 0.0, -1.0, 0.5, 2.0, 1.0]);
    let y = x.matmul(w).tanh();
    let (y, loss) = (y.output("y"), (y * gu).sum_all().output("loss"));
    Program::compile(g, &[y], Some(loss)).unwrap()
}

#[test]
fn a_step_split_around_a_late_input_equals_one_step() {
    let x: Vec<f32> = (0..8).map(|i| (i as f32 * 0.61).sin()).collect();
    let late: Vec<f32> = (0..12).map(|i| (i as f32 * 0.23).cos()).collect();
    let mut whole = late_input_program();
    let mut split = late_input_program();
    let (mut o1, mut o2) = (Adam::new(0.1), Adam::new(0.1));
    for _ in 0..3 {
        let (l1, out1) = whole.step(&[("x", &x), ("g", &late)], &mut o1).unwrap();
        let out2 = split
            .step_begin(&[("x", &x), ("g", &[0.0; 12])], &["g"])
            .unwrap();
        assert_eq!(out1.get("y").unwrap(), out2.get("y").unwrap());
        let l2 = split.step_finish(&[("g", &late)], &mut o2).unwrap();
        assert!((l1 - l2).abs() < 1e-6, "{l1} vs {l2}");
        assert_eq!(whole.param("w").unwrap(), split.param("w").unwrap());
    }
    // Misuse is an error, not a panic.
    assert!(
        split.step_finish(&[("g", &late)], &mut o2).is_err(),
        "no begin"
    );
    split
        .step_begin(&[("x", &x), ("g", &late)], &["g"])
        .unwrap();
    assert!(
        split.step_finish(&[("x", &x)], &mut o2).is_err(),
        "not late"
    );
    split
        .step_begin(&[("x", &x), ("g", &late)], &["g"])
        .unwrap();
    assert!(
        split.step_finish(&[("g", &late[..6])], &mut o2).is_err(),
        "size"
    );
    assert!(
        split
            .step_begin(&[("x", &x), ("g", &late)], &["x"])
            .is_err(),
        "an output depends on x"
    );
}

/// The generated kernels of real flows' sampling and density programs (coupling flows with
/// spline transformers, a radial flow, a lattice flow with periodic convolutions), with random
/// parameters, in f32 and f64, agree with the CPU backend kernel by kernel.
#[test]
fn generated_kernels_of_flows_match_the_cpu_backend() {
    let mut checked = 0;
    for (name, precision, cases) in common::kernels::flow_cases() {
        let rel = if precision == Precision::F64 {
            1e-12
        } else {
            1e-5
        };
        checked += common::kernels::check(&cases, precision, rel, &name);
    }
    eprintln!("{checked} generated kernels agree with the CPU backend");
    assert!(checked >= 40, "only {checked} kernels generated");
}

/// Whole plans run by their generated kernels alone (each step reading what the kernels before
/// it wrote, only the declared inputs from the CPU run), as the GPU backend runs them: the
/// sampling plans of a coupling flow and the φ⁴ lattice flow, and the reverse-KL training plan
/// (forward, loss, every gradient, spline adjoints), in f64 and f32; every step's output equals
/// the CPU backend's.
#[test]
fn whole_plans_of_generated_kernels_match_the_cpu_backend() {
    use thermoflow::engine::Scalar;
    use thermoflow::flows::flow::Mode;
    /// Returns the steps the CPU skipped ([`thermoflow::engine::stencil`]).
    fn check<T: Scalar>(name: &str, p: &mut Program<T>, dim: usize, train: bool) -> usize {
        let (z, t) = plan_inputs::<T>(33, dim);
        let (precision, rel) = if std::mem::size_of::<T>() == 8 {
            (Precision::F64, 1e-9)
        } else {
            (Precision::F32, 1e-3)
        };
        p.inspect(&[("z", &z), ("cond", &t)], train, |plan, store, _| {
            let outs = common::kernels::run_plan(plan, store, precision);
            assert_eq!(outs.len(), plan.steps.len());
            for (node, got) in outs {
                for (j, (&g, w)) in got.iter().zip(plan.buffer(store, node)).enumerate() {
                    assert!(
                        codegen::agrees(g, w.to_f64(), rel),
                        "{name}: node {node} element {j}: generated {g}, CPU {}",
                        w.to_f64()
                    );
                }
            }
            plan.n_elided()
        })
        .unwrap()
    }
    let (coupling, lattice, bench) = plan_flows();
    check::<f64>(
        "coupling sample",
        &mut coupling.compile(Mode::Sample).unwrap(),
        3,
        false,
    );
    // The lattice flow's convolutions read their im2col in place on the CPU; the generated
    // kernels run the take: equal to rounding (f32) and to 1e-9 (f64).
    for skipped in [
        check::<f32>(
            "lattice sample",
            &mut lattice.compile(Mode::Sample).unwrap(),
            16,
            false,
        ),
        check::<f64>(
            "lattice sample",
            &mut lattice.compile(Mode::Sample).unwrap(),
            16,
            false,
        ),
    ] {
        assert!(skipped > 0, "no im2col read in place");
    }
    let mut train64 = thermoflow::bench::reverse_kl_quadratic_program::<f64>(&bench).unwrap();
    check::<f64>("reverse-KL training", &mut train64, 3, true);
    let mut train32 = thermoflow::bench::reverse_kl_quadratic_program::<f32>(&bench).unwrap();
    check::<f32>("reverse-KL training", &mut train32, 3, true);
    // Training the lattice flow: on the CPU the im2col's adjoints compute their gemm's rows
    // themselves (the gemms skipped); the generated kernels run gemm then put.
    let mut train = thermoflow::bench::reverse_kl_quadratic_program::<f64>(&lattice).unwrap();
    let skipped = check::<f64>("lattice training", &mut train, 16, true);
    assert!(skipped > 0, "no put computed its gemm's rows");
    let mut train = thermoflow::bench::reverse_kl_quadratic_program::<f32>(&lattice).unwrap();
    check::<f32>("lattice training", &mut train, 16, true);
}

/// The CPU's shortcuts around the periodic convolutions' im2col ([`thermoflow::engine::stencil`]:
/// a gemm reading A through the take's source, a gemm gathering B a configuration at a time,
/// a put computing its gemm's rows itself, the take or gemm skipped) give the same bits as the
/// steps they skip: the sampling and reverse-KL training programs of a φ⁴ and a U(1) flow
/// (perturbed), f32, an odd batch (partial tiles), with shortcuts and without.
#[test]
fn the_cpus_shortcuts_give_the_bits_of_the_steps_they_skip() {
    use thermoflow::engine::plan::Step;
    use thermoflow::flows::flow::Mode;
    let (_, phi4, _) = plan_flows();
    let cond = thermoflow::flows::Conditioning::Temperature {
        t_min: 0.8,
        t_max: 1.25,
    };
    let mut u1 = thermoflow::flows::builders::gauge_flow(4, cond, 2, 4, 1, 4, 1, 0).unwrap();
    thermoflow::bench::perturb(&mut u1, 8, 0.1);
    let batch = 33;
    let mut kinds = [0usize; 3];
    for (name, flow) in [("phi4", &phi4), ("u1", &u1)] {
        let (z, t) = plan_inputs::<f32>(batch, flow.flow_dim());
        let inputs = [("z", &z[..]), ("cond", &t[..])];
        // Every output of the sampling program, the loss and every gradient of training.
        let mut sample = flow.compile::<f32>(Mode::Sample).unwrap();
        let mut train = thermoflow::bench::reverse_kl_quadratic_program::<f32>(flow).unwrap();
        let mut results = Vec::new();
        for on in [true, false] {
            sample.set_shortcuts(on);
            train.set_shortcuts(on);
            let out = sample.run(&inputs).unwrap();
            let mut bits: Vec<u32> = ["x", "log_q"]
                .iter()
                .flat_map(|o| out.get(o).unwrap().iter().map(|v| v.to_bits()))
                .collect();
            let (loss, _, grads) = train.run_with_grads(&inputs).unwrap();
            bits.push((loss as f32).to_bits());
            bits.extend(grads.iter().flatten().map(|&g| (g as f32).to_bits()));
            assert!(bits.iter().any(|&b| b != 0), "{name}: all zero");
            results.push(bits);
            // Which shortcuts the plans took.
            for (p, train) in [(&mut sample, false), (&mut train, true)] {
                p.inspect(&inputs, train, |plan, _, _| {
                    assert_eq!(plan.n_elided() > 0, on, "{name}: steps skipped");
                    for step in &plan.steps {
                        match step {
                            Step::MatMul {
                                stencil: Some(_), ..
                            } => kinds[0] += 1,
                            Step::MatMul {
                                gather: Some(_), ..
                            } => kinds[1] += 1,
                            Step::Put { gemm: Some(_), .. } => kinds[2] += 1,
                            _ => {}
                        }
                    }
                })
                .unwrap();
            }
        }
        assert_eq!(results[0].len(), results[1].len());
        for (j, (a, b)) in results[0].iter().zip(&results[1]).enumerate() {
            assert_eq!(
                a,
                b,
                "{name}: value {j}: {} against {}",
                f32::from_bits(*a),
                f32::from_bits(*b)
            );
        }
    }
    assert!(
        kinds.iter().all(|&k| k > 0),
        "shortcuts taken (stencil, gather, put): {kinds:?}"
    );
}

/// Every gemm of real flows' plans (sampling, density, the reverse-KL training plan with its
/// transposed backward products, the lattice flow's convolutions) is one strided-batched BLAS
/// call (how the CUDA backend hands it to cuBLAS): the call by BLAS's definition on the CPU
/// run's buffers, then the generated epilogue kernel (host-compiled) where the step has one,
/// gives the CPU backend's output.
#[test]
fn gemms_as_blas_calls_with_generated_epilogues_match_the_cpu_backend() {
    use thermoflow::engine::codegen::Case;
    use thermoflow::engine::plan::Step;
    use thermoflow::engine::{blas, Scalar};
    use thermoflow::flows::flow::Mode;
    let (coupling, lattice, bench) = plan_flows();
    let programs: Vec<(&str, Program<f64>, usize, bool)> = vec![
        (
            "coupling sample",
            coupling.compile(Mode::Sample).unwrap(),
            3,
            false,
        ),
        (
            "lattice sample",
            lattice.compile(Mode::Sample).unwrap(),
            16,
            false,
        ),
        (
            "reverse-KL training",
            thermoflow::bench::reverse_kl_quadratic_program(&bench).unwrap(),
            3,
            true,
        ),
    ];
    let (mut gemms, mut epilogues) = (0, Vec::<Case>::new());
    for (name, mut p, dim, train) in programs {
        let (z, t) = plan_inputs::<f64>(33, dim);
        p.inspect(&[("z", &z), ("cond", &t)], train, |plan, store, _| {
            let f64s = |n: usize| -> Vec<f64> {
                plan.buffer(store, n).iter().map(|v| v.to_f64()).collect()
            };
            for (i, step) in plan.steps.iter().enumerate() {
                let Step::MatMul { out, a, b, .. } = step else {
                    continue;
                };
                gemms += 1;
                let call = blas::call(&a.1, &b.1)
                    .unwrap_or_else(|| panic!("{name}: gemm {i} ({:?} · {:?}) refused", a.1, b.1));
                let product = call.reference(&f64s(b.0), &f64s(a.0));
                let want = f64s(*out);
                match codegen::epilogue(step, &format!("e{}_{i}", epilogues.len())) {
                    None => {
                        for (j, (g, w)) in product.iter().zip(&want).enumerate() {
                            assert!(
                                codegen::agrees(*g, *w, 1e-12),
                                "{name}: gemm {i} element {j}: BLAS {g}, CPU {w}"
                            );
                        }
                    }
                    Some(source) => {
                        // The kernel's first input is the product; the others are nodes.
                        let inputs = std::iter::once(product)
                            .chain(source.inputs[1..].iter().map(|&n| f64s(n)))
                            .collect();
                        epilogues.push(Case {
                            source,
                            inputs,
                            expected: want,
                        });
                    }
                }
            }
        })
        .unwrap();
    }
    let checked = common::kernels::check(&epilogues, Precision::F64, 1e-12, "gemm epilogues");
    eprintln!("{gemms} gemms as BLAS calls, {checked} with a generated epilogue");
    assert!(
        gemms >= 20 && checked >= 5,
        "{gemms} gemms, {checked} epilogues"
    );
}

/// The base draws and temperatures the plan comparisons run on: `batch` rows of `dim`.
fn plan_inputs<T: thermoflow::engine::Scalar>(batch: usize, dim: usize) -> (Vec<T>, Vec<T>) {
    let z = (0..batch * dim)
        .map(|i| T::from_f64(((i as f64) * 0.618).sin() * 2.0))
        .collect();
    let t = (0..batch)
        .map(|i| T::from_f64(0.8 + 0.45 * i as f64 / batch as f64))
        .collect();
    (z, t)
}

/// The flows whose whole plans the generated-kernel and BLAS checks run: a coupling flow
/// (d = 3), the lattice flow (L = 4) and `bench flows`' training flow (d = 3).
fn plan_flows() -> (
    thermoflow::flows::Flow,
    thermoflow::flows::Flow,
    thermoflow::flows::Flow,
) {
    use thermoflow::flows::builders::{coupling_flow, default_flow, lattice_flow};
    let cond = thermoflow::flows::Conditioning::Temperature {
        t_min: 0.8,
        t_max: 1.25,
    };
    // Perturbed: the lattice flow's zero output layers would leave every gradient through its
    // convolutions zero.
    let mut lattice = lattice_flow(4, cond, 2, 4, 1, 0).unwrap();
    thermoflow::bench::perturb(&mut lattice, 7, 0.1);
    (
        coupling_flow(3, cond, &default_flow()).unwrap(),
        lattice,
        thermoflow::bench::bench_flow(3).unwrap(),
    )
}
