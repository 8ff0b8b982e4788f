//! The fused CPU compiler: turns a lowered [`Ir`] into a list of kernels and runs them.
//!
//! * **Elementwise fusion.** Walking the program from its outputs backwards, elementwise
//!   nodes (`Unary`, `Binary`, `Copy`) join the kernel of their readers when *all* their
//!   readers are in that kernel and read them at the same positions: whole DAGs, not just
//!   chains, become one kernel, a short SSA instruction list evaluated over chunks of
//!   [`CHUNK`] elements in which a shared value is computed once. Binary/copy nodes join
//!   when read through the identity view, unary nodes (which commute with any strided view)
//!   through any unmasked view. A reduction over the last axis absorbs the kernel producing
//!   its input. Inputs are gathered through their strided views once per chunk (contiguous
//!   ones are read in place); each instruction is then a tight loop the compiler vectorises.
//!   No allocation happens while running and no index expression is interpreted per element.
//! * **Matmul** runs through `matrixmultiply`'s gemm with the views' strides (transposes and
//!   slice offsets included), batched over leading axes.
//! * **Reductions** gather runs of the reduced axis and fold them; **scatters** (view adjoints
//!   from autograd) accumulate with an odometer over the view.
//!
//! The kernel description (leaf views + SSA instruction list) is what a later CUDA or Metal
//! backend will print as source: one generated kernel per fused group, with the same gather
//! index math, in place of the interpreter loop below.

use super::ir::{BinOp, Ir, Op, RedOp, UnOp};
use super::scalar::Scalar;
use super::view::View;
use crate::error::{Error, Result};

/// Elements processed per pass of a fused kernel.
pub const CHUNK: usize = 256;

/// One instruction of a fused kernel; register `i` holds the result of instruction `i`.
#[derive(Clone, Debug, PartialEq)]
pub enum Instr {
    /// Gather leaf number `k`.
    Load(usize),
    /// A constant (filled once per run).
    Const(f64),
    /// Unary op of a register.
    Un(UnOp, usize),
    /// Binary op of two registers.
    Bin(BinOp, usize, usize),
}

/// A fused elementwise kernel over an iteration space of `n` elements.
#[derive(Clone, Debug)]
pub struct Kernel {
    /// Elements.
    pub n: usize,
    /// (node, view) read by `Load`.
    pub leaves: Vec<(usize, View)>,
    /// Instructions; the last one is the result.
    pub code: Vec<Instr>,
    /// For each instruction: a load of a contiguous leaf, read in place at this offset.
    direct: Vec<Option<usize>>,
}

impl Kernel {
    fn new(n: usize, leaves: Vec<(usize, View)>, code: Vec<Instr>) -> Kernel {
        let leaves: Vec<(usize, View)> = leaves
            .into_iter()
            .map(|(nd, v)| (nd, v.simplified()))
            .collect();
        let direct = code
            .iter()
            .map(|i| match i {
                Instr::Load(k) => {
                    let v = &leaves[*k].1;
                    let contiguous = v.axes.len() == 1 && v.axes[0].stride == 1 && !v.is_masked();
                    (contiguous && v.offset >= 0).then_some(v.offset as usize)
                }
                _ => None,
            })
            .collect();
        Kernel {
            n,
            leaves,
            code,
            direct,
        }
    }
}

/// A step of the plan.
#[derive(Clone, Debug)]
pub enum Step {
    /// Fused elementwise kernel writing to `out`.
    Fused {
        /// Output node.
        out: usize,
        /// The kernel.
        kernel: Kernel,
    },
    /// Reduction: the kernel enumerates the input with the reduced axis last, `k` per output.
    Reduce {
        /// Output node.
        out: usize,
        /// Kind.
        op: RedOp,
        /// Input kernel.
        kernel: Kernel,
        /// Reduced length.
        k: usize,
    },
    /// Batched gemm.
    MatMul {
        /// Output node.
        out: usize,
        /// lhs node and view `[.., M, K]`.
        a: (usize, View),
        /// rhs node and view `[.., N, K]`.
        b: (usize, View),
    },
    /// View adjoint: `out[target(j)] += g[gv(j)]`.
    Scatter {
        /// Output node.
        out: usize,
        /// Gradient node and view.
        g: (usize, View),
        /// Target view.
        target: View,
    },
    /// A scalar constant.
    Const {
        /// Output node.
        out: usize,
        /// Value.
        v: f64,
    },
    /// Row-wise gather by a table ([`Op::Take`]).
    Take {
        /// Output node.
        out: usize,
        /// Source node.
        src: usize,
        /// The table.
        table: std::sync::Arc<[u32]>,
        /// Source row length.
        in_row: usize,
    },
    /// The fused spline ([`Op::Spline`]).
    Spline {
        /// Output node.
        out: usize,
        /// Coordinates node.
        x: usize,
        /// Parameters node.
        theta: usize,
        /// The spline.
        rqs: super::rqs::Rqs,
    },
    /// Its adjoint ([`Op::SplineAdjoint`]).
    SplineAdjoint {
        /// Output node.
        out: usize,
        /// Coordinates node.
        x: usize,
        /// Parameters node.
        theta: usize,
        /// Output-adjoint node.
        g: usize,
        /// The spline.
        rqs: super::rqs::Rqs,
    },
    /// Row-wise scatter-add by a table ([`Op::Put`]).
    Put {
        /// Output node.
        out: usize,
        /// Source node.
        src: usize,
        /// The table.
        table: std::sync::Arc<[u32]>,
        /// Output row length.
        in_row: usize,
    },
}

