//! `AutoencoderKLWan`: loading, chunked encode and decode, the latent distribution and the
//! latent normalisation.

use std::path::Path;

use burn::tensor::{DType, Device, Tensor, TensorData};
use lynx_core::{Error, Result};
use lynx_store::SizeCheck;
use lynx_store::{Checkpoint, Loader};

use crate::config::VaeConfig;
use crate::conv::{CausalConv3d, FeatCache};
use crate::decoder::Decoder3d;
use crate::encoder::Encoder3d;
use crate::tiling::{self, Tiling};

/// The encoder's output: a diagonal Gaussian per latent element.
///
/// # Shapes
/// - `mean`, `logvar`: `[B, z_dim, F', H/8, W/8]`, f32; `logvar` clamped to `[−30, 20]`
#[derive(Debug, Clone)]
pub struct DiagonalGaussian {
    /// The mean.
    pub mean: Tensor<5>,
    /// The log-variance, clamped to `[−30, 20]`.
    pub logvar: Tensor<5>,
}

impl DiagonalGaussian {
    /// Splits `[B, 2z, …]` into mean (first `z` channels) and log-variance, clamping the
    /// latter to `[−30, 20]`.
    pub fn from_parameters(params: Tensor<5>) -> Result<Self> {
        let c = params.dims()[1];
        if c == 0 || !c.is_multiple_of(2) {
            return Err(Error::input(format!(
                "Gaussian parameters need an even, non-zero channel count (mean ‖ logvar), got {c}"
            )));
        }
        let z = c / 2;
        Ok(Self {
            mean: params.clone().narrow(1, 0, z),
            logvar: params.narrow(1, z, z).clamp(-30.0, 20.0),
        })
    }

    /// The most likely latent: the mean.
    pub fn mode(&self) -> Tensor<5> {
        self.mean.clone()
    }

    /// `exp(logvar / 2)`.
    pub fn std(&self) -> Tensor<5> {
        (self.logvar.clone() * 0.5).exp()
    }

    /// `mean + std · noise`, with standard normal `noise` of the mean's shape supplied by
    /// the caller (so that runs are reproducible across backends).
    pub fn sample(&self, noise: Tensor<5>) -> Result<Tensor<5>> {
        if noise.dims() != self.mean.dims() {
            return Err(Error::input(format!(
                "sampling noise has shape {:?}, the latent distribution {:?}",
                noise.dims(),
                self.mean.dims()
            )));
        }
        Ok(self.mean.clone() + self.std() * noise.cast(DType::F32))
    }
}

/// The Wan2.1 VAE: videos `[B, 3, 4k+1, H, W]` in `[−1, 1]` ↔ latents
/// `[B, z_dim, k+1, H/8, W/8]`.
///
/// | key | module |
/// |---|---|
/// | `encoder.*` | [`Encoder3d`] (`conv_in`, `down_blocks.N`, `mid_block`, `norm_out`, `conv_out`) |
/// | `decoder.*` | [`Decoder3d`] (`conv_in`, `mid_block`, `up_blocks.N.{resnets,upsamplers}`, `norm_out`, `conv_out`) |
/// | `quant_conv.*`, `post_quant_conv.*` | 1×1×1 [`CausalConv3d`]s |
#[derive(Debug)]
pub struct WanVae {
    config: VaeConfig,
    encoder: Encoder3d,
    decoder: Decoder3d,
    quant_conv: CausalConv3d,
    post_quant_conv: CausalConv3d,
    /// `[1, z, 1, 1, 1]`, f32.
    latents_mean: Tensor<5>,
    latents_std: Tensor<5>,
    tiling: Option<Tiling>,
    dtype: DType,
}

impl WanVae {
    /// Loads `vae_dir/config.json` and `vae_dir/diffusion_pytorch_model.safetensors` (or
    /// the one checkpoint the folder holds), weights converted to `dtype` on `device`.
    pub fn from_pretrained(
        vae_dir: impl AsRef<Path>,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let dir = vae_dir.as_ref();
        if !dir.is_dir() {
            return Err(Error::MissingFile {
                path: dir.to_path_buf(),
                hint: "expected the `vae` folder of a Wan2.1 diffusers model".into(),
            });
        }
        let config = VaeConfig::load(dir.join("config.json"))?;
        let weights = dir.join("diffusion_pytorch_model.safetensors");
        let ckpt = if weights.is_file() {
            Checkpoint::open(&weights)?
        } else {
            Checkpoint::open(dir)?
        };
        ckpt.build(device, dtype, |w| Self::load(w, config))
    }

