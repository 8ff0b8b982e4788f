//! CUDA C source for a plan's steps, printed from the description the CPU executor interprets
//! ([`super::plan::Step`]; for elementwise kernels [`super::plan::Kernel`]: strided leaf views
//! and an SSA instruction list), every kind of step.
//!
//! One thread per output element. Element e of an elementwise kernel reads each leaf through
//! its view ([`super::view::View`]):
//!
//! ```text
//! j = unravel(e, lens)                          (row-major, last axis fastest)
//! leaf_k(e) = valid(j) ? in_k[offset + Σ_a j_a · stride_a] : 0
//! ```
//!
//! then runs the instructions in order (register i holds instruction i's value). A fused
//! kernel's thread e stores the last register at `out[e]`; a reduction's thread o folds its k
//! elements o·k … o·k + k − 1 in order (Σ from 0, max from the first, NaN winning), as the CPU
//! does. A gemm's thread (u, n) sums a[u, k] · b[n, k] over k through the operands' views, then
//! adds the bias and applies the activation of its epilogue; a table gather's thread reads its
//! source at the table's column, a table scatter's thread sums the columns the table sends to
//! it (in the CPU's order); a view adjoint (scatter) adds atomically into a zeroed output; the
//! spline's thread maps one coordinate (`super::rqs`: softmax knots, the bin, the
//! rational-quadratic map and its log-derivative), its adjoint's thread pulls the output
//! adjoints back to the coordinate and its 3K − 1 parameters.
//!
//! The source is C as well as CUDA: [`prelude`] defines the element type and the math
//! functions, and a host compiler given [`HOST_SHIM`] (block and thread indices as globals,
//! `__global__` and `__device__` as nothing) compiles the same kernels, which is how they are
//! tested on machines without a GPU. The CUDA backend compiles them with NVRTC.

use std::fmt::Write;

use super::ir::{BinOp, RedOp, UnOp};
use super::plan::{Instr, Kernel, Step};
use super::view::View;

/// The element type of generated kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// `float`
    F32,
    /// `double`
    F64,
}

impl Precision {
    /// The C type.
    pub fn c_type(self) -> &'static str {
        match self {
            Precision::F32 => "float",
            Precision::F64 => "double",
        }
    }
}

/// One generated kernel: `extern "C" __global__ void name(T* out, const T* in_0, …,
/// unsigned long long threads)`, to be launched over `threads` threads.
#[derive(Clone, Debug)]
pub struct Source {
    /// The kernel's name.
    pub name: String,
    /// Its source (needs [`prelude`] before it).
    pub code: String,
    /// The node written.
    pub out: usize,
    /// The nodes read, in the order of the kernel's `in_k` parameters.
    pub inputs: Vec<usize>,
    /// Threads to launch (one per output element).
    pub threads: usize,
    /// The output must be zeroed before the launch (the kernel adds into it).
    pub zero_out: bool,
}

/// What every generated file starts with: the element type `T` and its math functions.
pub fn prelude(p: Precision) -> String {
    let (t, f) = (p.c_type(), if p == Precision::F32 { "f" } else { "" });
    let mut s = String::new();
    s.push_str(
        "#ifdef __CUDACC_RTC__\n#define TF_EXTERN extern \"C\"\n#else\n#define TF_EXTERN\n#endif\n",
    );
    let _ = writeln!(s, "typedef {t} T;");
    for (name, c) in [
        ("LOG2", "log2"),
        ("EXP2", "exp2"),
        ("SIN", "sin"),
        ("SQRT", "sqrt"),
        ("TANH", "tanh"),
        ("FMOD", "fmod"),
    ] {
        let _ = writeln!(s, "#define TF_{name} {c}{f}");
    }
    s.push_str("#define TF_INF ((T)(1.0 / 0.0))\n#define TF_NAN ((T)(0.0 / 0.0))\n");
    s.push_str("#ifndef TF_ATOMIC_ADD\n#define TF_ATOMIC_ADD(p, v) atomicAdd(p, v)\n#endif\n");
    // ln through log2 and the stable softplus, as the spline on the CPU computes them.
    let _ = writeln!(
        s,
        "static __device__ T tf_ln(T v) {{ return TF_LOG2(v) * {}; }}",
        literal(std::f64::consts::LN_2)
    );
    let _ = writeln!(
        s,
        "static __device__ T tf_softplus(T u) {{ const T e = TF_EXP2((u > (T)0 ? -u : u) * {0}); return (u > (T)0 ? u : (T)0) + tf_ln((T)1 + e); }}\nstatic __device__ T tf_sigmoid(T u) {{ const T e = TF_EXP2((u > (T)0 ? -u : u) * {0}); return u > (T)0 ? (T)1 / ((T)1 + e) : e / ((T)1 + e); }}",
        literal(std::f64::consts::LOG2_E)
    );
    s.push_str(SPLINE_CELL);
    s
}

