//! The generated WGSL kernels ([`super::wgsl`]) through `wgpu` (feature `wgpu`): Metal on
//! macOS, Vulkan on Linux (Mesa's lavapipe runs them on the CPU where no GPU is present, which
//! is how CI tests them), DX12 on Windows.
//!
//! Two uses, as for CUDA: [`WebGpu::run`] runs one kernel on given inputs (a storage buffer per
//! input and table, the output read back), which is how every kernel of a plan is checked
//! against the CPU backend; [`WgpuPlan`] runs a whole plan on the device (a buffer per node,
//! the declared inputs uploaded once per run, every step one dispatch in one submission, only
//! the nodes asked for read back), which is how sampling, density and training programs run
//! there (`tests/webgpu.rs`).

use std::time::Instant;

use ::wgpu::util::DeviceExt;

use super::ir::Op;
use super::plan::{Part, Plan};
use super::wgsl::{grid, shaders, Shader};
use crate::error::{Error, Result};

fn gpu_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Engine(format!("wgpu: {what}: {e}"))
}

/// One adapter (GPU, or a software rasteriser) and its queue.
pub struct WebGpu {
    device: ::wgpu::Device,
    queue: ::wgpu::Queue,
    info: ::wgpu::AdapterInfo,
}

impl WebGpu {
    /// The default adapter with the limits it supports (fused kernels bind one storage buffer
    /// per input). Errors (never panics) where no adapter or device is available.
    pub fn new() -> Result<WebGpu> {
        pollster::block_on(async {
            let instance = ::wgpu::Instance::new(
                ::wgpu::InstanceDescriptor::new_without_display_handle_from_env(),
            );
            let adapter = instance
                .request_adapter(&::wgpu::RequestAdapterOptions::default())
                .await
                .map_err(|e| {
                    gpu_err(
                        "no adapter (on Linux without a GPU, install Mesa's Vulkan drivers: package mesa-vulkan-drivers)",
                        e,
                    )
                })?;
            let info = adapter.get_info();
            let (device, queue) = adapter
                .request_device(&::wgpu::DeviceDescriptor {
                    label: Some("thermoflow"),
                    required_limits: adapter.limits(),
                    ..Default::default()
                })
                .await
                .map_err(|e| gpu_err("opening the device", e))?;
            Ok(WebGpu {
                device,
                queue,
                info,
            })
        })
    }

    /// The adapter's name and backend.
    pub fn name(&self) -> String {
        format!("{} ({:?})", self.info.name, self.info.backend)
    }

    /// A storage buffer holding `data` (at least one element: empty bindings are invalid).
    fn storage(&self, data: &[u8], usage: ::wgpu::BufferUsages) -> ::wgpu::Buffer {
        let zero = [0u8; 4];
        self.device
            .create_buffer_init(&::wgpu::util::BufferInitDescriptor {
                label: None,
                contents: if data.is_empty() { &zero } else { data },
                usage: ::wgpu::BufferUsages::STORAGE | usage,
            })
    }