impl Step {
    fn out(&self) -> usize {
        match self {
            Step::Fused { out, .. }
            | Step::Reduce { out, .. }
            | Step::MatMul { out, .. }
            | Step::Scatter { out, .. }
            | Step::Const { out, .. }
            | Step::Take { out, .. }
            | Step::Put { out, .. }
            | Step::Spline { out, .. }
            | Step::SplineAdjoint { out, .. } => *out,
        }
    }
}

/// A compiled program for one batch size.
#[derive(Debug)]
pub struct Plan<T: Scalar> {
    /// The lowered program.
    pub ir: Ir,
    /// Kernels in execution order.
    pub steps: Vec<Step>,
    bufs: Vec<Vec<T>>,
    /// One register file (and reduction scratch) per worker thread.
    workers: Vec<Worker<T>>,
    scratch: Vec<T>,
}

#[derive(Debug, Clone)]
struct Worker<T> {
    regs: Vec<T>,
    scratch: Vec<T>,
}

/// Coordinates per parallel task of the spline kernels.
const SPLINE_ROWS: usize = 256;

/// Kernels with at least this many elements are split across threads.
pub const PARALLEL_MIN: usize = 32 * 1024;

fn is_elementwise(op: &Op) -> bool {
    matches!(op, Op::Unary(..) | Op::Binary(..) | Op::Copy(..))
}

/// Kernel membership: which nodes are computed inside which root's kernel, and at which
/// positions of their own buffer (`at`).
struct Groups {
    group: Vec<Option<usize>>,
    at: Vec<Option<View>>,
}

impl Groups {
    /// Decide membership walking from the outputs backwards (consumers before producers).
    fn new(ir: &Ir, live: &[bool], required: &[bool]) -> Groups {
        let n = ir.nodes.len();
        let mut readers: Vec<Vec<(usize, View)>> = vec![Vec::new(); n];
        for (c, node) in ir.nodes.iter().enumerate() {
            if !live[c] {
                continue;
            }
            match &node.op {
                Op::Unary(_, s) => readers[*s].push((c, View::contiguous(&[node.len]))),
                Op::Binary(_, a, b) => {
                    readers[a.node].push((c, a.view.clone()));
                    readers[b.node].push((c, b.view.clone()));
                }
                Op::Copy(s) | Op::Reduce(_, _, s) | Op::Scatter(s, _) => {
                    readers[s.node].push((c, s.view.clone()))
                }
                Op::MatMul(a, b) => {
                    readers[a.node].push((c, a.view.clone()));
                    readers[b.node].push((c, b.view.clone()));
                }
                Op::Take { src, .. } | Op::Put { src, .. } => {
                    readers[*src].push((c, View::contiguous(&[ir.nodes[*src].len])))
                }
                Op::Spline { .. } | Op::SplineAdjoint { .. } => {
                    for s in node.op.sources() {
                        readers[s].push((c, View::contiguous(&[ir.nodes[s].len])));
                    }
                }
                Op::Input(_) | Op::Const(_) => {}
            }
        }
        let mut g = Groups {
            group: vec![None; n],
            at: vec![None; n],
        };
        for i in (0..n).rev() {
            if !live[i] {
                continue;
            }
            let node = &ir.nodes[i];
            let joined = is_elementwise(&node.op) && !required[i] && g.join(ir, i, &readers[i]);
            if !joined {
                // A root of its own kernel (or a non-elementwise step), read at identity.
                g.group[i] = Some(i);
                g.at[i] = Some(View::contiguous(&[node.len]));
            }
        }
        g
    }

