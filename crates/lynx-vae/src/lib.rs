//! The Wan2.1 3D causal VAE (`AutoencoderKLWan`), encoder and decoder, as diffusers 0.33.1
//! computes it (`src/diffusers/models/autoencoders/autoencoder_kl_wan.py`, plus
//! `DiagonalGaussianDistribution` from `autoencoders/vae.py`).
//!
//! ```no_run
//! # use burn::tensor::{DType, Device, Tensor};
//! # fn main() -> lynx_core::Result<()> {
//! # let device = Device::flex();
//! # let video: Tensor<5> = Tensor::zeros([1, 3, 5, 64, 64], &device);
//! let vae = lynx_vae::WanVae::from_pretrained("Wan2.1-T2V-14B-Diffusers/vae", &device, DType::F32)?;
//! let posterior = vae.encode(video)?;               // [1, 16, 2, 8, 8]
//! let z = vae.normalize(posterior.mode())?;         // what the DiT sees
//! let frames = vae.decode(vae.denormalize(z)?)?;    // [1, 3, 5, 64, 64] in [−1, 1]
//! # Ok(()) }
//! ```
//!
//! | module | mirrors (upstream class) |
//! |---|---|
//! | [`config`] | the `AutoencoderKLWan` config (`vae/config.json`) |
//! | [`conv`] | `WanCausalConv3d`, and the `feat_cache`/`feat_idx` chunk cache |
//! | [`norm`] | `WanRMS_norm` |
//! | [`resnet`] | `WanResidualBlock`, `WanMidBlock` |
//! | [`resample`] | `WanResample` (`upsample2d/3d`, `downsample2d/3d`), `WanUpsample` |
//! | [`attention`] | `WanAttentionBlock` (through [`lynx_core::nn::attention`]) |
//! | [`encoder`] | `WanEncoder3d` |
//! | [`decoder`] | `WanUpBlock`, `WanDecoder3d` |
//! | [`model`] | `AutoencoderKLWan._encode/_decode`, `DiagonalGaussianDistribution`, the pipelines' latent normalisation |
//! | [`tiling`] | spatial tiling with overlap blending (not in diffusers 0.33.1; off by default) |
//!
//! Each module's `load` sits beside its type and reads its state-dict keys (the
//! PyTorch attribute names); [`WanVae`]'s docs list the top-level ones.
//!
//! # Shapes
//! With Wan2.1's factors (8 in space, 4 in time after the first frame; `z_dim` 16):
//! - video `[B, 3, F, H, W]`, `F = 4k + 1`, `H`, `W` multiples of 8, values in `[−1, 1]`
//! - latents `[B, z_dim, k + 1, H/8, W/8]`
//! - an image is a video of one frame: `[B, 3, 1, H, W]` → `[B, z_dim, 1, H/8, W/8]`
//!
//! # Causal chunking
//! Encoding runs the first frame alone, then chunks of 4 frames; decoding runs one latent
//! frame at a time (giving 1, then 4 frames each). Every causal 3×3×3 convolution keeps
//! the last two frames of its input between chunks and the time resamplers keep what
//! they need, exactly as the reference's feature cache does, so activations of only one
//! chunk are alive at a time. [`WanVae::decode_frames`] hands out each decoded chunk as
//! soon as it exists, so the caller never needs the whole video on the device.
//!
//! # Memory
//! Peak memory of decoding above the weights (which are 0.5 GB in f32 for Wan2.1), f32,
//! measured with `examples/vae_memory.rs` (the Wan2.1 architecture on random weights,
//! CPU backend, 3 latent frames so that the caches are full, chunks dropped as they
//! come). It grows with the frame area, about 17 KB per output pixel: the cache holds
//! two frames of each causal convolution's input (3.5 GiB of the 6.5 GiB at 480×832)
//! and a chunk of 4 frames is in flight. It does not grow with the number of frames.
//!
//! | frame (H×W) | decode peak | tiled (tile/stride) | time per frame (2 busy CPU cores) |
//! |---|---|---|---|
//! | 120×208 | 0.48 GiB | | 13 s |
//! | 240×416 | 1.75 GiB | 0.37 GiB (128/96) | 53 s (tiled 96 s) |
//! | 480×832 | 6.5 GiB | 1.27 GiB (256/192) | 216 s (tiled 368 s) |
//! | 720×1280 | ≈ 15 GiB (extrapolated) | | |
//!
//! The tiled figures include the blended output of the 9 frames measured; for 81
//! frames at 480×832 add 0.35 GiB.
//!
//! Encoding one 256×256 frame (the Ref-adapter's face) peaks at 0.19 GiB.
//! [`WanVae::decode`] also collects the output (`F·H·W·3·4` bytes: 0.39 GB for 81 frames
//! at 480×832); [`WanVae::decode_frames`] streams it instead.
//!
//! [`WanVae::set_tiling`] bounds the activations by the tile size instead of the frame
//! size, at the cost of decoding the overlaps twice and of holding the output video
//! while tiles are blended; tiles overlap and are blended linearly, which changes pixels
//! near tile borders slightly.
//!
//! # Precision
//! Convolutions and attention run in the weight dtype; the channel RMS norms in f32.
//! Encoder outputs, decoder outputs and the latent normalisation are f32.

#![warn(missing_docs)]

pub mod attention;
pub mod config;
pub mod conv;
pub mod decoder;
pub mod encoder;
pub mod model;
pub mod norm;
pub mod resample;
pub mod resnet;
pub mod tiling;

pub use config::VaeConfig;
pub use model::{DiagonalGaussian, WanVae};
pub use tiling::Tiling;
