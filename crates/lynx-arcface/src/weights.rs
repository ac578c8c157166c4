//! Key mapping: builds RetinaFace and ArcFace from facexlib state dicts (`.pth` as
//! released, or the same keys in safetensors), folding every BatchNorm on the way.
//!
//! BatchNorm `(weight γ, bias β, running_mean μ, running_var σ², eps 1e-5)` becomes
//! `scale = γ / √(σ² + eps)`, `shift = β − μ·scale`, multiplied into the preceding
//! convolution's weight (and added as its bias) or kept as a per-channel affine where a
//! zero-padded convolution follows it. `num_batches_tracked` is ignored. Folding runs in
//! f32; the result is cast to the loader's dtype.
//!
//! Channel counts come from the file; a layer's input channels are the previous layer's
//! output, so [`Loader::finish`] reports any inconsistent tensor by key.

use burn::module::Param;
use burn::tensor::Tensor;
use lynx_core::{Error, Loader, Result};

use crate::arcface::{ArcFace, ArcFaceConfig, BottleneckIrSe, INPUT_SIZE, SeModule};
use crate::nn::{ChannelAffine, Conv, ConvAct};
use crate::retinaface::RetinaFace;
use crate::retinaface::backbone::{Body, MobileNetV1, ResBottleneck, ResNet50};
use crate::retinaface::fpn::{Fpn, Ssh};

const BN_EPS: f64 = 1e-5;

/// `t`, or zeros of `shape` when the loader handed back a placeholder for a missing or
/// mis-shaped tensor (already recorded for [`Loader::finish`]), so that folding and
/// reshaping never panic on a bad checkpoint.
fn sized<const D: usize>(t: Tensor<D>, shape: [usize; D]) -> Tensor<D> {
    if t.dims() == shape {
        t
    } else {
        Tensor::zeros(shape, (&t.device(), t.dtype()))
    }
}

/// f32 tensor `name` of `shape` under `l`, see [`sized`].
fn f32_sized<const D: usize>(l: &Loader, name: &str, shape: [usize; D]) -> Tensor<D> {
    sized(l.tensor_f32::<D>(name, shape), shape)
}

/// Running statistics of the BatchNorm under `bn` as `(scale, shift)`, f32 `[c]`.
fn bn_fold(bn: &Loader, c: usize) -> (Tensor<1>, Tensor<1>) {
    bn.ignore("num_batches_tracked");
    let gamma = f32_sized(bn, "weight", [c]);
    let beta = f32_sized(bn, "bias", [c]);
    let mean = f32_sized(bn, "running_mean", [c]);
    let var = f32_sized(bn, "running_var", [c]);
    let scale = gamma / (var + BN_EPS).sqrt();
    let shift = beta - mean * scale.clone();
    (scale, shift)
}

fn param<const D: usize>(t: Tensor<D>, l: &Loader) -> Param<Tensor<D>> {
    Param::from_tensor(t.cast(l.dtype()))
}

/// First dimension of tensor `name` (its output channels), 0 when absent (the getter
/// that follows then reports it missing).
fn out_channels(l: &Loader, name: &str) -> usize {
    l.shape(name).and_then(|s| s.first().copied()).unwrap_or(0)
}

impl ChannelAffine {
    /// A BatchNorm over `c` channels as a per-channel affine.
    pub(crate) fn load(bn: &Loader, c: usize) -> Self {
        let (scale, shift) = bn_fold(bn, c);
        Self {
            scale: param(scale, bn),
            shift: param(shift, bn),
        }
    }
}

/// Geometry of a convolution: kernel, stride, padding, and whether it is depthwise.
#[derive(Clone, Copy)]
struct Geom {
    k: usize,
    stride: usize,
    padding: usize,
    depthwise: bool,
}