    /// Try to place elementwise node `i` inside the kernel of all its readers.
    fn join(&mut self, ir: &Ir, i: usize, readers: &[(usize, View)]) -> bool {
        let mut target: Option<(usize, View)> = None;
        for (c, edge) in readers {
            let (Some(gc), Some(at_c)) = (self.group[*c], self.at[*c].clone()) else {
                return false;
            };
            let cn = &ir.nodes[*c];
            let at = match &cn.op {
                // A unary reader maps its source buffer in place: same positions.
                Op::Unary(..) => at_c,
                // Binary/copy readers run in their own logical space (they are at identity).
                Op::Binary(..) | Op::Copy(..) if at_c.is_identity(cn.len) => edge.clone(),
                // The reduction absorbs its producer when it reads it as-is, reducing the last axis.
                Op::Reduce(_, ax, s)
                    if *c == gc
                        && *ax + 1 == s.view.axes.len()
                        && s.view.is_identity(ir.nodes[i].len) =>
                {
                    View::contiguous(&[ir.nodes[i].len])
                }
                _ => return false,
            };
            match &target {
                None => target = Some((gc, at)),
                Some((tg, tv)) if *tg == gc && *tv == at => {}
                _ => return false,
            }
        }
        let Some((gc, at)) = target else { return false };
        let ok = match &ir.nodes[i].op {
            Op::Unary(..) => !at.is_masked(),
            _ => at.is_identity(ir.nodes[i].len),
        };
        if ok {
            self.group[i] = Some(gc);
            self.at[i] = Some(at);
        }
        ok
    }
}

struct Emitter<'a> {
    ir: &'a Ir,
    groups: &'a Groups,
    root: usize,
    leaves: Vec<(usize, View)>,
    code: Vec<Instr>,
    memo: Vec<(usize, usize)>,
}

impl Emitter<'_> {
    fn emit(&mut self, i: Instr) -> usize {
        if let Some(r) = self.code.iter().position(|c| *c == i) {
            if matches!(i, Instr::Load(_) | Instr::Const(_)) {
                return r;
            }
        }
        self.code.push(i);
        self.code.len() - 1
    }
    fn leaf(&mut self, node: usize, view: &View) -> usize {
        let k = match self
            .leaves
            .iter()
            .position(|(n, v)| *n == node && v == view)
        {
            Some(k) => k,
            None => {
                self.leaves.push((node, view.clone()));
                self.leaves.len() - 1
            }
        };
        self.emit(Instr::Load(k))
    }
    /// Code for the value of `node` read at `view` (its buffer positions).
    fn value(&mut self, node: usize, view: &View) -> usize {
        let n = &self.ir.nodes[node];
        if let Op::Const(v) = n.op {
            if !view.is_masked() {
                return self.emit(Instr::Const(v));
            }
        }
        let inside = node == self.root
            || (self.groups.group[node] == Some(self.root)
                && self.groups.at[node].as_ref() == Some(view));
        if !inside || !is_elementwise(&n.op) {
            return self.leaf(node, view);
        }
        if let Some(&(_, r)) = self.memo.iter().find(|(m, _)| *m == node) {
            return r;
        }
        let r = match &n.op {
            Op::Unary(u, s) => {
                let (u, s) = (*u, *s);
                let a = self.value(s, view);
                self.emit(Instr::Un(u, a))
            }
            Op::Binary(b, x, y) => {
                let (b, x, y) = (*b, x.clone(), y.clone());
                let a = self.value(x.node, &x.view);
                let c = self.value(y.node, &y.view);
                self.emit(Instr::Bin(b, a, c))
            }
            Op::Copy(s) => {
                let s = s.clone();
                self.value(s.node, &s.view)
            }
            _ => unreachable!(),
        };
        self.memo.push((node, r));
        r
    }
}

