//! The ArcFace IR-SE backbone (facexlib `recognition/arcface_arch.py`, `Backbone` with
//! `bottleneck_IR_SE`; `bottleneck_IR` when the checkpoint has no SE weights).
//!
//! ```text
//! input_layer: Conv3×3(3→64) · BN · PReLU
//! body: units grouped in stages; the first unit of a stage has stride 2
//!   res      = BN(x) → Conv3×3 → PReLU → Conv3×3/stride → BN → SE
//!   shortcut = Conv1×1/stride · BN   (in ≠ out)  |  subsample by stride (in = out)
//!   out      = res + shortcut
//! output_layer: BN2d → Flatten → Linear(C·7·7 → emb) → BN1d, then L2 normalisation
//! SE: x · sigmoid(fc2(relu(fc1(mean_hw(x)))))
//! ```
//!
//! # Shapes
//! - input: `[B, 3, 112, 112]`, **BGR**, in `[-1, 1]` (`(rgb/255 − 0.5) / 0.5`, channels
//!   reversed, as Lynx's `FaceEncoderArcFace` feeds it)
//! - output: `[B, emb]`, unit L2 norm (emb = 512 for IR-SE50)

use burn::module::{Module, Param};
use burn::tensor::activation::{prelu, relu, sigmoid};
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;
use burn::tensor::{DType, Device, Tensor, TensorData};
use image::RgbImage;
use lynx_core::{Error, Result};

use crate::nn::{ChannelAffine, Conv};

/// Side of the aligned crop the backbone takes.
pub const INPUT_SIZE: usize = 112;

/// The architecture as read from a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArcFaceConfig {
    /// Output channels of each stage (64, 128, 256, 512 for IR-SE50).
    pub widths: Vec<usize>,
    /// Units per stage (3, 4, 14, 3 for IR-SE50).
    pub depths: Vec<usize>,
    /// Embedding size (512).
    pub emb: usize,
    /// Whether the units have squeeze-and-excitation (`ir_se`) or not (`ir`).
    pub se: bool,
}

/// Squeeze-and-excitation (`SEModule`, reduction 16, no biases).
///
/// # Shapes
/// - fc1: `[C, C/16]`, fc2: `[C/16, C]` (transposed 1×1 conv weights)
#[derive(Module, Debug)]
pub struct SeModule {
    pub fc1: Param<Tensor<2>>,
    pub fc2: Param<Tensor<2>>,
}

impl SeModule {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, _, _] = x.dims();
        let s = x.clone().mean_dims(&[2, 3]).reshape([b, c]);
        let s = relu(s.matmul(self.fc1.val()));
        let s = sigmoid(s.matmul(self.fc2.val()));
        x * s.reshape([b, c, 1, 1])
    }
}

/// One `bottleneck_IR_SE` unit.
#[derive(Module, Debug)]
pub struct BottleneckIrSe {
    /// `shortcut_layer` Conv1×1 · BN, or `None` for the strided subsampling
    /// (`MaxPool2d(1, stride)`).
    pub shortcut: Option<Conv>,
    /// `res_layer.0`: BatchNorm of the input.
    pub bn_in: ChannelAffine,
    /// `res_layer.1`: Conv3×3, stride 1.
    pub conv1: Conv,
    /// `res_layer.2`: PReLU weights `[out]`.
    pub prelu: Param<Tensor<1>>,
    /// `res_layer.3` · `res_layer.4`: Conv3×3 with the unit's stride, BN folded.
    pub conv2: Conv,
    /// `res_layer.5`, absent in `ir` mode.
    pub se: Option<SeModule>,
    pub stride: usize,
}

impl BottleneckIrSe {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let shortcut = match &self.shortcut {
            Some(conv) => conv.forward(x.clone()),
            None if self.stride == 1 => x.clone(),
            None => max_pool2d(
                x.clone(),
                MaxPoolOptions::new([1, 1]).with_stride([self.stride; 2]),
            ),
        };
        let r = self.conv1.forward(self.bn_in.forward(x));
        let r = self.conv2.forward(prelu(r, self.prelu.val()));
        let r = match &self.se {
            Some(se) => se.forward(r),
            None => r,
        };
        r + shortcut
    }
}

/// The IR-SE backbone with every BatchNorm folded.
#[derive(Module, Debug)]
pub struct ArcFace {
    /// `input_layer.0` · `input_layer.1`.
    pub input_conv: Conv,
    /// `input_layer.2`.
    pub input_prelu: Param<Tensor<1>>,
    pub body: Vec<BottleneckIrSe>,
    /// `output_layer`: BN2d, Linear and BN1d folded into one linear map,
    /// weight `[C·7·7, emb]`.
    pub out_weight: Param<Tensor<2>>,
    pub out_bias: Param<Tensor<1>>,
}

impl ArcFace {
    /// Embeds a batch of aligned crops: `[B, 3, 112, 112]` BGR in `[-1, 1]` → `[B, emb]`
    /// with unit norm.
    pub fn forward(&self, x: Tensor<4>) -> Result<Tensor<2>> {
        let dims = x.dims();
        if dims[1..] != [3, INPUT_SIZE, INPUT_SIZE] {
            return Err(Error::input(format!(
                "ArcFace takes [B, 3, 112, 112] aligned crops, got {dims:?}"
            )));
        }
        let dtype = self.out_weight.val().dtype();
        let x = x.cast(dtype);
        let x = prelu(self.input_conv.forward(x), self.input_prelu.val());
        let x = self.body.iter().fold(x, |x, unit| unit.forward(x));
        let b = dims[0];
        let flat = x.reshape([b as i32, -1]);
        let y = flat.matmul(self.out_weight.val()) + self.out_bias.val().unsqueeze::<2>();
        Ok(l2_normalize(y.cast(DType::F32)))
    }

    /// Embeds one aligned 112×112 RGB crop (the reference's preprocessing: `/255`,
    /// `(x − 0.5) / 0.5`, RGB → BGR). Returns `[1, emb]`.
    pub fn embed(&self, crop: &RgbImage) -> Result<Tensor<2>> {
        let device = self.out_weight.val().device();
        self.forward(bgr_input(crop, &device)?)
    }
}

/// `x / ‖x‖₂` along the last axis (facexlib `l2_norm`, no epsilon).
pub fn l2_normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().square().sum_dim(1).sqrt();
    x / norm
}

/// A 112×112 RGB crop as the backbone's input: `[1, 3, 112, 112]`, BGR, `[-1, 1]`.
pub fn bgr_input(crop: &RgbImage, device: &Device) -> Result<Tensor<4>> {
    let (w, h) = (crop.width() as usize, crop.height() as usize);
    if (w, h) != (INPUT_SIZE, INPUT_SIZE) {
        return Err(Error::input(format!(
            "ArcFace takes a 112×112 aligned face, got {w}×{h}"
        )));
    }
    let mut planes = vec![0f32; 3 * w * h];
    for (i, px) in crop.pixels().enumerate() {
        for c in 0..3 {
            // Channel 0 of the input is blue.
            let v = f32::from(px.0[2 - c]) / 255.0;
            planes[c * w * h + i] = (v - 0.5) / 0.5;
        }
    }
    Ok(Tensor::from_data(
        TensorData::new(planes, [1, 3, h, w]),
        (device, DType::F32),
    ))
}
