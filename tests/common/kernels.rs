//! The generated CUDA kernels: the programs whose kernels are checked ([`flow_cases`]), and
//! the kernels compiled as C by the host compiler (`cc`, or `$CC`) through
//! [`codegen::HOST_SHIM`], launched as loops over blocks and threads, and compared with the CPU
//! backend's results on the same inputs ([`check`]).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use rand::{Rng, SeedableRng};
use thermoflow::engine::codegen::{self, Case, Precision};
use thermoflow::engine::{Program, Scalar};
use thermoflow::flows::builders::{
    coupling_flow, default_flow, lattice_flow, radial_flow, spin_flow,
};
use thermoflow::flows::flow::Mode;
use thermoflow::flows::{Conditioning, Flow};

/// Threads per block of the emulated launch (a partial last block exercises the bound check).
const BLOCK: usize = 64;

static RUN: AtomicUsize = AtomicUsize::new(0);

/// A fresh scratch folder.
fn scratch() -> PathBuf {
    let dir: PathBuf = std::env::temp_dir().join(format!(
        "thermoflow-codegen-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The C file's head: the shim, the prelude, and `load`/`save` of f64 files as T.
fn head(p: Precision) -> String {
    let mut c = String::from(codegen::HOST_SHIM);
    c.push_str("#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n");
    c.push_str(&codegen::prelude(p));
    c.push_str(
        "static T* load(const char* path, unsigned long long n) {\n    double* d = malloc(8 * (n + 1));\n    T* t = malloc(sizeof(T) * (n + 1));\n    FILE* f = fopen(path, \"rb\");\n    if (!f || fread(d, 8, n, f) != n) { fprintf(stderr, \"cannot read %s\\n\", path); exit(2); }\n    fclose(f);\n    for (unsigned long long i = 0; i < n; i++) t[i] = (T)d[i];\n    free(d);\n    return t;\n}\nstatic void save(const char* path, const T* t, unsigned long long n) {\n    FILE* f = fopen(path, \"wb\");\n    for (unsigned long long i = 0; i < n; i++) { double v = (double)t[i]; fwrite(&v, 8, 1, f); }\n    fclose(f);\n}\n",
    );
    c
}

/// A launch of kernel `name` over `threads` threads as loops over blocks and threads.
fn launch(name: &str, args: &str, threads: usize) -> String {
    format!(
        "        for (unsigned int b = 0; b < {}u; b++) {{\n            blockIdx.x = b;\n            for (unsigned int t = 0; t < {BLOCK}u; t++) {{ threadIdx.x = t; {name}({args}, {threads}ULL); }}\n        }}\n",
        threads.div_ceil(BLOCK)
    )
}

/// Compile `c` with the host C compiler and run it in `dir`.
fn compile_and_run(dir: &std::path::Path, c: &str) {
    std::fs::write(dir.join("kernels.c"), c).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let built = Command::new(&cc)
        .current_dir(dir)
        .args(["-std=c99", "-O1", "-o", "kernels", "kernels.c", "-lm"])
        .output()
        .unwrap_or_else(|e| panic!("the host C compiler `{cc}` did not start: {e}"));
    assert!(
        built.status.success(),
        "{cc} rejected the generated kernels ({}):\n{}",
        dir.display(),
        String::from_utf8_lossy(&built.stderr)
    );
    let ran = Command::new(dir.join("kernels"))
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
}

/// Run every case's kernel on the host in precision `p`; returns the outputs, in order.
pub fn run(cases: &[Case], p: Precision) -> Vec<Vec<f64>> {
    let dir = scratch();
    let mut c = head(p);
    let mut main = String::from("int main(void) {\n    blockDim.x = ");
    let _ = writeln!(main, "{BLOCK};");
    for (i, case) in cases.iter().enumerate() {
        let s = &case.source;
        c.push_str(&s.code);
        let _ = writeln!(main, "    {{");
        let mut args = String::new();
        for (k, buf) in case.inputs.iter().enumerate() {
            write_f64s(&dir.join(format!("c{i}_in{k}.bin")), buf);
            let _ = writeln!(
                main,
                "        T* in{k} = load(\"c{i}_in{k}.bin\", {}ULL);",
                buf.len()
            );
            let _ = write!(args, ", in{k}");
        }
        let n_out = case.expected.len();
        let _ = writeln!(
            main,
            "        T* out = calloc({n_out} + 1, sizeof(T));\n{}        save(\"c{i}_out.bin\", out, {n_out}ULL);\n    }}",
            launch(&s.name, &format!("out{args}"), s.threads)
        );
    }
    main.push_str("    return 0;\n}\n");
    c.push_str(&main);
    compile_and_run(&dir, &c);
    let outs = (0..cases.len())
        .map(|i| read_f64s(&dir.join(format!("c{i}_out.bin"))))
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    outs
}

fn write_f64s(path: &std::path::Path, v: &[f64]) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for x in v {
        f.write_all(&x.to_le_bytes()).unwrap();
    }
}

fn read_f64s(path: &std::path::Path) -> Vec<f64> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// Run the cases on the host and require every element to agree with the CPU backend within
/// `rel` ([`compare`]); returns how many kernels were checked.
pub fn check(cases: &[Case], p: Precision, rel: f64, what: &str) -> usize {
    compare(cases, &run(cases, p), rel, what);
    cases.len()
}

/// Require every case's output `outs[i]` (from any backend) to agree with the CPU backend's
/// within `rel` ([`codegen::agrees`]); returns the largest [`codegen::difference`].
pub fn compare(cases: &[Case], outs: &[Vec<f64>], rel: f64, what: &str) -> f64 {
    let mut worst = 0.0f64;
    for (case, got) in cases.iter().zip(outs) {
        assert_eq!(
            got.len(),
            case.expected.len(),
            "{what}: {}",
            case.source.name
        );
        for (j, (&g, &w)) in got.iter().zip(&case.expected).enumerate() {
            assert!(
                codegen::agrees(g, w, rel),
                "{what}: kernel {} element {j}: generated {g}, CPU {w}\n{}",
                case.source.name,
                case.source.code
            );
            worst = worst.max(codegen::difference(g, w));
        }
    }
    worst
}

/// The fused and reduction kernels of real flows' sampling and density programs, with random
/// parameters and inputs (batch 5), in f32 and f64: a coupling flow with spline transformers,
/// a radial flow, a lattice flow with periodic convolutions. (name, precision, cases).
pub fn flow_cases() -> Vec<(String, Precision, Vec<Case>)> {
    let cond = Conditioning::Temperature {
        t_min: 0.5,
        t_max: 2.0,
    };
    let flows = [
        ("coupling", coupling_flow(3, cond, &default_flow()).unwrap()),
        ("radial", radial_flow(2, cond, 2, 1).unwrap()),
        ("lattice", lattice_flow(4, cond, 2, 2, 1, 0).unwrap()),
        // A flow on angles: wrapping (rem, comparisons), cos and sin, circular splines (the
        // gauge flow's kinds of step too).
        ("spins", spin_flow(4, cond, 2, 2, 1, 4, 2, 0).unwrap()),
    ];
    let mut out = Vec::new();
    for (name, flow) in &flows {
        for mode in [Mode::Sample, Mode::Density] {
            let what = format!("{name} {mode:?}");
            out.push((
                format!("{what} f32"),
                Precision::F32,
                cases_of::<f32>(flow, mode),
            ));
            out.push((
                format!("{what} f64"),
                Precision::F64,
                cases_of::<f64>(flow, mode),
            ));
        }
    }
    out
}

fn cases_of<T: Scalar>(flow: &Flow, mode: Mode) -> Vec<Case> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut uniform = |n: usize, lo: f64, hi: f64| -> Vec<f64> {
        (0..n).map(|_| rng.random_range(lo..hi)).collect()
    };
    let mut p: Program<T> = flow.compile(mode).unwrap();
    for param in p.param_names() {
        let n = p.param(&param).unwrap().len();
        p.set_param(&param, &uniform(n, -0.5, 0.5)).unwrap();
    }
    let batch = 5;
    let cast = |v: Vec<f64>| -> Vec<T> { v.into_iter().map(T::from_f64).collect() };
    let x = cast(uniform(batch * flow.dim(), -2.0, 2.0));
    let t = cast(uniform(batch, 0.5, 2.0));
    let input = if mode == Mode::Sample { "z" } else { "x" };
    p.inspect(&[(input, &x), ("cond", &t)], false, |plan, store, _| {
        codegen::cases(plan, store)
    })
    .unwrap()
}

/// A whole plan run by its generated kernels on the host, in step order, each reading the
/// buffers the kernels before it wrote (only the declared inputs come from the CPU run), as
/// the GPU runs it. Returns (node, buffer) for every step's output.
pub fn run_plan<T: Scalar>(
    plan: &thermoflow::engine::plan::Plan<T>,
    store: &[Vec<T>],
    p: Precision,
) -> Vec<(usize, Vec<f64>)> {
    use thermoflow::engine::ir::Op;
    let dir = scratch();
    let sources = codegen::kernels(plan);
    let nodes = &plan.ir.nodes;
    let mut c = head(p);
    let mut main = format!("int main(void) {{\n    blockDim.x = {BLOCK};\n");
    let mut declared = vec![false; nodes.len()];
    for s in &sources {
        c.push_str(&s.code);
        for &n in s.inputs.iter().chain(std::iter::once(&s.out)) {
            if declared[n] {
                continue;
            }
            declared[n] = true;
            let len = nodes[n].len;
            if let Op::Input(i) = nodes[n].op {
                let data: Vec<f64> = store[i].iter().map(|v| v.to_f64()).collect();
                write_f64s(&dir.join(format!("n{n}.bin")), &data);
                let _ = writeln!(main, "    T* n{n} = load(\"n{n}.bin\", {len}ULL);");
            } else {
                let _ = writeln!(main, "    T* n{n} = calloc({len} + 1, sizeof(T));");
            }
        }
    }
    for s in &sources {
        let len = nodes[s.out].len;
        if s.zero_out {
            let _ = writeln!(main, "    memset(n{}, 0, sizeof(T) * {len});", s.out);
        }
        let args: String = s.inputs.iter().map(|n| format!(", n{n}")).collect();
        main.push_str("    {\n");
        main.push_str(&launch(&s.name, &format!("n{}{args}", s.out), s.threads));
        main.push_str("    }\n");
    }
    for s in &sources {
        let _ = writeln!(
            main,
            "    save(\"out{0}.bin\", n{0}, {1}ULL);",
            s.out, nodes[s.out].len
        );
    }
    main.push_str("    return 0;\n}\n");
    c.push_str(&main);
    compile_and_run(&dir, &c);
    let outs = sources
        .iter()
        .map(|s| (s.out, read_f64s(&dir.join(format!("out{}.bin", s.out)))))
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    outs
}

/// The wgpu adapter every test of this binary shares (opened on first use).
#[cfg(feature = "wgpu")]
pub fn webgpu() -> &'static thermoflow::engine::webgpu::WebGpu {
    static GPU: std::sync::OnceLock<thermoflow::engine::webgpu::WebGpu> =
        std::sync::OnceLock::new();
    GPU.get_or_init(|| {
        let gpu = thermoflow::engine::webgpu::WebGpu::new().unwrap_or_else(|e| panic!("{e}"));
        eprintln!("[wgpu] adapter: {}", gpu.name());
        gpu
    })
}