/// A spline cell's slope g'(ξ) and the reverse mode through y = Y + H (sξ² + D_k t)/den and
/// ld = log(s² p) − 2 log den with ξ a leaf (`b` gets ξ̄, W̄, H̄, D̄_k, D̄_{k+1}), as
/// `super::rqs`'s `CellVals` computes them.
const SPLINE_CELL: &str = "static __device__ T tf_cell_slope(T w, T h, T d0, T d1, T xi) {
    const T s = h / w, om = (T)1 - xi, t = xi * om, den = s + (d1 + d0 - (T)2 * s) * t;
    return s * s * (d1 * xi * xi + (T)2 * s * t + d0 * om * om) / (den * den);
}
static __device__ void tf_cell_adjoint(T w, T h, T d0, T d1, T xi, T gy, T gl, T* b) {
    const T s = h / w, om = (T)1 - xi, t = xi * om, den = s + (d1 + d0 - (T)2 * s) * t;
    const T q = s * xi * xi + d0 * t, r = h * q / den, p = d1 * xi * xi + (T)2 * s * t + d0 * om * om;
    const T num_bar = gy / den, den_bar = (T)0 - gy * r / den - (T)2 * gl / den;
    T s_bar = (T)2 * gl / s;
    const T p_bar = gl / p;
    T b_d1 = p_bar * xi * xi, b_xi = p_bar * ((T)2 * d1 * xi - (T)2 * d0 * om), b_d0 = p_bar * om * om;
    s_bar += p_bar * (T)2 * t;
    T t_bar = p_bar * (T)2 * s, b_h = num_bar * q;
    const T q_bar = num_bar * h;
    s_bar += q_bar * xi * xi;
    b_xi += q_bar * (T)2 * s * xi;
    b_d0 += q_bar * t;
    t_bar += q_bar * d0;
    s_bar += den_bar * ((T)1 - (T)2 * t);
    b_d1 += den_bar * t;
    b_d0 += den_bar * t;
    t_bar += den_bar * (d1 + d0 - (T)2 * s);
    b_xi += t_bar * ((T)1 - (T)2 * xi);
    b_h += s_bar / w;
    b[0] = b_xi; b[1] = (T)0 - s_bar * s / w; b[2] = b_h; b[3] = b_d0; b[4] = b_d1;
}
";

/// What a host C compiler needs before [`prelude`] to compile the kernels as C: thread and
/// block indices as globals that a loop sets before each call.
pub const HOST_SHIM: &str = "#include <math.h>\n#define __global__\n#define __device__\n#define __restrict__ restrict\ntypedef struct { unsigned int x, y, z; } tf_dim3;\nstatic tf_dim3 blockIdx, blockDim, threadIdx;\n#define TF_ATOMIC_ADD(p, v) (*(p) += (v))\n";

