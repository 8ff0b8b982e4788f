//! CUDA C source for a plan's elementwise and reduction kernels, printed from the description
//! the CPU executor interprets ([`super::plan::Kernel`]: strided leaf views and an SSA instruction list).
//!
//! One thread per output element. Element e of a kernel reads each leaf through its view
//! ([`super::view::View`]):
//!
//! ```text
//! j = unravel(e, lens)                          (row-major, last axis fastest)
//! leaf_k(e) = valid(j) ? in_k[offset + Σ_a j_a · stride_a] : 0
//! ```
//!
//! then runs the instructions in order (register i holds instruction i's value). A fused
//! kernel's thread e stores the last register at `out[e]`; a reduction's thread o folds its k
//! elements o·k … o·k + k − 1 in order (Σ from 0, max from the first, NaN winning), as the CPU
//! does.
//!
//! The source is C as well as CUDA: [`prelude`] defines the element type and the math
//! functions, and a host compiler given [`HOST_SHIM`] (block and thread indices as globals,
//! `__global__` and `__device__` as nothing) compiles the same kernels, which is how they are
//! tested on machines without a GPU. The CUDA backend compiles them with NVRTC.

use std::fmt::Write;

use super::ir::{BinOp, RedOp, UnOp};
use super::plan::{Instr, Step};
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
}

/// What every generated file starts with: the element type `T` and its math functions.
pub fn prelude(p: Precision) -> String {
    let (t, f) = match p {
        Precision::F32 => ("float", "f"),
        Precision::F64 => ("double", ""),
    };
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
    s
}

/// What a host C compiler needs before [`prelude`] to compile the kernels as C: thread and
/// block indices as globals that a loop sets before each call.
pub const HOST_SHIM: &str = "#include <math.h>\n#define __global__\n#define __device__\n#define __restrict__ restrict\ntypedef struct { unsigned int x, y, z; } tf_dim3;\nstatic tf_dim3 blockIdx, blockDim, threadIdx;\n";

/// The kernel of a fused or reduction step (None for other steps: gemms, scatters, gathers
/// by table and the spline have their own kernels).
pub fn kernel(step: &Step, name: &str) -> Option<Source> {
    let (out, kernel, fold) = match step {
        Step::Fused { out, kernel } => (*out, kernel, None),
        Step::Reduce { out, op, kernel, k } => (*out, kernel, Some((*op, *k))),
        _ => return None,
    };
    let mut inputs: Vec<usize> = Vec::new();
    for (node, _) in &kernel.leaves {
        if !inputs.contains(node) {
            inputs.push(*node);
        }
    }
    let params: String = (0..inputs.len())
        .map(|k| format!(", const T* __restrict__ in_{k}"))
        .collect();
    let args: String = (0..inputs.len()).map(|k| format!(", in_{k}")).collect();
    let mut c = String::new();
    // Element e of the kernel's iteration space.
    let _ = writeln!(
        c,
        "static __device__ T {name}_at(unsigned long long e{params}) {{"
    );
    for (r, ins) in kernel.code.iter().enumerate() {
        let v = match *ins {
            Instr::Load(k) => {
                let (node, view) = &kernel.leaves[k];
                let p = inputs.iter().position(|n| n == node).expect("listed above");
                load(view, p)
            }
            Instr::Const(v) => literal(v),
            Instr::Un(u, a) => match u {
                UnOp::Log2 => format!("TF_LOG2(r{a})"),
                UnOp::Exp2 => format!("TF_EXP2(r{a})"),
                UnOp::Sin => format!("TF_SIN(r{a})"),
                UnOp::Sqrt => format!("TF_SQRT(r{a})"),
                UnOp::Recip => format!("(T)1 / r{a}"),
                UnOp::Tanh => format!("TF_TANH(r{a})"),
            },
            Instr::Bin(op, a, b) => match op {
                BinOp::Add => format!("r{a} + r{b}"),
                BinOp::Mul => format!("r{a} * r{b}"),
                BinOp::Mod => format!("TF_FMOD(r{a}, r{b})"),
                BinOp::Lt => format!("(r{a} < r{b}) ? (T)1 : (T)0"),
                BinOp::Eq => format!("(r{a} == r{b}) ? (T)1 : (T)0"),
            },
        };
        let _ = writeln!(c, "    const T r{r} = {v};");
    }
    let _ = writeln!(c, "    return r{};\n}}", kernel.code.len() - 1);
    let _ = writeln!(
        c,
        "TF_EXTERN __global__ void {name}(T* __restrict__ out{params}, unsigned long long threads) {{"
    );
    c.push_str("    const unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;\n    if (i >= threads) return;\n");
    let threads = match fold {
        None => {
            let _ = writeln!(c, "    out[i] = {name}_at(i{args});");
            kernel.n
        }
        Some((op, k)) => {
            if k == 0 {
                let empty = match op {
                    RedOp::Sum => "(T)0",
                    RedOp::Max => "-TF_INF",
                };
                let _ = writeln!(c, "    out[i] = {empty};");
            } else {
                let _ = writeln!(
                    c,
                    "    const unsigned long long e0 = i * {k}ULL;\n    T acc = {};\n    for (unsigned long long e = e0 + 1; e < e0 + {k}ULL; e++) {{\n        const T x = {name}_at(e{args});",
                    match op {
                        RedOp::Sum => format!("(T)0 + {name}_at(e0{args})"),
                        RedOp::Max => format!("{name}_at(e0{args})"),
                    }
                );
                let fold = match op {
                    RedOp::Sum => "acc += x;",
                    // NaN wins, as on the CPU.
                    RedOp::Max => "if (x > acc || x != x) acc = x;",
                };
                let _ = writeln!(c, "        {fold}\n    }}\n    out[i] = acc;");
            }
            kernel.n / k.max(1)
        }
    };
    c.push_str("}\n");
    Some(Source {
        name: name.to_string(),
        code: c,
        out,
        inputs,
        threads,
    })
}

