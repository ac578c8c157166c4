//! UniPC multistep sampler (Zhao et al. 2023) in its flow-prediction form, as diffusers
//! 0.33.1 `UniPCMultistepScheduler` runs it for Wan: `use_flow_sigmas`, `flow_shift`,
//! `predict_x0`, B(h) variants `bh1`/`bh2`, `lower_order_final`, `final_sigmas_type`.
//!
//! Each step converts the velocity to a data prediction `x0 = x − σ·v`, applies the
//! corrector (UniC) to the sample the previous predictor produced, then the predictor
//! (UniP) towards the next sigma. Coefficients are scalars computed on the host in f64;
//! tensor work per step is a handful of fused axpy-style operations on the device.

use burn::tensor::Tensor;
use lynx_core::{Error, Result};

use crate::config::SchedulerConfig;
use crate::{Scheduler, linalg, shifted_flow_sigmas};

/// UniPC multistep sampler for flow-matching models.
pub struct UniPcMultistep {
    config: SchedulerConfig,
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    /// Data predictions of the last `solver_order` steps, oldest first.
    model_outputs: Vec<Option<Tensor<5>>>,
    last_sample: Option<Tensor<5>>,
    lower_order_nums: usize,
    this_order: usize,
    step_index: Option<usize>,
}

impl UniPcMultistep {
    /// A sampler from a scheduler config; errors name any unsupported option.
    pub fn new(config: SchedulerConfig) -> Result<Self> {
        config.check_unipc()?;
        Ok(Self {
            model_outputs: vec![None; config.solver_order],
            config,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            last_sample: None,
            lower_order_nums: 0,
            this_order: 1,
            step_index: None,
        })
    }

    /// The config in use.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// The index of the next step, once stepping has begun.
    pub fn step_index(&self) -> Option<usize> {
        self.step_index
    }

    /// `(alpha_t, sigma_t)` for a flow sigma.
    fn alpha_sigma(sigma: f64) -> (f64, f64) {
        (1.0 - sigma, sigma)
    }

    fn lambda(sigma: f64) -> f64 {
        let (a, s) = Self::alpha_sigma(sigma);
        a.ln() - s.ln()
    }

    /// The shared B(h) algebra of UniP and UniC: `hh`, `h·φ₁(hh)`, `B(h)`, the matrix
    /// `R` (rows `rks^(i−1)`) and vector `b` of the order conditions.
    fn coefficients(&self, h: f64, rks: &[f64]) -> (f64, f64, Vec<Vec<f64>>, Vec<f64>) {
        let order = rks.len();
        let hh = -h; // predict_x0
        let h_phi_1 = hh.exp_m1();
        let mut h_phi_k = h_phi_1 / hh - 1.0;
        let mut factorial = 1.0;
        let b_h = if self.config.solver_type == "bh1" {
            hh
        } else {
            hh.exp_m1()
        };
        let mut r = Vec::with_capacity(order);
        let mut b = Vec::with_capacity(order);
        for i in 1..=order {
            r.push(rks.iter().map(|rk| rk.powi(i as i32 - 1)).collect());
            b.push(h_phi_k * factorial / b_h);
            factorial *= (i + 1) as f64;
            h_phi_k = h_phi_k / hh - 1.0 / factorial;
        }
        (h_phi_1, b_h, r, b)
    }

    /// `(rks, D1s)` from the stored data predictions for a step from `s0` (sigma index
    /// `s0_index`), looking back `order − 1` outputs, where output `k` back sits at
    /// sigma index `s0_index − k`.
    fn history(&self, h: f64, s0_index: usize, order: usize) -> (Vec<f64>, Vec<Tensor<5>>) {
        let n = self.model_outputs.len();
        let m0 = self.model_outputs[n - 1]
            .clone()
            .expect("at least one stored output");
        let lambda_s0 = Self::lambda(self.sigmas[s0_index]);
        let mut rks = Vec::with_capacity(order);
        let mut d1s = Vec::with_capacity(order);
        for i in 1..order {
            let mi = self.model_outputs[n - 1 - i]
                .clone()
                .expect("warm-up keeps the order within the stored outputs");
            let rk = (Self::lambda(self.sigmas[s0_index - i]) - lambda_s0) / h;
            rks.push(rk);
            d1s.push((mi - m0.clone()) / rk);
        }
        rks.push(1.0);
        (rks, d1s)
    }

    /// UniP: predicts the sample at `sigmas[i + 1]` from `x` at `sigmas[i]`.
    fn predictor(&self, x: Tensor<5>, order: usize) -> Tensor<5> {
        let i = self.step_index.expect("stepping");
        let (alpha_t, sigma_t) = Self::alpha_sigma(self.sigmas[i + 1]);
        let (_, sigma_s0) = Self::alpha_sigma(self.sigmas[i]);
        let h = Self::lambda(self.sigmas[i + 1]) - Self::lambda(self.sigmas[i]);
        let (rks, d1s) = self.history(h, i, order);
        let (h_phi_1, b_h, r, b) = self.coefficients(h, &rks);
        let m0 = self
            .model_outputs
            .last()
            .cloned()
            .flatten()
            .expect("stored output");
        let x_t = x * (sigma_t / sigma_s0) - m0 * (alpha_t * h_phi_1);
        if d1s.is_empty() {
            return x_t;
        }
        let rhos_p = if order == 2 {
            vec![0.5]
        } else {
            let k = order - 1;
            let r_sub = r[..k].iter().map(|row| row[..k].to_vec()).collect();
            linalg::solve(r_sub, b[..k].to_vec())
        };
        let pred_res = weighted_sum(&rhos_p, d1s);
        x_t - pred_res * (alpha_t * b_h)
    }

