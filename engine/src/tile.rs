//! Row-tiled execution: a pass over the plan that finds the steps whose batch rows are
//! independent and runs them **tile by tile** — a few dozen batch rows through a whole run of
//! steps (gemm, bias and activation, spline, log-det, and their adjoints) while the rows'
//! intermediates are in cache — with the tiles spread over the cores in one parallel region.
//!
//! **Row analysis.** A node is *batch-major with row r* when its buffer holds the batch's rows
//! one after another, r elements each (declared inputs whose leading axis is the batch; and
//! the output of every tileable step). A step is *tileable* when its output rows depend only
//! on the same rows of its batch-dependent sources: every view it reads them through maps
//! iteration row b into source row b,
//!
//! ```text
//! view(p) = offset + b·r_src + inner(p mod r_it),   0 ≤ offset + inner(·) < r_src,
//! ```
//!
//! which is checked by splitting the view's axes where the trailing ones cover one
//! iteration row and requiring the leading ones to merge into a single unmasked axis of the
//! batch's length and stride r_src. Batch-invariant nodes (parameters, constants, and
//! whatever is computed from them alone) are read whole. Reductions over the batch (the
//! parameter gradients: gemms contracting over rows, sums over the batch axis) and anything
//! not proved row-local run as single steps, split across the cores by their own units.
//!
//! **Schedule.** Alternating list scheduling over the steps in topological order: the ready
//! single steps, level by level (a level's steps are independent and share one parallel
//! region, each run whole by one worker unless one step outweighs the rest), then the largest
//! set of ready tileable steps as one tiled segment, and again, until all have run. A typical training plan becomes: batch-invariant steps,
//! one segment (forward and backward through every layer), the parameter-gradient gemms.
//!
//! The description (which steps, rows per tile, units per row) is what a GPU backend would
//! launch as one kernel per segment with a tile per thread block.

use super::exec::{
    exec, on_workers, out_per_unit, units, work_per_unit, Bufs, Span, Worker, CHUNK,
};
use super::ir::{Ir, Op};
use super::plan::Step;
use super::scalar::Scalar;
use super::view::{Axis, View};
use crate::error::Result;

/// How a declared input relates to the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputRows {
    /// No batch axis (parameters, constants).
    Invariant,
    /// The batch is the leading axis: row-major batch rows.
    BatchMajor,
    /// Depends on the batch otherwise.
    Batch,
}

/// Units and output elements per batch row of a tileable step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rows {
    /// Units of work per batch row.
    pub units: usize,
    /// Output elements per batch row.
    pub out: usize,
}

/// Intermediate elements a tile aims to hold per step (f32: 64 KiB).
pub const TILE_ELEMS: usize = 16 * 1024;

/// Work (roughly flops) below which a single step is not split across threads.
pub const PARALLEL_MIN: usize = 64 * 1024;

/// For every step: its rows when tileable.
pub fn analyse(ir: &Ir, steps: &[Step], batch: usize, inputs: &[InputRows]) -> Vec<Option<Rows>> {
    let n = ir.nodes.len();
    let mut dep = vec![false; n];
    let mut row: Vec<Option<usize>> = vec![None; n];
    for (i, node) in ir.nodes.iter().enumerate() {
        if let Op::Input(k) = node.op {
            let kind = inputs.get(k).copied().unwrap_or(InputRows::Batch);
            dep[i] = kind != InputRows::Invariant;
            if kind == InputRows::BatchMajor && batch > 0 && node.len % batch == 0 {
                row[i] = Some(node.len / batch);
            }
        }
    }
    let mut out = Vec::with_capacity(steps.len());
    for step in steps {
        let o = step.out();
        let srcs = sources(step);
        dep[o] = srcs.iter().any(|&s| dep[s]);
        let len = ir.nodes[o].len;
        let rows = if dep[o] && batch > 1 && len.is_multiple_of(batch) {
            tileable(step, len / batch, batch, &dep, &row)
        } else {
            None
        };
        if rows.is_some() {
            row[o] = Some(len / batch);
        }
        out.push(rows);
    }
    out
}

