//! RetinaFace's feature pyramid and context modules (facexlib
//! `detection/retinaface_net.py` `FPN`, `SSH`).
//!
//! ```text
//! FPN: o_i = conv_bn1X1(c_i); o2 = merge2(o2 + up(o3)); o1 = merge1(o1 + up(o2))
//! SSH: relu(cat[conv3X3(x), conv5X5_2(a), conv7x7_3(conv7X7_2(a))]),  a = conv5X5_1(x)
//! ```
//! LeakyReLU slope 0.1 when the pyramid has ≤ 64 channels, else ReLU; `up` is nearest
//! neighbour to the finer map's size (`F.interpolate(mode="nearest")`).
//!
//! # Shapes
//! - FPN: three maps `[B, C_i, H_i, W_i]` → three maps `[B, out, H_i, W_i]`
//! - SSH: `[B, out, H, W]` → `[B, out, H, W]` (channels out/2 + out/4 + out/4)

use burn::module::Module;
use burn::tensor::activation::relu;
use burn::tensor::{Int, Tensor, TensorData};

use lynx_store::Loader;

use crate::nn::{ConvAct, conv_bn, geom};

/// `FPN`: `output1..3` (1×1 conv, BN, LeakyReLU) and `merge1..2` (3×3 conv, BN, LeakyReLU).
#[derive(Module, Debug)]
pub struct Fpn {
    output1: ConvAct,
    output2: ConvAct,
    output3: ConvAct,
    merge1: ConvAct,
    merge2: ConvAct,
}

impl Fpn {
    /// Merges the coarser levels into the finer ones.
    ///
    /// # Shapes
    /// - three maps `[B, C_i, H_i, W_i]` → three maps `[B, out, H_i, W_i]`.
    pub fn forward(&self, [c1, c2, c3]: [Tensor<4>; 3]) -> [Tensor<4>; 3] {
        let o1 = self.output1.forward(c1);
        let o2 = self.output2.forward(c2);
        let o3 = self.output3.forward(c3);
        let o2 = self
            .merge2
            .forward(upsample_nearest_like(o3.clone(), &o2) + o2);
        let o1 = self
            .merge1
            .forward(upsample_nearest_like(o2.clone(), &o1) + o1);
        [o1, o2, o3]
    }

    /// Loads `fpn` (`output{1,2,3}`, `merge{1,2}`) for input widths `ins`; returns it and
    /// its output width.
    pub fn load(l: &Loader, ins: [usize; 3], slope: Option<f64>) -> (Self, usize) {
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

/// `F.interpolate(x, size=target.shape[2:], mode="nearest")`: output index `i` reads
/// input index `min(⌊i · in/out⌋, in − 1)` with the ratio in f32, as PyTorch computes it.
pub fn upsample_nearest_like(x: Tensor<4>, target: &Tensor<4>) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    let [_, _, th, tw] = target.dims();
    let device = x.device();
    let index = |n_in: usize, n_out: usize| {
        let scale = n_in as f32 / n_out as f32;
        let idx: Vec<i64> = (0..n_out)
            .map(|i| ((i as f32 * scale).floor() as i64).min(n_in as i64 - 1))
            .collect();
        Tensor::<1, Int>::from_data(TensorData::new(idx, [n_out]), &device)
    };
    x.select(2, index(h, th)).select(3, index(w, tw))
}

/// `SSH` context module.
#[derive(Module, Debug)]
pub struct Ssh {
    /// `conv3X3`: 3×3, out/2 channels, no activation.
    conv3x3: ConvAct,
    /// `conv5X5_1`: 3×3, out/4, LeakyReLU.
    conv5x5_1: ConvAct,
    /// `conv5X5_2`: 3×3, out/4, no activation.
    conv5x5_2: ConvAct,
    /// `conv7X7_2`: 3×3, out/4, LeakyReLU.
    conv7x7_2: ConvAct,
    /// `conv7x7_3`: 3×3, out/4, no activation.
    conv7x7_3: ConvAct,
}

impl Ssh {
    /// The context module.
    ///
    /// # Shapes
    /// - input `[B, out, H, W]` → same shape.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let a = self.conv3x3.forward(x.clone());
        let m = self.conv5x5_1.forward(x);
        let b = self.conv5x5_2.forward(m.clone());
        let c = self.conv7x7_3.forward(self.conv7x7_2.forward(m));
        relu(Tensor::cat(vec![a, b, c], 1))
    }

    /// Loads `sshN` for `c` channels.
    pub fn load(l: &Loader, c: usize, slope: Option<f64>) -> Self {
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
