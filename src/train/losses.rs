//! Loss graphs.
//!
//! Forward KL / maximum likelihood: L(θ) = −(1/n) Σ_i log q_θ(x_i | c_i), the flow evaluated in
//! the inverse direction (x → z).

use ndarray::ArrayView2;
use rand::seq::SliceRandom;

use crate::engine::{Adam, GraphBuilder, Program};
use crate::error::{input_err, Result};
use crate::flows::params::{Declared, Scope};
use crate::flows::Flow;

/// Compile −mean log q(x | c) with trainable flow parameters; inputs `x` (and `cond`), in the
/// flow's coordinates ([`Flow::to_flow_coordinates`]; the map's log-det has no parameters).
pub fn max_likelihood_program(flow: &Flow) -> Result<Program<f32>> {
    let g = GraphBuilder::new();
    let loss = {
        let declared = Declared::default();
        let s = Scope::root(&g, &declared, true);
        let x = g.batch_input("x", &[flow.flow_dim()]);
        let rc = flow.conditioning().raw_dim();
        let c = (rc > 0).then(|| g.batch_input("cond", &[rc]));
        let (_, lq) = flow.build_log_prob(&s, x, c);
        lq.mean(0).neg().output("loss")
    };
    Program::compile(g, &[], Some(loss))?.on_selected_device()
}

/// Fit `flow` by maximum likelihood on rows of `x` (with per-row raw conditions `cond`, empty
/// when unconditioned) using Adam with minibatches; returns the final epoch's mean loss.
pub fn fit_max_likelihood(
    flow: &mut Flow,
    x: ArrayView2<f64>,
    cond: &[f64],
    steps: usize,
    batch: usize,
    lr: f64,
    seed: u64,
) -> Result<f64> {
    crate::systems::check_batch(flow.dim(), &x)?;
    let n = x.nrows();
    let rc = flow.conditioning().raw_dim();
    if cond.len() != n * rc {
        return input_err(format!("{} condition values for {n} samples", cond.len()));
    }
    if n == 0 || batch == 0 {
        return input_err("no data");
    }
    let (y, _) = flow.to_flow_coordinates(x, cond)?;
    let mut prog = max_likelihood_program(flow)?;
    flow.write_params(&mut prog)?;
    let mut opt = Adam::new(lr).with_clip(100.0);
    let last = minibatch_steps(&mut prog, y.view(), cond, steps, batch, &mut opt, seed)?;
    flow.read_params(&mut prog)?;
    Ok(last)
}

/// The maximum-likelihood loop flows and causal flows share: `steps` optimiser steps of `prog`
/// on minibatches of `batch` rows of `x` (and their conditions, `cond.len() / rows` per row;
/// empty when the program has no `cond` input), reshuffled every epoch; returns the last loss.
pub(crate) fn minibatch_steps(
    prog: &mut Program<f32>,
    x: ArrayView2<f64>,
    cond: &[f64],
    steps: usize,
    batch: usize,
    opt: &mut Adam,
    seed: u64,
) -> Result<f64> {
    let n = x.nrows();
    if n == 0 || batch == 0 || !cond.len().is_multiple_of(n) {
        return input_err("no data, or conditions that do not match the rows");
    }
    let rc = cond.len() / n;
    let mut rng = crate::rng::seeded(seed);
    let mut order: Vec<usize> = (0..n).collect();
    let (mut xb, mut cb) = (Vec::new(), Vec::new());
    let mut last = f64::NAN;
    let mut pos = n;
    let b = batch.min(n);
    for _ in 0..steps {
        if pos + b > n {
            order.shuffle(&mut rng);
            pos = 0;
        }
        xb.clear();
        cb.clear();
        for &i in &order[pos..pos + b] {
            xb.extend(x.row(i).iter().map(|&v| v as f32));
            cb.extend(cond[i * rc..(i + 1) * rc].iter().map(|&v| v as f32));
        }
        pos += b;
        let mut inputs: Vec<(&str, &[f32])> = vec![("x", &xb)];
        if rc > 0 {
            inputs.push(("cond", &cb));
        }
        last = prog.step(&inputs, opt)?.0;
    }
    Ok(last)
}

/// Compile the training graph: reverse-KL surrogate on base samples `z` at temperatures
/// `cond`, with host-supplied energy gradients `grad_u` and per-sample weights `w` (summing to
/// one), plus `lambda` × forward KL on data `x_data` at `cond_data` (same batch size) when
/// `with_data`. Outputs `x` and `log_q` of the reverse part. All in the flow's coordinates
/// ([`Flow::flow_dim`]): with system coordinates `grad_u` is the pulled-back gradient
/// ([`crate::flows::Coordinates::energy_gradient`]).
pub fn combined_program(flow: &Flow, with_data: bool, lambda: f64) -> Result<Program<f32>> {
    let g = GraphBuilder::new();
    let (outs, loss) = {
        let declared = Declared::default();
        let s = Scope::root(&g, &declared, true);
        let d = flow.flow_dim();
        let z = g.batch_input("z", &[d]);
        let t = g.batch_input("cond", &[1]);
        let gu = g.batch_input("grad_u", &[d]);
        let w = g.batch_input("w", &[]);
        let (x, lq) = flow.build_sample(&s, z, Some(t));
        let beta = t.sum(1).recip();
        let surrogate = lq + (x * gu).sum(1) * beta;
        let mut loss = (surrogate * w).sum(0);
        if with_data {
            let xd = g.batch_input("x_data", &[d]);
            let td = g.batch_input("cond_data", &[1]);
            let (_, lqd) = flow.build_log_prob(&s, xd, Some(td));
            loss = loss + lqd.mean(0).mul_scalar(-lambda);
        }
        ([x.output("x"), lq.output("log_q")], loss.output("loss"))
    };
    Program::compile(g, &outs, Some(loss))?.on_selected_device()
}
