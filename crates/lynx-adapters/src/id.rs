//! Lynx's ID-adapter (`modules/full/attention_processor.py`, `WanIPAttnProcessor`):
//! the Resampler's ID tokens, followed by learned `registers`, projected per block by
//! `to_k_ip`/`to_v_ip` and attended from each block's cross-attention queries with
//! weight `ip_scale`.
//!
//! # Shapes
//! - ID tokens: `[B, Q, C]` (`C` = `to_k_ip` input width, the resampler's output).
//! - `registers`: `[1, R, C]` per block (optional).
//! - per-block K/V: `[B, Q + R, dim]`.

use std::path::Path;

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{DType, Device, Tensor};
use lynx_core::{Checkpoint, Error, Result};
use lynx_dit::{ExtraKv, WanTransformer};

use crate::resampler::{Resampler, ResamplerConfig};

/// `blocks.N.attn2.processor` of the ID-adapter.
#[derive(Module, Debug)]
pub struct IpAttn {
    pub to_k_ip: Linear,
    pub to_v_ip: Linear,
    /// `[1, R, C]`: tokens appended to every sample's ID tokens.
    pub registers: Option<Param<Tensor<3>>>,
}

impl IpAttn {
    /// The block's extra cross-attention K/V for ID tokens `[B, Q, C]`.
    pub fn extra_kv(&self, tokens: Tensor<3>, scale: f64) -> ExtraKv {
        let b = tokens.dims()[0];
        let tokens = match &self.registers {
            Some(r) => Tensor::cat(vec![tokens, r.val().repeat_dim(0, b)], 1),
            None => tokens,
        };
        ExtraKv {
            key: self.to_k_ip.forward(tokens.clone()),
            value: self.to_v_ip.forward(tokens),
            scale,
        }
    }
}

/// The ID-adapter: resampler (`resampler.safetensors`) and per-block IP attention
/// (`ip_layers.safetensors`).
#[derive(Module, Debug)]
pub struct IdAdapter {
    pub resampler: Resampler,
    pub layers: Vec<IpAttn>,
}

impl IdAdapter {
    /// Loads `resampler.safetensors` and `ip_layers.safetensors` from a `lynx_full/`
    /// folder, for `dit` (its width and block count are checked against the files).
    /// `dim_head` is the resampler's head width ([`ResamplerConfig::LYNX_DIM_HEAD`] for
    /// the released model).
    pub fn from_dir(
        dir: impl AsRef<Path>,
        dit: &WanTransformer,
        dim_head: usize,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let dir = dir.as_ref();
        Self::from_files(
            crate::adapter_file(dir, "resampler.safetensors")?,
            crate::adapter_file(dir, "ip_layers.safetensors")?,
            dit,
            dim_head,
            device,
            dtype,
        )
    }

    /// [`IdAdapter::from_dir`] with the two files named.
    pub fn from_files(
        resampler: impl AsRef<Path>,
        ip_layers: impl AsRef<Path>,
        dit: &WanTransformer,
        dim_head: usize,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let resampler = Checkpoint::open(resampler)?;
        let config = ResamplerConfig::from_checkpoint(&resampler, dim_head)?;
        let loader = resampler.loader(device, dtype);
        let resampler_module = crate::weights::load_resampler(config, &loader);
        loader.finish()?;

        let ip = Checkpoint::open(ip_layers)?;
        let loader = ip.loader(device, dtype);
        let layers = crate::weights::load_ip_layers(dit.dim(), dit.num_layers(), &loader);
        loader.finish()?;

        let token_dim = resampler_module.config.output_dim;
        let ip_in = layers
            .first()
            .map_or(0, |l| l.to_k_ip.weight.val().dims()[0]);
        if token_dim != ip_in {
            return Err(Error::Shape {
                path: ip.path().to_path_buf(),
                key: "0.to_k_ip.weight".into(),
                expected: vec![dit.dim(), token_dim],
                found: vec![dit.dim(), ip_in],
            });
        }
        Ok(Self {
            resampler: resampler_module,
            layers,
        })
    }

    /// Face embedding `[B, n, embedding_dim]` → ID tokens `[B, Q, C]` (registers not yet
    /// appended). Lynx's unconditional branch passes an all-zero embedding.
    pub fn tokens(&self, face_embedding: Tensor<3>) -> Result<Tensor<3>> {
        self.resampler.forward(face_embedding)
    }

    /// Width `C` of the ID tokens the blocks take.
    pub fn token_dim(&self) -> usize {
        self.resampler.config.output_dim
    }

    /// Per-block cross-attention K/V for ID tokens `[B, Q, C]` at weight `ip_scale`.
    /// They depend on nothing else: compute them once per face and reuse them at every
    /// denoising step.
    pub fn block_kv(&self, tokens: &Tensor<3>, ip_scale: f64) -> Result<Vec<ExtraKv>> {
        let [b, q, c] = tokens.dims();
        if c != self.token_dim() || b == 0 || q == 0 {
            return Err(Error::input(format!(
                "ID tokens of shape {:?}, the ID-adapter takes [B, Q, {}]",
                tokens.dims(),
                self.token_dim()
            )));
        }
        let dtype = self.layers[0].to_k_ip.weight.val().dtype();
        let tokens = tokens.clone().cast(dtype);
        Ok(self
            .layers
            .iter()
            .map(|l| l.extra_kv(tokens.clone(), ip_scale))
            .collect())
    }
}
