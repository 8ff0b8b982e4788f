//! An untyped graph builder over luminal's primitive ops.
//!
//! luminal 0.2.0's `GraphTensor<S>` fixes shapes at compile time; a flow's width, depth and
//! dimension are chosen at run time, so we build the same primitive graph (`Log2, Exp2, Sin,
//! Sqrt, Recip, Add, Mul, Mod, LessThan, SumReduce, MaxReduce, Contiguous`, constants and
//! loads) through [`Var`], a copyable handle that carries its `ShapeTracker` and a logical
//! shape whose only symbolic dimension is the batch ([`Dim::Batch`], luminal's `'b'`).
//!
//! Composite ops are written as luminal's own hl_ops write them (exp = exp2(x/ln 2),
//! sigmoid = 1/(1 + e^{−x}), max(a, b) = \[a<b\]·b + \[a≥b\]·a, …) with two deliberate
//! differences: `clamp(lo, hi)` really clamps (luminal's `clip` computes `max(min(x, lo), hi)`),
//! and the saturating activations clamp their argument first so that no `0·∞` appears in a
//! gradient. Slices compose (luminal's `ShapeTracker::slice` takes the max of two starts).

use std::cell::RefCell;

use luminal::op::{self, Constant, ConstantValue};
use luminal::prelude::symbolic::Expression;
use luminal::prelude::{Graph, NodeIndex, ShapeTracker};

/// A scalar constant kept at f64 precision (luminal's `Constant` holds an f32). Our lowering
/// reads the f64; luminal's stock executor gets the rounded f32.
#[derive(Clone, Debug, PartialEq)]
pub struct ConstF64(pub f64);

impl luminal::op::Operator for ConstF64 {
    fn process(
        &mut self,
        _: Vec<(luminal::op::InputTensor, ShapeTracker)>,
    ) -> Vec<luminal::prelude::Tensor> {
        vec![luminal::prelude::Tensor {
            data: Box::new(vec![self.0 as f32]),
        }]
    }
}

/// Input `i` of a custom operator on luminal's stock executor, as f32 (empty if absent).
fn f32_input<'a>(inp: &'a [(luminal::op::InputTensor<'_>, ShapeTracker)], i: usize) -> &'a [f32] {
    inp.get(i)
        .and_then(|(t, _)| t.borrowed().data.as_any().downcast_ref::<Vec<f32>>())
        .map_or(&[], |v| v.as_slice())
}

/// Gather by a constant table along each row: the trailing axes of the input, flattened to rows
/// of `in_row` elements, give output row element j = input row element `table[j]`. Our
/// lowering turns it into [`super::ir::Op::Take`]; luminal's stock executor gets a plain
/// implementation for contiguous f32 input.
#[derive(Clone, Debug, PartialEq)]
pub struct TakeOp {
    /// Output row element j reads input row element `table[j]`.
    pub table: std::sync::Arc<[u32]>,
    /// Input row length.
    pub in_row: usize,
}

impl luminal::op::Operator for TakeOp {
    fn process(
        &mut self,
        inp: Vec<(luminal::op::InputTensor, ShapeTracker)>,
    ) -> Vec<luminal::prelude::Tensor> {
        let src = f32_input(&inp, 0);
        let rows = src.len() / self.in_row.max(1);
        let mut out = Vec::with_capacity(rows * self.table.len());
        for r in 0..rows {
            let row = &src[r * self.in_row..(r + 1) * self.in_row];
            out.extend(self.table.iter().map(|&k| row[k as usize]));
        }
        vec![luminal::prelude::Tensor {
            data: Box::new(out),
        }]
    }
}

/// tanh as one elementwise primitive of ours (luminal has none): lowered to
/// [`super::ir::UnOp::Tanh`]; luminal's stock executor gets f32 `tanh`.
#[derive(Clone, Debug, PartialEq)]
pub struct TanhOp;

impl luminal::op::Operator for TanhOp {
    fn process(
        &mut self,
        inp: Vec<(luminal::op::InputTensor, ShapeTracker)>,
    ) -> Vec<luminal::prelude::Tensor> {
        let src = f32_input(&inp, 0);
        vec![luminal::prelude::Tensor {
            data: Box::new(src.iter().map(|v| v.tanh()).collect::<Vec<f32>>()),
        }]
    }
}

/// The fused rational-quadratic spline ([`super::rqs`]): inputs the coordinates `[.., m]` and
/// their raw parameters `[.., m, 3K − 1]` (both contiguous), output `[.., m, 2]` holding the
/// mapped value and the log-derivative of each coordinate. Our lowering turns it into
/// [`super::ir::Op::Spline`]; luminal's stock executor gets the same kernel on f32.
#[derive(Clone, Debug, PartialEq)]
pub struct SplineOp(pub super::rqs::Rqs);

impl luminal::op::Operator for SplineOp {
    fn process(
        &mut self,
        inp: Vec<(luminal::op::InputTensor, ShapeTracker)>,
    ) -> Vec<luminal::prelude::Tensor> {
        let (v, theta) = (f32_input(&inp, 0), f32_input(&inp, 1));
        let n = v.len().min(theta.len() / self.0.n_params());
        let mut out = vec![0.0f32; 2 * n];
        self.0.apply(&v[..n], theta, &mut out);
        vec![luminal::prelude::Tensor {
            data: Box::new(out),
        }]
    }
}

/// One logical dimension: fixed, or the batch size chosen at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Dim {
    /// The dynamic batch dimension (one per program).
    Batch,
    /// A fixed size.
    Fixed(usize),
}

impl Dim {
    fn expr(self) -> Expression {
        match self {
            Dim::Batch => 'b'.into(),
            Dim::Fixed(n) => n.into(),
        }
    }

    /// The size once the batch size is known.
    pub fn resolve(self, batch: usize) -> usize {
        match self {
            Dim::Batch => batch,
            Dim::Fixed(n) => n,
        }
    }
}

impl From<usize> for Dim {
    fn from(n: usize) -> Dim {
        Dim::Fixed(n)
    }
}

const MAX_RANK: usize = 6;

/// A logical shape of rank ≤ 6, stored inline so that [`Var`] is `Copy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    dims: [Dim; MAX_RANK],
    rank: usize,
}