/// The kernel of a step whose output has `out_len` elements.
pub fn kernel(step: &Step, out_len: usize, name: &str) -> Source {
    let mut g = Gen::new(name);
    let (out, threads, zero_out) = match step {
        Step::Fused { out, kernel } => {
            let at = g.element(kernel);
            g.body(&format!("    out[i] = {at}(i{});", g.args()));
            (*out, kernel.n, false)
        }
        Step::Reduce { out, op, kernel, k } => {
            let at = g.element(kernel);
            let args = g.args();
            let k = *k;
            if k == 0 {
                let empty = match op {
                    RedOp::Sum => "(T)0",
                    RedOp::Max => "-TF_INF",
                };
                g.body(&format!("    out[i] = {empty};"));
            } else {
                let (first, fold) = match op {
                    RedOp::Sum => (format!("(T)0 + {at}(e0{args})"), "acc += x;"),
                    // NaN wins, as on the CPU.
                    RedOp::Max => (format!("{at}(e0{args})"), "if (x > acc || x != x) acc = x;"),
                };
                g.body(&format!(
                    "    const unsigned long long e0 = i * {k}ULL;\n    T acc = {first};\n    for (unsigned long long e = e0 + 1; e < e0 + {k}ULL; e++) {{\n        const T x = {at}(e{args});\n        {fold}\n    }}\n    out[i] = acc;"
                ));
            }
            (*out, kernel.n / k.max(1), false)
        }
        Step::MatMul {
            out,
            a,
            b,
            epilogue,
            ..
        } => {
            let (pa, pb) = (g.input(a.0), g.input(b.0));
            let r = a.1.axes.len();
            let (m, k, n) = (
                a.1.axes[r - 2].len,
                a.1.axes[r - 1].len,
                b.1.axes[r - 2].len,
            );
            if m * n * k == 0 {
                // Nothing to read: zeros, as on the CPU (no epilogue).
                g.body("    out[i] = (T)0;");
            } else {
                let (ra, rb) = (read(&a.1, pa, "ea"), read(&b.1, pb, "eb"));
                let mut c = format!(
                    "    const unsigned long long u = i / {n}ULL, nn = i % {n}ULL, bi = u / {m}ULL;\n    T acc = (T)0;\n    for (unsigned long long kk = 0; kk < {k}ULL; kk++) {{\n        const unsigned long long ea = u * {k}ULL + kk, eb = (bi * {n}ULL + nn) * {k}ULL + kk;\n        acc += ({ra}) * ({rb});\n    }}\n"
                );
                if let Some(e) = epilogue {
                    if let Some((node, off)) = e.bias {
                        let pc = g.input(node);
                        let _ = writeln!(c, "    acc += in_{pc}[{off}ULL + nn];");
                    }
                    if let Some(u) = e.act {
                        let _ = writeln!(c, "    acc = {};", unary(u, "acc"));
                    }
                }
                c.push_str("    out[i] = acc;");
                g.body(&c);
            }
            (*out, out_len, false)
        }
        Step::Scatter {
            out,
            g: grad,
            target,
        } => {
            let pg = g.input(grad.0);
            let v = read(&grad.1, pg, "i");
            let (index, cond) = index(target, "i");
            let add = format!("TF_ATOMIC_ADD(&out[{index}], {v});");
            g.body(&match cond {
                Some(c) => format!("    if ({c}) {add}"),
                None => format!("    {add}"),
            });
            (*out, target.numel(), true)
        }
        Step::Const { out, v } => {
            g.body(&format!("    out[i] = {};", literal(*v)));
            (*out, 1, false)
        }
        Step::Take {
            out,
            src,
            table,
            in_row,
            ..
        } => {
            let ps = g.input(*src);
            let m = table.len();
            g.table("table", table.iter().copied());
            g.body(&format!(
                "    out[i] = in_{ps}[(i / {m}ULL) * {in_row}ULL + {name}_table[i % {m}ULL]];"
            ));
            (*out, out_len, false)
        }
        Step::Put {
            out,
            src,
            table,
            in_row,
            ..
        } => {
            let ps = g.input(*src);
            let m = table.len();
            let (start, cols) = put_lists(table, *in_row);
            g.table("start", start.into_iter());
            g.table("cols", cols.into_iter());
            g.body(&format!(
                "    const unsigned long long r = i / {in_row}ULL, kk = i % {in_row}ULL;\n    T acc = (T)0;\n    for (unsigned int q = {name}_start[kk]; q < {name}_start[kk + 1]; q++) acc += in_{ps}[r * {m}ULL + {name}_cols[q]];\n    out[i] = acc;"
            ));
            (*out, out_len, false)
        }
        Step::Spline { out, x, theta, rqs } => {
            let (px, pt) = (g.input(*x), g.input(*theta));
            g.body(&spline(rqs, px, pt));
            (*out, out_len / 2, false)
        }
        Step::SplineAdjoint {
            out,
            x,
            theta,
            g: grad,
            rqs,
        } => {
            let (px, pt, pg) = (g.input(*x), g.input(*theta), g.input(*grad));
            g.body(&spline_adjoint(rqs, px, pt, pg));
            (*out, out_len / (rqs.n_params() + 1), false)
        }
    };
    g.finish(out, threads, zero_out)
}

