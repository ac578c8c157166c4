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
use std::sync::Arc;

use burn::module::Module;
use burn::tensor::{DType, Device, Tensor};
use lynx_core::nn::Linear;
use lynx_core::nn::linear;
use lynx_core::{Error, Result};
use lynx_dit::{ExtraKv, WanTransformer};
use lynx_store::for_each_layer;
use lynx_store::{Checkpoint, LayerStream, Loader};

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
            linear(&self.to_k_ref, features.clone()),
            linear(&self.to_v_ref, features),
            scale,
        )
    }
}

/// The Ref-adapter (`ref_layers.safetensors`).
#[derive(Module, Debug)]
pub struct RefAdapter {
    /// The layers, when resident.
    layers: Vec<RefAttn>,
    /// The layers, when read one at a time from `ref_layers.safetensors`.
    #[module(skip)]
    stream: Option<LayerStream<RefAttn>>,
    /// Their dtype.
    #[module(skip)]
    dtype: DType,
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
        Self::from_dir_with(dir, dit, device, dtype, false)
    }

    /// [`RefAdapter::from_dir`], with the layers left in their memory-mapped file when
    /// `streamed` (checked now, each read in its turn by [`RefAdapter::block_kv_many`]).
    pub fn from_dir_with(
        dir: impl AsRef<Path>,
        dit: &WanTransformer,
        device: &Device,
        dtype: DType,
        streamed: bool,
    ) -> Result<Self> {
        let path = crate::adapter_file(dir.as_ref(), "ref_layers.safetensors")?;
        Self::open(&path, dit, device, dtype, streamed)
    }

    /// Loads a `ref_layers.safetensors` file for `dit`; its width and block count must
    /// match the DiT's.
    pub fn from_file(
        path: impl AsRef<Path>,
        dit: &WanTransformer,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        Self::open(path.as_ref(), dit, device, dtype, false)
    }

    fn open(
        path: &Path,
        dit: &WanTransformer,
        device: &Device,
        dtype: DType,
        streamed: bool,
    ) -> Result<Self> {
        let (dim, n) = (dit.dim(), dit.num_layers());
        let ckpt = Arc::new(Checkpoint::open(path)?);
        ckpt.build(device, dtype, |w| {
            let layer = move |l: &Loader<'_>| RefAttn::load(l, dim);
            let (layers, stream) = if streamed {
                let check = w.validating();
                (0..n).for_each(|i| drop(layer(&check.sub(i))));
                let prefixes = (0..n).map(|i| w.key(&i.to_string())).collect();
                let s = LayerStream::new(ckpt.clone(), prefixes, device, dtype, layer);
                (Vec::new(), Some(s))
            } else {
                ((0..n).map(|i| layer(&w.sub(i))).collect(), None)
            };
            Ok(Self {
                layers,
                stream,
                dtype,
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
        let mut all = self.block_kv_many(&[features], ref_scale)?;
        all.pop()
            .ok_or_else(|| Error::input("the Ref-adapter returned nothing for its one input"))
    }

    /// [`RefAdapter::block_kv`] for several feature sets (the face's and the mid-grey
    /// image's), each layer serving all of them before the next (streamed layers are
    /// read once).
    ///
    /// # Shapes
    /// - per input, per block `[B, M, dim]` → per input, per block K/V `[B, M, dim]`.
    pub fn block_kv_many(
        &self,
        features: &[&[Tensor<3>]],
        ref_scale: f64,
    ) -> Result<Vec<Vec<Option<ExtraKv>>>> {
        let n = self
            .layers
            .len()
            .max(self.stream.as_ref().map_or(0, |s| s.len()));
        for f in features {
            if f.len() != n {
                return Err(Error::input(format!(
                    "reference features of {} blocks, the Ref-adapter has {n}",
                    f.len()
                )));
            }
            for (i, t) in f.iter().enumerate() {
                let [b, m, d] = t.dims();
                if d != self.dim || b == 0 || m == 0 {
                    return Err(Error::input(format!(
                        "reference features of block {i} have shape {:?}, expected [B, M, {}]",
                        t.dims(),
                        self.dim
                    )));
                }
            }
        }
        let mut out: Vec<Vec<Option<ExtraKv>>> =
            features.iter().map(|_| Vec::with_capacity(n)).collect();
        for_each_layer(&self.layers, self.stream.as_ref(), |i, layer| {
            for (f, kv) in features.iter().zip(out.iter_mut()) {
                kv.push(Some(
                    layer.extra_kv(f[i].clone().cast(self.dtype), ref_scale),
                ));
            }
            Ok(())
        })?;
        Ok(out)
    }
}
