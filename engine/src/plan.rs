//! A compiled plan: the steps of a lowered program for one batch size, their buffers, and
//! how they run.
//!
//! * [`super::fuse`] turns the [`Ir`] into steps: fused elementwise kernels (a list of
//!   strided leaf views and an SSA instruction list), reductions, gemms, scatters, table
//!   gathers and the fused spline.
//! * [`super::tile`] decides which steps run tile by tile over batch rows and which run
//!   whole; [`super::exec`] runs one step over a range of its units on one worker.
//!
//! The kernel description (leaf views + SSA instruction list, and the tiled segments) is what
//! a later CUDA or Metal backend will print as source, one kernel per segment, with the same
//! gather index math, in place of the interpreter.

use super::exec::{Bufs, Worker, CHUNK};
use super::ir::{BinOp, Ir, Op, RedOp, UnOp};
use super::scalar::Scalar;
use super::tile::{analyse, run_single, InputRows, Rows, Schedule};
use super::view::View;
use crate::error::Result;

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
    pub(super) direct: Vec<Option<usize>>,
}

impl Kernel {
    pub(super) fn new(n: usize, leaves: Vec<(usize, View)>, code: Vec<Instr>) -> Kernel {
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

/// What a gemm does to each output row before storing it: `c = act(c + bias)`. The fuser
/// attaches it when the only reader of a product is an elementwise kernel of exactly that form
/// (the conditioner layers' bias and activation), so the product never goes to memory and back.
#[derive(Clone, Debug, PartialEq)]
pub struct Epilogue {
    /// Input node holding the bias row (N elements from `offset`), if any.
    pub bias: Option<(usize, usize)>,
    /// Activation, if any.
    pub act: Option<UnOp>,
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
    /// Batched gemm, optionally followed by its epilogue on each finished row.
    MatMul {
        /// Output node.
        out: usize,
        /// lhs node and view `[.., M, K]`.
        a: (usize, View),
        /// rhs node and view `[.., N, K]`.
        b: (usize, View),
        /// Bias and activation applied to the product before it is stored.
        epilogue: Option<Epilogue>,
        /// On the CPU, A read through the source of the take that gathers it, the take
        /// skipped ([`super::stencil`]; the GPU generators run the take and ignore this).
        stencil: Option<std::sync::Arc<super::stencil::StencilA>>,
        /// On the CPU, B gathered a batch entry at a time from the source of the take that
        /// gathers it, the take skipped ([`super::stencil`]; ignored by the GPU generators).
        gather: Option<std::sync::Arc<super::stencil::TakeRows>>,
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
        /// The table as runs of consecutive source positions, (first, length), which the CPU
        /// executor copies a run at a time ([`runs`]).
        runs: std::sync::Arc<[(u32, u32)]>,
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
        /// On the CPU, the source's rows computed here by the gemm that produces them, a few
        /// output rows at a time, that gemm skipped ([`super::stencil`]; the GPU generators run
        /// the gemm and ignore this).
        gemm: Option<std::sync::Arc<super::stencil::PutGemm>>,
    },
}

impl Step {
    /// The kind of step, for reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Fused { .. } => "fused",
            Step::Reduce { .. } => "reduce",
            Step::MatMul { .. } => "matmul",
            Step::Scatter { .. } => "scatter",
            Step::Const { .. } => "const",
            Step::Take { .. } => "take",
            Step::Put { .. } => "put",
            Step::Spline { .. } => "spline",
            Step::SplineAdjoint { .. } => "spline_adjoint",
        }
    }

