//! The Wan2.1 text-to-video diffusion transformer, as diffusers 0.33.1
//! `src/diffusers/models/transformers/transformer_wan.py` computes it, with the hooks
//! Lynx (`modules/full/transformer_wan.py`, `modules/full/attention_processor.py`)
//! adds: extra key/value sets attended by self- and cross-attention, and a reference
//! pass that returns each block's modulated norm1 output.
//!
//! | module | mirrors |
//! |---|---|
//! | [`config`] | `WanTransformer3DModel.__init__` arguments (`transformer/config.json`) |
//! | [`detect`] | the config read off a single file's weight shapes (no `config.json`) |
//! | [`rope`] | `WanRotaryPosEmbed` and the complex rotation of `WanAttnProcessor2_0` |
//! | [`embeddings`] | `patch_embedding` (Conv3d), `WanTimeTextImageEmbedding` (T2V part) |
//! | [`attention`] | `Attention` + `WanAttnProcessor2_0` / Lynx's `WanRefAttnProcessor`, `WanIPAttnProcessor` |
//! | [`block`] | `WanTransformerBlock` (Lynx's version returning its norm1 output) |
//! | [`lora`] | PEFT's `lora.Linear.forward` (LoRAs applied per pass, not fused) |
//! | [`model`] | `WanTransformer3DModel.forward`, Lynx's `ref_feature_extractor` mode |
//!
//! Each module's `load` sits beside its type and its docs list the state-dict keys it
//! reads; [`WanTransformer::from_pretrained`] builds the whole model through
//! [`lynx_store::Checkpoint::build`].
//!
//! The adapters themselves (Perceiver Resampler, `to_k_ip`/`to_v_ip`,
//! `to_k_ref`/`to_v_ref`) live in `lynx-adapters`, which turns their inputs into the
//! per-block [`BlockExtras`] this crate consumes; the DiT knows nothing of Lynx.
//!
//! Precision: linear layers run in the model dtype (f32, f16 or bf16); layer norms,
//! modulation (`scale_shift_table + timestep_proj`), gated residuals and the timestep MLP
//! run in f32, as the reference keeps them. Attention goes through
//! [`lynx_core::nn::attention`] with no bias and the default scale (the fused kernel).
//!
//! # Shapes
//! - latents `[B, C, F, H, W]` → `N = F/pt · H/ph · W/pw` tokens of width
//!   `dim = heads × head_dim` (14B: 5120 = 40 × 128).
//! - text `[B, L, text_dim]` → `[B, L, dim]`; timestep `[B]` → `timestep_proj [B, 6, dim]`.
//! - output `[B, C_out, F, H, W]`; reference features: per block `[B, N, dim]`.
//!
//! ```no_run
//! # use burn::tensor::{DType, Device, Tensor};
//! # fn demo(device: &Device, x: Tensor<5>, t: Tensor<1>, text: Tensor<3>) -> lynx_core::Result<()> {
//! let dit = lynx_dit::WanTransformer::from_pretrained(
//!     "Wan2.1-T2V-14B-Diffusers/transformer", device, DType::BF16)?;
//! let flow = dit.forward(x, t, text, &[])?; // no adapters
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod attention;
pub mod block;
pub mod config;
pub mod detect;
pub mod embeddings;
pub mod lora;
pub mod model;
pub mod rope;

pub use attention::{ExtraKv, WanAttention};
pub use block::{BlockExtras, Modulation, WanBlock};
pub use config::WanConfig;
pub use lora::DitLora;
pub use model::{DitInput, WanTransformer};
pub use rope::{RopeTable, WanRope};