/// The epilogue of a gemm step whose product a library computed ([`super::blas`], cuBLAS) into
/// a buffer of its own: `out[i] = act(in_0[i] + bias[i mod N])`, one thread per element, as
/// the generated gemm kernel ends. `in_0` is that product: [`Source::inputs`]`[0]` names the
/// step's output node in its place, and the caller binds the product's buffer there. None for
/// a step without an epilogue (the library writes the output itself).
pub fn epilogue(step: &Step, name: &str) -> Option<Source> {
    let Step::MatMul {
        out,
        a,
        b,
        epilogue: Some(e),
        ..
    } = step
    else {
        return None;
    };
    let r = b.1.axes.len();
    let (k, n) = (b.1.axes[r - 1].len, b.1.axes[r - 2].len);
    let threads = a.1.numel() / k.max(1) * n;
    let mut g = Gen::new(name);
    let product = g.input(*out);
    let mut c = format!("    T acc = in_{product}[i];\n");
    if let Some((node, off)) = e.bias {
        let pc = g.input(node);
        let _ = writeln!(c, "    acc += in_{pc}[{off}ULL + i % {n}ULL];");
    }
    if let Some(u) = e.act {
        let _ = writeln!(c, "    acc = {};", unary(u, "acc"));
    }
    c.push_str("    out[i] = acc;");
    g.body(&c);
    Some(g.finish(*out, threads, false))
}

/// A kernel being printed: its inputs, helper functions and tables, and its body.
struct Gen {
    name: String,
    inputs: Vec<usize>,
    before: String,
    body: String,
}

impl Gen {
    fn new(name: &str) -> Gen {
        Gen {
            name: name.to_string(),
            inputs: Vec::new(),
            before: String::new(),
            body: String::new(),
        }
    }

    /// The parameter index of input node `node` (added on first use).
    fn input(&mut self, node: usize) -> usize {
        match self.inputs.iter().position(|&n| n == node) {
            Some(p) => p,
            None => {
                self.inputs.push(node);
                self.inputs.len() - 1
            }
        }
    }

    fn params(&self) -> String {
        (0..self.inputs.len())
            .map(|k| format!(", const T* __restrict__ in_{k}"))
            .collect()
    }

    fn args(&self) -> String {
        (0..self.inputs.len())
            .map(|k| format!(", in_{k}"))
            .collect()
    }

    fn body(&mut self, code: &str) {
        self.body.push_str(code);
        self.body.push('\n');
    }

    /// A constant table `{name}_{what}`.
    fn table(&mut self, what: &str, values: impl Iterator<Item = u32>) {
        let v: Vec<String> = values.map(|x| x.to_string()).collect();
        let _ = writeln!(
            self.before,
            "static __device__ const unsigned int {}_{what}[{}] = {{{}}};",
            self.name,
            v.len().max(1),
            if v.is_empty() {
                "0".into()
            } else {
                v.join(", ")
            }
        );
    }

    /// A function computing element e of an elementwise kernel; returns its name. Its inputs
    /// become the kernel's first parameters.
    fn element(&mut self, kernel: &Kernel) -> String {
        for (node, _) in &kernel.leaves {
            self.input(*node);
        }
        let at = format!("{}_at", self.name);
        let _ = writeln!(
            self.before,
            "static __device__ T {at}(unsigned long long e{}) {{",
            self.params()
        );
        for (r, ins) in kernel.code.iter().enumerate() {
            let v = match *ins {
                Instr::Load(k) => {
                    let (node, view) = &kernel.leaves[k];
                    read(view, self.input(*node), "e")
                }
                Instr::Const(v) => literal(v),
                Instr::Un(u, a) => unary(u, &format!("r{a}")),
                Instr::Bin(op, a, b) => match op {
                    BinOp::Add => format!("r{a} + r{b}"),
                    BinOp::Mul => format!("r{a} * r{b}"),
                    BinOp::Mod => format!("TF_FMOD(r{a}, r{b})"),
                    BinOp::Lt => format!("(r{a} < r{b}) ? (T)1 : (T)0"),
                    BinOp::Eq => format!("(r{a} == r{b}) ? (T)1 : (T)0"),
                },
            };
            let _ = writeln!(self.before, "    const T r{r} = {v};");
        }
        let _ = writeln!(self.before, "    return r{};\n}}", kernel.code.len() - 1);
        at
    }