/// Nodes a step reads.
pub fn sources(step: &Step) -> Vec<usize> {
    match step {
        Step::Fused { kernel, .. } | Step::Reduce { kernel, .. } => {
            kernel.leaves.iter().map(|l| l.0).collect()
        }
        Step::MatMul {
            a,
            b,
            epilogue,
            stencil,
            gather,
            ..
        } => {
            let mut v = vec![a.0, b.0];
            v.extend(epilogue.as_ref().and_then(|e| e.bias).map(|b| b.0));
            // A or B read through a skipped take's source.
            v.extend(stencil.as_ref().map(|st| st.src));
            v.extend(gather.as_ref().map(|g| g.src));
            v
        }
        Step::Scatter { g, .. } => vec![g.0],
        Step::Const { .. } => vec![],
        // A put computing its source's rows reads the skipped gemm's operands instead.
        Step::Put { gemm: Some(gm), .. } => vec![gm.a.0, gm.b.0],
        Step::Take { src, .. } | Step::Put { src, .. } => vec![*src],
        Step::Spline { x, theta, .. } => vec![*x, *theta],
        Step::SplineAdjoint { x, theta, g, .. } => vec![*x, *theta, *g],
    }
}

/// Rows of a batch-dependent step whose output rows have `r_out` elements, if row-local.
fn tileable(
    step: &Step,
    r_out: usize,
    batch: usize,
    dep: &[bool],
    row: &[Option<usize>],
) -> Option<Rows> {
    // A batch-dependent source must be batch-major and read row by row.
    let local = |node: usize, view: &View, it_row: usize| -> bool {
        !dep[node] || row[node].is_some_and(|rs| row_local(view, it_row, batch, rs))
    };
    let plain = |node: usize, r: usize| !dep[node] || row[node] == Some(r);
    let units = match step {
        Step::Fused { kernel, .. } => kernel
            .leaves
            .iter()
            .all(|(nd, v)| local(*nd, v, r_out))
            .then_some(r_out)?,
        Step::Reduce { kernel, k, .. } => kernel
            .leaves
            .iter()
            .all(|(nd, v)| local(*nd, v, r_out * k))
            .then_some(r_out)?,
        Step::MatMul { a, b, stencil, .. } => {
            let r = a.1.axes.len();
            let (m, k, n) = (
                a.1.axes[r - 2].len,
                a.1.axes[r - 1].len,
                b.1.axes[r - 2].len,
            );
            let ok = r == 2 && !dep[b.0] && dep[a.0] && m % batch == 0 && n > 0;
            let per = m / batch;
            // Read through a stencil, A's rows of a batch row come from that row of the source.
            let source_ok = stencil
                .as_ref()
                .is_none_or(|st| per.is_multiple_of(st.p) && plain(st.src, per / st.p * st.in_row));
            (ok && source_ok && local(a.0, &a.1, per * k)).then_some(per)?
        }
        Step::Spline { x, theta, rqs, .. } => {
            let m = r_out / 2;
            (plain(*x, m) && plain(*theta, m * rqs.n_params())).then_some(m)?
        }
        Step::SplineAdjoint {
            x, theta, g, rqs, ..
        } => {
            let p = rqs.n_params();
            let m = r_out / (p + 1);
            (plain(*x, m) && plain(*theta, m * p) && plain(*g, 2 * m)).then_some(m)?
        }
        Step::Take {
            src, table, in_row, ..
        } => {
            let t = r_out / table.len().max(1);
            (table.len() * t == r_out && plain(*src, t * in_row)).then_some(t)?
        }
        Step::Put {
            src,
            table,
            in_row,
            gemm,
            ..
        } => {
            let t = r_out / (*in_row).max(1);
            // Computing its source's rows: the gemm's rows of a batch row read that row of A.
            let source_ok = match gemm {
                None => plain(*src, t * table.len()),
                Some(gm) => {
                    let (a, b) = (&gm.a, &gm.b);
                    let k = a.1.axes[a.1.axes.len() - 1].len;
                    let per = t * table.len() / gm.n;
                    a.1.axes.len() == 2 && !dep[b.0] && local(a.0, &a.1, per * k)
                }
            };
            (in_row * t == r_out && source_ok).then_some(t)?
        }
        Step::Scatter { g, target, .. } => {
            let it = target.numel();
            if it % batch != 0 {
                return None;
            }
            let ri = it / batch;
            (local(g.0, &g.1, ri) && row_local(target, ri, batch, r_out)).then_some(ri)?
        }
        Step::Const { .. } => return None,
    };
    Some(Rows { units, out: r_out })
}

