//! Layers shared by several models.

mod attention;
mod norm;

pub use attention::{attention, attention_naive};
pub use norm::{LayerNorm, RmsNorm};

use burn::nn::Linear;
use burn::tensor::Tensor;

use crate::weights::Loader;

/// Loads a `torch.nn.Linear` (`weight` `[out, in]`, optional `bias` `[out]`) as burn's
/// [`Linear`], whose weight is [in, out].
pub fn load_linear(w: &Loader, d_in: usize, d_out: usize, bias: bool) -> Linear {
    let weight = w.tensor::<2>("weight", [d_out, d_in]).transpose();
    Linear {
        weight: burn::module::Param::from_tensor(weight),
        bias: bias.then(|| w.param("bias", [d_out])),
    }
}

/// Loads a `torch.nn.Linear` whose sizes come from the file (`weight` [out, in]).
/// Returns the layer and `(in, out)`.
pub fn load_linear_any(w: &Loader, bias: bool) -> (Linear, usize, usize) {
    let (d_out, d_in) = match w.shape("weight").as_deref() {
        Some([o, i]) => (*o, *i),
        _ => (0, 0),
    };
    (load_linear(w, d_in, d_out, bias), d_in, d_out)
}

/// GELU with the tanh approximation (`approximate="tanh"` / `gelu_new`).
pub fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    burn::tensor::activation::gelu_approximate(x)
}