    fn finish(self, out: usize, threads: usize, zero_out: bool) -> Source {
        let params = self.params();
        let mut code = self.before;
        let _ = writeln!(
            code,
            "TF_EXTERN __global__ void {}(T* __restrict__ out{}, unsigned long long threads) {{",
            self.name, params
        );
        code.push_str("    const unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;\n    if (i >= threads) return;\n");
        code.push_str(&self.body);
        code.push_str("}\n");
        Source {
            name: self.name,
            code,
            out,
            inputs: self.inputs,
            threads,
            zero_out,
        }
    }
}

/// A unary primitive applied to the C expression `a`.
fn unary(u: UnOp, a: &str) -> String {
    match u {
        UnOp::Log2 => format!("TF_LOG2({a})"),
        UnOp::Exp2 => format!("TF_EXP2({a})"),
        UnOp::Sin => format!("TF_SIN({a})"),
        UnOp::Sqrt => format!("TF_SQRT({a})"),
        UnOp::Recip => format!("(T)1 / ({a})"),
        UnOp::Tanh => format!("TF_TANH({a})"),
    }
}

/// Reading element `e` (a C expression) of parameter `in_{p}` through `view` (padding reads 0).
fn read(view: &View, p: usize, e: &str) -> String {
    match index(view, e) {
        (i, None) => format!("in_{p}[{i}]"),
        (i, Some(c)) => format!("(({c}) ? in_{p}[{i}] : (T)0)"),
    }
}

/// How a generated language writes [`index_with`]'s integer arithmetic.
pub(crate) struct IntSyntax {
    /// An unsigned literal (element numbers and axis lengths).
    pub unsigned: fn(u64) -> String,
    /// A signed literal (buffer positions, strides, padding bounds).
    pub signed: fn(i64) -> String,
    /// An unsigned expression converted to signed.
    pub to_signed: fn(&str) -> String,
    /// A condition that is never true.
    pub never: &'static str,
}

/// C's: 64-bit element numbers and positions.
const C_INTS: IntSyntax = IntSyntax {
    unsigned: |v| format!("{v}ULL"),
    signed: |v| format!("{v}LL"),
    to_signed: |x| format!("(long long)({x})"),
    never: "0",
};

/// The buffer position of logical element `e` (a C expression) of `view`, and the condition
/// that it is not padding (None: never padding).
fn index(view: &View, e: &str) -> (String, Option<String>) {
    index_with(view, e, &C_INTS)
}

/// The buffer position of logical element `e` of `view` written in syntax `s`, and the
/// condition that it is not padding (None: never padding): both generators' index math.
pub(crate) fn index_with(view: &View, e: &str, s: &IntSyntax) -> (String, Option<String>) {
    let mut terms: Vec<String> = Vec::new();
    let mut conds: Vec<String> = Vec::new();
    // Logical index j_a = (e / Π_{b>a} len_b) mod len_a (the outermost axis needs no mod).
    let mut inner = 1u64;
    for (a, axis) in view.axes.iter().enumerate().rev() {
        let len = axis.len as u64;
        let masked = axis.lo > 0 || axis.hi < axis.len;
        if len > 1 && (axis.stride != 0 || masked) {
            let div = if inner == 1 {
                format!("({e})")
            } else {
                format!("(({e}) / {})", (s.unsigned)(inner))
            };
            let j = if a == 0 {
                (s.to_signed)(&div)
            } else {
                (s.to_signed)(&format!("{div} % {}", (s.unsigned)(len)))
            };
            if axis.stride != 0 {
                terms.push(format!("{j} * {}", (s.signed)(axis.stride as i64)));
            }
            if masked {
                let (lo, hi) = ((s.signed)(axis.lo as i64), (s.signed)(axis.hi as i64));
                conds.push(format!("({j} >= {lo} && {j} < {hi})"));
            }
        } else if masked && !(axis.lo == 0 && axis.hi >= 1) {
            // A length-1 axis whose only index is padding.
            conds.push(s.never.into());
        }
        inner *= len.max(1);
    }
    let mut index = (s.signed)(view.offset);
    for t in terms {
        index = format!("{index} + {t}");
    }
    (index, (!conds.is_empty()).then(|| conds.join(" && ")))
}

