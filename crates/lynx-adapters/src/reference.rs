//! Lynx's Ref-adapter (`modules/full/attention_processor.py`, `WanRefAttnProcessor`):
//! each block's self-attention also attends, with weight `ref_scale` and without RoPE,
//! to `to_k_ref`/`to_v_ref` of the features the same block produced (its modulated norm1
//! output) when the DiT ran once over the reference face latents at t = 0
//! ([`lynx_dit::WanTransformer::reference_features`]).
//!
//! # Shapes
//! - reference features: per block `[B, M, dim]` (M = reference tokens, e.g. 256 for a
//!   256×256 face).
//! - per-block K/V: `[B, M, dim]`.

use std::path::Path;

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::{DType, Device, Tensor};
use lynx_core::{Checkpoint, Error, Result};
use lynx_dit::{ExtraKv, WanTransformer};

/// `blocks.N.attn1.processor` of the Ref-adapter.
#[derive(Module, Debug)]
pub struct RefAttn {
    pub to_k_ref: Linear,
    pub to_v_ref: Linear,
}

impl RefAttn {
    /// The block's extra self-attention K/V for its reference features `[B, M, dim]`.
    pub fn extra_kv(&self, features: Tensor<3>, scale: f64) -> ExtraKv {
        ExtraKv {
            key: self.to_k_ref.forward(features.clone()),
            value: self.to_v_ref.forward(features),
            scale,
        }
    }
}

/// The Ref-adapter (`ref_layers.safetensors`).
#[derive(Module, Debug)]
pub struct RefAdapter {
    pub layers: Vec<RefAttn>,
}

impl RefAdapter {
    /// Loads `ref_layers.safetensors` from a `lynx_full/` folder for `dit`.
    pub fn from_dir(
        dir: impl AsRef<Path>,
        dit: &WanTransformer,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        Self::from_file(
            crate::adapter_file(dir.as_ref(), "ref_layers.safetensors")?,
            dit,
            device,
            dtype,
        )
    }

    /// Loads a `ref_layers.safetensors` file for `dit`; its width and block count must
    /// match the DiT's.
    pub fn from_file(
        path: impl AsRef<Path>,
        dit: &WanTransformer,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let ckpt = Checkpoint::open(path)?;
        let loader = ckpt.loader(device, dtype);
        let layers = crate::weights::load_ref_layers(dit.dim(), dit.num_layers(), &loader);
        loader.finish()?;
        Ok(Self { layers })
    }

    /// Per-block self-attention K/V from the reference pass' features at weight
    /// `ref_scale`. Computed once per reference image and reused at every step.
    pub fn block_kv(&self, features: &[Tensor<3>], ref_scale: f64) -> Result<Vec<ExtraKv>> {
        if features.len() != self.layers.len() {
            return Err(Error::input(format!(
                "reference features of {} blocks, the Ref-adapter has {}",
                features.len(),
                self.layers.len()
            )));
        }
        let dim = self.layers[0].to_k_ref.weight.val().dims()[0];
        let dtype = self.layers[0].to_k_ref.weight.val().dtype();
        features
            .iter()
            .zip(&self.layers)
            .enumerate()
            .map(|(i, (f, layer))| {
                let [b, m, d] = f.dims();
                if d != dim || b == 0 || m == 0 {
                    return Err(Error::input(format!(
                        "reference features of block {i} have shape {:?}, expected [B, M, {dim}]",
                        f.dims()
                    )));
                }
                Ok(layer.extra_kv(f.clone().cast(dtype), ref_scale))
            })
            .collect()
    }
}