    /// UniC: the corrected sample at `sigmas[i]`, rebuilt from `last_sample` (at
    /// `sigmas[i − 1]`) with `this_output`, the data prediction at `sigmas[i]`.
    fn corrector(&self, this_output: Tensor<5>, last_sample: Tensor<5>, order: usize) -> Tensor<5> {
        let i = self.step_index.expect("stepping");
        let (alpha_t, sigma_t) = Self::alpha_sigma(self.sigmas[i]);
        let (_, sigma_s0) = Self::alpha_sigma(self.sigmas[i - 1]);
        let h = Self::lambda(self.sigmas[i]) - Self::lambda(self.sigmas[i - 1]);
        let (rks, d1s) = self.history(h, i - 1, order);
        let (h_phi_1, b_h, r, b) = self.coefficients(h, &rks);
        let rhos_c = if order == 1 {
            vec![0.5]
        } else {
            linalg::solve(r, b)
        };
        let m0 = self
            .model_outputs
            .last()
            .cloned()
            .flatten()
            .expect("stored output");
        let x_t = last_sample * (sigma_t / sigma_s0) - m0.clone() * (alpha_t * h_phi_1);
        let last = *rhos_c.last().expect("non-empty");
        let mut res = (this_output - m0) * last;
        if !d1s.is_empty() {
            res = res + weighted_sum(&rhos_c[..rhos_c.len() - 1], d1s);
        }
        x_t - res * (alpha_t * b_h)
    }

    /// Index of `timestep` in the schedule, as diffusers picks it on the first step.
    fn index_for_timestep(&self, timestep: f64) -> usize {
        let hits: Vec<usize> = self
            .timesteps
            .iter()
            .enumerate()
            .filter(|(_, t)| **t == timestep)
            .map(|(i, _)| i)
            .collect();
        match hits.len() {
            0 => self.timesteps.len() - 1,
            1 => hits[0],
            _ => hits[1],
        }
    }
}

fn weighted_sum(weights: &[f64], tensors: Vec<Tensor<5>>) -> Tensor<5> {
    tensors
        .into_iter()
        .zip(weights)
        .map(|(t, w)| t * *w)
        .reduce(|a, b| a + b)
        .expect("non-empty")
}

impl Scheduler for UniPcMultistep {
    fn set_timesteps(&mut self, num_steps: usize) -> Result<()> {
        if num_steps == 0 {
            return Err(Error::input(
                "the number of sampling steps must be at least 1",
            ));
        }
        let c = &self.config;
        let sigmas = shifted_flow_sigmas(num_steps, c.num_train_timesteps, c.flow_shift);
        // diffusers casts `sigma * num_train_timesteps` to int64 (truncation).
        self.timesteps = sigmas
            .iter()
            .map(|s| (s * c.num_train_timesteps as f64).trunc())
            .collect();
        let last = if c.final_sigmas_type == "sigma_min" {
            *sigmas.last().expect("non-empty")
        } else {
            0.0
        };
        // The reference keeps sigmas in float32.
        self.sigmas = sigmas
            .into_iter()
            .chain([last])
            .map(|s| s as f32 as f64)
            .collect();
        self.model_outputs = vec![None; c.solver_order];
        self.last_sample = None;
        self.lower_order_nums = 0;
        self.this_order = 1;
        self.step_index = None;
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
        timestep: f64,
        sample: Tensor<5>,
    ) -> Result<Tensor<5>> {
        if self.timesteps.is_empty() {
            return Err(Error::input("call set_timesteps before step"));
        }
        if model_output.dims() != sample.dims() {
            return Err(Error::input(format!(
                "model output {:?} and sample {:?} differ in shape",
                model_output.dims(),
                sample.dims()
            )));
        }
        let i = match self.step_index {
            Some(i) => i,
            None => self.index_for_timestep(timestep),
        };
        if i >= self.timesteps.len() {
            return Err(Error::input(format!(
                "all {} steps of the schedule have been taken",
                self.timesteps.len()
            )));
        }
        self.step_index = Some(i);

        let sigma = self.sigmas[i];
        let converted = sample.clone() - model_output * sigma;
        let mut sample = sample;
        if i > 0
            && !self.config.disable_corrector.contains(&(i - 1))
            && let Some(last) = self.last_sample.take()
        {
            sample = self.corrector(converted.clone(), last, self.this_order);
        }
        self.model_outputs.remove(0);
        self.model_outputs.push(Some(converted));

        let order = self.config.solver_order;
        let this_order = if self.config.lower_order_final {
            order.min(self.timesteps.len() - i)
        } else {
            order
        };
        self.this_order = this_order.min(self.lower_order_nums + 1);
        self.last_sample = Some(sample.clone());
        let prev = self.predictor(sample, self.this_order);
        if self.lower_order_nums < order {
            self.lower_order_nums += 1;
        }
        self.step_index = Some(i + 1);
        Ok(prev)
    }
}
