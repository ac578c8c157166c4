//! RetinaFace backbones (facexlib `detection/retinaface_net.py` `MobileNetV1`, and
//! torchvision's `resnet50` as `IntermediateLayerGetter` keeps it), returning the three
//! feature maps the FPN reads.
//!
//! # Shapes
//! - input: `[B, 3, H, W]` (BGR minus the mean (104, 117, 123))
//! - MobileNetV1 ×0.25: strides 8, 16, 32 with 64, 128, 256 channels
//! - ResNet-50: `layer2`, `layer3`, `layer4`: strides 8, 16, 32 with 512, 1024, 2048

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;

use crate::nn::{Conv, ConvAct};

/// `MobileNetV1` (`stage1`, `stage2`, `stage3`): each stage is a list of `conv_bn` (one
/// conv) and `conv_dw` (depthwise 3×3 then pointwise 1×1) layers, flattened into the
/// convolutions they run, each with BN folded and LeakyReLU(0.1).
#[derive(Module, Debug)]
pub struct MobileNetV1 {
    pub stage1: Vec<ConvAct>,
    pub stage2: Vec<ConvAct>,
    pub stage3: Vec<ConvAct>,
}

impl MobileNetV1 {
    pub fn forward(&self, x: Tensor<4>) -> [Tensor<4>; 3] {
        let run = |x: Tensor<4>, layers: &[ConvAct]| layers.iter().fold(x, |x, l| l.forward(x));
        let c1 = run(x, &self.stage1);
        let c2 = run(c1.clone(), &self.stage2);
        let c3 = run(c2.clone(), &self.stage3);
        [c1, c2, c3]
    }
}

/// torchvision's `Bottleneck` (ResNet v1.5: the stride is on the 3×3 convolution).
#[derive(Module, Debug)]
pub struct ResBottleneck {
    /// `conv1` · `bn1` · ReLU (1×1).
    pub conv1: ConvAct,
    /// `conv2` · `bn2` · ReLU (3×3, stride).
    pub conv2: ConvAct,
    /// `conv3` · `bn3` (1×1).
    pub conv3: Conv,
    /// `downsample.0` · `downsample.1`, on the first block of each layer.
    pub downsample: Option<Conv>,
}

impl ResBottleneck {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let identity = match &self.downsample {
            Some(d) => d.forward(x.clone()),
            None => x.clone(),
        };
        let y = self
            .conv3
            .forward(self.conv2.forward(self.conv1.forward(x)));
        relu(y + identity)
    }
}

/// torchvision `resnet50` up to `layer4` (`conv1`, `bn1`, `relu`, `maxpool`, `layer1..4`).
#[derive(Module, Debug)]
pub struct ResNet50 {
    /// `conv1` · `bn1` · ReLU (7×7, stride 2).
    pub conv1: ConvAct,
    pub layer1: Vec<ResBottleneck>,
    pub layer2: Vec<ResBottleneck>,
    pub layer3: Vec<ResBottleneck>,
    pub layer4: Vec<ResBottleneck>,
}

impl ResNet50 {
    pub fn forward(&self, x: Tensor<4>) -> [Tensor<4>; 3] {
        let x = self.conv1.forward(x);
        let x = max_pool2d(
            x,
            MaxPoolOptions::new([3, 3])
                .with_stride([2, 2])
                .with_padding([1, 1]),
        );
        let run =
            |x: Tensor<4>, blocks: &[ResBottleneck]| blocks.iter().fold(x, |x, b| b.forward(x));
        let x = run(x, &self.layer1);
        let c2 = run(x, &self.layer2);
        let c3 = run(c2.clone(), &self.layer3);
        let c4 = run(c3.clone(), &self.layer4);
        [c2, c3, c4]
    }
}

/// The backbone a checkpoint holds (`body.stage1.*` → MobileNetV1, `body.layer1.*` →
/// ResNet-50).
// One per detector, built once: the variants' size difference does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Body {
    MobileNet(MobileNetV1),
    ResNet50(ResNet50),
}

impl Body {
    pub fn forward(&self, x: Tensor<4>) -> [Tensor<4>; 3] {
        match self {
            Body::MobileNet(m) => m.forward(x),
            Body::ResNet50(r) => r.forward(x),
        }
    }
}