    /// Run `shader` on `inputs` (its [`Shader::inputs`]' buffers, in order) and return its
    /// output of `out_len` elements. Shader compilation errors come back as errors.
    pub fn run(&self, shader: &Shader, inputs: &[&[f32]], out_len: usize) -> Result<Vec<f32>> {
        if inputs.len() != shader.inputs.len() {
            return Err(Error::Engine(format!(
                "wgpu: kernel {} reads {} buffers, given {}",
                shader.name,
                shader.inputs.len(),
                inputs.len()
            )));
        }
        if out_len == 0 {
            return Ok(Vec::new());
        }
        let scope = self
            .device
            .push_error_scope(::wgpu::ErrorFilter::Validation);
        let pipeline = self.pipeline(shader);
        let bytes = 4 * out_len as u64;
        let out = self.storage(
            bytemuck::cast_slice(&vec![0f32; out_len]),
            ::wgpu::BufferUsages::COPY_SRC,
        );
        let ins: Vec<::wgpu::Buffer> = inputs
            .iter()
            .map(|v| self.storage(bytemuck::cast_slice(v), ::wgpu::BufferUsages::empty()))
            .chain(
                shader
                    .tables
                    .iter()
                    .map(|t| self.storage(bytemuck::cast_slice(t), ::wgpu::BufferUsages::empty())),
            )
            .collect();
        let bind = self.bind(&pipeline, std::iter::once(&out).chain(&ins));
        let read = self.readable(bytes);
        let mut enc = self.device.create_command_encoder(&Default::default());
        dispatch(&mut enc, &pipeline, &bind, shader.threads);
        enc.copy_buffer_to_buffer(&out, 0, &read, 0, bytes);
        self.queue.submit([enc.finish()]);
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(gpu_err(&format!("kernel {}", shader.name), e));
        }
        self.read_back(&read)
    }

    /// The compute pipeline of `shader` (its bind group layout deduced from the module).
    fn pipeline(&self, shader: &Shader) -> ::wgpu::ComputePipeline {
        let module = self
            .device
            .create_shader_module(::wgpu::ShaderModuleDescriptor {
                label: Some(&shader.name),
                source: ::wgpu::ShaderSource::Wgsl(shader.code.as_str().into()),
            });
        self.device
            .create_compute_pipeline(&::wgpu::ComputePipelineDescriptor {
                label: Some(&shader.name),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            })
    }

    /// A bind group of `buffers` at bindings 0, 1, … (output, inputs, tables).
    fn bind<'a>(
        &self,
        pipeline: &::wgpu::ComputePipeline,
        buffers: impl Iterator<Item = &'a ::wgpu::Buffer>,
    ) -> ::wgpu::BindGroup {
        let entries: Vec<::wgpu::BindGroupEntry> = buffers
            .enumerate()
            .map(|(b, buf)| ::wgpu::BindGroupEntry {
                binding: b as u32,
                resource: buf.as_entire_binding(),
            })
            .collect();
        self.device.create_bind_group(&::wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        })
    }

    /// A buffer of `bytes` the host can map for reading.
    fn readable(&self, bytes: u64) -> ::wgpu::Buffer {
        self.device.create_buffer(&::wgpu::BufferDescriptor {
            label: None,
            size: bytes,
            usage: ::wgpu::BufferUsages::MAP_READ | ::wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// Map `read` (a buffer the last submission copied into) and return its floats.
    fn read_back(&self, read: &::wgpu::Buffer) -> Result<Vec<f32>> {
        let (tx, rx) = std::sync::mpsc::channel();
        read.map_async(::wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(::wgpu::PollType::wait_indefinitely())
            .map_err(|e| gpu_err("waiting for the device", e))?;
        rx.recv()
            .map_err(|e| gpu_err("reading back", e))?
            .map_err(|e| gpu_err("reading back", e))?;
        let view = read
            .get_mapped_range(..)
            .map_err(|e| gpu_err("reading back", e))?;
        Ok(bytemuck::cast_slice(&view).to_vec())
    }

    /// Compile every step of `plan` (f32) for this device: a pipeline and a bind group per
    /// step over a buffer for every node its steps write and every declared input they read.
    pub fn compile_plan(&self, plan: &Plan<f32>) -> Result<WgpuPlan> {
        let t0 = Instant::now();
        let scope = self
            .device
            .push_error_scope(::wgpu::ErrorFilter::Validation);
        let nodes = &plan.ir.nodes;
        let mut bufs: Vec<Option<::wgpu::Buffer>> = (0..nodes.len()).map(|_| None).collect();
        let mut inputs = Vec::new();
        let all = shaders(plan);
        let alloc = |len: usize| {
            self.device.create_buffer(&::wgpu::BufferDescriptor {
                label: None,
                size: 4 * len.max(1) as u64,
                usage: ::wgpu::BufferUsages::STORAGE
                    | ::wgpu::BufferUsages::COPY_SRC
                    | ::wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        };
        // A node larger than one binding can hold is refused before anything is created.
        let most = self.device.limits().max_storage_buffer_binding_size;
        for s in &all {
            for &n in std::iter::once(&s.out).chain(&s.inputs) {
                let bytes = 4 * nodes[n].len as u64;
                if bytes > most {
                    return Err(Error::Engine(format!(
                        "wgpu: node {n} of the plan holds {} MiB, more than this adapter binds in one buffer ({} MiB): use a smaller batch",
                        bytes >> 20,
                        most >> 20
                    )));
                }
            }
        }
        for s in &all {
            if bufs[s.out].is_none() {
                bufs[s.out] = Some(alloc(nodes[s.out].len));
            }
            for &n in &s.inputs {
                if let (Op::Input(i), None) = (&nodes[n].op, &bufs[n]) {
                    bufs[n] = Some(alloc(nodes[n].len));
                    inputs.push((n, *i));
                }
            }
        }
        let mut steps = Vec::with_capacity(all.len());
        for s in all {
            let pipeline = self.pipeline(&s);
            let tables: Vec<::wgpu::Buffer> = s
                .tables
                .iter()
                .map(|t| self.storage(bytemuck::cast_slice(t), ::wgpu::BufferUsages::empty()))
                .collect();
            let mut bound = Vec::with_capacity(1 + s.inputs.len());
            for &n in std::iter::once(&s.out).chain(&s.inputs) {
                bound.push(bufs[n].as_ref().ok_or_else(|| {
                    Error::Engine(format!(
                        "wgpu: kernel {} reads node {n}, which no step writes",
                        s.name
                    ))
                })?);
            }
            let bind = self.bind(&pipeline, bound.into_iter().chain(&tables));
            steps.push(PlanStep {
                shader: s,
                pipeline,
                bind,
                _tables: tables,
            });
        }
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(gpu_err("compiling the plan's kernels", e));
        }
        Ok(WgpuPlan {
            steps,
            bufs,
            inputs,
            write_back: plan.write_back.clone(),
            compile_s: t0.elapsed().as_secs_f64(),
        })
    }

    /// Run a compiled plan on the declared inputs' buffers `store` (as [`Plan::run`] takes
    /// them): the uploads of the inputs marked `fresh` (all of them: `&[]`) and the steps of
    /// `part` in one submission. Returns the seconds from the upload to the last kernel's end.
    pub fn run_plan(
        &self,
        gp: &WgpuPlan,
        store: &[Vec<f32>],
        fresh: &[bool],
        part: Part,
    ) -> Result<f64> {
        let t0 = Instant::now();
        for &(node, i) in &gp.inputs {
            if !fresh.is_empty() && !fresh[i] {
                continue;
            }
            let dst = gp.bufs[node].as_ref().expect("allocated by compile_plan");
            if 4 * store[i].len().max(1) as u64 != dst.size() {
                return Err(Error::Engine(format!(
                    "wgpu: input {i} has {} values, the compiled plan {}",
                    store[i].len(),
                    dst.size() / 4
                )));
            }
            if !store[i].is_empty() {
                self.queue
                    .write_buffer(dst, 0, bytemuck::cast_slice(&store[i]));
            }
        }
        let scope = self
            .device
            .push_error_scope(::wgpu::ErrorFilter::Validation);
        let mut enc = self.device.create_command_encoder(&Default::default());
        for s in gp.steps.iter().filter(|s| part.runs(s.shader.out)) {
            if s.shader.zero_out {
                let out = gp.bufs[s.shader.out].as_ref().expect("allocated");
                enc.clear_buffer(out, 0, None);
            }
            dispatch(&mut enc, &s.pipeline, &s.bind, s.shader.threads);
        }
        // An update that ran replaces the inputs it read (parameters, moments).
        for &(from, to) in gp.write_back.iter().filter(|(from, _)| part.runs(*from)) {
            let (src, dst) = (gp.buffer(from)?, gp.buffer(to)?);
            enc.copy_buffer_to_buffer(src, 0, dst, 0, src.size().min(dst.size()));
        }
        self.queue.submit([enc.finish()]);
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(gpu_err("running the plan", e));
        }
        self.device
            .poll(::wgpu::PollType::wait_indefinitely())
            .map_err(|e| gpu_err("waiting for the device", e))?;
        Ok(t0.elapsed().as_secs_f64())
    }

    /// A node's buffer after [`WebGpu::run_plan`].
    pub fn read(&self, gp: &WgpuPlan, node: usize) -> Result<Vec<f32>> {
        let b = gp.buffer(node)?;
        let read = self.readable(b.size());
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(b, 0, &read, 0, b.size());
        self.queue.submit([enc.finish()]);
        self.read_back(&read)
    }
}

impl super::backend::Backend for WebGpu {
    type Plan = WgpuPlan;
    fn name(&self) -> String {
        WebGpu::name(self)
    }
    fn compile_plan(&self, plan: &Plan<f32>) -> Result<WgpuPlan> {
        WebGpu::compile_plan(self, plan)
    }
    fn run_plan(
        &self,
        plan: &mut WgpuPlan,
        store: &[Vec<f32>],
        fresh: &[bool],
        part: Part,
    ) -> Result<f64> {
        WebGpu::run_plan(self, plan, store, fresh, part)
    }
    fn read(&self, plan: &WgpuPlan, node: usize) -> Result<Vec<f32>> {
        WebGpu::read(self, plan, node)
    }
}

/// One compute pass dispatching `threads` invocations of `pipeline` with `bind`.
fn dispatch(
    enc: &mut ::wgpu::CommandEncoder,
    pipeline: &::wgpu::ComputePipeline,
    bind: &::wgpu::BindGroup,
    threads: usize,
) {
    let mut pass = enc.begin_compute_pass(&Default::default());
    pass.set_pipeline(pipeline);
    pass.set_bind_group(0, bind, &[]);
    let (x, y) = grid(threads);
    pass.dispatch_workgroups(x, y, 1);
}

/// A compiled step: its kernel, pipeline and bind group (and the tables it binds).
struct PlanStep {
    shader: Shader,
    pipeline: ::wgpu::ComputePipeline,
    bind: ::wgpu::BindGroup,
    _tables: Vec<::wgpu::Buffer>,
}

/// A plan's kernels compiled for a wgpu device (f32), with a device buffer for every node its
/// steps write and every declared input they read.
pub struct WgpuPlan {
    steps: Vec<PlanStep>,
    /// Device buffer by node.
    bufs: Vec<Option<::wgpu::Buffer>>,
    /// (node, declared input) pairs uploaded at each run.
    inputs: Vec<(usize, usize)>,
    /// The plan's [`Plan::write_back`] pairs.
    write_back: Vec<(usize, usize)>,
    /// Shader compilation and pipeline creation, seconds.
    pub compile_s: f64,
}

impl WgpuPlan {
    /// Node `node`'s buffer.
    fn buffer(&self, node: usize) -> Result<&::wgpu::Buffer> {
        self.bufs
            .get(node)
            .and_then(|b| b.as_ref())
            .ok_or_else(|| Error::Engine(format!("wgpu: node {node} has no device buffer")))
    }
}
