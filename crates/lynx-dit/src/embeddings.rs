//! Patch, timestep and text embeddings (diffusers `WanTransformer3DModel.patch_embedding`,
//! `WanTimeTextImageEmbedding`, `Timesteps`, `TimestepEmbedding`,
//! `PixArtAlphaTextProjection`).
//!
//! | key | module |
//! |---|---|
//! | `patch_embedding.{weight [dim, C, pt, ph, pw], bias}` | [`PatchEmbedding`] (flattened to a linear) |
//! | `condition_embedder.time_embedder.linear_{1,2}.*` | [`TimestepEmbedding`] (f32) |
//! | `condition_embedder.time_proj.*` | `time_proj` (dim → 6·dim) |
//! | `condition_embedder.text_embedder.linear_{1,2}.*` | [`TextProjection`] |
//!
//! # Shapes
//! - [`PatchEmbedding`]: `[B, C, F, H, W]` → `[B, F'·H'·W', dim]`, tokens ordered frame,
//!   row, column (`F' = F/pt`, …).
//! - [`ConditionEmbedder::time`]: timesteps `[B]` → `temb [B, dim]`,
//!   `timestep_proj [B, 6, dim]`.
//! - [`ConditionEmbedder::text`]: `[B, L, text_dim]` → `[B, L, dim]`.

use burn::module::Module;
use burn::tensor::activation::silu;
use burn::tensor::{DType, Tensor, TensorData};
use lynx_core::nn::Linear;
use lynx_core::nn::{gelu_tanh, linear};

use crate::lora::OuterLora;
use lynx_store::Loader;

use crate::config::WanConfig;

/// The Conv3d patch embedding with kernel = stride = patch, computed as a matmul over
/// the flattened patches (the same sums as the convolution).
#[derive(Module, Debug)]
pub struct PatchEmbedding {
    /// The conv weight `[dim, C, pt, ph, pw]` flattened to a linear `C·pt·ph·pw → dim`.
    proj: Linear,
    patch_size: [usize; 3],
}

impl PatchEmbedding {
    /// Loads `patch_embedding` (`weight` `[dim, C, pt, ph, pw]`, `bias` `[dim]`).
    pub fn load(w: &Loader, cfg: &WanConfig) -> Self {
        let dim = cfg.inner_dim();
        let [pt, ph, pw] = cfg.patch_size;
        let volume = cfg.in_channels * cfg.patch_volume();
        let weight = w
            .tensor::<5>("weight", [dim, cfg.in_channels, pt, ph, pw])
            .reshape([dim, volume]);
        Self {
            proj: Linear::new(w.transposed(weight), Some(w.tensor("bias", [dim]))),
            patch_size: cfg.patch_size,
        }
    }

    /// `[B, C, F, H, W]` → `[B, N, dim]`; `F`, `H`, `W` must be multiples of the patch.
    ///
    /// # Shapes
    /// - input `[B, C, F, H, W]`, output `[B, F/pt · H/ph · W/pw, dim]`.
    pub fn forward(&self, x: Tensor<5>) -> Tensor<3> {
        let [b, c, f, h, w] = x.dims();
        let [pt, ph, pw] = self.patch_size;
        let (nf, nh, nw) = (f / pt, h / ph, w / pw);
        let patches = x
            .reshape([b, c, nf, pt, nh, ph, nw, pw])
            .permute([0, 2, 4, 6, 1, 3, 5, 7])
            .reshape([b, nf * nh * nw, c * pt * ph * pw]);
        linear(&self.proj, patches)
    }
}

/// `TimestepEmbedding`: `linear_2(silu(linear_1(x)))`, kept in f32.
#[derive(Module, Debug)]
pub struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
}

impl TimestepEmbedding {
    /// Loads `time_embedder` (`linear_1`: freq_dim → dim, `linear_2`: dim → dim) in f32.
    pub fn load(w: &Loader, freq_dim: usize, dim: usize) -> Self {
        Self {
            linear_1: w.sub("linear_1").linear_f32(freq_dim, dim, true),
            linear_2: w.sub("linear_2").linear_f32(dim, dim, true),
        }
    }

    /// # Shapes
    /// - input `[B, freq_dim]` (f32), output `[B, dim]` (f32).
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        linear(&self.linear_2, silu(linear(&self.linear_1, x)))
    }
}

/// `PixArtAlphaTextProjection` with the tanh GELU: `linear_2(gelu(linear_1(x)))`.
#[derive(Module, Debug)]
pub struct TextProjection {
    linear_1: Linear,
    linear_2: Linear,
}

impl TextProjection {
    /// Loads `text_embedder` (`linear_1`: text_dim → dim, `linear_2`: dim → dim).
    pub fn load(w: &Loader, text_dim: usize, dim: usize) -> Self {
        Self {
            linear_1: w.sub("linear_1").linear(text_dim, dim, true),
            linear_2: w.sub("linear_2").linear(dim, dim, true),
        }
    }