/// The spline's forward pass for coordinate i of `in_{px}` with parameters `in_{pt}[i·P …]`
/// (see [`super::rqs`]): declares the softmax probabilities `pr`, knots `lo`, sizes `size`,
/// the bin `kf`, the cell `cx cw cy ch`, the knot derivatives `d0 d1` and their softplus
/// slopes `sig0 sig1`, `s`, `delta`, `xi` (clamped to [0, 1]; `clamped` says it was), the
/// value `val` and the log-derivative `lg` (both before the tails), `inside`.
fn spline_values(rqs: &super::rqs::Rqs, px: usize, pt: usize) -> String {
    use super::rqs::MIN_DERIVATIVE;
    let (k, b) = (rqs.bins, rqs.bound);
    let p = rqs.n_params();
    let SplineConsts { scale, floor, c0 } = SplineConsts::of(rqs);
    let located = usize::from(rqs.inverse);
    let lit = |v: f64| literal(v);
    let mut c = String::new();
    let _ = writeln!(
        c,
        "    const T B = {}, x = in_{px}[i];\n    const T* th = in_{pt} + i * {p}ULL;\n    const int inside = (-B < x && x < B);\n    const T xc = x < -B ? -B : (x > B ? B : x);\n    T pr[2][{k}], lo[2][{k}], size[2][{k}];\n    for (int axis = 0; axis < 2; axis++) {{\n        const T* t = th + axis * {k};\n        T mx = t[0];\n        for (int j = 1; j < {k}; j++) if (t[j] > mx) mx = t[j];\n        T sum = (T)0;\n        for (int j = 0; j < {k}; j++) {{ pr[axis][j] = TF_EXP2((t[j] - mx) * {log2e}); sum += pr[axis][j]; }}\n        const T inv = (T)1 / sum;\n        T acc = -B;\n        for (int j = 0; j < {k}; j++) {{ pr[axis][j] = pr[axis][j] * inv; const T sz = {floor} + {scale} * pr[axis][j]; lo[axis][j] = acc; size[axis][j] = sz; acc += sz; }}\n    }}",
        lit(b),
        log2e = lit(std::f64::consts::LOG2_E),
        floor = lit(floor),
        scale = lit(scale),
    );
    let _ = writeln!(
        c,
        "    int kf = 0;\n    for (int j = 1; j < {k}; j++) if (xc >= lo[{located}][j]) kf++;\n    const T cx = lo[0][kf], cw = size[0][kf], cy = lo[1][kf], ch = size[1][kf];\n    const T u0 = (kf > 0 ? th[{k2} + kf - 1] : (T)0) + {c0}, u1 = (kf < {km1} ? th[{k2} + kf] : (T)0) + {c0};\n    const T d0 = kf > 0 ? {md} + tf_softplus(u0) : (T)1, sig0 = kf > 0 ? tf_sigmoid(u0) : (T)0;\n    const T d1 = kf < {km1} ? {md} + tf_softplus(u1) : (T)1, sig1 = kf < {km1} ? tf_sigmoid(u1) : (T)0;\n    const T s = ch / cw, delta = d1 + d0 - (T)2 * s;",
        k2 = 2 * k,
        km1 = k as i64 - 1,
        md = lit(MIN_DERIVATIVE),
        c0 = lit(c0),
    );
    if rqs.inverse {
        c.push_str("    const T dy = xc - cy, qa = ch * (s - d0) + dy * delta, qb = ch * d0 - dy * delta, qc = -s * dy;\n    T disc = qb * qb - (T)4 * qa * qc;\n    disc = disc > (T)0 ? disc : (T)0;\n    const T raw = (T)2 * qc / (-qb - TF_SQRT(disc));\n");
    } else {
        c.push_str("    const T raw = (xc - cx) / cw;\n");
    }
    let _ = writeln!(
        c,
        "    const int clamped = !(raw >= (T)0 && raw <= (T)1);\n    const T xi = raw < (T)0 ? (T)0 : (raw > (T)1 ? (T)1 : raw);\n    const T om = (T)1 - xi, t = xi * om, den = s + delta * t;\n    const T pp = d1 * xi * xi + (T)2 * s * t + d0 * om * om;\n    const T lg = tf_ln(s * s * pp) - (T)2 * tf_ln(den);\n    const T val = {};",
        if rqs.inverse {
            "cx + xi * cw"
        } else {
            "cy + ch * (s * xi * xi + d0 * t) / den"
        },
    );
    c
}