const fn geom(k: usize, stride: usize, padding: usize) -> Geom {
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
    fn load_bn(conv: &Loader, bn: &Loader, c_in: usize, g: Geom) -> (Self, usize) {
        let (c_out, groups) = if g.depthwise {
            (c_in, c_in)
        } else {
            (out_channels(conv, "weight"), 1)
        };
        let w = f32_sized(conv, "weight", [c_out, c_in / groups, g.k, g.k]);
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
    fn load_plain(conv: &Loader, c_in: usize, g: Geom, bias: bool) -> (Self, usize) {
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

/// A facexlib `Sequential(Conv2d, BatchNorm2d[, LeakyReLU])` under `l` (keys `0.*`, `1.*`).
fn conv_bn(l: &Loader, c_in: usize, g: Geom, slope: Option<f64>) -> (ConvAct, usize) {
    let (conv, c_out) = Conv::load_bn(&l.sub(0), &l.sub(1), c_in, g);
    (ConvAct { conv, slope }, c_out)
}

// ---------------------------------------------------------------------------------------
// RetinaFace
// ---------------------------------------------------------------------------------------

/// Strides of facexlib's `MobileNetV1` layers, per stage.
const MOBILENET_STRIDES: [&[usize]; 3] = [&[2, 1, 2, 1, 2, 1], &[2, 1, 1, 1, 1, 1], &[2, 1]];

fn count_subs(l: &Loader) -> usize {
    (0..).take_while(|i| l.has_sub(&i.to_string())).count()
}

impl MobileNetV1 {
    /// `body.stage1..3`: `conv_bn` (`N.0`, `N.1`) or `conv_dw` (`N.0`, `N.1`, `N.3`, `N.4`).
    fn load(l: &Loader) -> Result<(Self, [usize; 3])> {
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

impl ResBottleneck {
    fn load(l: &Loader, c_in: usize, stride: usize) -> (Self, usize) {
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

impl ResNet50 {
    /// torchvision `resnet50` keys `conv1`, `bn1`, `layer1..4.N.{conv,bn}{1,2,3}`,
    /// `layerK.0.downsample.{0,1}`; block counts from the file.
    fn load(l: &Loader) -> (Self, [usize; 3]) {
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

impl Fpn {
    fn load(l: &Loader, ins: [usize; 3], slope: Option<f64>) -> (Self, usize) {
        let (output1, c) = conv_bn(&l.sub("output1"), ins[0], geom(1, 1, 0), slope);
        let (output2, _) = conv_bn(&l.sub("output2"), ins[1], geom(1, 1, 0), slope);
        let (output3, _) = conv_bn(&l.sub("output3"), ins[2], geom(1, 1, 0), slope);
        let (merge1, _) = conv_bn(&l.sub("merge1"), c, geom(3, 1, 1), slope);
        let (merge2, _) = conv_bn(&l.sub("merge2"), c, geom(3, 1, 1), slope);
        let fpn = Self {
            output1,
            output2,
            output3,
            merge1,
            merge2,
        };
        (fpn, c)
    }
}

impl Ssh {
    fn load(l: &Loader, c: usize, slope: Option<f64>) -> Self {
        let g = geom(3, 1, 1);
        let (conv3x3, _) = conv_bn(&l.sub("conv3X3"), c, g, None);
        let (conv5x5_1, q) = conv_bn(&l.sub("conv5X5_1"), c, g, slope);
        let (conv5x5_2, _) = conv_bn(&l.sub("conv5X5_2"), q, g, None);
        let (conv7x7_2, _) = conv_bn(&l.sub("conv7X7_2"), q, g, slope);
        let (conv7x7_3, _) = conv_bn(&l.sub("conv7x7_3"), q, g, None);
        Self {
            conv3x3,
            conv5x5_1,
            conv5x5_2,
            conv7x7_2,
            conv7x7_3,
        }
    }
}

impl RetinaFace {
    /// Builds the detector from a facexlib state dict under `l` (a leading `module.`, as
    /// DataParallel training leaves it, is handled by [`crate::load_retinaface`]).
    /// The backbone is chosen from the keys: `body.stage1.*` → MobileNetV1 ×0.25,
    /// `body.layer1.*` → ResNet-50. Call [`Loader::finish`] afterwards.
    pub fn load(l: &Loader) -> Result<Self> {
        let body = l.sub("body");
        let (body, ins) = if body.has_sub("stage1") {
            let (m, outs) = MobileNetV1::load(&body)?;
            (Body::MobileNet(m), outs)
        } else if body.has_sub("layer1") {
            let (r, outs) = ResNet50::load(&body);
            (Body::ResNet50(r), outs)
        } else {
            return Err(Error::format(
                l.checkpoint().path(),
                "RetinaFace checkpoint",
                format!(
                    "no `{}` (MobileNetV1) or `{}` (ResNet-50) tensors: not a facexlib \
                     RetinaFace state dict",
                    body.key("stage1.*"),
                    body.key("layer1.*")
                ),
            ));
        };
        let c = out_channels(&l.sub("fpn.output1.0"), "weight");
        // facexlib: LeakyReLU(0.1) in FPN and SSH when out_channels <= 64, else ReLU.
        let slope = Some(if c <= 64 { 0.1 } else { 0.0 });
        let (fpn, c) = Fpn::load(&l.sub("fpn"), ins, slope);
        let ssh = |name: &str| Ssh::load(&l.sub(name), c, slope);
        let (ssh1, ssh2, ssh3) = (ssh("ssh1"), ssh("ssh2"), ssh("ssh3"));
        let heads = |name: &str, per_anchor: usize| -> Result<Vec<Conv>> {
            (0..3)
                .map(|i| {
                    let h = l.sub(name).sub(i).sub("conv1x1");
                    let (conv, out) = Conv::load_plain(&h, c, geom(1, 1, 0), true);
                    if h.has("weight") && out != 2 * per_anchor {
                        return Err(Error::format(
                            l.checkpoint().path(),
                            "RetinaFace checkpoint",
                            format!(
                                "`{}` has {out} outputs; the priors need 2 anchors × \
                                 {per_anchor} = {}",
                                h.key("weight"),
                                2 * per_anchor
                            ),
                        ));
                    }
                    Ok(conv)
                })
                .collect()
        };
        Ok(Self {
            body,
            fpn,
            ssh1,
            ssh2,
            ssh3,
            class_head: heads("ClassHead", 2)?,
            bbox_head: heads("BboxHead", 4)?,
            landmark_head: heads("LandmarkHead", 10)?,
        })
    }
}

// ---------------------------------------------------------------------------------------
// ArcFace
// ---------------------------------------------------------------------------------------

impl ArcFaceConfig {
    /// Reads the IR-SE architecture from the keys and shapes under `l`: unit count and
    /// widths from `body.N.res_layer.{0,1}`, embedding size from `output_layer.3`, SE from
    /// the presence of `res_layer.5`.
    ///
    /// Stages start where the width changes (the first unit of a stage has stride 2).
    /// When two consecutive stages have the same width the boundary cannot be seen in the
    /// keys; then `depths` (units per stage) must be given, and it is always checked.
    pub fn from_checkpoint(l: &Loader, depths: Option<&[usize]>) -> Result<Self> {
        let path = l.checkpoint().path();
        let err = |reason: String| Error::format(path, "ArcFace IR-SE checkpoint", reason);
        let body = l.sub("body");
        let n = count_subs(&body);
        if n == 0 {
            return Err(Error::MissingKey {
                path: path.to_path_buf(),
                key: body.key("0.res_layer.1.weight"),
            });
        }
        let shape = |name: &str| -> Result<Vec<usize>> {
            l.shape(name).ok_or_else(|| Error::MissingKey {
                path: path.to_path_buf(),
                key: l.key(name),
            })
        };
        let mut widths_per_unit = Vec::with_capacity(n);
        for i in 0..n {
            widths_per_unit.push(shape(&format!("body.{i}.res_layer.1.weight"))?[0]);
        }
        let out = shape("output_layer.3.weight")?;
        let (emb, flat) = (out[0], out.get(1).copied().unwrap_or(0));
        let last = widths_per_unit[n - 1];
        let side = ((flat / last.max(1)) as f64).sqrt().round() as usize;
        if side == 0 || side * side * last != flat || !(INPUT_SIZE / side).is_power_of_two() {
            return Err(err(format!(
                "`output_layer.3.weight` takes {flat} features, which is not {last} channels × \
                 a square map of a 112 input"
            )));
        }
        let n_stages = (INPUT_SIZE / side).trailing_zeros() as usize;
        // Units that must start a stage: the first, and every width change.
        let starts: Vec<usize> = (0..n)
            .filter(|&i| i == 0 || widths_per_unit[i] != widths_per_unit[i - 1])
            .collect();
        let depths: Vec<usize> = match depths {
            Some(d) => {
                let total: usize = d.iter().sum();
                let bounds: Vec<usize> = d
                    .iter()
                    .scan(0, |s, &k| {
                        let b = *s;
                        *s += k;
                        Some(b)
                    })
                    .collect();
                if total != n || d.len() != n_stages || d.contains(&0) {
                    return Err(err(format!(
                        "depths {d:?} do not fit the checkpoint: it has {n} units in \
                         {n_stages} stages"
                    )));
                }
                if let Some(i) = starts.iter().find(|i| !bounds.contains(i)) {
                    return Err(err(format!(
                        "depths {d:?} put unit {i} inside a stage, but its width changes there"
                    )));
                }
                d.to_vec()
            }
            None if starts.len() == n_stages => {
                let mut d: Vec<usize> = starts.windows(2).map(|w| w[1] - w[0]).collect();
                d.push(n - starts[n_stages - 1]);
                d
            }
            None => {
                return Err(err(format!(
                    "cannot tell where its {n_stages} stages start: the {n} units have widths \
                     {widths_per_unit:?}, which change only {} time(s); give the units per \
                     stage (depths, e.g. 3,4,14,3 for IR-SE50)",
                    starts.len() - 1
                )));
            }
        };
        let mut widths = Vec::with_capacity(depths.len());
        let mut first = 0;
        for &k in &depths {
            widths.push(widths_per_unit[first]);
            first += k;
        }
        Ok(Self {
            widths,
            depths,
            emb,
            se: l.has_sub("body.0.res_layer.5"),
        })
    }
}

impl SeModule {
    /// `fc1` `[C/r, C, 1, 1]`, `fc2` `[C, C/r, 1, 1]`, no biases.
    fn load(l: &Loader, c: usize) -> Self {
        let r = out_channels(&l.sub("fc1"), "weight");
        let fc1 = sized(l.tensor::<4>("fc1.weight", [r, c, 1, 1]), [r, c, 1, 1]).reshape([r, c]);
        let fc2 = sized(l.tensor::<4>("fc2.weight", [c, r, 1, 1]), [c, r, 1, 1]).reshape([c, r]);
        Self {
            fc1: Param::from_tensor(fc1.transpose()),
            fc2: Param::from_tensor(fc2.transpose()),
        }
    }
}

impl BottleneckIrSe {
    fn load(l: &Loader, c_in: usize, c_out: usize, stride: usize, se: bool) -> Self {
        let res = l.sub("res_layer");
        let shortcut = (c_in != c_out).then(|| {
            let s = l.sub("shortcut_layer");
            Conv::load_bn(&s.sub(0), &s.sub(1), c_in, geom(1, stride, 0)).0
        });
        let (conv1, _) = Conv::load_plain(&res.sub(1), c_in, geom(3, 1, 1), false);
        let (conv2, _) = Conv::load_bn(&res.sub(3), &res.sub(4), c_out, geom(3, stride, 1));
        Self {
            shortcut,
            bn_in: ChannelAffine::load(&res.sub(0), c_in),
            conv1,
            prelu: res.param("2.weight", [c_out]),
            conv2,
            se: se.then(|| SeModule::load(&res.sub(5), c_out)),
            stride,
        }
    }
}

impl ArcFace {
    /// Builds the backbone described by `cfg` from the state dict under `l` (keys
    /// `input_layer.{0,1,2}`, `body.N.{shortcut_layer,res_layer}.*`,
    /// `output_layer.{0,3,4}`). Call [`Loader::finish`] afterwards.
    pub fn load(l: &Loader, cfg: &ArcFaceConfig) -> Self {
        let input = l.sub("input_layer");
        let (input_conv, mut c) = Conv::load_bn(&input.sub(0), &input.sub(1), 3, geom(3, 1, 1));
        let input_prelu = input.param("2.weight", [c]);
        let mut body = Vec::new();
        for (&width, &depth) in cfg.widths.iter().zip(&cfg.depths) {
            for j in 0..depth {
                let stride = if j == 0 { 2 } else { 1 };
                body.push(BottleneckIrSe::load(
                    &l.sub("body").sub(body.len()),
                    c,
                    width,
                    stride,
                    cfg.se,
                ));
                c = width;
            }
        }
        // output_layer: BN2d(c) → Dropout → Flatten → Linear(c·hw → emb) → BN1d(emb),
        // folded into one linear map.
        let out = l.sub("output_layer");
        let flat = out
            .shape("3.weight")
            .and_then(|s| s.get(1).copied())
            .unwrap_or(0);
        let hw = flat / c.max(1);
        let emb = cfg.emb;
        let (s1, t1) = bn_fold(&out.sub(0), c);
        let w = f32_sized(&out, "3.weight", [emb, c * hw]).reshape([emb, c, hw]);
        let b = f32_sized(&out, "3.bias", [emb]);
        let (s2, t2) = bn_fold(&out.sub(4), emb);
        let s1 = s1.reshape([1, c, 1]);
        let wt1 = (w.clone() * t1.reshape([1, c, 1]))
            .sum_dims(&[1, 2])
            .reshape([emb]);
        let bias = (wt1 + b) * s2.clone() + t2;
        let weight = (w * s1 * s2.reshape([emb, 1, 1])).reshape([emb, c * hw]);
        Self {
            input_conv,
            input_prelu,
            body,
            out_weight: param(weight.transpose(), l),
            out_bias: param(bias, l),
        }
    }
}
