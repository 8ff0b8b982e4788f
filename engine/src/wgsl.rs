//! WGSL source for a plan's steps, the same kernels as [`super::codegen`]'s CUDA C printed in
//! the WebGPU shading language (f32 only: WGSL has no f64), for the `wgpu` backend
//! (`webgpu`, feature `wgpu`), which runs them on Metal, Vulkan or DX12.
//!
//! One invocation per output element, 256 per workgroup; element e of an elementwise kernel
//! reads each leaf through its view:
//!
//! ```text
//! j = unravel(e, lens)                          (row-major, last axis fastest)
//! leaf_k(e) = valid(j) ? in_k[offset + Σ_a j_a · stride_a] : 0
//! ```
//!
//! then runs the instructions in order, as the CUDA kernels do (see there for every kind of
//! step), except the gemm, which is tiled: a workgroup computes a 16 × 16 block of C from
//! 16 × 16 tiles of A and B staged in workgroup memory (`TILE`). What differs from C: integers are 32-bit (u32 element numbers, i32 buffer
//! positions, so a buffer holds at most 2³¹ elements); a view adjoint adds into its output
//! through a compare-and-swap loop on the f32's bits (WGSL has no float atomics); the tables
//! of a gather or a table scatter are storage buffers bound after the inputs; infinities and
//! NaN come from bit patterns; `tanh` is written out through exp2 (the builtin overflows for
//! large |x| on some drivers).
//!
//! Bindings: 0 the output (`array<f32>`, or `array<atomic<u32>>` for a view adjoint), then
//! the inputs in [`Shader::inputs`] order, then the tables. A launch covers
//! [`Shader::threads`] invocations over a grid of (x, y) workgroups ([`grid`]).

use std::fmt::Write;

use super::codegen::{index_with, IntSyntax};
use super::ir::{BinOp, RedOp, UnOp};
use super::plan::{Instr, Kernel, Step};
use super::view::View;

/// Invocations per workgroup.
pub const WORKGROUP: usize = 256;

/// One generated kernel: a whole WGSL module with entry point `main`.
#[derive(Clone, Debug)]
pub struct Shader {
    /// The kernel's name (a label).
    pub name: String,
    /// The module's source.
    pub code: String,
    /// The node written.
    pub out: usize,
    /// The nodes read, in binding order after the output.
    pub inputs: Vec<usize>,
    /// Constant u32 tables, bound after the inputs.
    pub tables: Vec<Vec<u32>>,
    /// Invocations to launch (one per output element).
    pub threads: usize,
    /// The output must be zeroed before the launch (the kernel adds into it atomically).
    pub zero_out: bool,
}

/// Workgroups (x, y) covering `threads` invocations: at most 65 535 per dimension (WebGPU's
/// guaranteed limit), invocation i = x·256 + y·(groups_x·256) + local.
pub fn grid(threads: usize) -> (u32, u32) {
    let groups = threads.div_ceil(WORKGROUP).max(1);
    let x = groups.min(65_535);
    (x as u32, groups.div_ceil(x) as u32)
}