/// The gather of one leaf at element `e` through `view`, reading parameter `in_{p}`.
fn load(view: &View, p: usize) -> String {
    if view.axes.is_empty() {
        return format!("in_{p}[{}]", view.offset);
    }
    let mut terms: Vec<String> = Vec::new();
    let mut conds: Vec<String> = Vec::new();
    // Logical index j_a = (e / Π_{b>a} len_b) mod len_a (the outermost axis needs no mod).
    let mut inner = 1u64;
    for (a, axis) in view.axes.iter().enumerate().rev() {
        let len = axis.len as u64;
        let masked = axis.lo > 0 || axis.hi < axis.len;
        if len > 1 && (axis.stride != 0 || masked) {
            let div = if inner == 1 {
                "e".to_string()
            } else {
                format!("(e / {inner}ULL)")
            };
            let j = if a == 0 {
                format!("(long long){div}")
            } else {
                format!("(long long)({div} % {len}ULL)")
            };
            if axis.stride != 0 {
                terms.push(format!("{j} * {}LL", axis.stride));
            }
            if masked {
                conds.push(format!("({j} >= {}LL && {j} < {}LL)", axis.lo, axis.hi));
            }
        } else if masked {
            // A length-1 axis whose only index is padding.
            conds.push(if axis.lo == 0 && axis.hi >= 1 {
                "1".into()
            } else {
                "0".into()
            });
        }
        inner *= len.max(1);
    }
    let mut index = format!("{}LL", view.offset);
    for t in terms {
        index = format!("{index} + {t}");
    }
    if conds.is_empty() {
        format!("in_{p}[{index}]")
    } else {
        format!("({}) ? in_{p}[{index}] : (T)0", conds.join(" && "))
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

/// Every fused and reduction kernel of a plan's `steps`, named `k{step index}`.
pub fn kernels(steps: &[Step]) -> Vec<Source> {
    steps
        .iter()
        .enumerate()
        .filter_map(|(i, s)| kernel(s, &format!("k{i}")))
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

/// Every fused and reduction kernel of a plan that has run ([`super::Program::inspect`]), with
/// the buffers it reads and the CPU's result: a backend runs each on those inputs and compares.
pub fn cases<T: super::Scalar>(plan: &super::plan::Plan<T>, store: &[Vec<T>]) -> Vec<Case> {
    let f64s = |node: usize| -> Vec<f64> {
        plan.buffer(store, node)
            .iter()
            .map(|v| v.to_f64())
            .collect()
    };
    kernels(&plan.steps)
        .into_iter()
        .map(|source| Case {
            inputs: source.inputs.iter().map(|&n| f64s(n)).collect(),
            expected: f64s(source.out),
            source,
        })
        .collect()
}

/// Whether a backend's `got` equals the CPU's `want` within `rel` (relative to 1 + |want|);
/// NaN matches NaN and an infinity itself.
pub fn agrees(got: f64, want: f64, rel: f64) -> bool {
    if want.is_nan() || got.is_nan() {
        return want.is_nan() && got.is_nan();
    }
    if want.is_infinite() || got.is_infinite() {
        return want == got;
    }
    (got - want).abs() <= rel * (1.0 + want.abs())
}
