//! The generated kernels ([`super::codegen`]) on an NVIDIA GPU (feature `cuda`): compiled at
//! run time by NVRTC and launched through `cudarc`, which loads the driver and NVRTC
//! libraries when a device is first opened (the crate builds without a CUDA toolkit; a
//! machine without one gets an error naming the missing library, not a crash).
//!
//! Two uses: [`Cuda::run`] runs kernels one at a time on given inputs, which is how every
//! generated kernel is checked against the CPU backend on a GPU; [`GpuPlan`] runs a whole
//! plan on the device (a buffer per node, inputs up once per run, only the outputs asked for
//! back), which is how sampling and density programs run there (`tests/cuda.rs`,
//! `bench/gpu.sh`). Training plans have every kernel too (the spline's adjoint included), and
//! the optimiser's update ([`super::optim::append_update`]).
//!
//! A plan's gemms go to cuBLAS (one strided-batched call each, [`super::blas`], then the
//! generated epilogue kernel where the step has a bias or an activation) when its library
//! (libcublas) loads; otherwise, or with `THERMOFLOW_CUBLAS=0`, and for operand layouts BLAS
//! cannot take, the generated gemm kernel runs (a thread per output element).

use std::sync::Arc;
use std::time::Instant;

use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaStream, DeviceRepr, LaunchConfig, PushKernelArg,
    ValidAsZeroBits,
};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};

use cudarc::driver::CudaSlice;

use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublas::{CudaBlas, Gemm, GemmConfig, StridedBatchedConfig};

use super::blas;
use super::codegen::{epilogue, kernel, prelude, Case, Precision, Source};
use super::ir::Op;
use super::plan::{Part, Plan, Step};
use crate::error::{Error, Result};

/// Threads per block.
const BLOCK: u32 = 256;

fn cuda_err(what: &str, e: impl std::fmt::Debug) -> Error {
    Error::Engine(format!("CUDA: {what}: {e:?}"))
}

/// One GPU and its stream.
pub struct Cuda {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    /// cuBLAS on that stream, or why the generated gemm runs instead.
    blas: std::result::Result<CudaBlas, String>,
}

/// What running the kernels took.
#[derive(Clone, Debug)]
pub struct Timing {
    /// NVRTC compilation of all kernels, seconds.
    pub compile_s: f64,
    /// Each kernel's time on the device (after a warm-up launch), seconds.
    pub kernel_s: Vec<f64>,
}

