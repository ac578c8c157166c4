//! The one source of randomness of a generation, drawn as the reference draws it.
//!
//! The reference (bytedance/lynx `modules/full/lynx_infer.py`, `lynx_lite_infer.py`)
//! draws every random tensor on PyTorch's CPU generator, whatever the device:
//! - the initial latents with `torch.Generator().manual_seed(seed)`, float32, by the
//!   pipeline's `prepare_latents`;
//! - the noise `ε` of the reference image's VAE sample (`mean + std·ε`, Lynx full) with a
//!   fresh `torch.Generator().manual_seed(seed + 1)` for the conditional and another for
//!   the unconditional reference pass (so both get the same `ε`), in the model dtype.
//!
//! A [`NoiseSource`] reproduces those numbers bit for bit with
//! [`torch_rng::TorchGenerator`], so `seed` N here and `--seed N` in the reference
//! start from the same noise. It can also replay recorded tensors instead.

pub mod torch_rng;

use burn::tensor::{DType, Device, Tensor, TensorCreationOptions, TensorData};
use lynx_core::{Error, Result};
use torch_rng::TorchGenerator;

/// Where the random tensors of a generation come from.
#[derive(Debug, Clone)]
pub struct NoiseSource {
    seed: u64,
    initial_latents: Option<Tensor<5>>,
    ref_eps: Option<Tensor<5>>,
}

impl NoiseSource {
    /// Draws everything from `seed` as the reference does: latents from
    /// `manual_seed(seed)`, the reference image's VAE noise from `manual_seed(seed + 1)`.
    pub fn seeded(seed: u64) -> Self {
        Self {
            seed,
            initial_latents: None,
            ref_eps: None,
        }
    }

    /// A seed from the operating system's randomness (the reference's `--seed -1`), in
    /// `0..2⁶³` so that it can be given back as a signed `--seed`.
    pub fn random_seed() -> u64 {
        use std::hash::{BuildHasher, Hasher};
        // `RandomState` keys come from the OS's random source once per process; the
        // hasher mixes in the time so two draws in a process differ.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            h.write_u128(t.as_nanos());
        }
        h.finish() >> 1
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

    /// Whether the initial latents are recorded ones rather than drawn from the seed.
    pub fn has_recorded_latents(&self) -> bool {
        self.initial_latents.is_some()
    }

    /// Initial latents of `shape`: the recorded ones (shape-checked) or standard normal
    /// f32 as `torch.randn(shape, generator=manual_seed(seed))` draws them.
    ///
    /// # Shapes
    /// - output `shape`, f32.
    pub fn initial_latents(&self, shape: [usize; 5], device: &Device) -> Result<Tensor<5>> {
        if let Some(t) = recorded("initial latents", &self.initial_latents, shape)? {
            return Ok(t.cast(DType::F32).to_device(device));
        }
        Ok(randn(self.seed, shape, DType::F32, device))
    }

    /// The reference image's VAE sampling noise of `shape` in `dtype` (the model's):
    /// recorded, or drawn from a fresh `manual_seed(seed + 1)` (the same for the
    /// conditional and the unconditional pass, each of which reseeds).
    ///
    /// # Shapes
    /// - output `shape`, in `dtype` (recorded noise is cast to it).
    pub fn ref_eps(&self, shape: [usize; 5], dtype: DType, device: &Device) -> Result<Tensor<5>> {
        if let Some(t) = recorded("reference noise", &self.ref_eps, shape)? {
            return Ok(t.cast(dtype).to_device(device));
        }
        Ok(randn(self.seed.wrapping_add(1), shape, dtype, device))
    }
}

/// The recorded tensor, if any, after checking its shape.
fn recorded(what: &str, t: &Option<Tensor<5>>, shape: [usize; 5]) -> Result<Option<Tensor<5>>> {
    match t {
        Some(t) if t.dims() == shape => Ok(Some(t.clone())),
        Some(t) => Err(Error::input(format!(
            "the given {what} have shape {:?}, but this request needs {shape:?}",
            t.dims()
        ))),
        None => Ok(None),
    }
}

/// `torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype)` on the
/// host, uploaded once.
fn randn(seed: u64, shape: [usize; 5], dtype: DType, device: &Device) -> Tensor<5> {
    let n = shape.iter().product();
    let mut g = TorchGenerator::manual_seed(seed);
    let data = match dtype {
        DType::BF16 => TensorData::new(g.randn_bf16(n), shape),
        DType::F16 => TensorData::new(g.randn_f16(n), shape),
        DType::F64 => TensorData::new(g.randn_f64(n), shape),
        _ => TensorData::new(g.randn_f32(n), shape),
    };
    let dtype = data.dtype();
    Tensor::from_data(
        data,
        TensorCreationOptions::new(device.clone()).with_dtype(dtype),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_draw_torch_numbers() {
        let device = lynx_testing::test_device();
        let noise = NoiseSource::seeded(42);
        let a = noise.initial_latents([1, 2, 1, 2, 4], &device).unwrap();
        let want = TorchGenerator::manual_seed(42).randn_f32(16);
        assert_eq!(a.into_data().try_into_vec::<f32>().unwrap(), want);
        // Reference noise: seed + 1 in the model dtype, the same on every call.
        let e1 = noise.ref_eps([1, 2, 1, 2, 4], DType::F32, &device).unwrap();
        let e2 = noise.ref_eps([1, 2, 1, 2, 4], DType::F32, &device).unwrap();
        let want = TorchGenerator::manual_seed(43).randn_f32(16);
        assert_eq!(e1.into_data().try_into_vec::<f32>().unwrap(), want);
        assert_eq!(e2.into_data().try_into_vec::<f32>().unwrap(), want);
        assert!(NoiseSource::random_seed() < 1 << 63);
    }
}
