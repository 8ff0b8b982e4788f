//! The lowered program: luminal's primitive graph with every view made concrete.
//!
//! Lowering runs once per batch size. Each luminal node becomes an [`Node`] whose output is
//! a flat buffer of `len` elements:
//!
//! * unary ops (`Log2, Exp2, Sin, Sqrt, Recip`) map their source buffer element by element
//!   (luminal's semantics: the view on the edge is ignored, consumers keep reading through it);
//! * binary ops (`Add, Mul, Mod, LessThan`), `Contiguous` and the reductions read their
//!   sources through [`View`]s and write row-major output in logical order;
//! * [`Op::MatMul`] is recognised from `SumReduce(last) ∘ Mul` of two broadcast views (how
//!   luminal's `matmul` is written) and runs through gemm;
//! * [`Op::Scatter`] is the adjoint of a view read, created by the autograd pass;
//! * [`Op::Take`] is our gather by a constant table (the builder's `take`, e.g. the im2col of a
//!   periodic convolution) and [`Op::Put`] its adjoint.

use luminal::op;
use luminal::prelude::petgraph::visit::EdgeRef;
use luminal::prelude::petgraph::Direction;
use luminal::prelude::{Graph, NodeIndex};
use rustc_hash::FxHashMap;

use super::builder::InputDecl;
use super::view::View;
use crate::error::{Error, Result};

/// Elementwise unary primitives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnOp {
    /// log₂ x
    Log2,
    /// 2ˣ
    Exp2,
    /// sin x
    Sin,
    /// √x
    Sqrt,
    /// 1/x
    Recip,
    /// tanh x (ours: luminal has no tanh primitive; one instruction instead of ~20)
    Tanh,
}

/// Elementwise binary primitives (`Eq` is internal: used by the max-reduce gradient).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    /// a + b
    Add,
    /// a · b
    Mul,
    /// fmod(a, b)
    Mod,
    /// \[a < b\]
    Lt,
    /// [a == b]
    Eq,
}

/// Reductions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RedOp {
    /// Σ
    Sum,
    /// max
    Max,
}

/// A source read through a view.
#[derive(Clone, Debug, PartialEq)]
pub struct Src {
    /// Producing node.
    pub node: usize,
    /// How its buffer is read.
    pub view: View,
}

/// A lowered operation.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Declared input number `i` (data, parameter or constant tensor).
    Input(usize),
    /// A scalar constant.
    Const(f64),
    /// Elementwise map of the source buffer.
    Unary(UnOp, usize),
    /// Elementwise binary op over two views of equal logical shape.
    Binary(BinOp, Src, Src),
    /// Materialise a view.
    Copy(Src),
    /// Reduce the given axis of a view.
    Reduce(RedOp, usize, Src),
    /// `out[.., m, n] = Σ_k a[.., m, k] · b[.., n, k]`, views `[.., M, K]` and `[.., N, K]`.
    MatMul(Src, Src),
    /// Adjoint of reading through `target`: `out[target(j)] += g[j]` over valid `j`.
    Scatter(Src, View),
    /// Row-wise gather by a constant table: `out[r·m + j] = src[r·in_row + table[j]]`,
    /// m = table length (the source buffer read as-is).
    Take {
        /// Source node.
        src: usize,
        /// Row element j reads source row element `table[j]`.
        table: std::sync::Arc<[u32]>,
        /// Source row length.
        in_row: usize,
    },
    /// Adjoint of [`Op::Take`]: `out[r·in_row + table[j]] += src[r·m + j]` (zero elsewhere).
    Put {
        /// Source (gradient) node, rows of m = table length.
        src: usize,
        /// The gather's table.
        table: std::sync::Arc<[u32]>,
        /// Output row length.
        in_row: usize,
    },
    /// The fused spline ([`super::rqs`]) of `x` (n elements) with parameters `theta`
    /// (n·(3K−1)), both read as-is: `out[2i]` value, `out[2i + 1]` log-derivative.
    Spline {
        /// Coordinates.
        x: usize,
        /// Raw parameters.
        theta: usize,
        /// The spline.
        rqs: super::rqs::Rqs,
    },
    /// Adjoint of [`Op::Spline`] given the output adjoint `g` (2n): `out[i·3K]` = x̄_i and
    /// `out[i·3K + 1 + j]` = θ̄_ij.
    SplineAdjoint {
        /// Coordinates.
        x: usize,
        /// Raw parameters.
        theta: usize,
        /// Adjoint of the spline's output.
        g: usize,
        /// The spline.
        rqs: super::rqs::Rqs,
    },
}

/// A lowered node: an op and the length of its output buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// The operation.
    pub op: Op,
    /// Output buffer length.
    pub len: usize,
}

impl Op {
    /// Nodes this op reads.
    pub fn sources(&self) -> Vec<usize> {
        match self {
            Op::Input(_) | Op::Const(_) => vec![],
            Op::Unary(_, s) => vec![*s],
            Op::Binary(_, a, b) | Op::MatMul(a, b) => vec![a.node, b.node],
            Op::Copy(s) | Op::Reduce(_, _, s) | Op::Scatter(s, _) => vec![s.node],
            Op::Take { src, .. } | Op::Put { src, .. } => vec![*src],
            Op::Spline { x, theta, .. } => vec![*x, *theta],
            Op::SplineAdjoint { x, theta, g, .. } => vec![*x, *theta, *g],
        }
    }
}

