//! Reverse-mode differentiation of a lowered program.
//!
//! Gradients are kept in the *buffer layout* of each node: `ḡ_n[p] = ∂L/∂buf_n[p]`. For a
//! consumer that reads `buf_s` through a view `V` and produces the logical adjoint `ḡ_log`,
//! the pull-back is the adjoint of the read,
//!
//! ```text
//! ḡ_s[V(j)] += ḡ_log[j]      for every valid logical index j
//! ```
//!
//! which at once sums over broadcast axes, undoes permutations, turns slices into pads and
//! pads into slices. When `V` is the identity the contribution is `ḡ_log` itself. Local rules
//! (y = op(x), ḡ the output adjoint):
//!
//! ```text
//! log₂ x: ḡ/(x ln 2)   2ˣ: ḡ·y·ln 2   sin x: ḡ·sin(x + π/2)   √x: ḡ·½/y   1/x: −ḡ·y²
//! tanh x: ḡ·(1 − y²)
//! a+b: ḡ, ḡ   a·b: ḡ·b, ḡ·a   fmod(a,b): ḡ, −ḡ·(a − y)/b   [a<b]: 0, 0
//! Σ_k: ḡ broadcast along k   max_k: ḡ·[x == y] broadcast along k
//! C = A·Bᵀ (matmul): Ā = C̄·B, B̄ = C̄ᵀ·A
//! take (gather by a table): put (scatter-add by the same table), and put: take
//! spline (fused RQS): its hand-written adjoint kernel (see `rqs`), x̄ and θ̄ read back as columns
//! ```

use super::ir::{BinOp, Ir, Op, RedOp, Src, UnOp};
use super::view::View;
use crate::error::{Error, Result};

struct Tape<'a> {
    ir: &'a mut Ir,
}

impl Tape<'_> {
    fn len(&self, n: usize) -> usize {
        self.ir.nodes[n].len
    }
    fn flat(&self, n: usize) -> Src {
        Src {
            node: n,
            view: View::contiguous(&[self.len(n)]),
        }
    }
    fn constant(&mut self, v: f64, len: usize) -> Src {
        let c = self.ir.push(Op::Const(v), 1);
        Src {
            node: c,
            view: View::broadcast_scalar(&[len]),
        }
    }
    fn bin(&mut self, op: BinOp, a: Src, b: Src) -> usize {
        let len = a.view.numel();
        self.ir.push(Op::Binary(op, a, b), len)
    }
    /// `g · f` elementwise over flat buffers of equal length.
    fn mul_flat(&mut self, g: usize, f: usize) -> usize {
        let (a, b) = (self.flat(g), self.flat(f));
        self.bin(BinOp::Mul, a, b)
    }
    fn scale(&mut self, g: usize, c: f64) -> usize {
        let len = self.len(g);
        let a = self.flat(g);
        let k = self.constant(c, len);
        self.bin(BinOp::Mul, a, k)
    }
    /// Contribution to the buffer of `target.node` from a logical adjoint read as `g`.
    fn pull_back(&mut self, target: &Src, g: Src) -> usize {
        let tlen = self.len(target.node);
        if target.view.is_identity(tlen) {
            if g.view.is_identity(self.len(g.node)) {
                return g.node;
            }
            let len = g.view.numel();
            return self.ir.push(Op::Copy(g), len);
        }
        self.ir.push(Op::Scatter(g, target.view.clone()), tlen)
    }
    /// The right operand `[.., N, K]` of a matmul as the gemm reads it fastest, with B's
    /// rows (k fixed, n running) contiguous. A weight matrix read transposed (Wᵀ in
    /// x̄ = ȳ·Wᵀ), broadcast over the leading axes, is copied once into those rows (a few
    /// thousand elements, against the executor transposing it for every tile of batch rows);
    /// any other view is kept.
    fn rows_of(&mut self, b: Src) -> Src {
        let r = b.view.axes.len();
        if r < 2 || b.view.axes[r - 2].stride == 1 {
            return b;
        }
        let broadcast = b.view.axes[..r - 2]
            .iter()
            .all(|a| a.stride == 0 && a.lo == 0 && a.hi == a.len);
        if !broadcast {
            return b;
        }
        let (n, k) = (b.view.axes[r - 2].len, b.view.axes[r - 1].len);
        let rows = Src {
            node: b.node,
            view: View {
                offset: b.view.offset,
                axes: vec![b.view.axes[r - 1], b.view.axes[r - 2]],
            },
        };
        let copy = self.ir.push(Op::Copy(rows), k * n);
        let mut view = View::contiguous(&[k, n]).permute(&[1, 0]);
        for a in b.view.axes[..r - 2].iter().rev() {
            view = view.expand(0, a.len);
        }
        Src { node: copy, view }
    }
}