/// Every step of a plan that has run ([`Program::inspect`]) as a WGSL kernel through wgpu, on
/// the buffers the CPU's run read, against the CPU's output within `rel`
/// ([`codegen::agrees`]); `kinds` collects the kinds of step checked. Returns (kernels,
/// largest [`codegen::difference`]).
#[cfg(feature = "wgpu")]
pub fn check_wgpu<T: Scalar>(
    plan: &thermoflow::engine::plan::Plan<T>,
    store: &[Vec<T>],
    rel: f64,
    what: &str,
    kinds: &mut std::collections::BTreeSet<&'static str>,
) -> (usize, f64) {
    use thermoflow::engine::wgsl;
    let f32s = |n: usize| -> Vec<f32> {
        plan.buffer(store, n)
            .iter()
            .map(|v| v.to_f64() as f32)
            .collect()
    };
    let gpu = webgpu();
    let mut worst = 0.0f64;
    let shaders = wgsl::shaders(plan);
    for (step, sh) in plan.steps.iter().zip(&shaders) {
        kinds.insert(step.kind());
        let ins: Vec<Vec<f32>> = sh.inputs.iter().map(|&n| f32s(n)).collect();
        let ins: Vec<&[f32]> = ins.iter().map(|v| v.as_slice()).collect();
        let want = f32s(sh.out);
        let got = gpu
            .run(sh, &ins, want.len())
            .unwrap_or_else(|e| panic!("{what}: {}: {e}\n{}", step.kind(), sh.code));
        for (j, (&g, &c)) in got.iter().zip(&want).enumerate() {
            let (g, c) = (g as f64, c as f64);
            assert!(
                codegen::agrees(g, c, rel),
                "{what}: {} kernel {} element {j}: wgpu {g}, CPU {c}\n{}",
                step.kind(),
                sh.name,
                sh.code
            );
            worst = worst.max(codegen::difference(g, c));
        }
    }
    (shaders.len(), worst)
}