    /// The VAE of `config` (its `config.json`) with the weights of `weights`: any
    /// checkpoint [`Checkpoint::open`] reads, the native Wan/ComfyUI keys included.
    pub fn from_weights(
        config: impl AsRef<Path>,
        weights: impl AsRef<Path>,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let config = VaeConfig::load(config)?;
        Checkpoint::open(weights)?.build(device, dtype, |w| Self::load(w, config))
    }

    /// Builds the VAE of `config` from the state dict under `w` (keys in the type's docs).
    pub fn load(w: &Loader, config: VaeConfig) -> Result<Self> {
        config.check()?;
        let (blocks, stages) = config.encoder_layout().ok_or_else(|| {
            Error::config(
                &config.path,
                "`num_res_blocks` overflows: the config is corrupt",
            )
        })?;
        let mut check = SizeCheck::new(&config.path, w)
            .dim("base_dim", config.base_dim, "encoder.conv_in.weight", 0)
            .dim(
                "2 × z_dim",
                config.z_dim.saturating_mul(2),
                "quant_conv.weight",
                0,
            )
            .count(
                "num_res_blocks, dim_mult, attn_scales",
                blocks,
                "encoder.down_blocks",
            );
        for (i, (block, width)) in stages.into_iter().enumerate() {
            let key = format!("encoder.down_blocks.{block}.conv1.weight");
            check = check.dim(&format!("base_dim × dim_mult[{i}]"), width, &key, 0);
        }
        check.finish()?;
        let z = config.z_dim;
        let device = w.device();
        let stat = |v: &[f64]| {
            let data =
                TensorData::new(v.iter().map(|x| *x as f32).collect(), [1, v.len(), 1, 1, 1]);
            Tensor::<5>::from_data(data, (device, DType::F32))
        };
        Ok(Self {
            encoder: Encoder3d::load(&w.sub("encoder"), &config),
            decoder: Decoder3d::load(&w.sub("decoder"), &config),
            quant_conv: CausalConv3d::load(
                &w.sub("quant_conv"),
                2 * z,
                2 * z,
                [1; 3],
                [1; 3],
                [0, 0],
            ),
            post_quant_conv: CausalConv3d::load(
                &w.sub("post_quant_conv"),
                z,
                z,
                [1; 3],
                [1; 3],
                [0, 0],
            ),
            latents_mean: stat(&config.latents_mean),
            latents_std: stat(&config.latents_std),
            config,
            tiling: None,
            dtype: w.dtype(),
        })
    }

    /// The config the VAE was built from.
    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    /// The dtype the weights (and activations) are in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Spatial tiling for [`WanVae::decode`] (off by default; it changes numbers slightly).
    pub fn set_tiling(&mut self, tiling: Option<Tiling>) -> Result<()> {
        if let Some(t) = &tiling {
            t.check(self.config.spatial_factor())?;
        }
        self.tiling = tiling;
        Ok(())
    }

    /// The tiling [`WanVae::decode`] uses, if any.
    pub fn tiling(&self) -> Option<Tiling> {
        self.tiling
    }

    /// Encodes `video` `[B, 3, F, H, W]` in `[−1, 1]` with `F = 4k + 1` and `H`, `W`
    /// multiples of 8: the first frame alone, then chunks of 4 frames, each chunk
    /// seeing the earlier ones through the causal cache. An image is a one-frame video.
    ///
    /// Returns the latent distribution, `[B, z_dim, k + 1, H/8, W/8]`, in f32.
    pub fn encode(&self, video: Tensor<5>) -> Result<DiagonalGaussian> {
        let [_, c, frames, h, w] = video.dims();
        let (sf, tf) = (self.config.spatial_factor(), self.config.temporal_factor());
        if c != 3 {
            return Err(Error::input(format!(
                "the VAE encodes RGB videos [B, 3, F, H, W]; got {c} channels (shape {:?})",
                video.dims()
            )));
        }
        if frames == 0 || !(frames - 1).is_multiple_of(tf) {
            let below = frames.saturating_sub(1) / tf * tf + 1;
            return Err(Error::input(format!(
                "the VAE encodes {tf}k+1 frames (1, {}, {}, …, 81, …); got {frames}: use {below} or {}",
                tf + 1,
                2 * tf + 1,
                below + tf
            )));
        }
        if h == 0 || w == 0 || !h.is_multiple_of(sf) || !w.is_multiple_of(sf) {
            return Err(Error::input(format!(
                "frame size {h}×{w} must be a positive multiple of {sf} in height and width"
            )));
        }
        let video = video.cast(self.dtype);
        let mut cache = FeatCache::new();
        let mut outs = Vec::with_capacity(1 + (frames - 1) / tf);
        outs.push(
            self.encoder
                .forward(video.clone().narrow(2, 0, 1), &mut cache),
        );
        for start in (1..frames).step_by(tf) {
            outs.push(
                self.encoder
                    .forward(video.clone().narrow(2, start, tf), &mut cache),
            );
        }
        drop(cache);
        let enc = self
            .quant_conv
            .forward(Tensor::cat(outs, 2))
            .cast(DType::F32);
        DiagonalGaussian::from_parameters(enc)
    }

