//! The generated WGSL kernels ([`super::wgsl`]) through `wgpu` (feature `wgpu`): Metal on
//! macOS, Vulkan on Linux (Mesa's lavapipe runs them on the CPU where no GPU is present, which
//! is how CI tests them), DX12 on Windows.
//!
//! [`WebGpu::run`] runs one kernel on given inputs (a storage buffer per input and table, the
//! output read back): every kernel of a plan is checked this way against the CPU backend
//! (`tests/webgpu.rs`). Whole plans resident on the device are the next step, as for CUDA.

use ::wgpu::util::DeviceExt;

use super::wgsl::{grid, Shader};
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
        let module = self
            .device
            .create_shader_module(::wgpu::ShaderModuleDescriptor {
                label: Some(&shader.name),
                source: ::wgpu::ShaderSource::Wgsl(shader.code.as_str().into()),
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&::wgpu::ComputePipelineDescriptor {
                label: Some(&shader.name),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
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
        let entries: Vec<::wgpu::BindGroupEntry> = std::iter::once(&out)
            .chain(&ins)
            .enumerate()
            .map(|(b, buf)| ::wgpu::BindGroupEntry {
                binding: b as u32,
                resource: buf.as_entire_binding(),
            })
            .collect();
        let bind = self.device.create_bind_group(&::wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let read = self.device.create_buffer(&::wgpu::BufferDescriptor {
            label: None,
            size: bytes,
            usage: ::wgpu::BufferUsages::MAP_READ | ::wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind, &[]);
            let (x, y) = grid(shader.threads);
            pass.dispatch_workgroups(x, y, 1);
        }
        enc.copy_buffer_to_buffer(&out, 0, &read, 0, bytes);
        self.queue.submit([enc.finish()]);
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(gpu_err(&format!("kernel {}", shader.name), e));
        }
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
}
