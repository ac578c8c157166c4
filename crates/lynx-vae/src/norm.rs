//! `WanRMS_norm`: L2 normalisation over channels, scaled by `sqrt(C)` and a learned gain.

use burn::module::{Module, Param};
use burn::tensor::Tensor;

use crate::conv::to_f32;

/// `x / max(‖x‖₂ over channels, 1e-12) · sqrt(C) · gamma (+ bias)`, computed in f32 and
/// returned in the input dtype (`F.normalize(x, dim=1) * scale * gamma + bias`).
///
/// # Shapes
/// - `gamma`, `bias`: `[C]` (stored upstream as `[C, 1, 1, 1]` or `[C, 1, 1]`), f32
/// - input `[B, C, …]` → same shape
#[derive(Module, Debug)]
pub struct ChannelRmsNorm {
    pub gamma: Param<Tensor<1>>,
    pub bias: Option<Param<Tensor<1>>>,
    /// `sqrt(C)`.
    pub scale: f64,
}

impl ChannelRmsNorm {
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let dtype = x.dtype();
        let x = to_f32(x);
        let c = self.gamma.dims()[0];
        let mut shape = [1usize; D];
        shape[1] = c;
        let norm = x.clone().square().sum_dim(1).sqrt().clamp_min(1e-12);
        let gain = self.gamma.val().mul_scalar(self.scale).reshape(shape);
        let mut y = x / norm * gain;
        if let Some(b) = &self.bias {
            y = y + b.val().reshape(shape);
        }
        y.cast(dtype)
    }
}
