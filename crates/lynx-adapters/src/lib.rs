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
//! use lynx_adapters::{LynxAdapters, ResamplerConfig};
//! let dit = lynx_dit::WanTransformer::from_pretrained("Wan/transformer", device, DType::BF16)?;
//! let lynx = LynxAdapters::from_dir("lynx_full", &dit, ResamplerConfig::LYNX_DIM_HEAD, device, DType::BF16)?;
//! // once per video (and per condition)
//! let tokens = lynx.id.as_ref().unwrap().tokens(face)?;
//! let features = dit.reference_features(ref_latents, ref_text)?;
//! let extras = lynx.extras(Some(&tokens), 1.0, Some(features.as_slice()), 1.0)?;
//! // every step
//! let flow = dit.forward(x, t, text, &extras)?;
//! # Ok(()) }
//! ```

pub mod id;
pub mod reference;
pub mod resampler;
mod weights;

use std::path::{Path, PathBuf};

use burn::tensor::Tensor;
use lynx_core::{Error, Result};
use lynx_dit::{BlockExtras, ExtraKv};

pub use id::{IdAdapter, IpAttn};
pub use reference::{RefAdapter, RefAttn};
pub use resampler::{Resampler, ResamplerConfig};

/// Both adapters of `lynx_full/`, each optional: none is the plain Wan2.1 DiT, the
/// ID-adapter alone is a Lynx-lite-style setup, both is Lynx.
#[derive(Debug)]
pub struct LynxAdapters {
    pub id: Option<IdAdapter>,
    pub reference: Option<RefAdapter>,
}

impl LynxAdapters {
    /// Loads all three files of a `lynx_full/` folder for `dit` (`dim_head`: the
    /// resampler's head width, [`ResamplerConfig::LYNX_DIM_HEAD`] for the release).
    pub fn from_dir(
        dir: impl AsRef<Path>,
        dit: &lynx_dit::WanTransformer,
        dim_head: usize,
        device: &burn::tensor::Device,
        dtype: burn::tensor::DType,
    ) -> Result<Self> {
        let dir = dir.as_ref();
        Ok(Self {
            id: Some(IdAdapter::from_dir(dir, dit, dim_head, device, dtype)?),
            reference: Some(RefAdapter::from_dir(dir, dit, device, dtype)?),
        })
    }

    /// The DiT's per-block inputs for one condition: ID tokens `[B, Q, C]` (from
    /// [`IdAdapter::tokens`]) at `ip_scale` and/or the reference pass' features at
    /// `ref_scale`. Either left out means that adapter does not take part; giving one
    /// whose adapter is not loaded is an error.
    pub fn extras(
        &self,
        id_tokens: Option<&Tensor<3>>,
        ip_scale: f64,
        ref_features: Option<&[Tensor<3>]>,
        ref_scale: f64,
    ) -> Result<Vec<BlockExtras>> {
        let id = match (id_tokens, &self.id) {
            (Some(tokens), Some(adapter)) => Some(adapter.block_kv(tokens, ip_scale)?),
            (Some(_), None) => {
                return Err(Error::input("ID tokens given but no ID-adapter loaded"));
            }
            (None, _) => None,
        };
        let reference = match (ref_features, &self.reference) {
            (Some(features), Some(adapter)) => Some(adapter.block_kv(features, ref_scale)?),
            (Some(_), None) => {
                return Err(Error::input(
                    "reference features given but no Ref-adapter loaded",
                ));
            }
            (None, _) => None,
        };
        block_extras(id, reference)
    }
}

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
