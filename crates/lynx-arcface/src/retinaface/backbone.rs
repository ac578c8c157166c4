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

use lynx_core::{Error, Result};
use lynx_store::Loader;

use crate::nn::{Conv, ConvAct, Geom, conv_bn, count_subs, geom};

/// `MobileNetV1` (`stage1`, `stage2`, `stage3`): each stage is a list of `conv_bn` (one
/// conv) and `conv_dw` (depthwise 3×3 then pointwise 1×1) layers, flattened into the
/// convolutions they run, each with BN folded and LeakyReLU(0.1).
#[derive(Module, Debug)]
pub struct MobileNetV1 {
    stage1: Vec<ConvAct>,
    stage2: Vec<ConvAct>,
    stage3: Vec<ConvAct>,
}

impl MobileNetV1 {
    /// The three stages' outputs (strides 8, 16, 32).
    ///
    /// # Shapes
    /// - input `[B, 3, H, W]` → `[B, 64, H/8, W/8]`, `[B, 128, H/16, W/16]`, `[B, 256, H/32, W/32]`.
    pub fn forward(&self, x: Tensor<4>) -> [Tensor<4>; 3] {
        let run = |x: Tensor<4>, layers: &[ConvAct]| layers.iter().fold(x, |x, l| l.forward(x));
        let c1 = run(x, &self.stage1);
        let c2 = run(c1.clone(), &self.stage2);
        let c3 = run(c2.clone(), &self.stage3);
        [c1, c2, c3]
    }

    /// `body.stage1..3`: `conv_bn` (`N.0`, `N.1`) or `conv_dw` (`N.0`, `N.1`, `N.3`, `N.4`).
    pub fn load(l: &Loader) -> Result<(Self, [usize; 3])> {
        const SLOPE: Option<f64> = Some(0.1);
        let mut c = 3;
        let mut stages: [Vec<ConvAct>; 3] = Default::default();
        let mut outs = [0; 3];
        for (s, strides) in MOBILENET_STRIDES.iter().enumerate() {
            let stage = l.sub(format!("stage{}", s + 1));
            let n = count_subs(&stage);
            if n != strides.len() {
                return Err(Error::format(
                    l.checkpoint().path(),
                    "RetinaFace MobileNetV1 checkpoint",
                    format!(
                        "`{}` has {n} layers, facexlib's MobileNetV1 has {}",
                        l.key(&format!("stage{}", s + 1)),
                        strides.len()
                    ),
                ));
            }
            for (i, &stride) in strides.iter().enumerate() {
                let layer = stage.sub(i);
                if layer.has_sub("3") {
                    // conv_dw: depthwise 3×3 · BN · LeakyReLU, pointwise 1×1 · BN · LeakyReLU.
                    let dw = Geom {
                        depthwise: true,
                        ..geom(3, stride, 1)
                    };
                    let (conv, _) = Conv::load_bn(&layer.sub(0), &layer.sub(1), c, dw);
                    stages[s].push(ConvAct { conv, slope: SLOPE });
                    let (conv, c_out) =
                        Conv::load_bn(&layer.sub(3), &layer.sub(4), c, geom(1, 1, 0));
                    stages[s].push(ConvAct { conv, slope: SLOPE });
                    c = c_out;
                } else {
                    let (layer, c_out) = conv_bn(&layer, c, geom(3, stride, 1), SLOPE);
                    stages[s].push(layer);
                    c = c_out;
                }
            }
            outs[s] = c;
        }
        let [stage1, stage2, stage3] = stages;
        Ok((
            Self {
                stage1,
                stage2,
                stage3,
            },
            outs,
        ))
    }
}

/// torchvision's `Bottleneck` (ResNet v1.5: the stride is on the 3×3 convolution).
#[derive(Module, Debug)]
pub struct ResBottleneck {
    /// `conv1` · `bn1` · ReLU (1×1).
    conv1: ConvAct,
    /// `conv2` · `bn2` · ReLU (3×3, stride).
    conv2: ConvAct,
    /// `conv3` · `bn3` (1×1).
    conv3: Conv,
    /// `downsample.0` · `downsample.1`, on the first block of each layer.
    downsample: Option<Conv>,
}

impl ResBottleneck {
    /// One bottleneck, residual.
    ///
    /// # Shapes
    /// - input `[B, in, H, W]` → `[B, out, H/stride, W/stride]`.
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