/// What every module starts with: math helpers shared by the kernels.
const PRELUDE: &str = "fn tf_inf() -> f32 { return bitcast<f32>(0x7f800000u); }
fn tf_nan() -> f32 { return bitcast<f32>(0x7fc00000u); }
fn tf_ln(v: f32) -> f32 { return log2(v) * 0.6931471805599453; }
fn tf_tanh(v: f32) -> f32 {
    let e = exp2(-2.8853900817779268 * abs(v));
    let t = (1.0 - e) / (1.0 + e);
    return select(t, -t, v < 0.0);
}
fn tf_softplus(u: f32) -> f32 {
    let e = exp2(select(u, -u, u > 0.0) * 1.4426950408889634);
    return select(0.0, u, u > 0.0) + tf_ln(1.0 + e);
}
fn tf_sigmoid(u: f32) -> f32 {
    let e = exp2(select(u, -u, u > 0.0) * 1.4426950408889634);
    return select(e / (1.0 + e), 1.0 / (1.0 + e), u > 0.0);
}
fn tf_cell_slope(w: f32, h: f32, d0: f32, d1: f32, xi: f32) -> f32 {
    let s = h / w; let om = 1.0 - xi; let t = xi * om; let den = s + (d1 + d0 - 2.0 * s) * t;
    return s * s * (d1 * xi * xi + 2.0 * s * t + d0 * om * om) / (den * den);
}
fn tf_cell_adjoint(w: f32, h: f32, d0: f32, d1: f32, xi: f32, gy: f32, glq: f32) -> array<f32, 5> {
    let s = h / w; let om = 1.0 - xi; let t = xi * om; let den = s + (d1 + d0 - 2.0 * s) * t;
    let q = s * xi * xi + d0 * t; let r = h * q / den; let p = d1 * xi * xi + 2.0 * s * t + d0 * om * om;
    let num_bar = gy / den; let den_bar = 0.0 - gy * r / den - 2.0 * glq / den;
    var s_bar = 2.0 * glq / s;
    let p_bar = glq / p;
    var b_d1 = p_bar * xi * xi; var b_xi = p_bar * (2.0 * d1 * xi - 2.0 * d0 * om); var b_d0 = p_bar * om * om;
    s_bar += p_bar * 2.0 * t;
    var t_bar = p_bar * 2.0 * s; var b_h = num_bar * q;
    let q_bar = num_bar * h;
    s_bar += q_bar * xi * xi;
    b_xi += q_bar * 2.0 * s * xi;
    b_d0 += q_bar * t;
    t_bar += q_bar * d0;
    s_bar += den_bar * (1.0 - 2.0 * t);
    b_d1 += den_bar * t;
    b_d0 += den_bar * t;
    t_bar += den_bar * (d1 + d0 - 2.0 * s);
    b_xi += t_bar * (1.0 - 2.0 * xi);
    b_h += s_bar / w;
    return array<f32, 5>(b_xi, 0.0 - s_bar * s / w, b_h, b_d0, b_d1);
}
";