/// Append gradient nodes of the scalar `loss` with respect to every node in `wrt`.
/// Returns, for each of them, the node holding its gradient (in its buffer layout), or
/// `None` when the loss does not depend on it.
pub fn differentiate(ir: &mut Ir, loss: usize, wrt: &[usize]) -> Result<Vec<Option<usize>>> {
    if ir.nodes[loss].len != 1 {
        return Err(Error::Engine(format!(
            "the loss must be a scalar, it has {} elements",
            ir.nodes[loss].len
        )));
    }
    let n_fwd = ir.nodes.len();
    let needed = ir.live(&[loss]);
    let mut grads: Vec<Vec<usize>> = vec![Vec::new(); n_fwd];
    let mut t = Tape { ir };
    let seed = t.ir.push(Op::Const(1.0), 1);
    grads[loss].push(seed);

    for n in (0..n_fwd).rev() {
        if !needed[n] || grads[n].is_empty() {
            continue;
        }
        // Accumulate this node's contributions.
        let mut parts = std::mem::take(&mut grads[n]);
        let mut g = parts.pop().unwrap();
        for p in parts {
            let (a, b) = (t.flat(g), t.flat(p));
            g = t.bin(BinOp::Add, a, b);
        }
        grads[n] = vec![g];
        let op = t.ir.nodes[n].op.clone();
        match op {
            Op::Input(_) | Op::Const(_) => {}
            Op::Unary(u, s) => {
                let c = match u {
                    UnOp::Log2 => {
                        let r = t.ir.push(Op::Unary(UnOp::Recip, s), t.len(s));
                        let gr = t.mul_flat(g, r);
                        t.scale(gr, std::f64::consts::LOG2_E)
                    }
                    UnOp::Exp2 => {
                        let gy = t.mul_flat(g, n);
                        t.scale(gy, std::f64::consts::LN_2)
                    }
                    UnOp::Sin => {
                        let len = t.len(s);
                        let (a, k) = (t.flat(s), t.constant(std::f64::consts::FRAC_PI_2, len));
                        let shifted = t.bin(BinOp::Add, a, k);
                        let cos = t.ir.push(Op::Unary(UnOp::Sin, shifted), len);
                        t.mul_flat(g, cos)
                    }
                    UnOp::Sqrt => {
                        let r = t.ir.push(Op::Unary(UnOp::Recip, n), t.len(n));
                        let gr = t.mul_flat(g, r);
                        t.scale(gr, 0.5)
                    }
                    UnOp::Tanh => {
                        // ḡ (1 − y²)
                        let yy = t.mul_flat(n, n);
                        let len = t.len(n);
                        let (a, one) = (t.flat(yy), t.constant(1.0, len));
                        let neg = t.constant(-1.0, len);
                        let m = t.bin(BinOp::Mul, a, neg);
                        let (m, one) = (t.flat(m), one);
                        let d = t.bin(BinOp::Add, m, one);
                        t.mul_flat(g, d)
                    }
                    UnOp::Recip => {
                        let gy = t.mul_flat(g, n);
                        let gyy = t.mul_flat(gy, n);
                        t.scale(gyy, -1.0)
                    }
                };
                grads[s].push(c);
            }
            Op::Binary(b, x, y) => {
                let shape = x.view.shape();
                let gl = Src {
                    node: g,
                    view: View::contiguous(&shape),
                };
                let (gx, gy): (Option<Src>, Option<Src>) = match b {
                    BinOp::Add => (Some(gl.clone()), Some(gl)),
                    BinOp::Mul => {
                        let gx = t.bin(BinOp::Mul, gl.clone(), y.clone());
                        let gy = t.bin(BinOp::Mul, gl, x.clone());
                        let c = View::contiguous(&shape);
                        (
                            Some(Src {
                                node: gx,
                                view: c.clone(),
                            }),
                            Some(Src { node: gy, view: c }),
                        )
                    }
                    BinOp::Mod => {
                        // fmod(a, b) = a − b·trunc(a/b): ∂/∂b = −trunc(a/b) = −(a − y)/b.
                        let c = View::contiguous(&shape);
                        let yl = Src {
                            node: n,
                            view: c.clone(),
                        };
                        let k = t.constant(-1.0, yl.view.numel());
                        let k = Src {
                            node: k.node,
                            view: View::broadcast_scalar(&shape),
                        };
                        let neg_y = t.bin(BinOp::Mul, yl, k);
                        let a_minus_y = t.bin(
                            BinOp::Add,
                            x.clone(),
                            Src {
                                node: neg_y,
                                view: c.clone(),
                            },
                        );
                        let rb = t.ir.push(Op::Copy(y.clone()), yl_len(&shape));
                        let rb = t.ir.push(Op::Unary(UnOp::Recip, rb), yl_len(&shape));
                        let q = t.bin(
                            BinOp::Mul,
                            Src {
                                node: a_minus_y,
                                view: c.clone(),
                            },
                            Src {
                                node: rb,
                                view: c.clone(),
                            },
                        );
                        let gq = t.bin(
                            BinOp::Mul,
                            gl.clone(),
                            Src {
                                node: q,
                                view: c.clone(),
                            },
                        );
                        let gy = t.scale(gq, -1.0);
                        (Some(gl), Some(Src { node: gy, view: c }))
                    }
                    BinOp::Lt | BinOp::Eq => (None, None),
                };
                if let Some(gx) = gx {
                    let c = t.pull_back(&x, gx);
                    grads[x.node].push(c);
                }
                if let Some(gy) = gy {
                    let c = t.pull_back(&y, gy);
                    grads[y.node].push(c);
                }
            }
            Op::Copy(s) => {
                let gl = Src {
                    node: g,
                    view: View::contiguous(&s.view.shape()),
                };
                let c = t.pull_back(&s, gl);
                grads[s.node].push(c);
            }
            Op::Reduce(r, ax, s) => {
                let in_shape = s.view.shape();
                let mut out_shape = in_shape.clone();
                out_shape.remove(ax);
                let expanded = View::contiguous(&out_shape).expand(ax, in_shape[ax]);
                let gl = Src {
                    node: g,
                    view: expanded.clone(),
                };
                let gl = match r {
                    RedOp::Sum => gl,
                    RedOp::Max => {
                        let y = Src {
                            node: n,
                            view: expanded,
                        };
                        let mask = t.bin(BinOp::Eq, s.clone(), y);
                        let c = View::contiguous(&in_shape);
                        let m = t.bin(
                            BinOp::Mul,
                            Src {
                                node: mask,
                                view: c.clone(),
                            },
                            gl,
                        );
                        Src { node: m, view: c }
                    }
                };
                let c = t.pull_back(&s, gl);
                grads[s.node].push(c);
            }
            Op::MatMul(a, b) => {
                // out[.., M, N] = Σ_k a[.., M, K] b[.., N, K]
                let r = a.view.axes.len();
                let mut out_shape = a.view.shape();
                out_shape[r - 1] = b.view.axes[r - 2].len;
                let gv = View::contiguous(&out_shape);
                let mut swap: Vec<usize> = (0..r).collect();
                swap.swap(r - 1, r - 2);
                // Ā[.., M, K] = Σ_n Ḡ[.., M, N] B[.., N, K]: lhs Ḡ, rhs Bᵀ as [.., K, N].
                let da_len = a.view.numel();
                let bt = t.rows_of(Src {
                    node: b.node,
                    view: b.view.permute(&swap),
                });
                let da = t.ir.push(
                    Op::MatMul(
                        Src {
                            node: g,
                            view: gv.clone(),
                        },
                        bt,
                    ),
                    da_len,
                );
                let da = Src {
                    node: da,
                    view: View::contiguous(&a.view.shape()),
                };
                let c = t.pull_back(&a, da);
                grads[a.node].push(c);
                // B̄[.., N, K] = Σ_m Ḡ[.., M, N] A[.., M, K]: lhs Ḡᵀ [.., N, M], rhs Aᵀ [.., K, M].
                let db_len = b.view.numel();
                let gt = Src {
                    node: g,
                    view: gv.permute(&swap),
                };
                let at = Src {
                    node: a.node,
                    view: a.view.permute(&swap),
                };
                let db = t.ir.push(Op::MatMul(gt, at), db_len);
                let db = Src {
                    node: db,
                    view: View::contiguous(&b.view.shape()),
                };
                let c = t.pull_back(&b, db);
                grads[b.node].push(c);
            }
            Op::Take {
                src,
                ref table,
                in_row,
            }
            | Op::Put {
                src,
                ref table,
                in_row,
            } => {
                // Gather and scatter-add by the same table are each other's adjoint.
                let table = table.clone();
                let adjoint = if matches!(op, Op::Take { .. }) {
                    Op::Put {
                        src: g,
                        table,
                        in_row,
                    }
                } else {
                    Op::Take {
                        src: g,
                        table,
                        in_row,
                    }
                };
                let len = t.len(src);
                let c = t.ir.push(adjoint, len);
                grads[src].push(c);
            }
            Op::Spline { x, theta, rqs } => {
                // One adjoint kernel gives x̄ and θ̄ interleaved per coordinate, rows of P + 1.
                let (n_x, p) = (t.len(x), rqs.n_params());
                let adj =
                    t.ir.push(Op::SplineAdjoint { x, theta, g, rqs }, n_x * (p + 1));
                let column = |offset: usize, width: usize| Src {
                    node: adj,
                    view: View {
                        offset: offset as i64,
                        axes: vec![
                            super::view::Axis {
                                len: n_x,
                                stride: p + 1,
                                lo: 0,
                                hi: n_x,
                            },
                            super::view::Axis {
                                len: width,
                                stride: 1,
                                lo: 0,
                                hi: width,
                            },
                        ],
                    },
                };
                let gx = t.ir.push(Op::Copy(column(0, 1)), n_x);
                grads[x].push(gx);
                let gt = t.ir.push(Op::Copy(column(1, p)), n_x * p);
                grads[theta].push(gt);
            }
            Op::Scatter(..) | Op::SplineAdjoint { .. } => {
                return Err(Error::Engine(
                    "second-order gradients (through a scatter or a spline adjoint) are not \
                     supported"
                        .into(),
                ))
            }
        }
    }
    Ok(wrt.iter().map(|&w| grads[w].first().copied()).collect())
}

fn yl_len(shape: &[usize]) -> usize {
    shape.iter().product()
}