    fn check_latents(&self, latents: &Tensor<5>) -> Result<()> {
        let [b, c, f, h, w] = latents.dims();
        if c != self.config.z_dim {
            return Err(Error::input(format!(
                "latents have {c} channels, the VAE's z_dim is {} (shape {:?})",
                self.config.z_dim,
                latents.dims()
            )));
        }
        if b == 0 || f == 0 || h == 0 || w == 0 {
            return Err(Error::input(format!(
                "latents {:?} are empty",
                latents.dims()
            )));
        }
        Ok(())
    }

    /// Decodes `latents` `[B, z_dim, F', h, w]` to `[B, 3, 4(F' − 1) + 1, 8h, 8w]` in
    /// `[−1, 1]` (f32), one latent frame at a time; spatially tiled when
    /// [`WanVae::set_tiling`] is on and a frame is larger than a tile.
    pub fn decode(&self, latents: Tensor<5>) -> Result<Tensor<5>> {
        self.check_latents(&latents)?;
        let [_, _, _, h, w] = latents.dims();
        let sf = self.config.spatial_factor();
        if let Some(t) = self.tiling
            && (h * sf > t.tile || w * sf > t.tile)
        {
            let factors = (sf, self.config.temporal_factor());
            return tiling::decode_tiled(latents, t, factors, |tile| {
                let mut chunks = Vec::with_capacity(tile.dims()[2]);
                self.run_decoder(tile, |chunk| {
                    chunks.push(chunk);
                    Ok(())
                })?;
                Ok(Tensor::cat(chunks, 2))
            });
        }
        let mut frames = Vec::with_capacity(latents.dims()[2]);
        self.decode_frames(latents, |chunk| {
            frames.push(chunk);
            Ok(())
        })?;
        Ok(Tensor::cat(frames, 2))
    }

    /// [`WanVae::decode`] without tiling, handing each chunk of frames to `sink` as soon
    /// as it is decoded: `[B, 3, 1, 8h, 8w]` first, then `[B, 3, 4, 8h, 8w]` per latent
    /// frame (f32, clamped to `[−1, 1]`). Only the causal cache and one chunk's
    /// activations are alive at a time.
    pub fn decode_frames(
        &self,
        latents: Tensor<5>,
        mut sink: impl FnMut(Tensor<5>) -> Result<()>,
    ) -> Result<()> {
        self.check_latents(&latents)?;
        self.run_decoder(latents, |chunk| sink(chunk.clamp(-1.0, 1.0)))
    }

    /// Runs the decoder latent frame by latent frame, handing each unclamped f32 chunk
    /// to `sink`.
    fn run_decoder(
        &self,
        latents: Tensor<5>,
        mut sink: impl FnMut(Tensor<5>) -> Result<()>,
    ) -> Result<()> {
        let x = self.post_quant_conv.forward(latents.cast(self.dtype));
        let mut cache = FeatCache::new();
        for i in 0..x.dims()[2] {
            let out = self.decoder.forward(x.clone().narrow(2, i, 1), &mut cache);
            sink(out.cast(DType::F32))?;
        }
        Ok(())
    }

    fn check_stats_shape(&self, z: &Tensor<5>) -> Result<()> {
        if z.dims()[1] != self.config.z_dim {
            return Err(Error::input(format!(
                "latents have {} channels, latents_mean/std have {} (shape {:?})",
                z.dims()[1],
                self.config.z_dim,
                z.dims()
            )));
        }
        Ok(())
    }

    /// `(z − latents_mean) / latents_std` per channel (what the DiT sees), in f32.
    pub fn normalize(&self, z: Tensor<5>) -> Result<Tensor<5>> {
        self.check_stats_shape(&z)?;
        Ok((z.cast(DType::F32) - self.latents_mean.clone()) / self.latents_std.clone())
    }

    /// `z · latents_std + latents_mean` per channel (before decoding), in f32.
    pub fn denormalize(&self, z: Tensor<5>) -> Result<Tensor<5>> {
        self.check_stats_shape(&z)?;
        Ok(z.cast(DType::F32) * self.latents_std.clone() + self.latents_mean.clone())
    }
}