    /// The node this step writes.
    pub fn out(&self) -> usize {
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
    /// For each step, its batch rows when it can run tiled.
    pub rows: Vec<Option<Rows>>,
    batch: usize,
    bufs: Vec<Vec<T>>,
    /// One register file (and reduction scratch) per worker thread.
    workers: Vec<Worker<T>>,
    /// Schedules by the set of steps they run (the whole plan, or a part of it).
    schedules: Vec<(Vec<bool>, Schedule)>,
    tiled: bool,
    /// (node, input node) pairs: after a run on a device, each node that ran replaces the input
    /// node's buffer there (how an optimiser's update kept on a device overwrites the
    /// parameters and moments it read, [`super::optim::append_update`]). The CPU backend
    /// reads inputs from the host's store and ignores them; only device training plans have
    /// any.
    pub write_back: Vec<(usize, usize)>,
    /// Steps the CPU skips ([`super::stencil`]): takes whose gemms read their source in place,
    /// gemms whose rows the put reading them computes itself.
    elided: Vec<bool>,
    /// Whether the CPU takes those shortcuts (the default); the nodes read back and the
    /// inputs' relation to the batch, to rebuild the steps when switched.
    shortcuts: bool,
    required: Vec<usize>,
    inputs: Vec<InputRows>,
}

/// The steps computing `required` of `ir`, which of them the CPU skips (none without
/// `shortcuts`), and each step's batch rows where it can run tiled.
fn build_steps(
    ir: &Ir,
    required: &[usize],
    batch: usize,
    inputs: &[InputRows],
    shortcuts: bool,
) -> (Vec<Step>, Vec<bool>, Vec<Option<Rows>>) {
    let mut steps = super::fuse::steps(ir, required);
    let elided = if shortcuts {
        super::stencil::elide(ir, &mut steps, required, super::gemm::KC)
    } else {
        vec![false; steps.len()]
    };
    let rows = analyse(ir, &steps, batch, inputs);
    (steps, elided, rows)
}

impl<T: Scalar> Plan<T> {
    /// Build the steps computing the `required` nodes of `ir` for `batch` rows; `inputs` says
    /// how each declared input relates to the batch.
    pub fn new(
        ir: Ir,
        required_nodes: &[usize],
        batch: usize,
        inputs: &[InputRows],
    ) -> Result<Plan<T>> {
        let (steps, elided, rows) = build_steps(&ir, required_nodes, batch, inputs, true);
        let mut bufs: Vec<Vec<T>> = vec![Vec::new(); ir.nodes.len()];
        let mut n_regs = 1;
        let mut max_k = 0;
        // Rows computed instead of read from a skipped step ([`super::stencil`]), a scatter's
        // sum of rows.
        let mut computed = 0;
        for s in &steps {
            match s {
                Step::Fused { kernel, .. } => n_regs = n_regs.max(kernel.code.len()),
                Step::Reduce { kernel, k, .. } => {
                    n_regs = n_regs.max(kernel.code.len());
                    max_k = max_k.max(*k);
                }
                Step::Put {
                    table,
                    gemm: Some(_),
                    ..
                } => {
                    let m = table.len();
                    computed = computed.max((super::stencil::PUT_CHUNK / m).max(1) * m);
                }
                Step::MatMul {
                    gather: Some(g), ..
                } => computed = computed.max(g.row),
                Step::Scatter { target, .. } => {
                    computed = computed.max(target.row_sum().unwrap_or(0));
                }
                _ => {}
            }
            bufs[s.out()] = vec![T::default(); ir.nodes[s.out()].len];
        }
        let worker = Worker {
            regs: vec![T::default(); n_regs * CHUNK],
            scratch: vec![T::default(); CHUNK.max(max_k)],
            rows: vec![T::default(); computed],
            simd: super::simd::default_level(),
        };
        Ok(Plan {
            ir,
            steps,
            rows,
            batch,
            bufs,
            workers: vec![worker; rayon::current_num_threads().max(1)],
            schedules: Vec::new(),
            tiled: true,
            write_back: Vec::new(),
            elided,
            shortcuts: true,
            required: required_nodes.to_vec(),
            inputs: inputs.to_vec(),
        })
    }

    /// Take the CPU's shortcuts around steps ([`super::stencil`]; `true`, the default) or run
    /// every step as the IR has it (`false`): the outputs are the same bits; the switch is for
    /// comparisons and tests. The steps keep their indices.
    pub fn set_shortcuts(&mut self, on: bool) {
        if on != self.shortcuts {
            (self.steps, self.elided, self.rows) =
                build_steps(&self.ir, &self.required, self.batch, &self.inputs, on);
            self.shortcuts = on;
            self.schedules.clear();
        }
    }