impl<T: Scalar> Plan<T> {
    /// Build kernels computing the `required` nodes of `ir`.
    #[allow(clippy::needless_range_loop)]
    pub fn new(ir: Ir, required_nodes: &[usize]) -> Result<Plan<T>> {
        let n = ir.nodes.len();
        let live = ir.live(required_nodes);
        let mut required = vec![false; n];
        for &r in required_nodes {
            required[r] = true;
        }
        let groups = Groups::new(&ir, &live, &required);
        let mut steps = Vec::new();
        for i in 0..n {
            if !live[i] || groups.group[i] != Some(i) {
                continue;
            }
            let node = &ir.nodes[i];
            let mut em = Emitter {
                ir: &ir,
                groups: &groups,
                root: i,
                leaves: Vec::new(),
                code: Vec::new(),
                memo: Vec::new(),
            };
            let step = match &node.op {
                Op::Input(_) => continue,
                Op::Const(v) => Step::Const { out: i, v: *v },
                op if is_elementwise(op) => {
                    em.value(i, &View::contiguous(&[node.len]));
                    Step::Fused {
                        out: i,
                        kernel: Kernel::new(node.len, em.leaves, em.code),
                    }
                }
                Op::Reduce(r, ax, s) => {
                    let rank = s.view.axes.len();
                    let k = s.view.axes[*ax].len;
                    let absorbed =
                        groups.group[s.node] == Some(i) && is_elementwise(&ir.nodes[s.node].op);
                    let n_in = s.view.numel();
                    if absorbed {
                        em.value(s.node, &View::contiguous(&[ir.nodes[s.node].len]));
                    } else {
                        let mut perm: Vec<usize> = (0..rank).filter(|&a| a != *ax).collect();
                        perm.push(*ax);
                        em.leaf(s.node, &s.view.permute(&perm));
                    }
                    Step::Reduce {
                        out: i,
                        op: *r,
                        kernel: Kernel::new(n_in, em.leaves, em.code),
                        k,
                    }
                }
                Op::MatMul(a, b) => {
                    let (a, b) = merge_matmul_batch(a.view.clone(), b.view.clone());
                    Step::MatMul {
                        out: i,
                        a: (ir.nodes[i].op.sources()[0], a),
                        b: (ir.nodes[i].op.sources()[1], b),
                    }
                }
                Op::Scatter(g, target) => Step::Scatter {
                    out: i,
                    g: (g.node, g.view.simplified()),
                    target: target.simplified(),
                },
                Op::Take { src, table, in_row } => Step::Take {
                    out: i,
                    src: *src,
                    table: table.clone(),
                    in_row: *in_row,
                },
                Op::Put { src, table, in_row } => Step::Put {
                    out: i,
                    src: *src,
                    table: table.clone(),
                    in_row: *in_row,
                },
                Op::Spline { x, theta, rqs } => Step::Spline {
                    out: i,
                    x: *x,
                    theta: *theta,
                    rqs: *rqs,
                },
                Op::SplineAdjoint { x, theta, g, rqs } => Step::SplineAdjoint {
                    out: i,
                    x: *x,
                    theta: *theta,
                    g: *g,
                    rqs: *rqs,
                },
                _ => unreachable!(),
            };
            steps.push(step);
        }
        let mut bufs: Vec<Vec<T>> = vec![Vec::new(); n];
        let mut n_regs = 1;
        for s in &steps {
            if let Step::Fused { kernel, .. } | Step::Reduce { kernel, .. } = s {
                n_regs = n_regs.max(kernel.code.len());
            }
            bufs[s.out()] = vec![T::default(); ir.nodes[s.out()].len];
        }
        let max_k = steps
            .iter()
            .map(|s| {
                if let Step::Reduce { k, .. } = s {
                    *k
                } else {
                    0
                }
            })
            .max()
            .unwrap_or(0);
        let worker = Worker {
            regs: vec![T::default(); n_regs * CHUNK],
            scratch: vec![T::default(); CHUNK.max(max_k)],
        };
        Ok(Plan {
            ir,
            steps,
            bufs,
            workers: vec![worker; rayon::current_num_threads().max(1)],
            scratch: vec![T::default(); 4 * CHUNK],
        })
    }

    /// (kernels, elementwise instruction-elements per run, elements materialised per run).
    pub fn stats(&self) -> (usize, usize, usize) {
        let mut ops = 0;
        let mut mat = 0;
        for s in &self.steps {
            if let Step::Fused { kernel, .. } | Step::Reduce { kernel, .. } = s {
                ops += kernel.n * kernel.code.len();
            }
            mat += self.ir.nodes[s.out()].len;
        }
        (self.steps.len(), ops, mat)
    }

    /// Number of kernels (for inspection).
    pub fn n_kernels(&self) -> usize {
        self.steps.len()
    }

