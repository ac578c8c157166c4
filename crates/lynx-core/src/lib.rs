//! Foundation of lynx-rs: the error type, checkpoint loading, config parsing, device
//! choice, shared layers and the one attention function.
//!
//! | module | what |
//! |---|---|
//! | [`error`] | [`Error`]: every failure, naming the file, key, shape or dtype |
//! | [`weights`] | [`Checkpoint`] (safetensors, sharded index, `.pth`) and [`Loader`] |
//! | [`config`] | `config.json` → typed serde structs |
//! | [`device`] | `cpu`/`wgpu`/`cuda:N` → [`burn::tensor::Device`] |
//! | [`nn`] | RMSNorm, LayerNorm (f32), GELU-tanh, PyTorch-layout linear, [`nn::attention`] |
//! | [`testing`] | fixture access and relative-L2 comparison for parity tests |
//!
//! Backends are cargo features: `flex` (CPU), `wgpu`, `cuda`, forwarded to burn.

pub mod config;
pub mod device;
pub mod error;
pub mod nn;
mod pth;
pub mod testing;
pub mod weights;

pub use burn;
pub use error::{Error, Result};
pub use weights::{Checkpoint, Loader};