/// Does `v`, enumerated in rows of `it_row` logical elements, read row b only inside
/// `[b·src_row, (b + 1)·src_row)` of its buffer?
pub fn row_local(v: &View, it_row: usize, batch: usize, src_row: usize) -> bool {
    if it_row == 0 || v.numel() != it_row * batch {
        return false;
    }
    let mut outer = v.axes.clone();
    let mut inner: Vec<Axis> = Vec::new();
    let mut prod = 1usize;
    while prod < it_row {
        let Some(a) = outer.pop() else { return false };
        if prod * a.len <= it_row {
            prod *= a.len;
            inner.push(a);
            continue;
        }
        // Split this axis: its inner factor q completes the row.
        let q = it_row / prod;
        if !it_row.is_multiple_of(prod) || !a.len.is_multiple_of(q) || a.lo != 0 || a.hi != a.len {
            return false;
        }
        inner.push(Axis {
            len: q,
            stride: a.stride,
            lo: 0,
            hi: q,
        });
        let l = a.len / q;
        outer.push(Axis {
            len: l,
            stride: a.stride * q,
            lo: 0,
            hi: l,
        });
        prod *= q;
    }
    let merged = View {
        offset: 0,
        axes: outer,
    }
    .simplified();
    let batch_axis_ok = match merged.axes.as_slice() {
        [] => batch == 1,
        [a] => a.len == batch && a.stride == src_row && a.lo == 0 && a.hi == a.len,
        _ => false,
    };
    if !batch_axis_ok {
        return false;
    }
    inner.reverse();
    let iv = View {
        offset: v.offset,
        axes: inner,
    };
    match iv.extent() {
        None => true,
        Some((lo, hi)) => lo >= 0 && hi < src_row as i64,
    }
}

/// One phase of a schedule.
#[derive(Clone, Debug)]
pub enum Phase {
    /// A step run whole (split across workers by its units when large).
    Single(usize),
    /// Independent steps run whole, concurrently (one parallel region for all of them).
    Group(Vec<usize>),
    /// Steps run together tile by tile: (step, its rows); `tile` batch rows per tile.
    Tiled {
        /// The steps, in order.
        steps: Vec<(usize, Rows)>,
        /// Batch rows per tile.
        tile: usize,
    },
}

/// The order a plan's steps (or a subset of them) run in.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// Phases in order.
    pub phases: Vec<Phase>,
    /// Batch rows.
    pub batch: usize,
}

