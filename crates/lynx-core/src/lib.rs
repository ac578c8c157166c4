//! Foundation of lynx-rs: the error type, config parsing, device and dtype choice, the
//! shared layers with their CPU kernels, and the one attention function.
//!
//! | module | what |
//! |---|---|
//! | [`error`] | [`Error`]: every failure, naming the file, key, shape or dtype |
//! | [`config`] | `config.json` → typed serde structs |
//! | [`device`] | `cpu`/`wgpu`/`cuda:N` → [`burn::tensor::Device`], [`device::check_dtype`], [`device::available_memory`], [`device::cuda_driver`] (the NVIDIA driver, asked before burn's CUDA runtime) |
//! | [`quant`] | fp8 and GGUF encodings, their exact decoding, [`quant::QuantTensor`] (weights kept in their file's bytes), [`quant::DeviceQuant`] (re-laid on a GPU, decoded there by burn's ops) |
//! | [`nn`] | RMSNorm, LayerNorm (f32), GELU-tanh, [`nn::attention`], the head split/merge, [`nn::Linear`] and the fused CPU kernels |
//!
//! Reading checkpoints is `lynx-store`'s (it builds these layers from files); the Hub
//! client is `lynx-hub`'s. Backends are cargo features: `flex` (CPU), `wgpu`, `cuda`,
//! forwarded to burn.

#![warn(missing_docs)]

pub mod config;
pub mod device;
pub mod error;
pub mod nn;
pub mod quant;

pub use burn;
pub use error::{Error, Result};