/// The spline's thread: the value at `out[2i]` and the log-derivative at `out[2i + 1]`.
fn spline(rqs: &super::rqs::Rqs, px: usize, pt: usize) -> String {
    let mut c = spline_values(rqs, px, pt);
    let _ = writeln!(
        c,
        "    out[2 * i] = inside ? val : x;\n    out[2 * i + 1] = inside ? {} : (T)0;",
        if rqs.inverse { "-lg" } else { "lg" }
    );
    c
}

/// The spline adjoint's thread: with the output adjoints `in_{pg}[2i]` (value) and
/// `[2i + 1]` (log-derivative), ∂L/∂x at `out[i(P+1)]` and ∂L/∂θ_j at `out[i(P+1) + 1 + j]`:
/// through the cell (the implicit function ξ(y) for the inverse), the knots' cumulative sums,
/// the affine floor, the softmax and the softplus, as [`super::rqs`] does.
fn spline_adjoint(rqs: &super::rqs::Rqs, px: usize, pt: usize, pg: usize) -> String {
    let (k, p) = (rqs.bins, rqs.n_params());
    let scale = SplineConsts::of(rqs).scale;
    let mut c = spline_values(rqs, px, pt);
    let _ = writeln!(
        c,
        "    const T gv = in_{pg}[2 * i], gl = in_{pg}[2 * i + 1];\n    T gx, adj[6];"
    );
    if rqs.inverse {
        c.push_str("    {\n        T first[5], second[5];\n        tf_cell_adjoint(cw, ch, d0, d1, xi, (T)0, -gl, first);\n        const T lambda = (first[0] + gv * cw) / (cw * tf_cell_slope(cw, ch, d0, d1, xi));\n        tf_cell_adjoint(cw, ch, d0, d1, xi, -lambda, (T)0, second);\n        gx = lambda;\n        adj[0] = gv; adj[1] = gv * xi + first[1] + second[1]; adj[2] = -lambda;\n        adj[3] = first[2] + second[2]; adj[4] = first[3] + second[3]; adj[5] = first[4] + second[4];\n    }\n");
    } else {
        c.push_str("    {\n        T r[5];\n        tf_cell_adjoint(cw, ch, d0, d1, xi, gv, gl, r);\n        gx = clamped ? (T)0 : r[0] / cw;\n        const T w_from_xi = clamped ? (T)0 : r[0] * xi / cw;\n        adj[0] = -gx; adj[1] = r[1] - w_from_xi; adj[2] = gv; adj[3] = r[2]; adj[4] = r[3]; adj[5] = r[4];\n    }\n");
    }
    let _ = writeln!(
        c,
        "    if (!inside) {{ gx = gv; for (int m = 0; m < 6; m++) adj[m] = (T)0; }}\n    T* o = out + i * {p1}ULL;\n    o[0] = gx;\n    for (int axis = 0; axis < 2; axis++) {{\n        const T xbar = adj[2 * axis], sbar = adj[2 * axis + 1];\n        T pb[{k}], dot = (T)0;\n        for (int j = 0; j < {k}; j++) {{ pb[j] = {scale} * (j < kf ? xbar : (j == kf ? sbar : (T)0)); dot += pr[axis][j] * pb[j]; }}\n        for (int j = 0; j < {k}; j++) o[1 + axis * {k} + j] = pr[axis][j] * (pb[j] - dot);\n    }}\n    for (int j = 0; j + 1 < {k}; j++) o[1 + {k2} + j] = (kf == j + 1 ? adj[4] * sig0 : (T)0) + (kf == j ? adj[5] * sig1 : (T)0);",
        p1 = p + 1,
        scale = literal(scale),
        k2 = 2 * k,
    );
    c
}

