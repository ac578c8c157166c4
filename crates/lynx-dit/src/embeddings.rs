//! Patch, timestep and text embeddings (diffusers `WanTransformer3DModel.patch_embedding`,
//! `WanTimeTextImageEmbedding`, `Timesteps`, `TimestepEmbedding`,
//! `PixArtAlphaTextProjection`).
//!
//! # Shapes
//! - [`PatchEmbedding`]: `[B, C, F, H, W]` → `[B, F'·H'·W', dim]`, tokens ordered frame,
//!   row, column (`F' = F/pt`, …).
//! - [`ConditionEmbedder::time`]: timesteps `[B]` → `temb [B, dim]`,
//!   `timestep_proj [B, 6, dim]`.
//! - [`ConditionEmbedder::text`]: `[B, L, text_dim]` → `[B, L, dim]`.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::activation::silu;
use burn::tensor::{DType, Tensor, TensorData};
use lynx_core::nn::gelu_tanh;

/// The Conv3d patch embedding with kernel = stride = patch, computed as a matmul over
/// the flattened patches (the same sums as the convolution).
#[derive(Module, Debug)]
pub struct PatchEmbedding {
    /// The conv weight `[dim, C, pt, ph, pw]` flattened to a linear `C·pt·ph·pw → dim`.
    pub proj: Linear,
    pub patch_size: [usize; 3],
}

impl PatchEmbedding {
    /// `[B, C, F, H, W]` → `[B, N, dim]`; `F`, `H`, `W` must be multiples of the patch.
    pub fn forward(&self, x: Tensor<5>) -> Tensor<3> {
        let [b, c, f, h, w] = x.dims();
        let [pt, ph, pw] = self.patch_size;
        let (nf, nh, nw) = (f / pt, h / ph, w / pw);
        let patches = x
            .reshape([b, c, nf, pt, nh, ph, nw, pw])
            .permute([0, 2, 4, 6, 1, 3, 5, 7])
            .reshape([b, nf * nh * nw, c * pt * ph * pw]);
        self.proj.forward(patches)
    }
}

/// `TimestepEmbedding`: `linear_2(silu(linear_1(x)))`, kept in f32.
#[derive(Module, Debug)]
pub struct TimestepEmbedding {
    pub linear_1: Linear,
    pub linear_2: Linear,
}

impl TimestepEmbedding {
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.linear_2.forward(silu(self.linear_1.forward(x)))
    }
}

/// `PixArtAlphaTextProjection` with the tanh GELU: `linear_2(gelu(linear_1(x)))`.
#[derive(Module, Debug)]
pub struct TextProjection {
    pub linear_1: Linear,
    pub linear_2: Linear,
}

impl TextProjection {
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.linear_2.forward(gelu_tanh(self.linear_1.forward(x)))
    }
}

/// `condition_embedder`: timestep → (`temb`, per-block modulation input), text → tokens.
#[derive(Module, Debug)]
pub struct ConditionEmbedder {
    /// f32 whatever the model dtype, as the reference keeps it.
    pub time_embedder: TimestepEmbedding,
    pub time_proj: Linear,
    pub text_embedder: TextProjection,
    /// Width of the sinusoidal embedding.
    pub freq_dim: usize,
    /// Model width.
    pub dim: usize,
}

impl ConditionEmbedder {
    /// Timesteps `[B]` → `temb [B, dim]` and `timestep_proj [B, 6, dim]`, both in `dtype`
    /// (the model's; `temb` is rounded to it as the reference does).
    pub fn time(&self, timestep: Tensor<1>, dtype: DType) -> (Tensor<2>, Tensor<3>) {
        let b = timestep.dims()[0];
        let sinusoid = timestep_sinusoid(timestep, self.freq_dim);
        let temb = self.time_embedder.forward(sinusoid).cast(dtype);
        let proj = self.time_proj.forward(silu(temb.clone()));
        (temb, proj.reshape([b, 6, self.dim]))
    }

    /// Text hidden states `[B, L, text_dim]` (model dtype) → `[B, L, dim]`.
    pub fn text(&self, text: Tensor<3>) -> Tensor<3> {
        self.text_embedder.forward(text)
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