impl Shape {
    /// Build from a slice of dimensions.
    pub fn new(dims: &[Dim]) -> Shape {
        assert!(dims.len() <= MAX_RANK, "rank > {MAX_RANK}");
        let mut d = [Dim::Fixed(1); MAX_RANK];
        d[..dims.len()].copy_from_slice(dims);
        Shape {
            dims: d,
            rank: dims.len(),
        }
    }
    /// The dimensions.
    pub fn dims(&self) -> &[Dim] {
        &self.dims[..self.rank]
    }
    /// Number of axes.
    pub fn rank(&self) -> usize {
        self.rank
    }
    /// Sizes once the batch is known.
    pub fn resolve(&self, batch: usize) -> Vec<usize> {
        self.dims().iter().map(|d| d.resolve(batch)).collect()
    }
    fn removed(&self, axis: usize) -> Shape {
        let mut v = self.dims().to_vec();
        v.remove(axis);
        Shape::new(&v)
    }
    fn exprs(&self) -> Vec<Expression> {
        self.dims().iter().map(|d| d.expr()).collect()
    }
}

/// What a graph input is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    /// Data set on every run.
    Data,
    /// A trainable parameter, resident in the program.
    Param,
    /// A constant tensor, resident and not trained.
    Fixed,
}

/// A declared graph input.
#[derive(Clone, Debug)]
pub struct InputDecl {
    /// Unique name.
    pub name: String,
    /// Luminal node of the load.
    pub node: NodeIndex,
    /// Logical shape.
    pub shape: Shape,
    /// Data, parameter or constant.
    pub kind: InputKind,
    /// Initial values for parameters and constants.
    pub init: Vec<f64>,
}

/// Owns a boxed luminal graph (it must not move once nodes exist) and the declared inputs.
#[derive(Debug, Default)]
pub struct GraphBuilder {
    graph: RefCell<Box<Graph>>,
    inputs: RefCell<Vec<InputDecl>>,
}

/// A node of the graph under construction: node id, its view, its logical shape.
#[derive(Clone, Copy)]
pub struct Var<'g> {
    id: NodeIndex,
    st: ShapeTracker,
    shape: Shape,
    g: &'g GraphBuilder,
}

impl std::fmt::Debug for Var<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Var({:?}, {:?})", self.id, self.shape.dims())
    }
}

impl GraphBuilder {
    /// An empty graph.
    pub fn new() -> GraphBuilder {
        GraphBuilder::default()
    }