/// Run `p`'s plan (with gradients where `train`) on the CPU and on device `gpu` (any
/// [`thermoflow::engine::backend::Backend`]) on inputs `z`, `cond`, and require every node a
/// step writes to agree within 1e-3 ([`codegen::agrees`]); returns the plan's steps and the
/// largest difference.
pub fn whole_plan_on<B: thermoflow::engine::backend::Backend>(
    gpu: &B,
    p: &mut Program<f32>,
    z: &[f32],
    t: &[f32],
    train: bool,
    name: &str,
) -> (usize, f64) {
    p.inspect(&[("z", z), ("cond", t)], train, |plan, store, _| {
        let mut gp = gpu.compile_plan(plan).unwrap();
        gpu.run_plan(&mut gp, store, &[], thermoflow::engine::plan::Part::All)
            .unwrap();
        let mut worst = 0.0f64;
        for s in &plan.steps {
            let got = gpu.read(&gp, s.out()).unwrap();
            for (j, (&g, &c)) in got.iter().zip(plan.buffer(store, s.out())).enumerate() {
                let (g, c) = (g as f64, c as f64);
                assert!(
                    codegen::agrees(g, c, 1e-3),
                    "{name}: {} step writing node {} element {j}: device {g}, CPU {c}",
                    s.kind(),
                    s.out()
                );
                worst = worst.max(codegen::difference(g, c));
            }
        }
        (plan.steps.len(), worst)
    })
    .unwrap()
}