impl Schedule {
    /// Schedule the steps with `run[s]` (in topological order); `rows` from [`analyse`];
    /// `tiled: false` gives every step its own phase.
    pub fn new(
        steps: &[Step],
        rows: &[Option<Rows>],
        run: &[bool],
        batch: usize,
        workers: usize,
        tiled: bool,
    ) -> Schedule {
        let n_nodes = steps.iter().map(Step::out).max().map_or(0, |m| m + 1);
        // Producing step of each node among those to run.
        let mut producer = vec![usize::MAX; n_nodes];
        for (s, step) in steps.iter().enumerate() {
            if run[s] {
                producer[step.out()] = s;
            }
        }
        let mut done = vec![false; steps.len()];
        let ready = |s: usize, done: &[bool], seg: &[bool]| {
            sources(&steps[s]).iter().all(|&n| {
                let p = producer.get(n).copied().unwrap_or(usize::MAX);
                p == usize::MAX || done[p] || seg[p]
            })
        };
        let tileable = |s: usize| tiled && rows[s].is_some();
        let mut remaining: Vec<usize> = (0..steps.len()).filter(|&s| run[s]).collect();
        let mut phases = Vec::new();
        let mut in_seg = vec![false; steps.len()];
        while !remaining.is_empty() {
            let before = remaining.len();
            // Levels of ready single steps: each level's steps are independent of each other.
            loop {
                let level: Vec<usize> = remaining
                    .iter()
                    .copied()
                    .filter(|&s| !tileable(s) && ready(s, &done, &in_seg))
                    .collect();
                if level.is_empty() {
                    break;
                }
                for &s in &level {
                    done[s] = true;
                }
                remaining.retain(|&s| !done[s]);
                phases.push(match level.len() {
                    1 => Phase::Single(level[0]),
                    _ => Phase::Group(level),
                });
            }
            let mut seg = Vec::new();
            for &s in &remaining {
                if tileable(s) && ready(s, &done, &in_seg) {
                    in_seg[s] = true;
                    seg.push(s);
                }
            }
            for &s in &seg {
                in_seg[s] = false;
                done[s] = true;
            }
            remaining.retain(|&s| !done[s]);
            match seg.len() {
                0 => {}
                1 => phases.push(Phase::Single(seg[0])),
                _ => {
                    let widest = seg.iter().filter_map(|&s| rows[s]).map(|r| r.out).max();
                    let mut tile = (TILE_ELEMS / widest.unwrap_or(1).max(1)).clamp(1, batch);
                    if tile >= 8 {
                        tile -= tile % 8;
                    }
                    // At least two tiles per worker, for balance.
                    tile = tile.min(batch.div_ceil(2 * workers.max(1))).max(1);
                    phases.push(Phase::Tiled {
                        steps: seg.iter().map(|&s| (s, rows[s].unwrap())).collect(),
                        tile,
                    });
                }
            }
            if remaining.len() == before {
                // Cannot happen for a topological order; keep going step by step.
                phases.extend(remaining.drain(..).map(Phase::Single));
            }
        }
        Schedule { phases, batch }
    }

    /// Run the schedule.
    pub fn run<T: Scalar>(
        &self,
        steps: &[Step],
        workers: &mut [Worker<T>],
        bufs: &Bufs<T>,
    ) -> Result<()> {
        for phase in &self.phases {
            match phase {
                Phase::Single(s) => run_single(&steps[*s], workers, bufs)?,
                Phase::Group(g) => run_group(steps, g, workers, bufs)?,
                Phase::Tiled { steps: seg, tile } => {
                    run_tiled(steps, seg, *tile, self.batch, workers, bufs)?
                }
            }
        }
        Ok(())
    }
}

/// A whole step: all its units; a scatter clears its whole output.
fn whole<T: Scalar>(step: &Step, bufs: &Bufs<T>) -> Span {
    let len = bufs.len(step.out());
    Span {
        lo: 0,
        hi: units(step, len),
        zero: (0, len),
    }
}

