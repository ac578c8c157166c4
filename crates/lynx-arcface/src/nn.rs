//! Inference layers shared by RetinaFace and ArcFace. BatchNorm never appears as a layer:
//! its running statistics are folded at load time into the convolution before it
//! ([`Conv`]) or, where zero padding follows it, into a per-channel [`ChannelAffine`].

use burn::module::{Module, Param};
use burn::tensor::Tensor;
use burn::tensor::activation::{leaky_relu, relu};
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;

/// A 2-D convolution, possibly with a BatchNorm folded into its weight and bias.
///
/// # Shapes
/// - weight: `[out, in / groups, k, k]`, bias: `[out]`
/// - input `[B, in, H, W]` → output `[B, out, H', W']`
#[derive(Module, Debug)]
pub struct Conv {
    pub weight: Param<Tensor<4>>,
    pub bias: Option<Param<Tensor<1>>>,
    pub stride: usize,
    pub padding: usize,
    pub groups: usize,
}

impl Conv {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        conv2d(
            x,
            self.weight.val(),
            self.bias.as_ref().map(Param::val),
            ConvOptions::new([self.stride; 2], [self.padding; 2], [1, 1], self.groups),
        )
    }
}

/// An eval-mode BatchNorm as `x · scale + shift` per channel.
///
/// # Shapes
/// - scale, shift: `[C]`; input `[B, C, H, W]` → same shape
#[derive(Module, Debug)]
pub struct ChannelAffine {
    pub scale: Param<Tensor<1>>,
    pub shift: Param<Tensor<1>>,
}

impl ChannelAffine {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let s = self.scale.val().unsqueeze_dims::<4>(&[0, 2, 3]);
        let t = self.shift.val().unsqueeze_dims::<4>(&[0, 2, 3]);
        x * s + t
    }
}

/// A convolution (BatchNorm folded in) followed by an optional LeakyReLU: facexlib's
/// `conv_bn`, `conv_bn1X1` and `conv_bn_no_relu`.
#[derive(Module, Debug)]
pub struct ConvAct {
    pub conv: Conv,
    /// LeakyReLU slope (0 is ReLU), or `None` for no activation.
    pub slope: Option<f64>,
}

impl ConvAct {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        leaky(self.conv.forward(x), self.slope)
    }
}

/// LeakyReLU with `slope` (ReLU when 0); identity for `None`.
pub fn leaky(x: Tensor<4>, slope: Option<f64>) -> Tensor<4> {
    match slope {
        None => x,
        Some(0.0) => relu(x),
        Some(s) => leaky_relu(x, s),
    }
}
