//! Where the flows' programs (sampling, density, training) run: the CPU (the default), or a device
//! beside it through a [`super::backend::Backend`] (`cuda`: an NVIDIA GPU, feature `cuda`;
//! `wgpu`: Metal, Vulkan or DX12, feature `wgpu`).
//!
//! A [`Device`] makes one [`Session`] per program: the plans that program runs, compiled for
//! the device on first use (one per batch size), run on its declared inputs (each uploaded
//! only when its values changed since that plan's last run: parameters stay resident between
//! updates), with the outputs read back. The process-wide choice
//! ([`select`], the command line's `--device`, or `thermoflow::engine::device::select` in a
//! notebook) applies to every flow program compiled after it, the training programs too:
//! their forward and backward passes run on the device, the energies and ∇U on the host
//! (between the two halves of a step, [`super::Program::step_begin`]), and the optimiser's
//! update on the device too ([`super::optim::append_update`]): parameters, gradients and
//! moments stay there; only the loss and Σ g² come back and the step's eight coefficients go
//! up, besides the samples and ∇U.

use std::sync::{Arc, RwLock};

use super::plan::{Part, Plan};
use crate::error::{Error, Result};

/// A program's plans on a device.
pub trait Session: Send {
    /// Run `part` of the plan for `key` (compiling `plan` for the device on first use) on the
    /// declared inputs' buffers `store`, returning the buffers of the nodes `read`.
    fn run(
        &mut self,
        key: (usize, bool),
        plan: &Plan<f32>,
        store: &[Vec<f32>],
        read: &[usize],
        part: Part,
    ) -> Result<Vec<Vec<f32>>>;
    /// Read into `store[i]`, for each pair (i, node), the buffer of input node `node` of the
    /// plan for `key` (written there by its update), which that plan then need not upload.
    fn pull(
        &mut self,
        key: (usize, bool),
        pulls: &[(usize, usize)],
        store: &mut [Vec<f32>],
    ) -> Result<()>;
    /// Floats uploaded and read back so far.
    fn traffic(&self) -> (usize, usize);
    /// Release the plan for `key` (its program dropped it) and its device buffers.
    fn forget(&mut self, key: (usize, bool));
    /// Plans held on the device.
    fn plans(&self) -> usize;
}

/// A device: its name and a maker of sessions.
#[derive(Clone)]
pub struct Device {
    name: String,
    make: Arc<dyn Fn() -> Box<dyn Session> + Send + Sync>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Device({})", self.name)
    }
}