    /// Run the steps the CPU skips ([`super::stencil`]) on the buffers of the last run, so that
    /// every step's output can be read ([`Plan::buffer`]): for comparisons with other backends.
    pub fn fill_elided(&mut self, store: &[Vec<T>]) -> Result<()> {
        if !self.elided.contains(&true) {
            return Ok(());
        }
        let skipped: Vec<bool> = self.elided.clone();
        let si = self.schedule(&skipped);
        let bufs = Bufs::new(&self.ir.nodes, &mut self.bufs, store);
        self.schedules[si]
            .1
            .run(&self.steps, &mut self.workers, &bufs)
    }

    /// Run the kernels compiled for `level` (refused where the CPU lacks it).
    pub fn set_simd(&mut self, level: super::simd::Level) -> Result<()> {
        let level = super::simd::check(level)?;
        for w in &mut self.workers {
            w.simd = level;
        }
        Ok(())
    }

    /// The instruction-set level its kernels run with.
    pub fn simd(&self) -> super::simd::Level {
        self.workers
            .first()
            .map_or_else(super::simd::default_level, |w| w.simd)
    }

    /// Run tiled segments (the default) or every step whole (`false`; for comparisons).
    pub fn set_tiled(&mut self, tiled: bool) {
        if tiled != self.tiled {
            self.tiled = tiled;
            self.schedules.clear();
        }
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

    /// Floating-point operations of one run, counted from the steps: 2·m·n·k per gemm, one per
    /// arithmetic instruction and element of a fused kernel (plus the reduction's adds), and
    /// per spline coordinate the kernel's arithmetic (about 6K + 60 forward, twice that for
    /// the adjoint; exponentials and logarithms counted as one).
    pub fn flops(&self) -> f64 {
        let mut f = 0.0;
        for s in &self.steps {
            let len = self.ir.nodes[s.out()].len as f64;
            f += match s {
                Step::Fused { kernel, .. } => kernel.n as f64 * arithmetic(&kernel.code),
                Step::Reduce { kernel, k, .. } => {
                    kernel.n as f64 * arithmetic(&kernel.code) + len * *k as f64
                }
                Step::MatMul { a, epilogue, .. } => {
                    let r = a.1.axes.len();
                    let epi = epilogue.as_ref().map_or(0.0, |e| {
                        (e.bias.is_some() as usize + e.act.is_some() as usize) as f64
                    });
                    len * (2.0 * a.1.axes[r - 1].len as f64 + epi)
                }
                Step::Spline { rqs, .. } => len / 2.0 * (6 * rqs.bins + 60) as f64,
                Step::SplineAdjoint { rqs, .. } => {
                    len / (rqs.n_params() + 1) as f64 * (12 * rqs.bins + 120) as f64
                }
                Step::Put { src, .. } => self.ir.nodes[*src].len as f64,
                Step::Scatter { g, .. } => g.1.numel() as f64,
                Step::Take { .. } | Step::Const { .. } => 0.0,
            };
        }
        f
    }

    /// Steps the CPU skips ([`super::stencil`]): takes whose gemms read their source in place,
    /// gemms whose rows the put reading them computes itself.
    pub fn n_elided(&self) -> usize {
        self.elided.iter().filter(|&&e| e).count()
    }

    /// Number of kernels (for inspection).
    pub fn n_kernels(&self) -> usize {
        self.steps.len()
    }

    /// The steps of `part` the CPU runs (not the skipped ones).
    fn runnable(&self, part: &[bool]) -> Vec<bool> {
        part.iter()
            .zip(&self.elided)
            .map(|(&p, &e)| p && !e)
            .collect()
    }

    /// Steps that run tiled, and tiled segments, in the schedule of a full run.
    pub fn tiling(&mut self) -> (usize, usize) {
        let all = self.runnable(&vec![true; self.steps.len()]);
        let s = self.schedule(&all);
        let mut n = (0, 0);
        for p in &self.schedules[s].1.phases {
            if let super::tile::Phase::Tiled { steps, .. } = p {
                n.0 += steps.len();
                n.1 += 1;
            }
        }
        n
    }

    /// The buffer of a computed node.
    pub fn buffer<'a>(&'a self, store: &'a [Vec<T>], node: usize) -> &'a [T] {
        match self.ir.nodes[node].op {
            Op::Input(i) => &store[i],
            _ => &self.bufs[node],
        }
    }

    /// Run every kernel once, whole and one after another, timing each kind:
    /// (kind, kernels, elements, microseconds).
    pub fn run_profiled(&mut self, store: &[Vec<T>]) -> Result<Vec<(String, usize, usize, f64)>> {
        let mut acc: Vec<(String, usize, usize, f64)> = Vec::new();
        let bufs = Bufs::new(&self.ir.nodes, &mut self.bufs, store);
        for (step, _) in self.steps.iter().zip(&self.elided).filter(|(_, &e)| !e) {
            let kind = step.kind();
            let n = self.ir.nodes[step.out()].len;
            let t0 = std::time::Instant::now();
            run_single(step, &mut self.workers, &bufs)?;
            let us = t0.elapsed().as_secs_f64() * 1e6;
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

    /// Run the kernels of `part` (see [`Part`]). Running the kernels independent of some
    /// inputs and then the dependent ones equals [`Plan::run`]: an independent kernel never
    /// reads a dependent one.
    pub fn run_part(&mut self, store: &[Vec<T>], part: Part) -> Result<()> {
        let steps: Vec<bool> = self.steps.iter().map(|s| part.runs(s.out())).collect();
        self.run_steps(store, &steps)
    }

    /// Run every kernel. `store` holds the declared inputs' buffers.
    pub fn run(&mut self, store: &[Vec<T>]) -> Result<()> {
        let all = vec![true; self.steps.len()];
        self.run_steps(store, &all)
    }

    fn schedule(&mut self, part: &[bool]) -> usize {
        if let Some(i) = self.schedules.iter().position(|(p, _)| p == part) {
            return i;
        }
        let s = Schedule::new(
            &self.steps,
            &self.rows,
            part,
            self.batch,
            self.workers.len(),
            self.tiled,
        );
        self.schedules.push((part.to_vec(), s));
        self.schedules.len() - 1
    }

    fn run_steps(&mut self, store: &[Vec<T>], part: &[bool]) -> Result<()> {
        let si = self.schedule(&self.runnable(part));
        let bufs = Bufs::new(&self.ir.nodes, &mut self.bufs, store);
        self.schedules[si]
            .1
            .run(&self.steps, &mut self.workers, &bufs)
    }
}

/// Which kernels of a plan a run covers, by the node each writes: all of them, or those whose
/// output is marked (a phase of a training step: the kernels before the late inputs, ∇U at the
/// sampled x, arrive from the host; those after; the optimiser's update on a device). A phase
/// must be closed under reading: none of its kernels reads a node a later phase writes, which
/// holds for masks made from [`Plan::depends_on`].
#[derive(Clone, Copy, Debug)]
pub enum Part<'a> {
    /// Every kernel.
    All,
    /// The kernels whose output node is marked.
    Only(&'a [bool]),
}

impl Part<'_> {
    /// Whether the kernel writing node `out` runs.
    pub fn runs(&self, out: usize) -> bool {
        match self {
            Part::All => true,
            Part::Only(marked) => marked[out],
        }
    }
}

/// Arithmetic instructions of a kernel (loads and constants are not).
fn arithmetic(code: &[Instr]) -> f64 {
    code.iter()
        .filter(|i| matches!(i, Instr::Un(..) | Instr::Bin(..)))
        .count() as f64
}

/// `table` as runs of consecutive source positions, (first, length): an im2col table is one run
/// per stencil point and site, `C_in` long.
pub fn runs(table: &[u32]) -> Vec<(u32, u32)> {
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for &k in table {
        match runs.last_mut() {
            Some((first, len)) if first.checked_add(*len) == Some(k) => *len += 1,
            _ => runs.push((k, 1)),
        }
    }
    runs
}
