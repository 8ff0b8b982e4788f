//! The fuser: turns a lowered [`Ir`] into the steps of a [`super::plan::Plan`].
//!
//! **Elementwise fusion.** Walking the program from its outputs backwards, elementwise nodes
//! (`Unary`, `Binary`, `Copy`) join the kernel of their readers when *all* their readers are
//! in that kernel and read them at the same positions: whole DAGs, not just chains, become
//! one kernel, a short SSA instruction list in which a shared value is computed once.
//! Binary/copy nodes join when read through the identity view, unary nodes (which commute
//! with any strided view) through any unmasked view. A reduction over the last axis absorbs
//! the kernel producing its input. Every other node (matmul, scatter, table gather, the
//! fused spline) is a step of its own; a matmul's trailing batch axes are folded into M when
//! the operands allow it (one large gemm instead of many small ones).

use super::ir::{Ir, Op};
use super::plan::{Instr, Kernel, Step};
use super::view::View;

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

/// The steps computing the `required` nodes of `ir`, in execution (topological) order.
#[allow(clippy::needless_range_loop)]
pub fn steps(ir: &Ir, required_nodes: &[usize]) -> Vec<Step> {
    let n = ir.nodes.len();
    let live = ir.live(required_nodes);
    let mut required = vec![false; n];
    for &r in required_nodes {
        required[r] = true;
    }
    let groups = Groups::new(ir, &live, &required);
    let mut steps = Vec::new();
    for i in 0..n {
        if !live[i] || groups.group[i] != Some(i) {
            continue;
        }
        let node = &ir.nodes[i];
        let mut em = Emitter {
            ir,
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
                    epilogue: None,
                    stencil: None,
                    gather: None,
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
                runs: super::plan::runs(table).into(),
                in_row: *in_row,
            },
            Op::Put { src, table, in_row } => Step::Put {
                out: i,
                src: *src,
                table: table.clone(),
                in_row: *in_row,
                gemm: None,
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
    attach_epilogues(ir, &required, steps)
}

/// Fold `act(product + bias)` kernels into their gemm ([`super::plan::Epilogue`]): a fused
/// kernel whose code is `Load(product) [+ Load(bias row)] [→ unary]`, reading the product at
/// identity and a declared input broadcast over the rows, where nothing else reads the product.
fn attach_epilogues(ir: &Ir, required: &[bool], mut steps: Vec<Step>) -> Vec<Step> {
    let mut readers = vec![0usize; ir.nodes.len()];
    for s in &steps {
        for n in super::tile::sources(s) {
            readers[n] += 1;
        }
    }
    let producer: std::collections::HashMap<usize, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.out(), i))
        .collect();
    let mut remove = vec![false; steps.len()];
    for f in 0..steps.len() {
        let Step::Fused { out, kernel } = &steps[f] else {
            continue;
        };
        let Some((epi, product, row)) = match_epilogue(ir, kernel) else {
            continue;
        };
        let Some(&m) = producer.get(&product) else {
            continue;
        };
        let n = match &steps[m] {
            Step::MatMul {
                b, epilogue: None, ..
            } => b.1.axes[b.1.axes.len() - 2].len,
            _ => continue,
        };
        let len = ir.nodes[product].len;
        if required[product] || readers[product] != 1 || len != ir.nodes[*out].len {
            continue;
        }
        if row.is_some_and(|r| r != n) {
            continue;
        }
        let out = *out;
        if let Step::MatMul {
            out: mo, epilogue, ..
        } = &mut steps[m]
        {
            *mo = out;
            *epilogue = Some(epi);
        }
        remove[f] = true;
    }
    let mut i = 0;
    steps.retain(|_| {
        i += 1;
        !remove[i - 1]
    });
    steps
}

/// The epilogue a kernel computes (and the node of the product it reads, and the bias row
/// length), if it has that form.
type Match = (super::plan::Epilogue, usize, Option<usize>);

fn match_epilogue(ir: &Ir, k: &Kernel) -> Option<Match> {
    use super::ir::BinOp;
    use super::plan::Epilogue;
    let identity = |leaf: usize| {
        k.leaves
            .get(leaf)
            .is_some_and(|(n, v)| v.is_identity(ir.nodes[*n].len) && v.numel() == k.n)
    };
    // The product is the leaf read at identity; a bias, if any, is the other.
    let pl = if identity(0) { 0 } else { 1 };
    if !identity(pl) {
        return None;
    }
    let product = k.leaves[pl].0;
    // A bias row: a declared input read as [rows (stride 0)] × [n (stride 1)] from an offset.
    let bias = |leaf: usize| -> Option<(usize, usize, usize)> {
        let (node, v) = k.leaves.get(leaf)?;
        let ok = matches!(ir.nodes[*node].op, Op::Input(_))
            && !v.is_masked()
            && v.offset >= 0
            && matches!(v.axes.as_slice(), [r, c] if r.stride == 0 && c.stride == 1 && r.len * c.len == k.n);
        ok.then(|| (*node, v.offset as usize, v.axes[1].len))
    };
    match k.code.as_slice() {
        [Instr::Load(0), Instr::Un(u, 0)] if k.leaves.len() == 1 => Some((
            Epilogue {
                bias: None,
                act: Some(*u),
            },
            product,
            None,
        )),
        [Instr::Load(x), Instr::Load(y), Instr::Bin(BinOp::Add, 0, 1), rest @ ..]
            if k.leaves.len() == 2 && ((*x, *y) == (0, 1) || (*x, *y) == (1, 0)) =>
        {
            let (node, off, row) = bias(1 - pl)?;
            let act = match rest {
                [] => None,
                [Instr::Un(u, 2)] => Some(*u),
                _ => return None,
            };
            Some((
                Epilogue {
                    bias: Some((node, off)),
                    act,
                },
                product,
                Some(row),
            ))
        }
        _ => None,
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
