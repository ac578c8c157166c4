//! `vae/config.json` of a Wan2.1 diffusers folder (`AutoencoderKLWan`).

use std::path::{Path, PathBuf};

use lynx_core::config::{load_json, unsupported};
use lynx_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// The fields of diffusers' `AutoencoderKLWan` config, with diffusers 0.33.1's defaults.
/// Unknown fields are ignored. Serialises back to the fields of `config.json`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct VaeConfig {
    /// `_class_name`; only `AutoencoderKLWan` is implemented.
    #[serde(rename = "_class_name")]
    pub class_name: Option<String>,
    /// Channels of the first encoder stage (96 in Wan2.1).
    pub base_dim: usize,
    /// Latent channels (16 in Wan2.1).
    pub z_dim: usize,
    /// Channel multiplier per stage; `len − 1` spatial halvings.
    pub dim_mult: Vec<usize>,
    /// Residual blocks per encoder stage (the decoder has one more per stage).
    pub num_res_blocks: usize,
    /// Encoder scales (1, 1/2, …) that get an attention block after each residual block
    /// (the decoder ignores it, as upstream does; Wan2.1 has none).
    pub attn_scales: Vec<f64>,
    /// Per downsampling stage: whether it also halves time (`temperal` as spelled upstream).
    pub temperal_downsample: Vec<bool>,
    /// Training only; ignored.
    pub dropout: f64,
    /// Per-channel latent statistics for [`crate::WanVae::normalize`].
    pub latents_mean: Vec<f64>,
    /// Per-channel latent standard deviations (see `latents_mean`).
    pub latents_std: Vec<f64>,
    /// The file this was read from, for error messages.
    #[serde(skip)]
    pub path: PathBuf,
}

impl Default for VaeConfig {
    fn default() -> Self {
        Self {
            class_name: None,
            base_dim: 96,
            z_dim: 16,
            dim_mult: vec![1, 2, 4, 4],
            num_res_blocks: 2,
            attn_scales: Vec::new(),
            temperal_downsample: vec![false, true, true],
            dropout: 0.0,
            latents_mean: vec![
                -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508, 0.4134,
                -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
            ],
            latents_std: vec![
                2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743, 3.2687, 2.1526,
                2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
            ],
            path: PathBuf::from("<default vae config>"),
        }
    }
}

impl VaeConfig {
    /// Reads `config.json` (or the `vae/` folder holding it) and checks it.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let mut path = path.as_ref().to_path_buf();
        if path.is_dir() {
            path = path.join("config.json");
        }
        let mut cfg: VaeConfig = load_json(&path)?;
        cfg.path = path;
        cfg.check()?;
        Ok(cfg)
    }

    /// Rejects configs this crate cannot run, naming the field.
    pub fn check(&self) -> Result<()> {
        let path = &self.path;
        if let Some(name) = &self.class_name
            && name != "AutoencoderKLWan"
        {
            return Err(unsupported(
                path,
                "_class_name",
                name,
                "expected AutoencoderKLWan",
            ));
        }
        if self.base_dim == 0 || self.z_dim == 0 {
            return Err(Error::config(
                path,
                "`base_dim` and `z_dim` must be positive",
            ));
        }
        if self.dim_mult.len() > 16 {
            return Err(unsupported(
                path,
                "dim_mult",
                &self.dim_mult,
                "more than 16 stages (Wan2.1 has 4): the config is corrupt",
            ));
        }
        if self
            .dim_mult
            .iter()
            .any(|m| m.checked_mul(self.base_dim).is_none())
        {
            return Err(Error::config(
                path,
                "`base_dim` × `dim_mult` overflows: the sizes are corrupt",
            ));
        }
        if self.dim_mult.len() < 2 || self.dim_mult.contains(&0) {
            return Err(unsupported(
                path,
                "dim_mult",
                &self.dim_mult,
                "needs at least two positive entries",
            ));
        }
        if self.temperal_downsample.len() != self.dim_mult.len() - 1 {
            return Err(Error::config(
                path,
                format!(
                    "`temperal_downsample` has {} entries; `dim_mult` has {} so it needs {}",
                    self.temperal_downsample.len(),
                    self.dim_mult.len(),
                    self.dim_mult.len() - 1
                ),
            ));
        }
        if self.temporal_factor() != 4 {
            return Err(unsupported(
                path,
                "temperal_downsample",
                &self.temperal_downsample,
                "the causal chunking (first frame, then chunks of 4) needs exactly two `true`",
            ));
        }
        for (name, v) in [
            ("latents_mean", &self.latents_mean),
            ("latents_std", &self.latents_std),
        ] {
            if v.len() != self.z_dim {
                return Err(Error::config(
                    path,
                    format!(
                        "`{name}` has {} entries, `z_dim` is {}",
                        v.len(),
                        self.z_dim
                    ),
                ));
            }
        }
        if self.latents_std.iter().any(|s| *s <= 0.0 || !s.is_finite()) {
            return Err(Error::config(
                path,
                "`latents_std` entries must be positive",
            ));
        }
        Ok(())
    }

    /// Stage widths `base_dim × [1, dim_mult…]`.
    pub fn dims(&self) -> Vec<usize> {
        std::iter::once(1)
            .chain(self.dim_mult.iter().copied())
            .map(|m| self.base_dim * m)
            .collect()
    }

    /// The encoder's `down_blocks` for this config: per stage `num_res_blocks` residual
    /// blocks (each followed by an attention block at the scales of `attn_scales`), and
    /// a resampler between stages. Returns the number of blocks and, per stage, the
    /// index of its first residual block and its width; `None` if a count overflows.
    pub fn encoder_layout(&self) -> Option<(usize, Vec<(usize, usize)>)> {
        let dims = self.dims();
        let stages = self.dim_mult.len();
        let mut first = Vec::with_capacity(stages);
        let mut n = 0usize;
        for i in 0..stages {
            first.push((n, dims[i + 1]));
            let per_block = 1 + usize::from(self.attn_scales.contains(&0.5f64.powi(i as i32)));
            n = n
                .checked_add(self.num_res_blocks.checked_mul(per_block)?)?
                .checked_add(usize::from(i + 1 != stages))?;
        }
        Some((n, first))
    }

    /// Pixels per latent along height and width (8 in Wan2.1).
    pub fn spatial_factor(&self) -> usize {
        1 << (self.dim_mult.len() - 1)
    }

    /// Frames per latent frame after the first (4 in Wan2.1).
    pub fn temporal_factor(&self) -> usize {
        1 << self.temperal_downsample.iter().filter(|t| **t).count()
    }
}
