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
use lynx_store::Loader;

use crate::nn::{ChannelAffine, Conv, bn_fold, count_subs, geom, out_channels, param};

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
    fc1: Param<Tensor<2>>,
    fc2: Param<Tensor<2>>,
}

impl SeModule {
    /// Squeeze-and-excitation: scales each channel by a gate from its mean.
    ///
    /// # Shapes
    /// - input `[B, C, H, W]` → same shape.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, _, _] = x.dims();
        let s = x.clone().mean_dims(&[2, 3]).reshape([b, c]);
        let s = relu(s.matmul(self.fc1.val()));
        let s = sigmoid(s.matmul(self.fc2.val()));
        x * s.reshape([b, c, 1, 1])
    }

    /// `fc1` `[C/r, C, 1, 1]`, `fc2` `[C, C/r, 1, 1]`, no biases.
    pub fn load(l: &Loader, c: usize) -> Self {
        let r = out_channels(&l.sub("fc1"), "weight");
        let fc1 = l.tensor::<4>("fc1.weight", [r, c, 1, 1]).reshape([r, c]);
        let fc2 = l.tensor::<4>("fc2.weight", [c, r, 1, 1]).reshape([c, r]);
        Self {
            fc1: Param::from_tensor(fc1.transpose()),
            fc2: Param::from_tensor(fc2.transpose()),
        }
    }
}

/// One `bottleneck_IR_SE` unit.
#[derive(Module, Debug)]
pub struct BottleneckIrSe {
    /// `shortcut_layer` Conv1×1 · BN, or `None` for the strided subsampling
    /// (`MaxPool2d(1, stride)`).
    shortcut: Option<Conv>,
    /// `res_layer.0`: BatchNorm of the input.
    bn_in: ChannelAffine,
    /// `res_layer.1`: Conv3×3, stride 1.
    conv1: Conv,
    /// `res_layer.2`: PReLU weights `[out]`.
    prelu: Param<Tensor<1>>,
    /// `res_layer.3` · `res_layer.4`: Conv3×3 with the unit's stride, BN folded.
    conv2: Conv,
    /// `res_layer.5`, absent in `ir` mode.
    se: Option<SeModule>,
    stride: usize,
}

impl BottleneckIrSe {
    /// One IR(-SE) unit, residual.
    ///
    /// # Shapes
    /// - input `[B, in, H, W]` → `[B, out, H/stride, W/stride]`.
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

    /// Loads `body.N` (`shortcut_layer`, `res_layer.{0..5}`) for `c_in` → `c_out` channels.
    pub fn load(l: &Loader, c_in: usize, c_out: usize, stride: usize, se: bool) -> Self {
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

/// The IR-SE backbone with every BatchNorm folded.
#[derive(Module, Debug)]
pub struct ArcFace {
    /// `input_layer.0` · `input_layer.1`.
    input_conv: Conv,
    /// `input_layer.2`.
    input_prelu: Param<Tensor<1>>,
    body: Vec<BottleneckIrSe>,
    /// `output_layer`: BN2d, Linear and BN1d folded into one linear map,
    /// weight `[C·7·7, emb]`.
    out_weight: Param<Tensor<2>>,
    out_bias: Param<Tensor<1>>,
}

impl ArcFace {
    /// Embeds a batch of aligned crops: `[B, 3, 112, 112]` BGR in `[-1, 1]` → `[B, emb]`
    /// with unit norm.
    ///
    /// # Shapes
    /// - input `[B, 3, 112, 112]` → `[B, emb]`.
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

    /// Builds the backbone described by `cfg` from the state dict under `l` (keys
    /// `input_layer.{0,1,2}`, `body.N.{shortcut_layer,res_layer}.*`,
    /// `output_layer.{0,3,4}`).
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
        let w = out
            .tensor_f32("3.weight", [emb, c * hw])
            .reshape([emb, c, hw]);
        let b = out.tensor_f32("3.bias", [emb]);
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