/// Run independent steps: the largest ones split across the workers while one of them
/// outweighs all the others, the rest whole, handed out to the workers largest first.
fn run_group<T: Scalar>(
    steps: &[Step],
    group: &[usize],
    workers: &mut [Worker<T>],
    bufs: &Bufs<T>,
) -> Result<()> {
    let mut list: Vec<(usize, usize)> = group
        .iter()
        .map(|&s| {
            let step = &steps[s];
            let work = whole(step, bufs).hi.saturating_mul(work_per_unit(step));
            (s, work)
        })
        .collect();
    list.sort_by_key(|w| std::cmp::Reverse(w.1));
    let mut total: usize = list.iter().map(|w| w.1).sum();
    let mut first = 0;
    while first < list.len() && (list[first].1 * 2 > total || list.len() - first == 1) {
        run_single(&steps[list[first].0], workers, bufs)?;
        total -= list[first].1;
        first += 1;
    }
    let rest = &list[first..];
    if rest.is_empty() {
        return Ok(());
    }
    if workers.len() < 2 || total < PARALLEL_MIN {
        for &(s, _) in rest {
            exec(&steps[s], whole(&steps[s], bufs), &mut workers[0], bufs)?;
        }
        return Ok(());
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let n = workers.len();
    on_workers(workers, n, |_, w| loop {
        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Some(&(s, _)) = rest.get(i) else {
            return Ok(());
        };
        exec(&steps[s], whole(&steps[s], bufs), w, bufs)?;
    })
}

/// Run a whole step, its units split across the workers when it is large enough.
pub fn run_single<T: Scalar>(step: &Step, workers: &mut [Worker<T>], bufs: &Bufs<T>) -> Result<()> {
    let all = whole(step, bufs);
    let (total, nw) = (all.hi, workers.len());
    let work = total.saturating_mul(work_per_unit(step));
    if nw < 2 || total < 2 || work < PARALLEL_MIN || out_per_unit(step).is_none() {
        return exec(step, all, &mut workers[0], bufs);
    }
    let align = if matches!(step, Step::Fused { .. }) {
        CHUNK
    } else {
        1
    };
    let part = total.div_ceil(nw).div_ceil(align) * align;
    on_workers(workers, total.div_ceil(part), |i, w| {
        let lo = i * part;
        let span = Span {
            lo,
            hi: (lo + part).min(total),
            zero: (0, 0),
        };
        exec(step, span, w, bufs)
    })
}

/// Run `seg` tile by tile: each worker takes a contiguous block of tiles and runs every step
/// of the segment on one tile before the next.
fn run_tiled<T: Scalar>(
    steps: &[Step],
    seg: &[(usize, Rows)],
    tile: usize,
    batch: usize,
    workers: &mut [Worker<T>],
    bufs: &Bufs<T>,
) -> Result<()> {
    let n_tiles = batch.div_ceil(tile);
    let nw = workers.len().min(n_tiles).max(1);
    let per = n_tiles.div_ceil(nw);
    let run_tiles = |i: usize, w: &mut Worker<T>| -> Result<()> {
        for t in i * per..((i + 1) * per).min(n_tiles) {
            let (b0, b1) = (t * tile, ((t + 1) * tile).min(batch));
            for &(s, r) in seg {
                let span = Span {
                    lo: b0 * r.units,
                    hi: b1 * r.units,
                    zero: (b0 * r.out, b1 * r.out),
                };
                exec(&steps[s], span, w, bufs)?;
            }
        }
        Ok(())
    };
    if nw < 2 {
        return run_tiles(0, &mut workers[0]);
    }
    on_workers(workers, nw, run_tiles)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ax(len: usize, stride: usize, lo: usize, hi: usize) -> Axis {
        Axis {
            len,
            stride,
            lo,
            hi,
        }
    }

    #[test]
    fn row_locality_of_common_views() {
        // [B, 4] read as-is, rows of 4.
        assert!(row_local(&View::contiguous(&[8, 4]), 4, 8, 4));
        // Columns 1..3 of [B, 4]: rows of 2 inside rows of 4.
        let cols = View {
            offset: 1,
            axes: vec![ax(8, 4, 0, 8), ax(2, 1, 0, 2)],
        };
        assert!(row_local(&cols, 2, 8, 4));
        // A flattened contiguous [B·4] split into rows.
        assert!(row_local(&View::contiguous(&[32]), 4, 8, 4));
        // Transposed [4, B]: not row-local.
        let t = View {
            offset: 0,
            axes: vec![ax(8, 1, 0, 8), ax(4, 8, 0, 4)],
        };
        assert!(!row_local(&t, 4, 8, 4));
        // Broadcast over the batch (a parameter): not batch-major.
        assert!(!row_local(&View::broadcast_scalar(&[8, 4]), 4, 8, 4));
        // Reading past the row (offset 3 + 2 elements in rows of 4).
        let past = View { offset: 3, ..cols };
        assert!(!row_local(&past, 2, 8, 4));
        // Padded columns stay inside the row.
        let padded = View {
            offset: -1,
            axes: vec![ax(8, 4, 0, 8), ax(6, 1, 1, 5)],
        };
        assert!(row_local(&padded, 6, 8, 4));
    }
}