impl Cuda {
    /// Open GPU `ordinal`. Errors (never panics) when the CUDA driver or NVRTC library cannot
    /// be loaded or there is no such device.
    pub fn new(ordinal: usize) -> Result<Cuda> {
        // SAFETY: only loads the libraries (dlopen) and reports whether that worked.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(Error::Engine(
                "CUDA: the driver library (libcuda.so) was not found; is an NVIDIA driver installed?".into(),
            ));
        }
        // SAFETY: as above.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            return Err(Error::Engine(
                "CUDA: NVRTC (libnvrtc.so, part of the CUDA toolkit) was not found; add its folder to LD_LIBRARY_PATH".into(),
            ));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| cuda_err("opening the device", e))?;
        let stream = ctx.default_stream();
        let blas = if std::env::var("THERMOFLOW_CUBLAS").is_ok_and(|v| v == "0") {
            Err("THERMOFLOW_CUBLAS=0".to_string())
        // SAFETY: only loads the library (dlopen) and reports whether that worked.
        } else if !unsafe { cudarc::cublas::sys::is_culib_present() } {
            Err("libcublas was not found".to_string())
        } else {
            CudaBlas::new(stream.clone()).map_err(|e| format!("cuBLAS: {e:?}"))
        };
        Ok(Cuda { ctx, stream, blas })
    }

    /// How the plans' gemms run: "cuBLAS", or the generated kernel and why.
    pub fn gemm(&self) -> String {
        match &self.blas {
            Ok(_) => "cuBLAS".into(),
            Err(why) => format!("generated kernel ({why})"),
        }
    }

    /// Compile kernels into one module with NVRTC and load it; returns it with the seconds
    /// that took.
    fn module<'a>(
        &self,
        sources: impl Iterator<Item = &'a Source>,
        p: Precision,
    ) -> Result<(Arc<CudaModule>, f64)> {
        let t0 = Instant::now();
        let mut src = prelude(p);
        for s in sources {
            src.push_str(&s.code);
        }
        let ptx = compile_ptx_with_opts(&src, CompileOptions::default())
            .map_err(|e| cuda_err("NVRTC rejected the generated kernels", e))?;
        let module = self
            .ctx
            .load_module(ptx)
            .map_err(|e| cuda_err("loading the module", e))?;
        Ok((module, t0.elapsed().as_secs_f64()))
    }

    /// The device's name.
    pub fn name(&self) -> String {
        self.ctx.name().unwrap_or_else(|_| "unknown".into())
    }

    /// Compile every case's kernel (one NVRTC program), run each on its inputs and return the
    /// outputs in order, with the time each took.
    pub fn run(&self, cases: &[Case], p: Precision) -> Result<(Vec<Vec<f64>>, Timing)> {
        let (module, compile_s) = self.module(cases.iter().map(|c| &c.source), p)?;
        let mut outs = Vec::with_capacity(cases.len());
        let mut kernel_s = Vec::with_capacity(cases.len());
        for c in cases {
            let f = module
                .load_function(&c.source.name)
                .map_err(|e| cuda_err("a generated kernel is missing", e))?;
            let (out, seconds) = match p {
                Precision::F32 => self.run_one(&f, c, |x| x as f32, |x| x as f64)?,
                Precision::F64 => self.run_one(&f, c, |x| x, |x| x)?,
            };
            outs.push(out);
            kernel_s.push(seconds);
        }
        Ok((
            outs,
            Timing {
                compile_s,
                kernel_s,
            },
        ))
    }

    /// Run one kernel on its inputs in element type `E`: a warm-up launch, then a timed one
    /// (kernels are pure: the same result). Returns the output and the timed launch's seconds.
    fn run_one<E>(
        &self,
        f: &CudaFunction,
        c: &Case,
        to: fn(f64) -> E,
        from: fn(E) -> f64,
    ) -> Result<(Vec<f64>, f64)>
    where
        E: DeviceRepr + ValidAsZeroBits + Copy + Unpin,
    {
        let ins = c
            .inputs
            .iter()
            .map(|v| {
                let host: Vec<E> = v.iter().map(|&x| to(x)).collect();
                self.stream.clone_htod(&host)
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| cuda_err("copying inputs", e))?;
        let mut out = self
            .stream
            .alloc_zeros::<E>(c.expected.len().max(1))
            .map_err(|e| cuda_err("allocating", e))?;
        let threads = c.source.threads as u64;
        let mut seconds = 0.0;
        for timed in [false, true] {
            if c.source.zero_out {
                self.stream
                    .memset_zeros(&mut out)
                    .map_err(|e| cuda_err("zeroing", e))?;
            }
            let mut b = self.stream.launch_builder(f);
            b.arg(&mut out);
            for x in &ins {
                b.arg(x);
            }
            b.arg(&threads);
            let t = Instant::now();
            // SAFETY: the arguments match the generated signature (out, in_0 …, threads) and
            // every buffer holds the elements its view reads (the CPU ran the same plan).
            unsafe { b.launch(launch_config(c.source.threads)) }
                .map_err(|e| cuda_err("launching", e))?;
            self.stream
                .synchronize()
                .map_err(|e| cuda_err("running", e))?;
            if timed {
                seconds = t.elapsed().as_secs_f64();
            }
        }
        let host = self
            .stream
            .clone_dtoh(&out)
            .map_err(|e| cuda_err("copying the output", e))?;
        Ok((
            host[..c.expected.len()].iter().map(|&v| from(v)).collect(),
            seconds,
        ))
    }
}