    fn declare(&self, name: &str, shape: &[Dim], kind: InputKind, init: Vec<f64>) -> Var<'_> {
        let id = self
            .graph
            .borrow_mut()
            .graph
            .add_node(Box::new(op::Function(
                format!("{name} Load"),
                Box::new(|_| Vec::new()),
            )));
        let shape = Shape::new(shape);
        self.inputs.borrow_mut().push(InputDecl {
            name: name.to_string(),
            node: id,
            shape,
            kind,
            init,
        });
        Var {
            id,
            st: ShapeTracker::new(&shape.exprs()),
            shape,
            g: self,
        }
    }

    /// A data input whose first axis is the batch: shape `[batch, rest...]`.
    pub fn batch_input(&self, name: &str, rest: &[usize]) -> Var<'_> {
        let mut dims = vec![Dim::Batch];
        dims.extend(rest.iter().map(|&n| Dim::Fixed(n)));
        self.declare(name, &dims, InputKind::Data, Vec::new())
    }

    /// A data input of fixed shape.
    pub fn input(&self, name: &str, shape: &[usize]) -> Var<'_> {
        let dims: Vec<Dim> = shape.iter().map(|&n| Dim::Fixed(n)).collect();
        self.declare(name, &dims, InputKind::Data, Vec::new())
    }

    /// A trainable parameter with its initial values (row-major).
    pub fn param(&self, name: &str, shape: &[usize], init: Vec<f64>) -> Var<'_> {
        assert_eq!(init.len(), shape.iter().product::<usize>(), "param {name}");
        let dims: Vec<Dim> = shape.iter().map(|&n| Dim::Fixed(n)).collect();
        self.declare(name, &dims, InputKind::Param, init)
    }

    /// A resident constant tensor (row-major values).
    pub fn fixed(&self, name: &str, shape: &[usize], values: Vec<f64>) -> Var<'_> {
        assert_eq!(
            values.len(),
            shape.iter().product::<usize>(),
            "fixed {name}"
        );
        let dims: Vec<Dim> = shape.iter().map(|&n| Dim::Fixed(n)).collect();
        self.declare(name, &dims, InputKind::Fixed, values)
    }

    /// An anonymous resident constant tensor; identical constants are shared.
    pub fn constant_tensor(&self, shape: &[usize], values: Vec<f64>) -> Var<'_> {
        assert_eq!(
            values.len(),
            shape.iter().product::<usize>(),
            "constant tensor"
        );
        let dims: Vec<Dim> = shape.iter().map(|&n| Dim::Fixed(n)).collect();
        let found = self
            .inputs
            .borrow()
            .iter()
            .find(|d| {
                d.kind == InputKind::Fixed && d.shape.dims() == dims.as_slice() && d.init == values
            })
            .map(|d| d.node);
        if let Some(node) = found {
            let shape = Shape::new(&dims);
            return Var {
                id: node,
                st: ShapeTracker::new(&shape.exprs()),
                shape,
                g: self,
            };
        }
        let name = format!("const#{}", self.inputs.borrow().len());
        self.declare(&name, &dims, InputKind::Fixed, values)
    }

    /// A scalar constant (kept in f64: exact in f64 programs).
    pub fn constant(&self, v: f64) -> Var<'_> {
        let id = self.graph.borrow_mut().add_op(ConstF64(v)).finish();
        self.scalar_var(id)
    }

    /// The current batch size as a scalar (resolved at run time).
    pub fn batch_size(&self) -> Var<'_> {
        let id = {
            let mut g = self.graph.borrow_mut();
            let map = &g.dyn_map as *const _;
            g.add_op(Constant(
                ConstantValue::Expression(Expression::from('b').into()),
                map,
            ))
            .finish()
        };
        self.scalar_var(id)
    }

    fn scalar_var(&self, id: NodeIndex) -> Var<'_> {
        Var {
            id,
            st: ShapeTracker::new(&[]),
            shape: Shape::new(&[]),
            g: self,
        }
    }

    /// `[0, 1, …, n−1]` as a constant vector.
    pub fn arange(&self, n: usize) -> Var<'_> {
        self.constant_tensor(&[n], (0..n).map(|i| i as f64).collect())
    }

    /// Adopt a graph built with luminal's own typed API (`Graph::named_tensor`, hl_ops);
    /// declare its loads with [`GraphBuilder::register`] before compiling.
    pub fn adopt(graph: Box<Graph>) -> GraphBuilder {
        GraphBuilder {
            graph: RefCell::new(graph),
            inputs: RefCell::new(Vec::new()),
        }
    }

    /// Declare an existing load node of an adopted graph.
    pub fn register(
        &self,
        name: &str,
        node: NodeIndex,
        shape: &[Dim],
        kind: InputKind,
        init: Vec<f64>,
    ) {
        self.inputs.borrow_mut().push(InputDecl {
            name: name.to_string(),
            node,
            shape: Shape::new(shape),
            kind,
            init,
        });
    }

    /// Take the graph and the declared inputs (for compilation).
    pub fn into_parts(self) -> (Box<Graph>, Vec<InputDecl>) {
        (self.graph.into_inner(), self.inputs.into_inner())
    }

    fn node(
        &self,
        o: impl luminal::op::Operator + 'static,
        srcs: &[(NodeIndex, ShapeTracker)],
    ) -> NodeIndex {
        let mut g = self.graph.borrow_mut();
        let mut b = g.add_op(o);
        for (id, st) in srcs {
            b = b.input(*id, 0, *st);
        }
        b.finish()
    }
}