/// A table scatter's columns by output position: position kk of a row receives the source
/// columns `cols[start[kk] .. start[kk + 1]]`, ascending (the CPU's order).
pub(crate) fn put_lists(table: &[u32], in_row: usize) -> (Vec<u32>, Vec<u32>) {
    let mut lists: Vec<Vec<u32>> = vec![Vec::new(); in_row];
    for (c, &k) in table.iter().enumerate() {
        lists[k as usize].push(c as u32);
    }
    let mut start = vec![0u32];
    for l in &lists {
        start.push(start[start.len() - 1] + l.len() as u32);
    }
    (start, lists.into_iter().flatten().collect())
}

/// The spline's constants ([`super::rqs`]): the knots' spacing `scale` · softmax + `floor`,
/// and the softplus shift c₀ that makes zero parameters the identity.
pub(crate) struct SplineConsts {
    pub scale: f64,
    pub floor: f64,
    pub c0: f64,
}

impl SplineConsts {
    pub(crate) fn of(rqs: &super::rqs::Rqs) -> SplineConsts {
        use super::rqs::{MIN_BIN, MIN_DERIVATIVE};
        let (k, b) = (rqs.bins as f64, rqs.bound);
        SplineConsts {
            scale: 2.0 * b * (1.0 - MIN_BIN * k),
            floor: 2.0 * b * MIN_BIN,
            c0: ((1.0 - MIN_DERIVATIVE).exp() - 1.0).ln(),
        }
    }
}

/// A constant as a C literal of type T (infinities and NaN included).
fn literal(v: f64) -> String {
    if v.is_nan() {
        "TF_NAN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "TF_INF" } else { "-TF_INF" }.into()
    } else {
        // Shortest round-trip decimal of the f64, in exponent form.
        format!("(T){v:e}")
    }
}

/// Every step's kernel of a plan, named `k{step index}`.
pub fn kernels<T: super::Scalar>(plan: &super::plan::Plan<T>) -> Vec<Source> {
    plan.steps
        .iter()
        .enumerate()
        .map(|(i, s)| kernel(s, plan.ir.nodes[s.out()].len, &format!("k{i}")))
        .collect()
}

/// One generated kernel of a plan that has run, with what it reads and what the CPU wrote.
#[derive(Clone, Debug)]
pub struct Case {
    /// The kernel.
    pub source: Source,
    /// The buffers of [`Source::inputs`], in order.
    pub inputs: Vec<Vec<f64>>,
    /// The CPU's result ([`Source::out`]'s buffer).
    pub expected: Vec<f64>,
}

/// Every kernel of a plan that has run ([`super::Program::inspect`]), with
/// the buffers it reads and the CPU's result: a backend runs each on those inputs and compares.
pub fn cases<T: super::Scalar>(plan: &super::plan::Plan<T>, store: &[Vec<T>]) -> Vec<Case> {
    let f64s = |node: usize| -> Vec<f64> {
        plan.buffer(store, node)
            .iter()
            .map(|v| v.to_f64())
            .collect()
    };
    kernels(plan)
        .into_iter()
        .map(|source| Case {
            inputs: source.inputs.iter().map(|&n| f64s(n)).collect(),
            expected: f64s(source.out),
            source,
        })
        .collect()
}

/// How far a backend's `got` is from the CPU's `want`: |got − want| / (1 + |want|); 0 where
/// both are NaN or the same infinity, ∞ where only one is finite or NaN.
pub fn difference(got: f64, want: f64) -> f64 {
    if want.is_nan() || got.is_nan() {
        return if want.is_nan() && got.is_nan() {
            0.0
        } else {
            f64::INFINITY
        };
    }
    if want.is_infinite() || got.is_infinite() {
        return if want == got { 0.0 } else { f64::INFINITY };
    }
    (got - want).abs() / (1.0 + want.abs())
}

/// Whether a backend's `got` equals the CPU's `want` within `rel` ([`difference`]).
pub fn agrees(got: f64, want: f64, rel: f64) -> bool {
    difference(got, want) <= rel
}