/// A step of a plan on the GPU.
enum GpuStep {
    /// A generated kernel.
    Kernel(Source, CudaFunction),
    /// A gemm through cuBLAS into `out`, or, where the step has an epilogue, into `product`
    /// and then the epilogue kernel (reading `product` as its first input) into `out`.
    Blas {
        out: usize,
        a: usize,
        b: usize,
        call: blas::Call,
        epilogue: Option<(Source, CudaFunction, CudaSlice<f32>)>,
    },
}

impl GpuStep {
    fn out(&self) -> usize {
        match self {
            GpuStep::Kernel(s, _) => s.out,
            GpuStep::Blas { out, .. } => *out,
        }
    }
}

/// A plan's kernels compiled for the GPU (f32), with a device buffer for every node its steps
/// write and every declared input they read.
pub struct GpuPlan {
    steps: Vec<GpuStep>,
    /// Device buffer by node.
    bufs: Vec<Option<CudaSlice<f32>>>,
    /// (node, declared input) pairs uploaded at each run.
    inputs: Vec<(usize, usize)>,
    /// The plan's [`Plan::write_back`] pairs.
    write_back: Vec<(usize, usize)>,
    /// NVRTC and module load, seconds.
    pub compile_s: f64,
}

impl Cuda {
    /// Compile every step of `plan` for this GPU (its gemms as cuBLAS calls where it can) and
    /// allocate its buffers.
    pub fn compile_plan(&self, plan: &Plan<f32>) -> Result<GpuPlan> {
        // Each step: a generated kernel, or a cuBLAS call with its epilogue kernel, if any.
        let plans: Vec<(Option<blas::Call>, Source)> = plan
            .steps
            .iter()
            .enumerate()
            .map(|(i, step)| {
                let name = format!("k{i}");
                let call = match (step, &self.blas) {
                    (Step::MatMul { a, b, .. }, Ok(_)) => blas::call(&a.1, &b.1),
                    _ => None,
                };
                let out_len = plan.ir.nodes[step.out()].len;
                match call {
                    Some(c) => (
                        Some(c),
                        epilogue(step, &name).unwrap_or_else(|| kernel(step, out_len, &name)),
                    ),
                    None => (None, kernel(step, out_len, &name)),
                }
            })
            .collect();
        let (module, compile_s) = self.module(plans.iter().map(|(_, s)| s), Precision::F32)?;
        let nodes = &plan.ir.nodes;
        let alloc = |len: usize| {
            self.stream
                .alloc_zeros::<f32>(len.max(1))
                .map_err(|e| cuda_err("allocating", e))
        };
        let mut bufs: Vec<Option<CudaSlice<f32>>> = (0..nodes.len()).map(|_| None).collect();
        let mut inputs = Vec::new();
        let mut steps = Vec::with_capacity(plans.len());
        for ((call, s), step) in plans.into_iter().zip(&plan.steps) {
            if bufs[s.out].is_none() {
                bufs[s.out] = Some(alloc(nodes[s.out].len)?);
            }
            let mut reads: Vec<usize> = s.inputs.clone();
            if let Step::MatMul { a, b, .. } = step {
                reads.extend([a.0, b.0]);
            }
            for n in reads {
                if let (Op::Input(i), None) = (&nodes[n].op, &bufs[n]) {
                    bufs[n] = Some(alloc(nodes[n].len)?);
                    inputs.push((n, *i));
                }
            }
            let load = |name: &str| {
                module
                    .load_function(name)
                    .map_err(|e| cuda_err("a generated kernel is missing", e))
            };
            steps.push(match (call, step) {
                (
                    Some(call),
                    Step::MatMul {
                        out,
                        a,
                        b,
                        epilogue,
                        ..
                    },
                ) => GpuStep::Blas {
                    out: *out,
                    a: a.0,
                    b: b.0,
                    call,
                    epilogue: match epilogue {
                        Some(_) => {
                            let f = load(&s.name)?;
                            Some((s, f, alloc(nodes[*out].len)?))
                        }
                        None => None,
                    },
                },
                _ => {
                    let f = load(&s.name)?;
                    GpuStep::Kernel(s, f)
                }
            });
        }
        Ok(GpuPlan {
            steps,
            bufs,
            inputs,
            write_back: plan.write_back.clone(),
            compile_s,
        })
    }