impl Device {
    /// A device over `backend`, shared by every session it makes.
    pub fn new<B>(backend: B) -> Device
    where
        B: super::backend::Backend + Send + Sync + 'static,
        B::Plan: Send,
    {
        let name = backend.name();
        let backend = Arc::new(backend);
        Device {
            name,
            make: Arc::new(move || {
                Box::new(OnDevice {
                    backend: backend.clone(),
                    plans: Vec::new(),
                    traffic: (0, 0),
                })
            }),
        }
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A fresh session (no plans compiled yet).
    pub fn session(&self) -> Box<dyn Session> {
        (self.make)()
    }
}

/// Plans compiled for a backend, by key.
struct OnDevice<B: super::backend::Backend> {
    backend: Arc<B>,
    plans: Vec<OnePlan<B::Plan>>,
    /// Floats (uploaded, read back).
    traffic: (usize, usize),
}

impl<B: super::backend::Backend> OnDevice<B> {
    fn find(&self, key: (usize, bool)) -> Option<usize> {
        self.plans.iter().position(|p| p.key == key)
    }
}

/// A plan on the device, its key, and the declared inputs' values it last uploaded.
struct OnePlan<P> {
    key: (usize, bool),
    plan: P,
    last: Vec<Option<Vec<f32>>>,
}

impl<B> Session for OnDevice<B>
where
    B: super::backend::Backend + Send + Sync,
    B::Plan: Send,
{
    fn run(
        &mut self,
        key: (usize, bool),
        plan: &Plan<f32>,
        store: &[Vec<f32>],
        read: &[usize],
        part: Part,
    ) -> Result<Vec<Vec<f32>>> {
        let i = match self.find(key) {
            Some(i) => i,
            None => {
                self.plans.push(OnePlan {
                    key,
                    plan: self.backend.compile_plan(plan)?,
                    last: vec![None; store.len()],
                });
                self.plans.len() - 1
            }
        };
        let OnePlan { plan: gp, last, .. } = &mut self.plans[i];
        // Only what changed since this plan's last run goes up (the parameters, between
        // training steps; the data at every run; ∇U between a training step's halves):
        // compared by value, so no change is missed.
        let fresh: Vec<bool> = store
            .iter()
            .zip(last.iter_mut())
            .map(|(now, was)| {
                let changed = was.as_deref() != Some(now.as_slice());
                if changed {
                    *was = Some(now.clone());
                }
                changed
            })
            .collect();
        self.traffic.0 += store
            .iter()
            .zip(&fresh)
            .filter(|(_, &f)| f)
            .map(|(v, _)| v.len())
            .sum::<usize>();
        self.backend.run_plan(gp, store, &fresh, part)?;
        let got: Vec<Vec<f32>> = read
            .iter()
            .map(|&n| self.backend.read(gp, n))
            .collect::<Result<_>>()?;
        self.traffic.1 += got.iter().map(Vec::len).sum::<usize>();
        Ok(got)
    }

    fn pull(
        &mut self,
        key: (usize, bool),
        pulls: &[(usize, usize)],
        store: &mut [Vec<f32>],
    ) -> Result<()> {
        let i = self
            .find(key)
            .ok_or_else(|| Error::Engine(format!("no plan for {key:?} on the device")))?;
        let OnePlan { plan: gp, last, .. } = &mut self.plans[i];
        for &(input, node) in pulls {
            let mut v = self.backend.read(gp, node)?;
            v.truncate(store[input].len());
            self.traffic.1 += v.len();
            last[input] = Some(v.clone());
            store[input] = v;
        }
        Ok(())
    }

    fn traffic(&self) -> (usize, usize) {
        self.traffic
    }

    fn forget(&mut self, key: (usize, bool)) {
        self.plans.retain(|p| p.key != key);
    }

    fn plans(&self) -> usize {
        self.plans.len()
    }
}

static SELECTED: RwLock<Option<Device>> = RwLock::new(None);

/// Choose where flow programs compiled from now on run: `cpu`, `cuda` (GPU 0) or `wgpu` (the
/// default adapter). An error says what is missing: a build without the feature, or a machine
/// without the driver or device.
pub fn select(name: &str) -> Result<()> {
    let device = open(name)?;
    *SELECTED.write().unwrap_or_else(|e| e.into_inner()) = device;
    Ok(())
}

/// The device [`select`]ed (None: the CPU).
pub fn selected() -> Option<Device> {
    SELECTED.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The device named `name` (None for `cpu`).
pub fn open(name: &str) -> Result<Option<Device>> {
    match name {
        "cpu" => Ok(None),
        "cuda" => cuda(),
        "wgpu" => wgpu(),
        other => Err(Error::Input(format!(
            "unknown device {other:?}: cpu, cuda or wgpu"
        ))),
    }
}

#[cfg(feature = "cuda")]
fn cuda() -> Result<Option<Device>> {
    Ok(Some(Device::new(super::cuda::Cuda::new(0)?)))
}

#[cfg(not(feature = "cuda"))]
fn cuda() -> Result<Option<Device>> {
    Err(Error::Input(
        "device cuda: this thermoflow was built without the CUDA backend; rebuild with `cargo build --release --features cuda`".into(),
    ))
}

#[cfg(feature = "wgpu")]
fn wgpu() -> Result<Option<Device>> {
    Ok(Some(Device::new(super::webgpu::WebGpu::new()?)))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu() -> Result<Option<Device>> {
    Err(Error::Input(
        "device wgpu: this thermoflow was built without the wgpu backend; rebuild with `cargo build --release --features wgpu`".into(),
    ))
}