    /// Loads a torchvision bottleneck (`conv{1,2,3}`, `bn{1,2,3}`, `downsample`); returns
    /// it and its output channels.
    pub fn load(l: &Loader, c_in: usize, stride: usize) -> (Self, usize) {
        let relu = Some(0.0);
        let (conv1, w) = Conv::load_bn(&l.sub("conv1"), &l.sub("bn1"), c_in, geom(1, 1, 0));
        let (conv2, w) = Conv::load_bn(&l.sub("conv2"), &l.sub("bn2"), w, geom(3, stride, 1));
        let (conv3, c_out) = Conv::load_bn(&l.sub("conv3"), &l.sub("bn3"), w, geom(1, 1, 0));
        let downsample = l.has_sub("downsample").then(|| {
            let d = l.sub("downsample");
            Conv::load_bn(&d.sub(0), &d.sub(1), c_in, geom(1, stride, 0)).0
        });
        let block = Self {
            conv1: ConvAct {
                conv: conv1,
                slope: relu,
            },
            conv2: ConvAct {
                conv: conv2,
                slope: relu,
            },
            conv3,
            downsample,
        };
        (block, c_out)
    }
}

/// torchvision `resnet50` up to `layer4` (`conv1`, `bn1`, `relu`, `maxpool`, `layer1..4`).
#[derive(Module, Debug)]
pub struct ResNet50 {
    /// `conv1` · `bn1` · ReLU (7×7, stride 2).
    conv1: ConvAct,
    layer1: Vec<ResBottleneck>,
    layer2: Vec<ResBottleneck>,
    layer3: Vec<ResBottleneck>,
    layer4: Vec<ResBottleneck>,
}

impl ResNet50 {
    /// `layer2`, `layer3`, `layer4` outputs (strides 8, 16, 32).
    ///
    /// # Shapes
    /// - input `[B, 3, H, W]` → `[B, 512, H/8, W/8]`, `[B, 1024, H/16, W/16]`, `[B, 2048, H/32, W/32]`.
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

    /// torchvision `resnet50` keys `conv1`, `bn1`, `layer1..4.N.{conv,bn}{1,2,3}`,
    /// `layerK.0.downsample.{0,1}`; block counts from the file.
    pub fn load(l: &Loader) -> (Self, [usize; 3]) {
        let (conv1, mut c) = Conv::load_bn(&l.sub("conv1"), &l.sub("bn1"), 3, geom(7, 2, 3));
        let mut layers: [Vec<ResBottleneck>; 4] = Default::default();
        let mut outs = [0; 4];
        for (k, layer) in layers.iter_mut().enumerate() {
            let ll = l.sub(format!("layer{}", k + 1));
            for i in 0..count_subs(&ll) {
                let stride = if i == 0 && k > 0 { 2 } else { 1 };
                let (block, c_out) = ResBottleneck::load(&ll.sub(i), c, stride);
                layer.push(block);
                c = c_out;
            }
            outs[k] = c;
        }
        let [layer1, layer2, layer3, layer4] = layers;
        let net = Self {
            conv1: ConvAct {
                conv: conv1,
                slope: Some(0.0),
            },
            layer1,
            layer2,
            layer3,
            layer4,
        };
        (net, [outs[1], outs[2], outs[3]])
    }
}

/// The backbone a checkpoint holds (`body.stage1.*` → MobileNetV1, `body.layer1.*` →
/// ResNet-50).
// One per detector, built once: the variants' size difference does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Body {
    /// facexlib `mobilenet0.25`.
    MobileNet(MobileNetV1),
    /// torchvision ResNet-50.
    ResNet50(ResNet50),
}

impl Body {
    /// The three feature maps the FPN reads.
    ///
    /// # Shapes
    /// - input `[B, 3, H, W]` → three maps at strides 8, 16, 32.
    pub fn forward(&self, x: Tensor<4>) -> [Tensor<4>; 3] {
        match self {
            Body::MobileNet(m) => m.forward(x),
            Body::ResNet50(r) => r.forward(x),
        }
    }
}

/// Strides of facexlib's `MobileNetV1` layers, per stage.
const MOBILENET_STRIDES: [&[usize]; 3] = [&[2, 1, 2, 1, 2, 1], &[2, 1, 1, 1, 1, 1], &[2, 1]];