fn is_plain(st: &ShapeTracker) -> bool {
    st.is_contiguous() && !st.is_sliced() && !st.is_padded()
}

#[allow(clippy::should_implement_trait)]
impl<'g> Var<'g> {
    /// Luminal node id (to name outputs when compiling).
    pub fn id(&self) -> NodeIndex {
        self.id
    }
    /// Logical shape.
    pub fn shape(&self) -> Shape {
        self.shape
    }
    /// Number of axes.
    pub fn rank(&self) -> usize {
        self.shape.rank
    }
    fn dim(&self, axis: usize) -> Dim {
        self.shape.dims[axis]
    }
    fn fixed_dim(&self, axis: usize) -> usize {
        match self.dim(axis) {
            Dim::Fixed(n) => n,
            Dim::Batch => panic!("axis {axis} is the batch axis; a fixed size is needed here"),
        }
    }
    fn with(&self, id: NodeIndex, st: ShapeTracker, shape: Shape) -> Var<'g> {
        Var {
            id,
            st,
            shape,
            g: self.g,
        }
    }

    // ---- primitives -------------------------------------------------------------------

    fn unary(self, o: impl luminal::op::Operator + 'static) -> Var<'g> {
        let id = self.g.node(o, &[(self.id, self.st)]);
        // luminal's unary ops map the raw buffer: the output keeps the input's view.
        self.with(id, self.st, self.shape)
    }

    fn binary(self, rhs: Var<'g>, o: impl luminal::op::Operator + 'static) -> Var<'g> {
        let (a, b) = broadcast_pair(self, rhs);
        let id = self.g.node(o, &[(a.id, a.st), (b.id, b.st)]);
        self.with(id, ShapeTracker::new(&a.shape.exprs()), a.shape)
    }

    /// Base-2 logarithm (primitive).
    pub fn log2(self) -> Var<'g> {
        self.unary(op::Log2)
    }
    /// 2^x (primitive).
    pub fn exp2(self) -> Var<'g> {
        self.unary(op::Exp2)
    }
    /// sin x (primitive).
    pub fn sin(self) -> Var<'g> {
        self.unary(op::Sin)
    }
    /// √x (primitive).
    pub fn sqrt(self) -> Var<'g> {
        self.unary(op::Sqrt)
    }
    /// 1/x (primitive).
    pub fn recip(self) -> Var<'g> {
        self.unary(op::Recip)
    }
    /// a + b with numpy broadcasting (primitive).
    pub fn add(self, rhs: Var<'g>) -> Var<'g> {
        self.binary(rhs, op::Add)
    }
    /// a · b with numpy broadcasting (primitive).
    pub fn mul(self, rhs: Var<'g>) -> Var<'g> {
        self.binary(rhs, op::Mul)
    }
    /// fmod(a, b) (primitive).
    pub fn rem(self, rhs: Var<'g>) -> Var<'g> {
        self.binary(rhs, op::Mod)
    }
    /// 1 where a < b else 0 (primitive).
    pub fn lt(self, rhs: Var<'g>) -> Var<'g> {
        self.binary(rhs, op::LessThan)
    }
    /// Sum over `axis` (primitive); the output is contiguous.
    pub fn sum(self, axis: usize) -> Var<'g> {
        let id = self.g.node(op::SumReduce(axis), &[(self.id, self.st)]);
        let shape = self.shape.removed(axis);
        self.with(id, ShapeTracker::new(&shape.exprs()), shape)
    }
    /// Max over `axis` (primitive).
    pub fn max(self, axis: usize) -> Var<'g> {
        let id = self.g.node(op::MaxReduce(axis), &[(self.id, self.st)]);
        let shape = self.shape.removed(axis);
        self.with(id, ShapeTracker::new(&shape.exprs()), shape)
    }
    /// Materialise the view in row-major order (primitive; a no-op when already plain).
    pub fn contiguous(self) -> Var<'g> {
        if is_plain(&self.st) {
            return self;
        }
        let id = self.g.node(op::Contiguous, &[(self.id, self.st)]);
        self.with(id, ShapeTracker::new(&self.shape.exprs()), self.shape)
    }

    // ---- views ------------------------------------------------------------------------

    /// Reorder axes: output axis i is input axis `perm[i]`.
    pub fn permute(self, perm: &[usize]) -> Var<'g> {
        assert_eq!(perm.len(), self.rank());
        let mut st = self.st;
        st.permute(perm);
        let dims: Vec<Dim> = perm.iter().map(|&p| self.dim(p)).collect();
        self.with(self.id, st, Shape::new(&dims))
    }
    /// Swap the last two axes.
    pub fn t(self) -> Var<'g> {
        let r = self.rank();
        let mut perm: Vec<usize> = (0..r).collect();
        perm.swap(r - 1, r - 2);
        self.permute(&perm)
    }
    /// Insert a broadcast axis of size `n` at `axis`.
    pub fn expand(self, axis: usize, n: Dim) -> Var<'g> {
        let mut st = self.st;
        st.expand(axis, n.expr());
        let mut dims = self.shape.dims().to_vec();
        dims.insert(axis, n);
        self.with(self.id, st, Shape::new(&dims))
    }
    /// Broadcast to `target` (numpy rules: prepend axes, stretch size-1 axes).
    pub fn broadcast_to(self, target: Shape) -> Var<'g> {
        let mut v = self;
        let r = target.rank();
        assert!(
            v.rank() <= r,
            "cannot broadcast {:?} to {:?}",
            v.shape,
            target
        );
        for a in 0..r - v.rank() {
            v = v.expand(a, target.dims[a]);
        }
        for a in 0..r {
            if v.dim(a) != target.dims[a] {
                assert!(
                    v.dim(a) == Dim::Fixed(1),
                    "cannot broadcast {:?} to {:?}",
                    self.shape.dims(),
                    target.dims()
                );
                if !is_plain(&v.st) {
                    v = v.contiguous();
                }
                let mut st = v.st;
                st.remove_dim(a);
                st.expand(a, target.dims[a].expr());
                let mut dims = v.shape.dims().to_vec();
                dims[a] = target.dims[a];
                v = v.with(v.id, st, Shape::new(&dims));
            }
        }
        v
    }
    /// Elements `[start, end)` of `axis`.
    pub fn slice(self, axis: usize, start: usize, end: usize) -> Var<'g> {
        let n = self.fixed_dim(axis);
        assert!(start <= end && end <= n, "slice {start}..{end} of {n}");
        let mut v = self;
        let i = v.st.indexes[axis];
        if v.st.padding[i] != (0.into(), 0.into()) || v.st.fake[i] {
            v = v.contiguous();
        }
        let mut st = v.st;
        let i = st.indexes[axis];
        let s0 = st.slices[i].0;
        st.slices[i] = (s0 + start, s0 + end);
        let mut dims = v.shape.dims().to_vec();
        dims[axis] = Dim::Fixed(end - start);
        v.with(v.id, st, Shape::new(&dims))
    }
    /// Zero-pad `axis` with `lo` elements before and `hi` after.
    pub fn pad(self, axis: usize, lo: usize, hi: usize) -> Var<'g> {
        let n = self.fixed_dim(axis);
        let mut v = self;
        let i = v.st.indexes[axis];
        if v.st.slices[i] != (0.into(), i32::MAX.into()) || v.st.fake[i] {
            v = v.contiguous();
        }
        let mut st = v.st;
        let i = st.indexes[axis];
        st.padding[i] = (st.padding[i].0 + lo, st.padding[i].1 + hi);
        let mut dims = v.shape.dims().to_vec();
        dims[axis] = Dim::Fixed(n + lo + hi);
        v.with(v.id, st, Shape::new(&dims))
    }
    /// Reinterpret the elements (row-major) with a new shape.
    pub fn reshape(self, dims: &[Dim]) -> Var<'g> {
        let v = self.contiguous();
        let shape = Shape::new(dims);
        v.with(v.id, ShapeTracker::new(&shape.exprs()), shape)
    }
    /// Gather by a constant table: the axes from `axis` on are flattened into rows (all fixed),
    /// and output row element j is input row element `table[j]`; the output keeps the leading
    /// axes followed by `out_dims` (whose product is `table.len()`). Differentiable (its
    /// adjoint scatters back with the same table).
    pub fn take(self, axis: usize, table: &[usize], out_dims: &[usize]) -> Var<'g> {
        let in_row: usize = (axis..self.rank()).map(|a| self.fixed_dim(a)).product();
        assert!(
            table.iter().all(|&k| k < in_row) && in_row <= u32::MAX as usize,
            "take: table entries must index a row of {in_row}"
        );
        assert_eq!(
            out_dims.iter().product::<usize>(),
            table.len(),
            "take: out_dims"
        );
        let v = self.contiguous();
        let op = TakeOp {
            table: table.iter().map(|&k| k as u32).collect(),
            in_row,
        };
        let id = self.g.node(op, &[(v.id, v.st)]);
        let mut dims = v.shape.dims()[..axis].to_vec();
        dims.extend(out_dims.iter().map(|&n| Dim::Fixed(n)));
        let shape = Shape::new(&dims);
        v.with(id, ShapeTracker::new(&shape.exprs()), shape)
    }
    /// The rational-quadratic spline of each coordinate of `self` `[.., m]` with raw
    /// parameters `theta` `[.., m, 3K − 1]` as one fused kernel ([`super::rqs`]): returns the
    /// mapped coordinates and their log-derivatives, both `[.., m]`. Differentiable in both.
    pub fn rqs(self, theta: Var<'g>, spline: super::rqs::Rqs) -> (Var<'g>, Var<'g>) {
        let r = self.rank();
        assert!(
            theta.rank() == r + 1 && theta.fixed_dim(r) == spline.n_params(),
            "rqs: parameters must be [.., m, {}]",
            spline.n_params()
        );
        let (v, th) = (self.contiguous(), theta.contiguous());
        let id = self
            .g
            .node(SplineOp(spline), &[(v.id, v.st), (th.id, th.st)]);
        let mut dims = v.shape.dims().to_vec();
        dims.push(Dim::Fixed(2));
        let shape = Shape::new(&dims);
        let out = v.with(id, ShapeTracker::new(&shape.exprs()), shape);
        let part = |j: usize| out.slice(r, j, j + 1).reshape(v.shape.dims());
        (part(0), part(1))
    }
    /// Concatenate along `axis` (pad both and add).
    pub fn concat(self, rhs: Var<'g>, axis: usize) -> Var<'g> {
        let (na, nb) = (self.fixed_dim(axis), rhs.fixed_dim(axis));
        self.pad(axis, 0, nb).add(rhs.pad(axis, na, 0))
    }

    // ---- composites -------------------------------------------------------------------

    fn scalar(&self, v: f64) -> Var<'g> {
        self.g.constant(v)
    }
    /// A scalar constant in the same graph.
    pub fn constant(&self, v: f64) -> Var<'g> {
        self.g.constant(v)
    }
    /// The graph this variable lives in.
    pub fn builder(&self) -> &'g GraphBuilder {
        self.g
    }
    /// x + c.
    pub fn add_scalar(self, c: f64) -> Var<'g> {
        self.add(self.scalar(c))
    }
    /// x · c.
    pub fn mul_scalar(self, c: f64) -> Var<'g> {
        self.mul(self.scalar(c))
    }
    /// −x.
    pub fn neg(self) -> Var<'g> {
        self.mul_scalar(-1.0)
    }
    /// a − b.
    pub fn sub(self, rhs: Var<'g>) -> Var<'g> {
        self.add(rhs.neg())
    }
    /// a / b.
    pub fn div(self, rhs: Var<'g>) -> Var<'g> {
        self.mul(rhs.recip())
    }
    /// x².
    pub fn square(self) -> Var<'g> {
        self.mul(self)
    }
    /// eˣ.
    pub fn exp(self) -> Var<'g> {
        self.mul_scalar(std::f64::consts::LOG2_E).exp2()
    }
    /// ln x.
    pub fn ln(self) -> Var<'g> {
        self.log2().mul_scalar(std::f64::consts::LN_2)
    }
    /// cos x = sin(x + π/2).
    pub fn cos(self) -> Var<'g> {
        self.add_scalar(std::f64::consts::FRAC_PI_2).sin()
    }
    /// 1 − \[a < b\].
    pub fn ge(self, rhs: Var<'g>) -> Var<'g> {
        self.lt(rhs).neg().add_scalar(1.0)
    }
    /// \[a > b\].
    pub fn gt(self, rhs: Var<'g>) -> Var<'g> {
        rhs.lt(self)
    }
    /// \[a == b\] = 1 − \[a<b\] − \[b<a\].
    pub fn eq(self, rhs: Var<'g>) -> Var<'g> {
        self.lt(rhs).add(rhs.lt(self)).neg().add_scalar(1.0)
    }
    /// mask·a + (1 − mask)·b, for a 0/1 mask.
    pub fn select(mask: Var<'g>, a: Var<'g>, b: Var<'g>) -> Var<'g> {
        mask.mul(a).add(mask.neg().add_scalar(1.0).mul(b))
    }
    /// Elementwise maximum.
    pub fn maximum(self, rhs: Var<'g>) -> Var<'g> {
        let m = self.lt(rhs);
        Var::select(m, rhs, self)
    }
    /// Elementwise minimum.
    pub fn minimum(self, rhs: Var<'g>) -> Var<'g> {
        let m = self.lt(rhs);
        Var::select(m, self, rhs)
    }
    /// Clamp into `[lo, hi]`.
    pub fn clamp(self, lo: f64, hi: f64) -> Var<'g> {
        self.maximum(self.scalar(lo)).minimum(self.scalar(hi))
    }
    /// max(x, 0).
    pub fn relu(self) -> Var<'g> {
        self.maximum(self.scalar(0.0))
    }
    /// |x|.
    pub fn abs(self) -> Var<'g> {
        self.relu().add(self.neg().relu())
    }
    /// 1/(1 + e^{−x}), argument clamped to ±30 (beyond, f32 is saturated anyway).
    pub fn sigmoid(self) -> Var<'g> {
        self.clamp(-30.0, 30.0).neg().exp().add_scalar(1.0).recip()
    }
    /// tanh x (one primitive of ours, [`TanhOp`]; derivative 1 − tanh²).
    pub fn tanh(self) -> Var<'g> {
        self.unary(TanhOp)
    }
    /// x·σ(x).
    pub fn silu(self) -> Var<'g> {
        self.mul(self.sigmoid())
    }
    /// ln(1 + eˣ) = relu(x) + ln(1 + e^{−|x|}), stable for any x.
    pub fn softplus(self) -> Var<'g> {
        self.relu().add(self.abs().neg().exp().add_scalar(1.0).ln())
    }
    /// Mean over `axis`.
    pub fn mean(self, axis: usize) -> Var<'g> {
        let n = match self.dim(axis) {
            Dim::Fixed(n) => self.scalar(1.0 / n as f64),
            Dim::Batch => self.g.batch_size().recip(),
        };
        self.sum(axis).mul(n)
    }
    /// Sum of every element (a scalar).
    pub fn sum_all(self) -> Var<'g> {
        let mut v = self;
        while v.rank() > 0 {
            v = v.sum(v.rank() - 1);
        }
        v
    }
    /// Mean of every element (a scalar).
    pub fn mean_all(self) -> Var<'g> {
        let mut v = self;
        while v.rank() > 0 {
            v = v.mean(v.rank() - 1);
        }
        v
    }
    /// log Σ exp over `axis`, shifted by the max for stability.
    pub fn logsumexp(self, axis: usize) -> Var<'g> {
        let m = self.max(axis);
        let shifted = self.sub(m.expand(axis, self.dim(axis)));
        shifted.exp().sum(axis).ln().add(m)
    }
    /// Softmax over `axis`.
    pub fn softmax(self, axis: usize) -> Var<'g> {
        let m = self.max(axis).expand(axis, self.dim(axis));
        let e = self.sub(m).exp();
        let s = e.sum(axis).expand(axis, self.dim(axis));
        e.div(s)
    }
    /// Cumulative sum over the last axis: a product with an upper-triangular matrix of ones.
    pub fn cumsum_last(self) -> Var<'g> {
        let k = self.fixed_dim(self.rank() - 1);
        let tri: Vec<f64> = (0..k * k)
            .map(|i| if i / k <= i % k { 1.0 } else { 0.0 })
            .collect();
        let u = self.g.constant_tensor(&[k, k], tri);
        self.matmul(u)
    }
    /// One-hot rows: `[.., n]` with 1 where `arange(n) == self`.
    pub fn one_hot(self, n: usize) -> Var<'g> {
        let r = self.rank();
        let idx = self.expand(r, Dim::Fixed(n));
        let ar = self.g.arange(n).broadcast_to(idx.shape);
        ar.eq(idx)
    }
    /// Matrix product over the last two axes: `[.., M, K] @ [K, N]` or `[B, M, K] @ [B, K, N]`.
    pub fn matmul(self, rhs: Var<'g>) -> Var<'g> {
        let r = self.rank();
        assert!(r >= 2 && rhs.rank() >= 2, "matmul needs matrices");
        let n = rhs.dim(rhs.rank() - 1);
        // a: [.., M, K] -> [.., M, N, K]
        let a = self.expand(r - 1, n);
        // b: [.., K, N] -> [.., N, K] -> broadcast to [.., M, N, K]
        let b = rhs.t();
        let m = self.dim(r - 2);
        let b = b.expand(b.rank() - 2, m);
        let b = b.broadcast_to(a.shape);
        a.mul(b).sum(r)
    }
}

