//! Lynx's Ref-adapter (`modules/full/attention_processor.py`, `WanRefAttnProcessor`):
//! each block's self-attention also attends, with weight `ref_scale` and without RoPE,
//! to `to_k_ref`/`to_v_ref` of the features the same block produced (its modulated norm1
//! output) when the DiT ran once over the reference face latents at t = 0
//! ([`lynx_dit::WanTransformer::reference_features`]). Lynx full only.
//!
//! | key (`ref_layers.safetensors`) | shape |
//! |---|---|
//! | `N.to_k_ref.weight`, `N.to_v_ref.weight` | `[dim, dim]` |
//! | `N.to_k_ref.bias`, `N.to_v_ref.bias` | `[dim]` |
//!
//! # Shapes
//! - reference features: per block `[B, M, dim]` (M = reference tokens, e.g. 256 for a
//!   256×256 face).
//! - per-block K/V: `[B, M, dim]`.

use std::path::Path;

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::{DType, Device, Tensor};
use lynx_core::{Error, Loader, Result, load_module};
use lynx_dit::{ExtraKv, WanTransformer};

/// `blocks.N.attn1.processor` of the Ref-adapter.
#[derive(Module, Debug)]
pub struct RefAttn {
    to_k_ref: Linear,
    to_v_ref: Linear,
}

impl RefAttn {
    /// Loads layer `N` for blocks of width `dim`.
    pub fn load(w: &Loader, dim: usize) -> Self {
        Self {
            to_k_ref: w.sub("to_k_ref").linear(dim, dim, true),
            to_v_ref: w.sub("to_v_ref").linear(dim, dim, true),
        }
    }

    /// The block's extra self-attention K/V for its reference features.
    ///
    /// # Shapes
    /// - `features` `[B, M, dim]` → K/V `[B, M, dim]`.
    pub fn extra_kv(&self, features: Tensor<3>, scale: f64) -> ExtraKv {
        ExtraKv::new(
            self.to_k_ref.forward(features.clone()),
            self.to_v_ref.forward(features),
            scale,
        )
    }
}

/// The Ref-adapter (`ref_layers.safetensors`).
#[derive(Module, Debug)]
pub struct RefAdapter {
    layers: Vec<RefAttn>,
    #[module(skip)]
    dim: usize,
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
        let dim = dit.dim();
        load_module(path, device, dtype, |w| {
            Ok(Self {
                layers: (0..dit.num_layers())
                    .map(|i| RefAttn::load(&w.sub(i), dim))
                    .collect(),
                dim,
            })
        })
    }

    /// Per-block self-attention K/V from the reference pass' features at weight
    /// `ref_scale` (one entry per DiT block). Computed once per reference image and
    /// reused at every step.
    ///
    /// # Shapes
    /// - `features`: per block `[B, M, dim]` → K/V `[B, M, dim]`.
    pub fn block_kv(&self, features: &[Tensor<3>], ref_scale: f64) -> Result<Vec<Option<ExtraKv>>> {
        if features.len() != self.layers.len() {
            return Err(Error::input(format!(
                "reference features of {} blocks, the Ref-adapter has {}",
                features.len(),
                self.layers.len()
            )));
        }
        let dtype = self.layers[0].to_k_ref.weight.val().dtype();
        features
            .iter()
            .zip(&self.layers)
            .enumerate()
            .map(|(i, (f, layer))| {
                let [b, m, d] = f.dims();
                if d != self.dim || b == 0 || m == 0 {
                    return Err(Error::input(format!(
                        "reference features of block {i} have shape {:?}, expected [B, M, {}]",
                        f.dims(),
                        self.dim
                    )));
                }
                Ok(Some(layer.extra_kv(f.clone().cast(dtype), ref_scale)))
            })
            .collect()
    }
}
