//! Inference layers shared by RetinaFace and ArcFace, and their loaders. BatchNorm never
//! appears as a layer: its running statistics `(weight γ, bias β, running_mean μ,
//! running_var σ², eps 1e-5)` are folded at load time into `scale = γ / √(σ² + eps)`,
//! `shift = β − μ·scale`, multiplied into the convolution before it ([`Conv`]) or, where
//! zero padding follows it, kept as a per-channel [`ChannelAffine`].
//! `num_batches_tracked` is ignored. Folding runs in f32; the result is cast to the
//! loader's dtype. Channel counts come from the file; a layer's input channels are the
//! previous layer's output, so [`Loader::finish`](lynx_store::Loader::finish) reports any
//! inconsistent tensor by key.

use burn::module::{Module, Param};
use burn::tensor::Tensor;
use burn::tensor::activation::{leaky_relu, relu};
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use lynx_store::Loader;

/// A 2-D convolution, possibly with a BatchNorm folded into its weight and bias.
///
/// # Shapes
/// - weight: `[out, in / groups, k, k]`, bias: `[out]`
/// - input `[B, in, H, W]` → output `[B, out, H', W']`
#[derive(Module, Debug)]
pub struct Conv {
    /// `[out, in / groups, k, k]`.
    pub weight: Param<Tensor<4>>,
    /// `[out]`.
    pub bias: Option<Param<Tensor<1>>>,
    /// Stride.
    pub stride: usize,
    /// Symmetric zero padding.
    pub padding: usize,
    /// Groups (the input channels for a depthwise convolution).
    pub groups: usize,
}

impl Conv {
    /// # Shapes
    /// - input `[B, in, H, W]` → `[B, out, H', W']`.
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
    /// `[C]`.
    pub scale: Param<Tensor<1>>,
    /// `[C]`.
    pub shift: Param<Tensor<1>>,
}

impl ChannelAffine {
    /// # Shapes
    /// - input `[B, C, H, W]` → same shape.
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
    /// The convolution.
    pub conv: Conv,
    /// LeakyReLU slope (0 is ReLU), or `None` for no activation.
    pub slope: Option<f64>,
}

impl ConvAct {
    /// # Shapes
    /// - input `[B, in, H, W]` → `[B, out, H', W']`.
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

const BN_EPS: f64 = 1e-5;

/// Running statistics of the BatchNorm under `bn` as `(scale, shift)`, f32 `[c]`.
pub fn bn_fold(bn: &Loader, c: usize) -> (Tensor<1>, Tensor<1>) {
    bn.ignore("num_batches_tracked");
    let gamma = bn.tensor_f32("weight", [c]);
    let beta = bn.tensor_f32("bias", [c]);
    let mean = bn.tensor_f32("running_mean", [c]);
    let var = bn.tensor_f32("running_var", [c]);
    let scale = gamma / (var + BN_EPS).sqrt();
    let shift = beta - mean * scale.clone();
    (scale, shift)
}

/// `t` cast to the loader's dtype, as a parameter.
pub fn param<const D: usize>(t: Tensor<D>, l: &Loader) -> Param<Tensor<D>> {
    Param::from_tensor(t.cast(l.dtype()))
}

/// First dimension of tensor `name` (its output channels), 0 when absent (the getter
/// that follows then reports it missing).
pub fn out_channels(l: &Loader, name: &str) -> usize {
    l.shape(name).and_then(|s| s.first().copied()).unwrap_or(0)
}

impl ChannelAffine {
    /// A BatchNorm over `c` channels as a per-channel affine.
    pub fn load(bn: &Loader, c: usize) -> Self {
        let (scale, shift) = bn_fold(bn, c);
        Self {
            scale: param(scale, bn),
            shift: param(shift, bn),
        }
    }
}

/// Geometry of a convolution: kernel, stride, padding, and whether it is depthwise.
#[derive(Debug, Clone, Copy)]
pub struct Geom {
    /// Square kernel side.
    pub k: usize,
    /// Stride.
    pub stride: usize,
    /// Symmetric zero padding.
    pub padding: usize,
    /// Depthwise (one group per input channel).
    pub depthwise: bool,
}

/// A dense convolution's geometry.
pub const fn geom(k: usize, stride: usize, padding: usize) -> Geom {
    Geom {
        k,
        stride,
        padding,
        depthwise: false,
    }
}

impl Conv {
    /// `Conv2d(bias=False)` under `conv` followed by the BatchNorm under `bn`, folded.
    /// Output channels come from the file (`c_in` for a depthwise convolution).
    pub fn load_bn(conv: &Loader, bn: &Loader, c_in: usize, g: Geom) -> (Self, usize) {
        let (c_out, groups) = if g.depthwise {
            (c_in, c_in)
        } else {
            (out_channels(conv, "weight"), 1)
        };
        let w = conv.tensor_f32("weight", [c_out, c_in / groups, g.k, g.k]);
        let (scale, shift) = bn_fold(bn, c_out);
        let w = w * scale.unsqueeze_dims::<4>(&[1, 2, 3]);
        let conv = Self {
            weight: param(w, conv),
            bias: Some(param(shift, conv)),
            stride: g.stride,
            padding: g.padding,
            groups,
        };
        (conv, c_out)
    }

    /// A plain `Conv2d` with `c_out` from the file; returns it and `c_out`.
    pub fn load_plain(conv: &Loader, c_in: usize, g: Geom, bias: bool) -> (Self, usize) {
        let c_out = out_channels(conv, "weight");
        let conv = Self {
            weight: conv.param("weight", [c_out, c_in, g.k, g.k]),
            bias: bias.then(|| conv.param("bias", [c_out])),
            stride: g.stride,
            padding: g.padding,
            groups: 1,
        };
        (conv, c_out)
    }
}

/// A facexlib `Sequential(Conv2d, BatchNorm2d[, LeakyReLU])` under `l` (keys `0.*`, `1.*`)
/// with input channels `c_in`; returns it and its output channels.
pub fn conv_bn(l: &Loader, c_in: usize, g: Geom, slope: Option<f64>) -> (ConvAct, usize) {
    let (conv, c_out) = Conv::load_bn(&l.sub(0), &l.sub(1), c_in, g);
    (ConvAct { conv, slope }, c_out)
}

/// Number of consecutive numbered sub-modules `0`, `1`, … under `l`.
pub fn count_subs(l: &Loader) -> usize {
    (0..).take_while(|i| l.has_sub(&i.to_string())).count()
}