/// A lowered program.
#[derive(Clone, Debug, Default)]
pub struct Ir {
    /// Nodes in topological order.
    pub nodes: Vec<Node>,
}

impl Ir {
    /// Append a node and return its index.
    pub fn push(&mut self, op: Op, len: usize) -> usize {
        self.nodes.push(Node { op, len });
        self.nodes.len() - 1
    }

    /// Number of reads of each node by other nodes.
    pub fn consumers(&self) -> Vec<usize> {
        let mut c = vec![0; self.nodes.len()];
        for n in &self.nodes {
            for s in n.op.sources() {
                c[s] += 1;
            }
        }
        c
    }

    /// Lower a luminal graph for a given batch size. `inputs` are the declared loads.
    pub fn lower(
        graph: &Graph,
        inputs: &[InputDecl],
        batch: usize,
    ) -> Result<(Ir, FxHashMap<NodeIndex, usize>)> {
        let mut dyn_map = FxHashMap::default();
        dyn_map.insert('b', batch);
        let order = luminal::prelude::petgraph::algo::toposort(&graph.graph, None)
            .map_err(|_| Error::Engine("graph has a cycle".into()))?;
        let decl: FxHashMap<NodeIndex, usize> = inputs
            .iter()
            .enumerate()
            .map(|(i, d)| (d.node, i))
            .collect();
        let mut ir = Ir::default();
        let mut map: FxHashMap<NodeIndex, usize> = FxHashMap::default();
        for id in order {
            let mut edges: Vec<_> = graph
                .graph
                .edges_directed(id, Direction::Incoming)
                .filter_map(|e| e.weight().as_data().map(|d| (e.source(), d)))
                .collect();
            edges.sort_by_key(|(_, (i, _, _))| *i);
            let mut srcs = Vec::with_capacity(edges.len());
            for (s, (_, _, st)) in &edges {
                let node = *map.get(s).ok_or_else(|| {
                    Error::Engine(format!("node {s:?} is read before it is computed"))
                })?;
                let view = View::from_tracker(st, &dyn_map)?;
                view.check_bounds(ir.nodes[node].len)?;
                srcs.push(Src { node, view });
            }
            let o = graph.graph.node_weight(id).unwrap();
            let any = o.as_any();
            let arity = |n: usize| -> Result<()> {
                if srcs.len() != n {
                    return Err(Error::Engine(format!(
                        "{o:?} has {} inputs, expected {n}",
                        srcs.len()
                    )));
                }
                Ok(())
            };
            let unary = |u: UnOp, srcs: &[Src], ir: &Ir| {
                (Op::Unary(u, srcs[0].node), ir.nodes[srcs[0].node].len)
            };
            let (op, len) = if let Some(&i) = decl.get(&id) {
                let len = inputs[i].shape.resolve(batch).iter().product();
                (Op::Input(i), len)
            } else if let Some(c) = any.downcast_ref::<super::builder::ConstF64>() {
                (Op::Const(c.0), 1)
            } else if let Some(c) = any.downcast_ref::<op::Constant>() {
                let v = match &c.0 {
                    op::ConstantValue::Float(f) => *f as f64,
                    op::ConstantValue::Expression(e) => e
                        .exec(&dyn_map)
                        .ok_or_else(|| Error::Engine(format!("unresolved constant {e:?}")))?
                        as f64,
                };
                (Op::Const(v), 1)
            } else if any.is::<op::Log2>() {
                arity(1)?;
                unary(UnOp::Log2, &srcs, &ir)
            } else if any.is::<op::Exp2>() {
                arity(1)?;
                unary(UnOp::Exp2, &srcs, &ir)
            } else if any.is::<op::Sin>() {
                arity(1)?;
                unary(UnOp::Sin, &srcs, &ir)
            } else if any.is::<op::Sqrt>() {
                arity(1)?;
                unary(UnOp::Sqrt, &srcs, &ir)
            } else if any.is::<op::Recip>() {
                arity(1)?;
                unary(UnOp::Recip, &srcs, &ir)
            } else if any.is::<super::builder::TanhOp>() {
                arity(1)?;
                unary(UnOp::Tanh, &srcs, &ir)
            } else if let Some(b) = binop(any) {
                arity(2)?;
                let (a, c) = (srcs[0].clone(), srcs[1].clone());
                if a.view.shape() != c.view.shape() {
                    return Err(Error::Engine(format!(
                        "{o:?}: operand shapes {:?} and {:?} differ",
                        a.view.shape(),
                        c.view.shape()
                    )));
                }
                let len = a.view.numel();
                (Op::Binary(b, a, c), len)
            } else if let Some(t) = any.downcast_ref::<super::builder::TakeOp>() {
                arity(1)?;
                let s = &srcs[0];
                let n_in = s.view.numel();
                if t.in_row == 0 || n_in % t.in_row != 0 {
                    return Err(Error::Engine(format!(
                        "take: {n_in} elements are not rows of {}",
                        t.in_row
                    )));
                }
                if t.table.iter().any(|&k| k as usize >= t.in_row) {
                    return Err(Error::Engine("take: table entry outside the row".into()));
                }
                let src = if s.view.is_identity(ir.nodes[s.node].len) {
                    s.node
                } else {
                    ir.push(Op::Copy(s.clone()), n_in)
                };
                let op = Op::Take {
                    src,
                    table: t.table.clone(),
                    in_row: t.in_row,
                };
                (op, n_in / t.in_row * t.table.len())
            } else if let Some(sp) = any.downcast_ref::<super::builder::SplineOp>() {
                arity(2)?;
                sp.0.validate().map_err(Error::Engine)?;
                let n = srcs[0].view.numel();
                if srcs[1].view.numel() != n * sp.0.n_params() {
                    return Err(Error::Engine(format!(
                        "spline: {} parameters for {n} coordinates of {}",
                        srcs[1].view.numel(),
                        sp.0.n_params()
                    )));
                }
                let mut plain = |s: &Src| {
                    if s.view.is_identity(ir.nodes[s.node].len) {
                        s.node
                    } else {
                        ir.push(Op::Copy(s.clone()), s.view.numel())
                    }
                };
                let (x, theta) = (plain(&srcs[0]), plain(&srcs[1]));
                (
                    Op::Spline {
                        x,
                        theta,
                        rqs: sp.0,
                    },
                    2 * n,
                )
            } else if any.is::<op::Contiguous>() {
                arity(1)?;
                let len = srcs[0].view.numel();
                (Op::Copy(srcs[0].clone()), len)
            } else if let Some((r, ax)) = reduce(any) {
                arity(1)?;
                let s = srcs[0].clone();
                if ax >= s.view.axes.len() {
                    return Err(Error::Engine(format!(
                        "{o:?} on a {}-D view",
                        s.view.axes.len()
                    )));
                }
                let len = s.view.numel() / s.view.axes[ax].len.max(1);
                let len = if s.view.axes[ax].len == 0 { 0 } else { len };
                (Op::Reduce(r, ax, s), len)
            } else {
                return Err(Error::Engine(format!(
                    "unsupported op {o:?} (undeclared input or unknown operator)"
                )));
            };
            map.insert(id, ir.push(op, len));
        }
        Ok((ir, map))
    }

