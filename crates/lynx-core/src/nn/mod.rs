//! Layers shared by several models: norms computed in f32, the tanh GELU, the one
//! attention function and the head split/merge around it, and [`fused`] expressions
//! (one pass on the CPU backend), and [`Linear`] (`torch.nn.Linear`, read with
//! `lynx_store::Loader::linear`, its weight laid out once by [`transposed`], with the
//! low-rank terms of LoRAs applied on the fly).

mod attention;
#[cfg(feature = "flex")]
mod cpu;
#[cfg(feature = "flex")]
mod cpu_conv;
#[cfg(feature = "flex")]
mod cpu_heads;
#[cfg(feature = "flex")]
mod cpu_linear;
pub mod fused;
mod layout;
mod linear;
mod norm;

pub use attention::{attention, attention_naive, merge_heads, split_heads};
pub use fused::{
    channel_norm, conv3d, gated_residual, gelu_tanh, layer_norm_modulate, linear, linear_with,
    rope_rotate,
};
pub use layout::transposed;
pub use linear::{Linear, LowRank};
pub use norm::{LayerNorm, RmsNorm};