    /// Run a compiled plan on the declared inputs' buffers `store` (as [`Plan::run`] takes
    /// them), uploading the inputs marked `fresh` (all of them: `&[]`), and its steps of
    /// `part`; returns the seconds from the upload to the last kernel's end.
    pub fn run_plan(
        &self,
        gp: &mut GpuPlan,
        store: &[Vec<f32>],
        fresh: &[bool],
        part: Part,
    ) -> Result<f64> {
        let t0 = Instant::now();
        for &(node, i) in &gp.inputs {
            if !fresh.is_empty() && !fresh[i] {
                continue;
            }
            let dst = gp.bufs[node].as_mut().expect("allocated by compile_plan");
            if store[i].len() != dst.len() {
                return Err(Error::Engine(format!(
                    "CUDA: input {i} has {} values, the compiled plan {}",
                    store[i].len(),
                    dst.len()
                )));
            }
            self.stream
                .memcpy_htod(&store[i], dst)
                .map_err(|e| cuda_err("copying inputs", e))?;
        }
        for step in gp.steps.iter_mut().filter(|s| part.runs(s.out())) {
            match step {
                GpuStep::Kernel(s, f) => self.launch(&mut gp.bufs, s, f, None)?,
                GpuStep::Blas {
                    out,
                    a,
                    b,
                    call,
                    epilogue: None,
                } => {
                    let mut c = gp.bufs[*out].take().expect("allocated by compile_plan");
                    let done = self.gemm_call(&gp.bufs, (*a, *b), call, &mut c);
                    gp.bufs[*out] = Some(c);
                    done?;
                }
                GpuStep::Blas {
                    a,
                    b,
                    call,
                    epilogue: Some((s, f, product)),
                    ..
                } => {
                    self.gemm_call(&gp.bufs, (*a, *b), call, product)?;
                    self.launch(&mut gp.bufs, s, f, Some(product))?;
                }
            }
        }
        // An update that ran replaces the inputs it read (parameters, moments).
        for &(from, to) in gp.write_back.iter().filter(|(from, _)| part.runs(*from)) {
            let mut dst = gp.bufs[to]
                .take()
                .ok_or_else(|| Error::Engine(format!("CUDA: node {to} has no device buffer")))?;
            let copied = match gp.bufs[from].as_ref() {
                Some(src) => self
                    .stream
                    .memcpy_dtod(src, &mut dst)
                    .map_err(|e| cuda_err("writing the update back", e)),
                None => Err(Error::Engine(format!(
                    "CUDA: node {from} has no device buffer"
                ))),
            };
            gp.bufs[to] = Some(dst);
            copied?;
        }
        self.stream
            .synchronize()
            .map_err(|e| cuda_err("running", e))?;
        Ok(t0.elapsed().as_secs_f64())
    }

    /// Launch generated kernel `f` of `s` on the plan's buffers (its first input `first`
    /// instead of a node's buffer where given: an epilogue's product).
    fn launch(
        &self,
        bufs: &mut [Option<CudaSlice<f32>>],
        s: &Source,
        f: &CudaFunction,
        first: Option<&CudaSlice<f32>>,
    ) -> Result<()> {
        let mut out = bufs[s.out].take().expect("allocated by compile_plan");
        if s.zero_out {
            if let Err(e) = self.stream.memset_zeros(&mut out) {
                bufs[s.out] = Some(out);
                return Err(cuda_err("zeroing", e));
            }
        }
        let threads = s.threads as u64;
        let mut b = self.stream.launch_builder(f);
        b.arg(&mut out);
        for (k, &n) in s.inputs.iter().enumerate() {
            match (k, first) {
                (0, Some(p)) => b.arg(p),
                _ => b.arg(bufs[n].as_ref().expect("allocated by compile_plan")),
            };
        }
        b.arg(&threads);
        // SAFETY: the arguments match the generated signature and every buffer has its
        // node's length, which the kernel's index math was generated for.
        let launched = unsafe { b.launch(launch_config(s.threads)) };
        bufs[s.out] = Some(out);
        launched.map(|_| ()).map_err(|e| cuda_err("launching", e))
    }

