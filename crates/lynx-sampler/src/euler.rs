//! Flow-matching Euler sampler: diffusers 0.33.1 `FlowMatchEulerDiscreteScheduler(shift)`
//! with its other options at their defaults, as the Wan docs configure it.
//!
//! Its schedule shifts the end point twice: with `f(s) = shift·s / (1 + (shift−1)·s)`,
//! `σ = f(linspace(1, f(1/T), N))`, then a final 0; timesteps `T·σ` (not rounded). Each
//! step is `x ← x + (σ_next − σ)·v`.

use burn::tensor::Tensor;
use lynx_core::{Error, Result};

use crate::Scheduler;
use crate::config::SchedulerConfig;

/// First-order flow sampler. With the exact velocity of a straight path it lands on the
/// path's end in one step; it is the simplest sampler to swap in for UniPC.
pub struct FlowMatchEuler {
    num_train_timesteps: usize,
    shift: f64,
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    step_index: usize,
}

impl FlowMatchEuler {
    /// An Euler sampler with `shift` (Wan's `flow_shift`).
    pub fn new(num_train_timesteps: usize, shift: f64) -> Result<Self> {
        if !(shift > 0.0 && shift.is_finite()) || num_train_timesteps == 0 {
            return Err(Error::input(format!(
                "flow shift must be positive and num_train_timesteps non-zero (got {shift}, {num_train_timesteps})"
            )));
        }
        Ok(Self {
            num_train_timesteps,
            shift,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            step_index: 0,
        })
    }

    /// Takes `num_train_timesteps` and `flow_shift` from a scheduler config (errors
    /// name the file).
    pub fn from_config(config: &SchedulerConfig) -> Result<Self> {
        Self::new(config.num_train_timesteps, config.flow_shift).map_err(|e| match e {
            Error::Input(reason) => Error::config(&config.path, reason),
            other => other,
        })
    }
}

impl Scheduler for FlowMatchEuler {
    fn set_timesteps(&mut self, num_steps: usize) -> Result<()> {
        if num_steps == 0 {
            return Err(Error::input(
                "the number of sampling steps must be at least 1",
            ));
        }
        let sigmas = euler_sigmas(num_steps, self.num_train_timesteps, self.shift);
        self.timesteps = sigmas
            .iter()
            .map(|s| s * self.num_train_timesteps as f64)
            .collect();
        self.sigmas = sigmas.into_iter().chain([0.0]).collect();
        self.step_index = 0;
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }

    fn step(
        &mut self,
        model_output: Tensor<5>,
        _timestep: f64,
        sample: Tensor<5>,
    ) -> Result<Tensor<5>> {
        let i = self.step_index;
        if i >= self.timesteps.len() {
            return Err(Error::input(format!(
                "all {} steps of the schedule have been taken (call set_timesteps)",
                self.timesteps.len()
            )));
        }
        if model_output.dims() != sample.dims() {
            return Err(Error::input(format!(
                "model output {:?} and sample {:?} differ in shape",
                model_output.dims(),
                sample.dims()
            )));
        }
        let dt = self.sigmas[i + 1] - self.sigmas[i];
        self.step_index += 1;
        Ok(sample + model_output * dt)
    }
}

/// `f(linspace(1, f(1/T), n))` with `f(s) = shift·s / (1 + (shift−1)·s)`: the `n` sigmas
/// of diffusers' `FlowMatchEulerDiscreteScheduler.set_timesteps` (its `sigma_min` is the
/// shifted `1/T`, and the linspace is shifted again).
fn euler_sigmas(n: usize, num_train_timesteps: usize, shift: f64) -> Vec<f64> {
    let f = |s: f64| shift * s / (1.0 + (shift - 1.0) * s);
    let end = f(1.0 / num_train_timesteps as f64);
    (0..n)
        .map(|i| {
            let s = if n == 1 {
                1.0
            } else {
                1.0 + (end - 1.0) * i as f64 / (n - 1) as f64
            };
            f(s)
        })
        .collect()
}
