//! `WanRMS_norm`: L2 normalisation over channels, scaled by `sqrt(C)` and a learned gain.

use burn::module::{Module, Param};
use burn::tensor::Tensor;
use lynx_core::nn::channel_norm;
use lynx_store::Loader;

/// `x / max(‖x‖₂ over channels, 1e-12) · sqrt(C) · gamma (+ bias)`, computed in f32 and
/// returned in the input dtype (`F.normalize(x, dim=1) * scale * gamma + bias`).
///
/// # Shapes
/// - `gamma`, `bias`: `[C]` (stored upstream as `[C, 1, 1, 1]` or `[C, 1, 1]`), f32
/// - input `[B, C, …]` → same shape
#[derive(Module, Debug)]
pub struct ChannelRmsNorm {
    gamma: Param<Tensor<1>>,
    bias: Option<Param<Tensor<1>>>,
    /// `sqrt(C)`.
    scale: f64,
}

impl ChannelRmsNorm {
    /// `WanRMS_norm(dim, images)`: `gamma` `[C, 1, 1, 1]` (`images=False`) or `[C, 1, 1]`,
    /// optional `bias` of the same shape; kept in f32.
    pub fn load(w: &Loader, dim: usize, images: bool) -> Self {
        let read = |name: &str| {
            if images {
                w.tensor_f32::<3>(name, [dim, 1, 1]).flatten::<1>(0, 2)
            } else {
                w.tensor_f32::<4>(name, [dim, 1, 1, 1]).flatten::<1>(0, 3)
            }
        };
        Self {
            gamma: Param::from_tensor(read("gamma")),
            bias: w.has("bias").then(|| Param::from_tensor(read("bias"))),
            scale: (dim as f64).sqrt(),
        }
    }

    /// Normalises over the channel axis (axis 1).
    ///
    /// # Shapes
    /// - input `[B, C, …]`, output: same shape and dtype.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        self.run(x, false)
    }

    /// `silu(self.forward(x))` in one pass where the backend allows (every residual
    /// block and the output head apply SiLU after the norm).
    ///
    /// # Shapes
    /// - input `[B, C, …]`, output: same shape and dtype.
    pub fn forward_silu<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        self.run(x, true)
    }

    fn run<const D: usize>(&self, x: Tensor<D>, silu: bool) -> Tensor<D> {
        let bias = self.bias.as_ref().map(|b| b.val());
        channel_norm(x, &self.gamma.val(), bias.as_ref(), self.scale, silu)
    }
}