    /// # Shapes
    /// - input `[B, L, text_dim]`, output `[B, L, dim]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        linear(&self.linear_2, gelu_tanh(linear(&self.linear_1, x)))
    }
}

/// `condition_embedder`: timestep → (`temb`, per-block modulation input), text → tokens.
#[derive(Module, Debug)]
pub struct ConditionEmbedder {
    /// f32 whatever the model dtype, as the reference keeps it.
    time_embedder: TimestepEmbedding,
    /// dim → 6·dim.
    time_proj: Linear,
    text_embedder: TextProjection,
    /// Width of the sinusoidal embedding.
    freq_dim: usize,
    /// Model width.
    dim: usize,
}

impl ConditionEmbedder {
    /// Loads `condition_embedder` (keys in the module docs).
    pub fn load(w: &Loader, cfg: &WanConfig) -> Self {
        let dim = cfg.inner_dim();
        Self {
            time_embedder: TimestepEmbedding::load(&w.sub("time_embedder"), cfg.freq_dim, dim),
            time_proj: w.sub("time_proj").linear(dim, 6 * dim, true),
            text_embedder: TextProjection::load(&w.sub("text_embedder"), cfg.text_dim, dim),
            freq_dim: cfg.freq_dim,
            dim,
        }
    }

    /// Timesteps `[B]` → `temb [B, dim]` and `timestep_proj [B, 6, dim]`, both in `dtype`
    /// (the model's; `temb` is rounded to it as the reference does).
    ///
    /// # Shapes
    /// - `timestep` `[B]` → `[B, dim]`, `[B, 6, dim]`.
    pub fn time(&self, timestep: Tensor<1>, dtype: DType) -> (Tensor<2>, Tensor<3>) {
        self.time_lora(timestep, dtype, None)
    }

    /// [`ConditionEmbedder::time`] with a LoRA's deltas applied on the fly.
    ///
    /// # Shapes
    /// As [`ConditionEmbedder::time`].
    pub fn time_lora(
        &self,
        timestep: Tensor<1>,
        dtype: DType,
        lora: Option<&OuterLora>,
    ) -> (Tensor<2>, Tensor<3>) {
        let b = timestep.dims()[0];
        let sinusoid = timestep_sinusoid(timestep, self.freq_dim);
        let te = &self.time_embedder;
        let temb = match lora {
            Some(l) => {
                let h = silu(l.time_1.forward(&te.linear_1, sinusoid));
                l.time_2.forward(&te.linear_2, h)
            }
            None => te.forward(sinusoid),
        }
        .cast(dtype);
        let proj = match lora {
            Some(l) => l.time_proj.forward(&self.time_proj, silu(temb.clone())),
            None => linear(&self.time_proj, silu(temb.clone())),
        };
        (temb, proj.reshape([b, 6, self.dim]))
    }

    /// Text hidden states `[B, L, text_dim]` (model dtype) → `[B, L, dim]`.
    ///
    /// # Shapes
    /// - input `[B, L, text_dim]`, output `[B, L, dim]`.
    pub fn text(&self, text: Tensor<3>) -> Tensor<3> {
        self.text_lora(text, None)
    }

    /// [`ConditionEmbedder::text`] with a LoRA's deltas applied on the fly.
    ///
    /// # Shapes
    /// As [`ConditionEmbedder::text`].
    pub fn text_lora(&self, text: Tensor<3>, lora: Option<&OuterLora>) -> Tensor<3> {
        let Some(l) = lora else {
            return self.text_embedder.forward(text);
        };
        let te = &self.text_embedder;
        let h = gelu_tanh(l.text_1.forward(&te.linear_1, text));
        l.text_2.forward(&te.linear_2, h)
    }
}

/// `Timesteps(flip_sin_to_cos=True, downscale_freq_shift=0)`: `[cos(t·ω), sin(t·ω)]`
/// with `ω_j = exp(−ln(10000)·j/half)`, in f32 like the reference.
///
/// # Shapes
/// `[B]` → `[B, dim]`, f32.
pub fn timestep_sinusoid(timestep: Tensor<1>, dim: usize) -> Tensor<2> {
    let half = dim / 2;
    let device = timestep.device();
    let b = timestep.dims()[0];
    let log_period = -(10000f64.ln()) as f32;
    let freqs: Vec<f32> = (0..half)
        .map(|j| (log_period * j as f32 / half as f32).exp())
        .collect();
    let freqs = Tensor::<1>::from_data(TensorData::new(freqs, [half]), (&device, DType::F32));
    let angles = timestep.cast(DType::F32).reshape([b, 1]) * freqs.reshape([1, half]);
    Tensor::cat(vec![angles.clone().cos(), angles.sin()], 1)
}
