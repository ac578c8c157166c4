//! Layers shared by several models: norms computed in f32, the tanh GELU, the one
//! attention function and the head split/merge around it, and [`fused`] expressions
//! (one pass on the CPU backend). (`torch.nn.Linear` layers are
//! burn's [`burn::nn::Linear`], read with [`crate::Loader::linear`], their weights laid out
//! once by [`transposed`].)

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
mod norm;

pub use attention::{attention, attention_naive, merge_heads, split_heads};
pub use fused::{
    channel_norm, conv3d, gated_residual, gelu_tanh, layer_norm_modulate, linear, rope_rotate,
};
pub use layout::transposed;
pub use norm::{LayerNorm, RmsNorm};
