//! Samplers and guidance for lynx-rs, swappable behind the [`Scheduler`] trait.
//!
//! | module | mirrors | what |
//! |---|---|---|
//! | [`unipc`] | diffusers 0.33.1 `schedulers/scheduling_unipc_multistep.py` | [`UniPcMultistep`], flow prediction (Wan's default) |
//! | [`euler`] | diffusers `schedulers/scheduling_flow_match_euler_discrete.py` | [`FlowMatchEuler`], the simplest flow sampler |
//! | [`guidance`] | `pipelines/wan/pipeline_wan.py`, Lynx `modules/full/lynx_pipeline.py` | plain CFG and Lynx's text + identity guidance |
//! | [`config`] | `scheduler/scheduler_config.json` | [`SchedulerConfig`] |
//!
//! Samples are latents `[batch, channels, frames, height, width]` (f32, on any device);
//! schedule arithmetic (sigmas, UniPC coefficients) is scalar f64 on the host.

#![warn(missing_docs)]

pub mod config;
pub mod euler;
pub mod guidance;
mod linalg;
pub mod unipc;

pub use config::SchedulerConfig;
pub use euler::FlowMatchEuler;
pub use guidance::Guidance;
pub use unipc::UniPcMultistep;

use burn::tensor::Tensor;
use lynx_core::Result;

/// A diffusion sampler: a schedule of timesteps and an update rule.
///
/// Usage: [`Scheduler::set_timesteps`], then for each `t` of [`Scheduler::timesteps`]
/// run the model and call [`Scheduler::step`] with its output.
pub trait Scheduler: Send {
    /// Builds the schedule for `num_steps` denoising steps and resets the sampler state.
    fn set_timesteps(&mut self, num_steps: usize) -> Result<()>;

    /// The timesteps the model is called with, one per step (scale 0..num_train_timesteps).
    fn timesteps(&self) -> &[f64];

    /// The noise levels, one per step plus the final one.
    fn sigmas(&self) -> &[f64];

    /// Scale of the initial noise (1 for flow matching).
    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    /// Advances `sample` by one step given the model's output at `timestep`.
    ///
    /// # Shapes
    /// - `model_output`, `sample`, output: `[batch, channels, frames, height, width]`
    fn step(
        &mut self,
        model_output: Tensor<5>,
        timestep: f64,
        sample: Tensor<5>,
    ) -> Result<Tensor<5>>;
}

/// Flow-matching sigmas shifted by `shift` (`shift·s / (1 + (shift−1)·s)`), for
/// `num_steps` steps from `1` towards `1/num_train_timesteps`, as diffusers'
/// `use_flow_sigmas` computes them (without the final sigma).
pub(crate) fn shifted_flow_sigmas(
    num_steps: usize,
    num_train_timesteps: usize,
    shift: f64,
) -> Vec<f64> {
    let n = num_steps + 1;
    let last = 1.0 / num_train_timesteps as f64;
    // alphas = linspace(1, 1/T, n); sigmas = 1 - alphas, reversed, last dropped.
    let mut sigmas: Vec<f64> = (0..n)
        .map(|i| {
            let alpha = if n == 1 {
                1.0
            } else {
                1.0 + (last - 1.0) * i as f64 / (n - 1) as f64
            };
            let s = 1.0 - alpha;
            shift * s / (1.0 + (shift - 1.0) * s)
        })
        .collect();
    sigmas.reverse();
    sigmas.pop();
    sigmas
}
