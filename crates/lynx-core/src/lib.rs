//! Foundation of lynx-rs: the error type, checkpoint loading, config parsing, device
//! choice, shared layers and the one attention function.
//!
//! | module | what |
//! |---|---|
//! | [`error`] | [`Error`]: every failure, naming the file, key, shape or dtype |
//! | [`weights`] | [`Checkpoint`] (safetensors, sharded index, `.pth`), [`Checkpoint::build`] (the one way models are built), [`Loader`], [`Checkpoint::measure`] (sizes without reading), [`LayerStream`] and [`Offload`] |
//! | [`config`] | `config.json` → typed serde structs |
//! | [`device`] | `cpu`/`wgpu`/`cuda:N` → [`burn::tensor::Device`], [`device::check_dtype`], [`device::available_memory`], [`device::cuda_driver`] (the NVIDIA driver, asked before burn's CUDA runtime) |
//! | [`nn`] | RMSNorm, LayerNorm (f32), GELU-tanh, [`nn::attention`] and the head split/merge |
//! | [`output`] | [`output::StagedPath`]: outputs appear whole or not at all; [`output::check_writable`] |
//! | [`safetensors_io`] | writing `.safetensors`, streamed, to a temporary file renamed into place |
//! | [`rng`] | [`rng::TorchGenerator`]: PyTorch's CPU generator and `torch.randn`, bit for bit |
//! | [`hub`] | Hugging Face Hub repo ids and URLs → local folders in huggingface_hub's cache (feature `hub`, on by default) |
//! | [`testing`] | fixture access and relative-L2 comparison for parity tests |
//!
//! Backends are cargo features: `flex` (CPU), `wgpu`, `cuda`, forwarded to burn.

#![warn(missing_docs)]

pub mod config;
pub mod device;
pub mod error;
#[cfg(feature = "hub")]
pub mod hub;
pub mod nn;
pub mod output;
pub mod pth;
pub mod rng;
pub mod safetensors_io;
pub mod testing;
pub mod weights;

pub use burn;
pub use error::{Error, Result};
pub use weights::{Checkpoint, LayerStream, Loader, Offload, load_module};