    /// The buffer of a computed node.
    pub fn buffer<'a>(&'a self, store: &'a [Vec<T>], node: usize) -> &'a [T] {
        match self.ir.nodes[node].op {
            Op::Input(i) => &store[i],
            _ => &self.bufs[node],
        }
    }

    /// Run every kernel, timing each kind: (kind, kernels, elements, microseconds).
    pub fn run_profiled(&mut self, store: &[Vec<T>]) -> Result<Vec<(String, usize, usize, f64)>> {
        let mut acc: Vec<(String, usize, usize, f64)> = Vec::new();
        for si in 0..self.steps.len() {
            let out = self.steps[si].out();
            let kind = match &self.steps[si] {
                Step::Fused { .. } => "fused",
                Step::Reduce { .. } => "reduce",
                Step::MatMul { .. } => "matmul",
                Step::Scatter { .. } => "scatter",
                Step::Const { .. } => "const",
                Step::Take { .. } => "take",
                Step::Put { .. } => "put",
                Step::Spline { .. } => "spline",
                Step::SplineAdjoint { .. } => "spline_adjoint",
            };
            let mut dst = std::mem::take(&mut self.bufs[out]);
            let t0 = std::time::Instant::now();
            let r = self.run_step(si, store, &mut dst);
            let us = t0.elapsed().as_secs_f64() * 1e6;
            let n = dst.len();
            self.bufs[out] = dst;
            r?;
            match acc.iter_mut().find(|a| a.0 == kind) {
                Some(a) => {
                    a.1 += 1;
                    a.2 += n;
                    a.3 += us;
                }
                None => acc.push((kind.to_string(), 1, n, us)),
            }
        }
        Ok(acc)
    }

    /// Which lowered nodes depend (transitively) on any of the declared inputs in `late`.
    pub fn depends_on(&self, late: &[usize]) -> Vec<bool> {
        let mut dep = vec![false; self.ir.nodes.len()];
        for (i, node) in self.ir.nodes.iter().enumerate() {
            dep[i] = match node.op {
                Op::Input(k) => late.contains(&k),
                ref op => op.sources().iter().any(|&s| dep[s]),
            };
        }
        dep
    }

    /// Run the kernels whose output node has `dep[out] == late` (in order). Running the
    /// `late == false` half and then the `late == true` half equals [`Plan::run`]: kernels
    /// are in topological order and an independent kernel never reads a dependent one.
    pub fn run_part(&mut self, store: &[Vec<T>], dep: &[bool], late: bool) -> Result<()> {
        for si in 0..self.steps.len() {
            let out = self.steps[si].out();
            if dep[out] != late {
                continue;
            }
            let mut dst = std::mem::take(&mut self.bufs[out]);
            let r = self.run_step(si, store, &mut dst);
            self.bufs[out] = dst;
            r?;
        }
        Ok(())
    }

    /// Run every kernel. `store` holds the declared inputs' buffers.
    pub fn run(&mut self, store: &[Vec<T>]) -> Result<()> {
        for si in 0..self.steps.len() {
            let out = self.steps[si].out();
            let mut dst = std::mem::take(&mut self.bufs[out]);
            let r = self.run_step(si, store, &mut dst);
            self.bufs[out] = dst;
            r?;
        }
        Ok(())
    }

    fn src<'a>(ir: &Ir, bufs: &'a [Vec<T>], store: &'a [Vec<T>], node: usize) -> &'a [T] {
        match ir.nodes[node].op {
            Op::Input(i) => &store[i],
            _ => &bufs[node],
        }
    }

    /// Evaluate elements `[start, start + m)` of a kernel into `dst` (length m).
    #[allow(clippy::too_many_arguments)]
    fn eval(
        kernel: &Kernel,
        ir: &Ir,
        bufs: &[Vec<T>],
        store: &[Vec<T>],
        regs: &mut [T],
        start: usize,
        dst: &mut [T],
    ) {
        let m = dst.len();
        let last = kernel.code.len() - 1;
        for (r, ins) in kernel.code.iter().enumerate() {
            if kernel.direct[r].is_some() && r != last {
                continue;
            }
            let (before, after) = regs.split_at_mut(r * CHUNK);
            let operand = |a: usize| -> &[T] {
                match (kernel.direct[a], &kernel.code[a]) {
                    (Some(off), Instr::Load(k)) => {
                        let buf = Self::src(ir, bufs, store, kernel.leaves[*k].0);
                        &buf[off + start..off + start + m]
                    }
                    _ => &before[a * CHUNK..a * CHUNK + m],
                }
            };
            let d: &mut [T] = if r == last {
                &mut *dst
            } else {
                &mut after[..m]
            };
            match *ins {
                Instr::Load(k) => {
                    let (node, view) = &kernel.leaves[k];
                    view.gather(Self::src(ir, bufs, store, *node), start, d);
                }
                Instr::Const(v) => {
                    if r == last {
                        d.fill(T::from_f64(v));
                    }
                }
                Instr::Un(u, a) => unary(u, operand(a), d),
                Instr::Bin(b, a, c) => binary(b, operand(a), operand(c), d),
            }
        }
    }

