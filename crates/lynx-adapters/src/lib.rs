//! Lynx's two adapters for the Wan2.1 DiT of [`lynx_dit`], loaded from the released
//! `lynx_full/` files and turned into the per-block extra key/value sets
//! ([`lynx_dit::BlockExtras`]) the DiT's attention takes.
//!
//! | module | mirrors (bytedance/lynx) |
//! |---|---|
//! | [`resampler`] | `modules/common/resampler.py` (`Resampler`, `PerceiverAttention`, `FeedForward`) |
//! | [`id`] | `modules/full/attention_processor.py` `WanIPAttnProcessor` (+ `registers`) |
//! | [`reference`](mod@reference) | `modules/full/attention_processor.py` `WanRefAttnProcessor` |
//! | `weights` | keys of `resampler.safetensors`, `ip_layers.safetensors`, `ref_layers.safetensors` |
//!
//! The adapters are separate inputs from the base model: the DiT runs with no adapters
//! (`&[]`), with the ID-adapter only, or with both. Their K/V depend only on the face
//! (ID tokens) and the reference features, not on the noisy latents or the timestep, so
//! they are computed once per condition and reused at every denoising step.
//!
//! # Shapes (released model / tiny fixture)
//! - face embedding `[B, 1, 512]` → ID tokens `[B, 16, 5120]` (Resampler: depth 4,
//!   width 1280, 20 heads × 64).
//! - ID K/V per block: `[B, 16 + R, dim]` (`R` registers from `ip_layers.safetensors`).
//! - reference features per block `[B, M, dim]` → Ref K/V `[B, M, dim]`.
//!
//! ```no_run
//! # use burn::tensor::{DType, Device, Tensor};
//! # fn demo(device: &Device, face: Tensor<3>, ref_latents: Tensor<5>, ref_text: Tensor<3>,
//! #         x: Tensor<5>, t: Tensor<1>, text: Tensor<3>) -> lynx_core::Result<()> {
//! use lynx_adapters::{IdAdapter, RefAdapter, ResamplerConfig, block_extras};
//! let dit = lynx_dit::WanTransformer::from_pretrained("Wan/transformer", device, DType::BF16)?;
//! let id = IdAdapter::from_dir("lynx_full", &dit, ResamplerConfig::LYNX_DIM_HEAD, device, DType::BF16)?;
//! let reference = RefAdapter::from_dir("lynx_full", &dit, device, DType::BF16)?;
//! // once per video
//! let tokens = id.tokens(face)?;
//! let features = dit.reference_features(ref_latents, ref_text)?;
//! let extras = block_extras(Some(id.block_kv(&tokens, 1.0)?), Some(reference.block_kv(&features, 1.0)?))?;
//! // every step
//! let flow = dit.forward(x, t, text, &extras)?;
//! # Ok(()) }
//! ```

pub mod id;
pub mod reference;
pub mod resampler;
mod weights;

use std::path::{Path, PathBuf};

use lynx_core::{Error, Result};
use lynx_dit::{BlockExtras, ExtraKv};

pub use id::{IdAdapter, IpAttn};
pub use reference::{RefAdapter, RefAttn};
pub use resampler::{Resampler, ResamplerConfig};

/// Combines the adapters' per-block K/V into the DiT's per-block inputs: ID K/V go to
/// cross-attention, Ref K/V to self-attention. With neither, the result is empty (the
/// plain DiT).
pub fn block_extras(
    id: Option<Vec<ExtraKv>>,
    reference: Option<Vec<ExtraKv>>,
) -> Result<Vec<BlockExtras>> {
    let n = match (&id, &reference) {
        (Some(a), Some(b)) if a.len() != b.len() => {
            return Err(Error::input(format!(
                "ID K/V for {} blocks but Ref K/V for {}",
                a.len(),
                b.len()
            )));
        }
        (Some(a), _) => a.len(),
        (None, Some(b)) => b.len(),
        (None, None) => 0,
    };
    let mut id = id.map(Vec::into_iter);
    let mut reference = reference.map(Vec::into_iter);
    Ok((0..n)
        .map(|_| BlockExtras {
            self_attn: reference.as_mut().and_then(Iterator::next),
            cross_attn: id.as_mut().and_then(Iterator::next),
        })
        .collect())
}

/// `dir/name`, or an error naming the missing adapter file.
fn adapter_file(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::MissingFile {
            path,
            hint: "a lynx_full/ folder holds resampler.safetensors, ip_layers.safetensors \
                   and ref_layers.safetensors"
                .into(),
        })
    }
}