    /// Replace `SumReduce(last) ∘ Mul` of two broadcast views by [`Op::MatMul`].
    pub fn recognise_matmuls(&mut self) {
        let consumers = self.consumers();
        for i in 0..self.nodes.len() {
            let Op::Reduce(RedOp::Sum, ax, src) = &self.nodes[i].op else {
                continue;
            };
            let r = src.view.axes.len();
            if r < 3 || *ax != r - 1 || consumers[src.node] != 1 {
                continue;
            }
            let prod = &self.nodes[src.node];
            if !src.view.is_identity(prod.len) {
                continue;
            }
            let Op::Binary(BinOp::Mul, a, b) = &prod.op else {
                continue;
            };
            if a.view.is_masked() || b.view.is_masked() {
                continue;
            }
            let fits =
                |x: &Src, y: &Src| x.view.axes[r - 2].stride == 0 && y.view.axes[r - 3].stride == 0;
            let (a, b) = if fits(a, b) {
                (a, b)
            } else if fits(b, a) {
                (b, a)
            } else {
                continue;
            };
            let drop_axis = |s: &Src, k: usize| {
                let mut v = s.view.clone();
                v.axes.remove(k);
                Src {
                    node: s.node,
                    view: v,
                }
            };
            let op = Op::MatMul(drop_axis(a, r - 2), drop_axis(b, r - 3));
            self.nodes[i].op = op;
        }
    }

    /// Mark the nodes needed to compute `roots`.
    pub fn live(&self, roots: &[usize]) -> Vec<bool> {
        let mut live = vec![false; self.nodes.len()];
        let mut stack: Vec<usize> = roots.to_vec();
        while let Some(n) = stack.pop() {
            if !live[n] {
                live[n] = true;
                stack.extend(self.nodes[n].op.sources());
            }
        }
        live
    }
}

fn binop(any: &dyn std::any::Any) -> Option<BinOp> {
    if any.is::<op::Add>() {
        Some(BinOp::Add)
    } else if any.is::<op::Mul>() {
        Some(BinOp::Mul)
    } else if any.is::<op::Mod>() {
        Some(BinOp::Mod)
    } else if any.is::<op::LessThan>() {
        Some(BinOp::Lt)
    } else {
        None
    }
}

fn reduce(any: &dyn std::any::Any) -> Option<(RedOp, usize)> {
    if let Some(r) = any.downcast_ref::<op::SumReduce>() {
        Some((RedOp::Sum, r.0))
    } else {
        any.downcast_ref::<op::MaxReduce>()
            .map(|r| (RedOp::Max, r.0))
    }
}
