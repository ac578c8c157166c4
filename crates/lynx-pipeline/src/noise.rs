//! The one source of randomness of a generation.
//!
//! A [`NoiseSource`] draws the initial latents and the noise `ε` of the reference image's
//! VAE sample (`mean + std·ε`, the same `ε` for the conditional and unconditional
//! reference passes, as the reference reseeds for each). It is seeded (reproducible
//! across runs, machines and backends: numbers are drawn on the host with xoshiro256++
//! and Box–Muller, then uploaded once) or replays recorded tensors, e.g. the reference
//! implementation's, for bit-comparable runs.

use burn::tensor::{DType, Device, Tensor, TensorData};
use lynx_core::{Error, Result};

/// Where the random tensors of a generation come from.
#[derive(Debug, Clone)]
pub struct NoiseSource {
    seed: u64,
    initial_latents: Option<Tensor<5>>,
    ref_eps: Option<Tensor<5>>,
}

impl NoiseSource {
    /// Draws everything from `seed`: latents from stream `seed`, the reference noise
    /// from stream `seed + 1` (the reference's convention).
    pub fn seeded(seed: u64) -> Self {
        Self {
            seed,
            initial_latents: None,
            ref_eps: None,
        }
    }

    /// Uses these initial latents `[1, C, F', H/8, W/8]` instead of drawing them.
    pub fn with_initial_latents(mut self, latents: Tensor<5>) -> Self {
        self.initial_latents = Some(latents);
        self
    }

    /// Uses this `ε` `[1, C, 1, h, w]` for the reference image's VAE sample.
    pub fn with_ref_eps(mut self, eps: Tensor<5>) -> Self {
        self.ref_eps = Some(eps);
        self
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Initial latents of `shape`: the recorded ones (shape-checked) or standard normal
    /// f32 drawn from the seed.
    pub fn initial_latents(&self, shape: [usize; 5], device: &Device) -> Result<Tensor<5>> {
        pick(
            "initial latents",
            &self.initial_latents,
            shape,
            self.seed,
            device,
        )
    }

    /// The reference image's VAE sampling noise of `shape`.
    pub fn ref_eps(&self, shape: [usize; 5], device: &Device) -> Result<Tensor<5>> {
        pick(
            "reference noise",
            &self.ref_eps,
            shape,
            self.seed.wrapping_add(1),
            device,
        )
    }
}

fn pick(
    what: &str,
    recorded: &Option<Tensor<5>>,
    shape: [usize; 5],
    seed: u64,
    device: &Device,
) -> Result<Tensor<5>> {
    match recorded {
        Some(t) if t.dims() == shape => Ok(t.clone().cast(DType::F32).to_device(device)),
        Some(t) => Err(Error::input(format!(
            "the given {what} have shape {:?}, but this request needs {shape:?}",
            t.dims()
        ))),
        None => Ok(Tensor::from_data(
            TensorData::new(normal(seed, shape.iter().product()), shape),
            (device, DType::F32),
        )),
    }
}

/// `n` standard normal f32 from `seed` (xoshiro256++ seeded by SplitMix64, Box–Muller).
pub fn normal(seed: u64, n: usize) -> Vec<f32> {
    let mut sm = seed;
    let mut next_sm = || {
        sm = sm.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = sm;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut s = [next_sm(), next_sm(), next_sm(), next_sm()];
    let mut next = || {
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    };
    // Uniform in (0, 1]: 53 random bits.
    let mut uniform = || ((next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let (u1, u2) = (uniform(), uniform());
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = std::f64::consts::TAU * u2;
        out.push((r * theta.cos()) as f32);
        out.push((r * theta.sin()) as f32);
    }
    out.truncate(n);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn normal_is_standard_and_reproducible() {
        let a = super::normal(42, 100_000);
        assert_eq!(a, super::normal(42, 100_000));
        assert_ne!(a[..10], super::normal(43, 10)[..]);
        let mean = a.iter().map(|x| *x as f64).sum::<f64>() / a.len() as f64;
        let var = a.iter().map(|x| (*x as f64 - mean).powi(2)).sum::<f64>() / a.len() as f64;
        assert!(
            mean.abs() < 0.01 && (var - 1.0).abs() < 0.02,
            "mean {mean}, var {var}"
        );
    }
}
