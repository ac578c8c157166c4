//! Layers shared by several models: norms computed in f32, the tanh GELU, the one
//! attention function and the head split/merge around it. (`torch.nn.Linear` layers are
//! burn's [`burn::nn::Linear`], read with [`crate::Loader::linear`].)

mod attention;
mod norm;

pub use attention::{attention, attention_naive, merge_heads, split_heads};
pub use norm::{LayerNorm, RmsNorm};

use burn::tensor::Tensor;

/// GELU with the tanh approximation (`approximate="tanh"` / `gelu_new`).
///
/// # Shapes
/// - input and output: any shape.
pub fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    burn::tensor::activation::gelu_approximate(x)
}