    /// Run `f(worker, first_output, part)` over `dst`, split across workers when the work
    /// (`work` input elements, `per_out` of them per output) is large enough.
    fn split(
        workers: &mut [Worker<T>],
        dst: &mut [T],
        per_out: usize,
        work: usize,
        f: impl Fn(&mut Worker<T>, usize, &mut [T]) + Sync,
    ) {
        let nw = workers.len();
        if nw < 2 || work < PARALLEL_MIN || dst.len() < 2 {
            f(&mut workers[0], 0, dst);
            return;
        }
        // Parts aligned to CHUNK inputs.
        let align = (CHUNK / per_out).max(1);
        let part = dst.len().div_ceil(nw).div_ceil(align) * align;
        rayon::scope(|sc| {
            for ((i, chunk), w) in dst.chunks_mut(part).enumerate().zip(workers.iter_mut()) {
                let f = &f;
                sc.spawn(move |_| f(w, i * part, chunk));
            }
        });
    }

    fn fill_consts(kernel: &Kernel, regs: &mut [T]) {
        for (r, ins) in kernel.code.iter().enumerate() {
            if let Instr::Const(v) = ins {
                regs[r * CHUNK..(r + 1) * CHUNK].fill(T::from_f64(*v));
            }
        }
    }

    fn run_step(&mut self, si: usize, store: &[Vec<T>], dst: &mut [T]) -> Result<()> {
        let ir = &self.ir;
        let bufs = &self.bufs;
        match &self.steps[si] {
            Step::Const { v, .. } => dst[0] = T::from_f64(*v),
            Step::Fused { kernel, .. } => {
                let run_part = |w: &mut Worker<T>, first: usize, part: &mut [T]| {
                    Self::fill_consts(kernel, &mut w.regs);
                    let mut done = 0;
                    while done < part.len() {
                        let m = CHUNK.min(part.len() - done);
                        Self::eval(
                            kernel,
                            ir,
                            bufs,
                            store,
                            &mut w.regs,
                            first + done,
                            &mut part[done..done + m],
                        );
                        done += m;
                    }
                };
                Self::split(&mut self.workers, dst, 1, kernel.n, run_part);
            }
            Step::Reduce { op, kernel, k, .. } => {
                let (k, op) = (*k, *op);
                if k == 0 {
                    dst.fill(match op {
                        RedOp::Sum => T::default(),
                        RedOp::Max => T::neg_infinity(),
                    });
                    return Ok(());
                }
                let run_part = |w: &mut Worker<T>, first: usize, part: &mut [T]| {
                    Self::fill_consts(kernel, &mut w.regs);
                    // Whole output rows per pass, at most CHUNK inputs at a time.
                    let per = (CHUNK / k).max(1);
                    let mut o = 0;
                    while o < part.len() {
                        let cnt = per.min(part.len() - o);
                        let row0 = (first + o) * k;
                        let s = &mut w.scratch[..cnt * k];
                        let mut p = 0;
                        while p < cnt * k {
                            let m = CHUNK.min(cnt * k - p);
                            Self::eval(
                                kernel,
                                ir,
                                bufs,
                                store,
                                &mut w.regs,
                                row0 + p,
                                &mut s[p..p + m],
                            );
                            p += m;
                        }
                        for (d, seg) in part[o..o + cnt].iter_mut().zip(s.chunks_exact(k)) {
                            *d = reduce(op, seg);
                        }
                        o += cnt;
                    }
                };
                Self::split(&mut self.workers, dst, k, kernel.n, run_part);
            }
            Step::MatMul { a, b, .. } => {
                let (av, bv) = (&a.1, &b.1);
                let (abuf, bbuf) = (
                    Self::src(ir, bufs, store, a.0),
                    Self::src(ir, bufs, store, b.0),
                );
                let r = av.axes.len();
                let (m, k, n) = (av.axes[r - 2].len, av.axes[r - 1].len, bv.axes[r - 2].len);
                let batch: usize = av.axes[..r - 2].iter().map(|x| x.len).product();
                av.check_bounds(abuf.len())?;
                bv.check_bounds(bbuf.len())?;
                if dst.len() != batch * m * n {
                    return Err(Error::Engine("matmul output size mismatch".into()));
                }
                if k == 0 {
                    dst.fill(T::default());
                    return Ok(());
                }
                let mut idx = vec![0usize; r - 2];
                for bi in 0..batch {
                    let (mut ao, mut bo) = (av.offset, bv.offset);
                    for (ax, &j) in idx.iter().enumerate() {
                        ao += (j * av.axes[ax].stride) as i64;
                        bo += (j * bv.axes[ax].stride) as i64;
                    }
                    let c = &mut dst[bi * m * n..(bi + 1) * m * n];
                    // SAFETY: check_bounds above proves every element addressed by the two
                    // views lies inside its buffer; `c` holds exactly m·n elements.
                    unsafe {
                        T::gemm(
                            m,
                            k,
                            n,
                            abuf.as_ptr().offset(ao as isize),
                            av.axes[r - 2].stride as isize,
                            av.axes[r - 1].stride as isize,
                            bbuf.as_ptr().offset(bo as isize),
                            bv.axes[r - 1].stride as isize,
                            bv.axes[r - 2].stride as isize,
                            c.as_mut_ptr(),
                            n as isize,
                            1,
                        );
                    }
                    for ax in (0..r - 2).rev() {
                        idx[ax] += 1;
                        if idx[ax] < av.axes[ax].len {
                            break;
                        }
                        idx[ax] = 0;
                    }
                }
            }
            Step::Take {
                src, table, in_row, ..
            } => {
                let s = Self::src(ir, bufs, store, *src);
                let (m, in_row) = (table.len(), *in_row);
                let rows = dst.len() / m.max(1);
                if s.len() != rows * in_row {
                    return Err(Error::Engine("take: source length changed".into()));
                }
                let run = |(r, row): (usize, &mut [T])| {
                    let src_row = &s[r * in_row..(r + 1) * in_row];
                    for (d, &k) in row.iter_mut().zip(table.iter()) {
                        *d = src_row[k as usize];
                    }
                };
                if dst.len() >= PARALLEL_MIN && rows > 1 {
                    use rayon::prelude::*;
                    dst.par_chunks_mut(m).enumerate().for_each(run);
                } else {
                    dst.chunks_mut(m).enumerate().for_each(run);
                }
            }
            Step::Put {
                src, table, in_row, ..
            } => {
                let g = Self::src(ir, bufs, store, *src);
                let (m, in_row) = (table.len(), *in_row);
                let rows = dst.len() / in_row.max(1);
                if g.len() != rows * m {
                    return Err(Error::Engine("put: source length changed".into()));
                }
                let run = |(row, g_row): (&mut [T], &[T])| {
                    row.fill(T::default());
                    for (&v, &k) in g_row.iter().zip(table.iter()) {
                        row[k as usize] += v;
                    }
                };
                if g.len() >= PARALLEL_MIN && rows > 1 {
                    use rayon::prelude::*;
                    dst.par_chunks_mut(in_row)
                        .zip(g.par_chunks(m))
                        .for_each(run);
                } else {
                    dst.chunks_mut(in_row).zip(g.chunks(m)).for_each(run);
                }
            }
            Step::Spline { x, theta, rqs, .. } => {
                let (xs, th) = (
                    Self::src(ir, bufs, store, *x),
                    Self::src(ir, bufs, store, *theta),
                );
                let p = rqs.n_params();
                if dst.len() != 2 * xs.len() || th.len() != p * xs.len() {
                    return Err(Error::Engine("spline: buffer sizes changed".into()));
                }
                let run = |(c, o): (usize, &mut [T])| {
                    let (a, b) = (c * SPLINE_ROWS, c * SPLINE_ROWS + o.len() / 2);
                    rqs.apply(&xs[a..b], &th[a * p..b * p], o);
                };
                if xs.len() * p >= PARALLEL_MIN {
                    use rayon::prelude::*;
                    dst.par_chunks_mut(2 * SPLINE_ROWS)
                        .enumerate()
                        .for_each(run);
                } else {
                    dst.chunks_mut(2 * SPLINE_ROWS).enumerate().for_each(run);
                }
            }
            Step::SplineAdjoint {
                x, theta, g, rqs, ..
            } => {
                let (xs, th, gs) = (
                    Self::src(ir, bufs, store, *x),
                    Self::src(ir, bufs, store, *theta),
                    Self::src(ir, bufs, store, *g),
                );
                let p = rqs.n_params();
                let n = xs.len();
                if dst.len() != (p + 1) * n || th.len() != p * n || gs.len() != 2 * n {
                    return Err(Error::Engine("spline adjoint: buffer sizes changed".into()));
                }
                let run = |(c, o): (usize, &mut [T])| {
                    let (a, b) = (c * SPLINE_ROWS, c * SPLINE_ROWS + o.len() / (p + 1));
                    rqs.adjoint(&xs[a..b], &th[a * p..b * p], &gs[2 * a..2 * b], o);
                };
                if n * p >= PARALLEL_MIN {
                    use rayon::prelude::*;
                    dst.par_chunks_mut((p + 1) * SPLINE_ROWS)
                        .enumerate()
                        .for_each(run);
                } else {
                    dst.chunks_mut((p + 1) * SPLINE_ROWS)
                        .enumerate()
                        .for_each(run);
                }
            }
            Step::Scatter { g, target, .. } => {
                dst.fill(T::default());
                let gbuf = Self::src(ir, bufs, store, g.0);
                target.check_bounds(dst.len())?;
                let total = target.numel();
                let scratch = &mut self.scratch[..CHUNK];
                let mut start = 0;
                while start < total {
                    let m = CHUNK.min(total - start);
                    g.1.gather(gbuf, start, &mut scratch[..m]);
                    target.scatter_add(&scratch[..m], start, dst);
                    start += m;
                }
            }
        }
        Ok(())
    }
}