/// The kernel of a step whose output has `out_len` elements.
pub fn shader(step: &Step, out_len: usize, name: &str) -> Shader {
    let mut g = Gen::new(name);
    let (out, threads, zero_out) = match step {
        Step::Fused { out, kernel } => {
            g.element(kernel);
            g.body("    out[i] = at(i);");
            (*out, kernel.n, false)
        }
        Step::Reduce { out, op, kernel, k } => {
            g.element(kernel);
            let k = *k;
            if k == 0 {
                let empty = match op {
                    RedOp::Sum => "0.0",
                    RedOp::Max => "-tf_inf()",
                };
                g.body(&format!("    out[i] = {empty};"));
            } else {
                let (first, fold) = match op {
                    RedOp::Sum => ("0.0 + at(e0)", "acc += x;"),
                    // NaN wins, as on the CPU.
                    RedOp::Max => ("at(e0)", "if (x > acc || x != x) { acc = x; }"),
                };
                g.body(&format!(
                    "    let e0 = i * {k}u;\n    var acc: f32 = {first};\n    for (var e = e0 + 1u; e < e0 + {k}u; e++) {{\n        let x = at(e);\n        {fold}\n    }}\n    out[i] = acc;"
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
                g.body("    out[i] = 0.0;");
                (*out, out_len, false)
            } else {
                let (ra, rb) = (read(&a.1, pa, "ea"), read(&b.1, pb, "eb"));
                let mut epi = String::new();
                if let Some(e) = epilogue {
                    if let Some((node, off)) = e.bias {
                        let pc = g.input(node);
                        let _ = writeln!(epi, "        acc += in_{pc}[{off}u + nn];");
                    }
                    if let Some(u) = e.act {
                        let _ = writeln!(epi, "        acc = {};", unary(u, "acc"));
                    }
                }
                let groups = tiled_matmul(&mut g, (m, k, n), out_len / (m * n), &ra, &rb, &epi);
                (*out, groups * WORKGROUP, false)
            }
        }
        Step::Scatter {
            out,
            g: grad,
            target,
        } => {
            let pg = g.input(grad.0);
            let v = read(&grad.1, pg, "i");
            let (index, cond) = index(target, "i");
            let add = format!("tf_add_out(u32({index}), {v});");
            g.body(&match cond {
                Some(c) => format!("    if ({c}) {{ {add} }}"),
                None => format!("    {add}"),
            });
            g.atomic = true;
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
            let t = g.table(table.to_vec());
            g.body(&format!(
                "    out[i] = in_{ps}[(i / {m}u) * {in_row}u + {t}[i % {m}u]];"
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
            let (start, cols) = super::codegen::put_lists(table, *in_row);
            let (ts, tc) = (g.table(start), g.table(cols));
            g.body(&format!(
                "    let r = i / {in_row}u; let kk = i % {in_row}u;\n    var acc: f32 = 0.0;\n    for (var q = {ts}[kk]; q < {ts}[kk + 1u]; q++) {{ acc += in_{ps}[r * {m}u + {tc}[q]]; }}\n    out[i] = acc;"
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

/// A kernel being printed: its inputs, tables, helper function and body.
struct Gen {
    name: String,
    inputs: Vec<usize>,
    tables: Vec<Vec<u32>>,
    before: String,
    body: String,
    atomic: bool,
    /// A whole entry point of its own (the tiled gemm), instead of one invocation per element.
    main: Option<String>,
}

impl Gen {
    fn new(name: &str) -> Gen {
        Gen {
            name: name.to_string(),
            inputs: Vec::new(),
            tables: Vec::new(),
            before: String::new(),
            body: String::new(),
            atomic: false,
            main: None,
        }
    }

    /// The binding index (after the output) of input node `node` (added on first use).
    fn input(&mut self, node: usize) -> usize {
        match self.inputs.iter().position(|&n| n == node) {
            Some(p) => p,
            None => {
                self.inputs.push(node);
                self.inputs.len() - 1
            }
        }
    }

    /// A constant table; returns its variable's name.
    fn table(&mut self, values: Vec<u32>) -> String {
        self.tables
            .push(if values.is_empty() { vec![0] } else { values });
        format!("table_{}", self.tables.len() - 1)
    }

    fn body(&mut self, code: &str) {
        self.body.push_str(code);
        self.body.push('\n');
    }

    /// `fn at(e: u32) -> f32`: element e of an elementwise kernel.
    fn element(&mut self, kernel: &Kernel) {
        for (node, _) in &kernel.leaves {
            self.input(*node);
        }
        self.before.push_str("fn at(e: u32) -> f32 {\n");
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
                    BinOp::Mod => format!("r{a} % r{b}"),
                    BinOp::Lt => format!("select(0.0, 1.0, r{a} < r{b})"),
                    BinOp::Eq => format!("select(0.0, 1.0, r{a} == r{b})"),
                },
            };
            let _ = writeln!(self.before, "    let r{r}: f32 = {v};");
        }
        let _ = writeln!(self.before, "    return r{};\n}}", kernel.code.len() - 1);
    }

    fn finish(self, out: usize, threads: usize, zero_out: bool) -> Shader {
        let mut code = String::from(PRELUDE);
        let elem = if self.atomic { "atomic<u32>" } else { "f32" };
        let _ = writeln!(
            code,
            "@group(0) @binding(0) var<storage, read_write> out: array<{elem}>;"
        );
        for k in 0..self.inputs.len() {
            let _ = writeln!(
                code,
                "@group(0) @binding({}) var<storage, read> in_{k}: array<f32>;",
                k + 1
            );
        }
        for t in 0..self.tables.len() {
            let _ = writeln!(
                code,
                "@group(0) @binding({}) var<storage, read> table_{t}: array<u32>;",
                self.inputs.len() + 1 + t
            );
        }
        if self.atomic {
            code.push_str("fn tf_add_out(j: u32, v: f32) {\n    var old = atomicLoad(&out[j]);\n    loop {\n        let r = atomicCompareExchangeWeak(&out[j], old, bitcast<u32>(bitcast<f32>(old) + v));\n        if (r.exchanged) { break; }\n        old = r.old_value;\n    }\n}\n");
        }
        code.push_str(&self.before);
        if let Some(main) = &self.main {
            code.push_str(main);
        } else {
            let _ = writeln!(
                code,
                "@compute @workgroup_size({WORKGROUP})\nfn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {{\n    let i = gid.x + gid.y * groups.x * {WORKGROUP}u;\n    if (i >= {threads}u) {{ return; }}"
            );
            code.push_str(&self.body);
            code.push_str("}\n");
        }
        Shader {
            name: self.name,
            code,
            out,
            inputs: self.inputs,
            tables: self.tables,
            threads,
            zero_out,
        }
    }
}

/// Side of the gemm's tiles: a workgroup of TILE × TILE = [`WORKGROUP`] invocations computes a
/// TILE × TILE block of C.
const TILE: usize = 16;

/// The gemm as a tiled kernel: workgroup w computes the TILE × TILE block (row tile, column
/// tile) of batch item `bi` of C (`batch` items of m × n); every pass over k loads a TILE × TILE
/// tile of A and of B through their views into workgroup memory (zero outside the matrices),
/// and each invocation adds its row of the one times its column of the other, in increasing k
/// as the one-invocation-per-element form did. `ra`, `rb` read A's element `ea` and B's `eb`;
/// `epi` finishes `acc` for column `nn`. Returns the workgroups to launch.
fn tiled_matmul(
    g: &mut Gen,
    (m, k, n): (usize, usize, usize),
    batch: usize,
    ra: &str,
    rb: &str,
    epi: &str,
) -> usize {
    let (rt, ct) = (m.div_ceil(TILE), n.div_ceil(TILE));
    let groups = batch * rt * ct;
    g.main = Some(format!(
        "var<workgroup> ta: array<array<f32, {TILE}>, {TILE}>;
var<workgroup> tb: array<array<f32, {TILE}>, {TILE}>;
@compute @workgroup_size({WORKGROUP})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>, @builtin(local_invocation_index) l: u32) {{
    let w = wid.x + wid.y * groups.x;
    if (w >= {groups}u) {{ return; }}
    let ct = w % {ct}u; let bi = (w / {ct}u) / {rt}u; let rt = (w / {ct}u) % {rt}u;
    let ly = l / {TILE}u; let lx = l % {TILE}u;
    let row = rt * {TILE}u + ly; let nn = ct * {TILE}u + lx;
    var acc: f32 = 0.0;
    for (var k0 = 0u; k0 < {k}u; k0 += {TILE}u) {{
        var av: f32 = 0.0;
        if (row < {m}u && k0 + lx < {k}u) {{ let ea = (bi * {m}u + row) * {k}u + k0 + lx; av = {ra}; }}
        ta[ly][lx] = av;
        var bv: f32 = 0.0;
        let bn = ct * {TILE}u + lx;
        if (bn < {n}u && k0 + ly < {k}u) {{ let eb = (bi * {n}u + bn) * {k}u + k0 + ly; bv = {rb}; }}
        tb[ly][lx] = bv;
        workgroupBarrier();
        for (var kk = 0u; kk < {TILE}u; kk++) {{ acc += ta[ly][kk] * tb[kk][lx]; }}
        workgroupBarrier();
    }}
    if (row < {m}u && nn < {n}u) {{
{epi}        out[(bi * {m}u + row) * {n}u + nn] = acc;
    }}
}}
"
    ));
    groups
}

/// A unary primitive applied to the WGSL expression `a`.
fn unary(u: UnOp, a: &str) -> String {
    match u {
        UnOp::Log2 => format!("log2({a})"),
        UnOp::Exp2 => format!("exp2({a})"),
        UnOp::Sin => format!("sin({a})"),
        UnOp::Sqrt => format!("sqrt({a})"),
        UnOp::Recip => format!("1.0 / ({a})"),
        UnOp::Tanh => format!("tf_tanh({a})"),
    }
}

/// Reading element `e` (a u32 expression) of binding `in_{p}` through `view` (padding reads
/// 0; the padded position is not read, its index clamped to 0 under `select`).
fn read(view: &View, p: usize, e: &str) -> String {
    match index(view, e) {
        (i, None) => format!("in_{p}[u32({i})]"),
        (i, Some(c)) => format!("select(0.0, in_{p}[u32(max({i}, 0))], {c})"),
    }
}

/// WGSL's: u32 element numbers, i32 buffer positions.
const WGSL_INTS: IntSyntax = IntSyntax {
    unsigned: |v| format!("{v}u"),
    signed: |v| format!("({v})"),
    to_signed: |x| format!("i32({x})"),
    never: "false",
};

/// The buffer position (an i32 expression) of logical element `e` (u32) of `view`, and the
/// condition that it is not padding ([`super::codegen::index_with`]).
fn index(view: &View, e: &str) -> (String, Option<String>) {
    index_with(view, e, &WGSL_INTS)
}

/// The spline's forward pass for coordinate i of `in_{px}` with parameters
/// `in_{pt}[i·P …]` ([`super::rqs`]), declaring what [`super::codegen`]'s C version does.
fn spline_values(rqs: &super::rqs::Rqs, px: usize, pt: usize) -> String {
    let sc = super::codegen::SplineConsts::of(rqs);
    let (k, p, k2, km1) = (rqs.bins, rqs.n_params(), 2 * rqs.bins, rqs.bins - 1);
    let lit = literal;
    let mut c = String::new();
    let _ = writeln!(
        c,
        "    let B: f32 = {b};\n    let x = in_{px}[i];\n    let th = i * {p}u;\n    let inside = (-B < x && x < B);\n    let xc = select(select(x, B, x > B), -B, x < -B);\n    var pr: array<array<f32, {k}>, 2>;\n    var lo: array<array<f32, {k}>, 2>;\n    var size: array<array<f32, {k}>, 2>;\n    for (var axis = 0u; axis < 2u; axis++) {{\n        let t0 = th + axis * {k}u;\n        var mx = in_{pt}[t0];\n        for (var j = 1u; j < {k}u; j++) {{ if (in_{pt}[t0 + j] > mx) {{ mx = in_{pt}[t0 + j]; }} }}\n        var sum: f32 = 0.0;\n        for (var j = 0u; j < {k}u; j++) {{ pr[axis][j] = exp2((in_{pt}[t0 + j] - mx) * {log2e}); sum += pr[axis][j]; }}\n        let inv = 1.0 / sum;\n        var acc = -B;\n        for (var j = 0u; j < {k}u; j++) {{ pr[axis][j] = pr[axis][j] * inv; let sz = {floor} + {scale} * pr[axis][j]; lo[axis][j] = acc; size[axis][j] = sz; acc += sz; }}\n    }}",
        b = lit(rqs.bound),
        log2e = lit(std::f64::consts::LOG2_E),
        floor = lit(sc.floor),
        scale = lit(sc.scale),
    );
    let _ = writeln!(
        c,
        "    var kf = 0u;\n    for (var j = 1u; j < {k}u; j++) {{ if (xc >= lo[{located}][j]) {{ kf++; }} }}\n    let cx = lo[0][kf]; let cw = size[0][kf]; let cy = lo[1][kf]; let ch = size[1][kf];\n    let u0 = select(0.0, in_{pt}[th + {k2}u + max(kf, 1u) - 1u], kf > 0u) + {c0};\n    let u1 = select(0.0, in_{pt}[th + {k2}u + min(kf, {kmax}u)], kf < {km1}u) + {c0};\n    let d0 = select(1.0, {md} + tf_softplus(u0), kf > 0u); let sig0 = select(0.0, tf_sigmoid(u0), kf > 0u);\n    let d1 = select(1.0, {md} + tf_softplus(u1), kf < {km1}u); let sig1 = select(0.0, tf_sigmoid(u1), kf < {km1}u);\n    let s = ch / cw; let delta = d1 + d0 - 2.0 * s;",
        located = usize::from(rqs.inverse),
        kmax = km1.saturating_sub(1),
        md = lit(super::rqs::MIN_DERIVATIVE),
        c0 = lit(sc.c0),
    );
    if rqs.inverse {
        c.push_str("    let dy = xc - cy; let qa = ch * (s - d0) + dy * delta; let qb = ch * d0 - dy * delta; let qc = -s * dy;\n    var disc = qb * qb - 4.0 * qa * qc;\n    disc = select(0.0, disc, disc > 0.0);\n    let raw = 2.0 * qc / (-qb - sqrt(disc));\n");
    } else {
        c.push_str("    let raw = (xc - cx) / cw;\n");
    }
    let _ = writeln!(
        c,
        "    let clamped = !(raw >= 0.0 && raw <= 1.0);\n    let xi = select(select(raw, 1.0, raw > 1.0), 0.0, raw < 0.0);\n    let om = 1.0 - xi; let t = xi * om; let den = s + delta * t;\n    let pp = d1 * xi * xi + 2.0 * s * t + d0 * om * om;\n    let lg = tf_ln(s * s * pp) - 2.0 * tf_ln(den);\n    let val = {};",
        if rqs.inverse {
            "cx + xi * cw"
        } else {
            "cy + ch * (s * xi * xi + d0 * t) / den"
        },
    );
    c
}

/// The spline's invocation: the value at `out[2i]` and the log-derivative at `out[2i + 1]`.
fn spline(rqs: &super::rqs::Rqs, px: usize, pt: usize) -> String {
    let mut c = spline_values(rqs, px, pt);
    let _ = writeln!(
        c,
        "    out[2u * i] = select(x, val, inside);\n    out[2u * i + 1u] = select(0.0, {}, inside);",
        if rqs.inverse { "-lg" } else { "lg" }
    );
    c
}

/// The spline adjoint's invocation: ∂L/∂x at `out[i(P+1)]` and ∂L/∂θ_j at
/// `out[i(P+1) + 1 + j]` from the output adjoints `in_{pg}[2i]`, `[2i + 1]`.
fn spline_adjoint(rqs: &super::rqs::Rqs, px: usize, pt: usize, pg: usize) -> String {
    let (k, p) = (rqs.bins, rqs.n_params());
    let sc = super::codegen::SplineConsts::of(rqs);
    let mut c = spline_values(rqs, px, pt);
    let _ = writeln!(
        c,
        "    let gv = in_{pg}[2u * i]; let glq = in_{pg}[2u * i + 1u];\n    var gx: f32;\n    var adj: array<f32, 6>;"
    );
    if rqs.inverse {
        c.push_str("    {\n        let first = tf_cell_adjoint(cw, ch, d0, d1, xi, 0.0, -glq);\n        let lambda = (first[0] + gv * cw) / (cw * tf_cell_slope(cw, ch, d0, d1, xi));\n        let second = tf_cell_adjoint(cw, ch, d0, d1, xi, -lambda, 0.0);\n        gx = lambda;\n        adj = array<f32, 6>(gv, gv * xi + first[1] + second[1], -lambda, first[2] + second[2], first[3] + second[3], first[4] + second[4]);\n    }\n");
    } else {
        c.push_str("    {\n        let r = tf_cell_adjoint(cw, ch, d0, d1, xi, gv, glq);\n        gx = select(r[0] / cw, 0.0, clamped);\n        let w_from_xi = select(r[0] * xi / cw, 0.0, clamped);\n        adj = array<f32, 6>(-gx, r[1] - w_from_xi, gv, r[2], r[3], r[4]);\n    }\n");
    }
    let _ = writeln!(
        c,
        "    if (!inside) {{ gx = gv; adj = array<f32, 6>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0); }}\n    let o = i * {p1}u;\n    out[o] = gx;\n    for (var axis = 0u; axis < 2u; axis++) {{\n        let xbar = adj[2u * axis]; let sbar = adj[2u * axis + 1u];\n        var pb: array<f32, {k}>;\n        var dot: f32 = 0.0;\n        for (var j = 0u; j < {k}u; j++) {{ pb[j] = {scale} * select(select(0.0, sbar, j == kf), xbar, j < kf); dot += pr[axis][j] * pb[j]; }}\n        for (var j = 0u; j < {k}u; j++) {{ out[o + 1u + axis * {k}u + j] = pr[axis][j] * (pb[j] - dot); }}\n    }}\n    for (var j = 0u; j + 1u < {k}u; j++) {{ out[o + 1u + {k2}u + j] = select(0.0, adj[4] * sig0, kf == j + 1u) + select(0.0, adj[5] * sig1, kf == j); }}",
        p1 = p + 1,
        scale = literal(sc.scale),
        k2 = 2 * k,
    );
    c
}

/// A constant as a WGSL f32 expression (infinities and NaN from their bits).
fn literal(v: f64) -> String {
    let f = v as f32;
    if f.is_nan() {
        "tf_nan()".into()
    } else if f.is_infinite() {
        if f > 0.0 { "tf_inf()" } else { "-tf_inf()" }.into()
    } else {
        // Shortest round-trip decimal of the f32, in exponent form.
        format!("f32({f:e})")
    }
}

/// Every step's shader of a plan, named `k{step index}`.
pub fn shaders<T: super::Scalar>(plan: &super::plan::Plan<T>) -> Vec<Shader> {
    plan.steps
        .iter()
        .enumerate()
        .map(|(i, s)| shader(s, plan.ir.nodes[s.out()].len, &format!("k{i}")))
        .collect()
}
