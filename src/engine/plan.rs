//! The fused CPU compiler: turns a lowered [`Ir`] into a list of kernels and runs them.
//!
//! * **Elementwise fusion.** Walking the program from its outputs backwards, every chain of
//!   elementwise nodes (`Unary`, `Binary`, `Copy`) whose intermediate values have a single
//!   reader is folded into one kernel: a short SSA instruction list evaluated over chunks of
//!   [`CHUNK`] elements. Inputs are gathered through their strided views once per chunk; each
//!   instruction is then a tight loop the compiler vectorises. No allocation happens while
//!   running and no index expression is interpreted per element. A producer is folded into its
//!   reader when the reader's view of it is the identity (binary/copy producers) or unmasked
//!   (unary producers, which commute with any strided view).
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
pub const CHUNK: usize = 512;

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

/// A kernel.
#[derive(Clone, Debug)]
pub enum Step {
    /// Fused elementwise kernel writing `n` elements to `out`.
    Fused {
        /// Output node.
        out: usize,
        /// Elements.
        n: usize,
        /// (node, view) read by `Load`.
        leaves: Vec<(usize, View)>,
        /// Instructions; the last one is the result.
        code: Vec<Instr>,
    },
    /// Reduction of the last axis of `view` (already permuted), `k` elements per output.
    Reduce {
        /// Output node.
        out: usize,
        /// Kind.
        op: RedOp,
        /// Source node.
        src: usize,
        /// Source view with the reduced axis last.
        view: View,
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
}

/// A compiled program for one batch size.
#[derive(Debug)]
pub struct Plan<T: Scalar> {
    /// The lowered program.
    pub ir: Ir,
    /// Kernels in execution order.
    pub steps: Vec<Step>,
    bufs: Vec<Vec<T>>,
    regs: Vec<T>,
    scratch: Vec<T>,
}

fn is_elementwise(op: &Op) -> bool {
    matches!(op, Op::Unary(..) | Op::Binary(..) | Op::Copy(..))
}

struct Fuser<'a> {
    ir: &'a Ir,
    consumers: &'a [usize],
    required: &'a [bool],
    inlined: &'a mut [bool],
    leaves: Vec<(usize, View)>,
    code: Vec<Instr>,
}

impl Fuser<'_> {
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
        if let Some(r) = self.code.iter().position(|i| *i == Instr::Load(k)) {
            return r;
        }
        self.emit(Instr::Load(k))
    }
    fn emit(&mut self, i: Instr) -> usize {
        self.code.push(i);
        self.code.len() - 1
    }
    /// Emit code computing `node` read through `view`; `root` forces expansion.
    fn expr(&mut self, node: usize, view: &View, root: bool) -> usize {
        let n = &self.ir.nodes[node];
        let foldable = root || (self.consumers[node] == 1 && !self.required[node]);
        match &n.op {
            Op::Const(v) if !view.is_masked() => self.emit(Instr::Const(*v)),
            Op::Unary(u, s) if foldable && is_elementwise(&n.op) && !view.is_masked() => {
                let (u, s) = (*u, *s);
                if !root {
                    self.inlined[node] = true;
                }
                let a = self.expr(s, view, false);
                self.emit(Instr::Un(u, a))
            }
            Op::Binary(b, x, y) if foldable && view.is_identity(n.len) => {
                if !root {
                    self.inlined[node] = true;
                }
                let (b, x, y) = (*b, x.clone(), y.clone());
                let a = self.expr(x.node, &x.view, false);
                let c = self.expr(y.node, &y.view, false);
                self.emit(Instr::Bin(b, a, c))
            }
            Op::Copy(s) if foldable && view.is_identity(n.len) => {
                if !root {
                    self.inlined[node] = true;
                }
                let s = s.clone();
                self.expr(s.node, &s.view, false)
            }
            _ => self.leaf(node, view),
        }
    }
}