fn reduce<T: Scalar>(op: RedOp, seg: &[T]) -> T {
    match op {
        RedOp::Sum => {
            let mut acc = T::default();
            for &x in seg {
                acc += x;
            }
            acc
        }
        RedOp::Max => {
            let mut acc = T::neg_infinity();
            for &x in seg {
                if x > acc || x.is_nan() {
                    acc = x;
                }
            }
            acc
        }
    }
}

/// Fold trailing batch axes into M when both operands allow it: one large gemm instead of
/// many small ones (lhs rows contiguous across the batch axis, rhs broadcast along it).
fn merge_matmul_batch(mut a: View, mut b: View) -> (View, View) {
    loop {
        let r = a.axes.len();
        if r < 3 {
            break;
        }
        let (ab, am) = (a.axes[r - 3], a.axes[r - 2]);
        if b.axes[r - 3].stride == 0 && ab.stride == am.len * am.stride {
            a.axes[r - 2].len = ab.len * am.len;
            a.axes[r - 2].hi = a.axes[r - 2].len;
            a.axes.remove(r - 3);
            b.axes.remove(r - 3);
        } else {
            break;
        }
    }
    (a, b)
}

#[inline]
fn unary<T: Scalar>(u: UnOp, a: &[T], d: &mut [T]) {
    match u {
        UnOp::Log2 => d.iter_mut().zip(a).for_each(|(d, &a)| *d = a.log2()),
        UnOp::Exp2 => d.iter_mut().zip(a).for_each(|(d, &a)| *d = a.exp2()),
        UnOp::Sin => d.iter_mut().zip(a).for_each(|(d, &a)| *d = a.sin()),
        UnOp::Sqrt => d.iter_mut().zip(a).for_each(|(d, &a)| *d = a.sqrt()),
        UnOp::Recip => d.iter_mut().zip(a).for_each(|(d, &a)| *d = a.recip()),
        UnOp::Tanh => d.iter_mut().zip(a).for_each(|(d, &a)| *d = a.tanh()),
    }
}

#[inline]
fn binary<T: Scalar>(b: BinOp, a: &[T], c: &[T], d: &mut [T]) {
    let one = T::from_f64(1.0);
    let zero = T::default();
    let it = d.iter_mut().zip(a.iter().zip(c));
    match b {
        BinOp::Add => it.for_each(|(d, (&a, &c))| *d = a + c),
        BinOp::Mul => it.for_each(|(d, (&a, &c))| *d = a * c),
        BinOp::Mod => it.for_each(|(d, (&a, &c))| *d = a.rem(c)),
        BinOp::Lt => it.for_each(|(d, (&a, &c))| *d = if a < c { one } else { zero }),
        BinOp::Eq => it.for_each(|(d, (&a, &c))| *d = if a == c { one } else { zero }),
    }
}