fn broadcast_pair<'g>(a: Var<'g>, b: Var<'g>) -> (Var<'g>, Var<'g>) {
    if a.shape == b.shape {
        return (a, b);
    }
    let r = a.rank().max(b.rank());
    let pad = |v: &Var, i: usize| -> Dim {
        let off = r - v.rank();
        if i < off {
            Dim::Fixed(1)
        } else {
            v.dim(i - off)
        }
    };
    let mut dims = Vec::with_capacity(r);
    for i in 0..r {
        let (x, y) = (pad(&a, i), pad(&b, i));
        dims.push(if x == Dim::Fixed(1) {
            y
        } else if y == Dim::Fixed(1) || x == y {
            x
        } else {
            panic!(
                "shapes {:?} and {:?} do not broadcast",
                a.shape.dims(),
                b.shape.dims()
            )
        });
    }
    let target = Shape::new(&dims);
    (a.broadcast_to(target), b.broadcast_to(target))
}

impl<'g> std::ops::Add for Var<'g> {
    type Output = Var<'g>;
    fn add(self, rhs: Var<'g>) -> Var<'g> {
        Var::add(self, rhs)
    }
}
impl<'g> std::ops::Sub for Var<'g> {
    type Output = Var<'g>;
    fn sub(self, rhs: Var<'g>) -> Var<'g> {
        Var::sub(self, rhs)
    }
}
impl<'g> std::ops::Mul for Var<'g> {
    type Output = Var<'g>;
    fn mul(self, rhs: Var<'g>) -> Var<'g> {
        Var::mul(self, rhs)
    }
}
impl<'g> std::ops::Div for Var<'g> {
    type Output = Var<'g>;
    fn div(self, rhs: Var<'g>) -> Var<'g> {
        Var::div(self, rhs)
    }
}
impl<'g> std::ops::Neg for Var<'g> {
    type Output = Var<'g>;
    fn neg(self) -> Var<'g> {
        Var::neg(self)
    }
}
impl<'g> std::ops::Add<f64> for Var<'g> {
    type Output = Var<'g>;
    fn add(self, rhs: f64) -> Var<'g> {
        self.add_scalar(rhs)
    }
}
impl<'g> std::ops::Mul<f64> for Var<'g> {
    type Output = Var<'g>;
    fn mul(self, rhs: f64) -> Var<'g> {
        self.mul_scalar(rhs)
    }
}
impl<'g> std::ops::Sub<f64> for Var<'g> {
    type Output = Var<'g>;
    fn sub(self, rhs: f64) -> Var<'g> {
        self.add_scalar(-rhs)
    }
}