impl<T: Scalar> Plan<T> {
    /// Build kernels computing the `required` nodes of `ir`.
    pub fn new(ir: Ir, required_nodes: &[usize]) -> Result<Plan<T>> {
        let n = ir.nodes.len();
        let live = ir.live(required_nodes);
        let mut consumers = vec![0usize; n];
        for (i, node) in ir.nodes.iter().enumerate() {
            if live[i] {
                for s in node.op.sources() {
                    consumers[s] += 1;
                }
            }
        }
        let mut required = vec![false; n];
        for &r in required_nodes {
            required[r] = true;
        }
        let mut inlined = vec![false; n];
        let mut steps = Vec::new();
        for i in (0..n).rev() {
            if !live[i] || inlined[i] {
                continue;
            }
            let node = &ir.nodes[i];
            let step = match &node.op {
                Op::Input(_) => continue,
                Op::Const(v) => Step::Const { out: i, v: *v },
                op if is_elementwise(op) => {
                    let mut f = Fuser {
                        ir: &ir,
                        consumers: &consumers,
                        required: &required,
                        inlined: &mut inlined,
                        leaves: Vec::new(),
                        code: Vec::new(),
                    };
                    let root_view = View::contiguous(&[node.len]);
                    f.expr(i, &root_view, true);
                    let (leaves, code) = (f.leaves, f.code);
                    let leaves = leaves
                        .into_iter()
                        .map(|(nd, v)| (nd, v.simplified()))
                        .collect();
                    Step::Fused {
                        out: i,
                        n: node.len,
                        leaves,
                        code,
                    }
                }
                Op::Reduce(r, ax, s) => {
                    let rank = s.view.axes.len();
                    let mut perm: Vec<usize> = (0..rank).filter(|&a| a != *ax).collect();
                    perm.push(*ax);
                    Step::Reduce {
                        out: i,
                        op: *r,
                        src: s.node,
                        view: s.view.permute(&perm).simplified(),
                        k: s.view.axes[*ax].len,
                    }
                }
                Op::MatMul(a, b) => Step::MatMul {
                    out: i,
                    a: (a.node, a.view.clone()),
                    b: (b.node, b.view.clone()),
                },
                Op::Scatter(g, target) => Step::Scatter {
                    out: i,
                    g: (g.node, g.view.simplified()),
                    target: target.simplified(),
                },
                _ => unreachable!(),
            };
            steps.push(step);
        }
        steps.reverse();
        let mut bufs: Vec<Vec<T>> = vec![Vec::new(); n];
        let mut n_regs = 1;
        for s in &steps {
            let out = match s {
                Step::Fused { out, code, .. } => {
                    n_regs = n_regs.max(code.len());
                    *out
                }
                Step::Reduce { out, .. }
                | Step::MatMul { out, .. }
                | Step::Scatter { out, .. }
                | Step::Const { out, .. } => *out,
            };
            bufs[out] = vec![T::default(); ir.nodes[out].len];
        }
        Ok(Plan {
            ir,
            steps,
            bufs,
            regs: vec![T::default(); n_regs * CHUNK],
            scratch: vec![T::default(); 4 * CHUNK],
        })
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

    /// Run every kernel. `store` holds the declared inputs' buffers.
    pub fn run(&mut self, store: &[Vec<T>]) -> Result<()> {
        for si in 0..self.steps.len() {
            let out = match &self.steps[si] {
                Step::Fused { out, .. }
                | Step::Reduce { out, .. }
                | Step::MatMul { out, .. }
                | Step::Scatter { out, .. }
                | Step::Const { out, .. } => *out,
            };
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

    fn run_step(&mut self, si: usize, store: &[Vec<T>], dst: &mut [T]) -> Result<()> {
        let ir = &self.ir;
        let bufs = &self.bufs;
        match &self.steps[si] {
            Step::Const { v, .. } => dst[0] = T::from_f64(*v),
            Step::Fused {
                n, leaves, code, ..
            } => {
                let regs = &mut self.regs;
                for (r, ins) in code.iter().enumerate() {
                    if let Instr::Const(v) = ins {
                        regs[r * CHUNK..(r + 1) * CHUNK].fill(T::from_f64(*v));
                    }
                }
                let mut start = 0;
                while start < *n {
                    let m = CHUNK.min(n - start);
                    for (r, ins) in code.iter().enumerate() {
                        let (before, after) = regs.split_at_mut(r * CHUNK);
                        let d = &mut after[..m];
                        match *ins {
                            Instr::Load(k) => {
                                let (node, view) = &leaves[k];
                                view.gather(Self::src(ir, bufs, store, *node), start, d);
                            }
                            Instr::Const(_) => {}
                            Instr::Un(u, a) => {
                                let a = &before[a * CHUNK..a * CHUNK + m];
                                unary(u, a, d);
                            }
                            Instr::Bin(b, a, c) => {
                                let a = &before[a * CHUNK..a * CHUNK + m];
                                let c = &before[c * CHUNK..c * CHUNK + m];
                                binary(b, a, c, d);
                            }
                        }
                    }
                    let last = code.len() - 1;
                    dst[start..start + m].copy_from_slice(&regs[last * CHUNK..last * CHUNK + m]);
                    start += m;
                }
            }
            Step::Reduce {
                op, src, view, k, ..
            } => {
                let src = Self::src(ir, bufs, store, *src);
                let k = *k;
                if k == 0 {
                    dst.fill(match op {
                        RedOp::Sum => T::default(),
                        RedOp::Max => T::neg_infinity(),
                    });
                    return Ok(());
                }
                let per = (self.scratch.len() / k).max(1);
                if self.scratch.len() < per * k {
                    self.scratch.resize(per * k, T::default());
                }
                let mut o = 0;
                while o < dst.len() {
                    let cnt = per.min(dst.len() - o);
                    let s = &mut self.scratch[..cnt * k];
                    view.gather(src, o * k, s);
                    for (d, seg) in dst[o..o + cnt].iter_mut().zip(s.chunks_exact(k)) {
                        *d = match op {
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
                        };
                    }
                    o += cnt;
                }
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

#[inline]
fn unary<T: Scalar>(u: UnOp, a: &[T], d: &mut [T]) {
    match u {
        UnOp::Log2 => d.iter_mut().zip(a).for_each(|(d, &a)| *d = a.log2()),
        UnOp::Exp2 => d.iter_mut().zip(a).for_each(|(d, &a)| *d = a.exp2()),
        UnOp::Sin => d.iter_mut().zip(a).for_each(|(d, &a)| *d = a.sin()),
        UnOp::Sqrt => d.iter_mut().zip(a).for_each(|(d, &a)| *d = a.sqrt()),
        UnOp::Recip => d.iter_mut().zip(a).for_each(|(d, &a)| *d = a.recip()),
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