    /// The gemm step with operands `(a, b)` (nodes) as the cuBLAS call `call`, into `c`.
    fn gemm_call(
        &self,
        bufs: &[Option<CudaSlice<f32>>],
        (a, b): (usize, usize),
        call: &blas::Call,
        c: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let cublas = self
            .blas
            .as_ref()
            .map_err(|why| Error::Engine(format!("CUDA: a cuBLAS step without cuBLAS: {why}")))?;
        let int = |v: usize| {
            i32::try_from(v).map_err(|_| Error::Engine(format!("CUDA: {v} exceeds cuBLAS's int")))
        };
        let op = |t: bool| {
            if t {
                cublasOperation_t::CUBLAS_OP_T
            } else {
                cublasOperation_t::CUBLAS_OP_N
            }
        };
        // BLAS's first operand is the step's B, its second the step's A.
        let buf = |n: usize| bufs[n].as_ref().expect("allocated by compile_plan");
        let (first, second) = (buf(b).slice(call.a.offset..), buf(a).slice(call.b.offset..));
        let cfg = StridedBatchedConfig {
            gemm: GemmConfig {
                transa: op(call.a.trans),
                transb: op(call.b.trans),
                m: int(call.m)?,
                n: int(call.n)?,
                k: int(call.k)?,
                alpha: 1.0f32,
                lda: int(call.a.ld)?,
                ldb: int(call.b.ld)?,
                beta: 0.0f32,
                ldc: int(call.m)?,
            },
            batch_size: int(call.batch)?,
            stride_a: call.a.stride as i64,
            stride_b: call.b.stride as i64,
            stride_c: (call.m * call.n) as i64,
        };
        // SAFETY: `blas::call` checked the layout: every element the call reads lies inside
        // the operands' buffers (the CPU plan reads the same ones), and `c` holds the batch's
        // m·n outputs.
        unsafe { cublas.gemm_strided_batched(cfg, &first, &second, c) }
            .map_err(|e| cuda_err("cuBLAS gemm", e))
    }

    /// A node's buffer after [`Cuda::run_plan`].
    pub fn read(&self, gp: &GpuPlan, node: usize) -> Result<Vec<f32>> {
        let b = gp.bufs[node]
            .as_ref()
            .ok_or_else(|| Error::Engine(format!("CUDA: node {node} has no device buffer")))?;
        self.stream
            .clone_dtoh(b)
            .map_err(|e| cuda_err("copying the output", e))
    }
}

impl super::backend::Backend for Cuda {
    type Plan = GpuPlan;
    fn name(&self) -> String {
        format!("{} (gemm: {})", Cuda::name(self), self.gemm())
    }
    fn compile_plan(&self, plan: &Plan<f32>) -> Result<GpuPlan> {
        Cuda::compile_plan(self, plan)
    }
    fn run_plan(
        &self,
        plan: &mut GpuPlan,
        store: &[Vec<f32>],
        fresh: &[bool],
        part: Part,
    ) -> Result<f64> {
        Cuda::run_plan(self, plan, store, fresh, part)
    }
    fn read(&self, plan: &GpuPlan, node: usize) -> Result<Vec<f32>> {
        Cuda::read(self, plan, node)
    }
}

fn launch_config(threads: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: ((threads as u32).div_ceil(BLOCK).max(1), 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}
