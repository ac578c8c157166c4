//! `WanResample`: ×2 spatial up/downsampling, optionally with ×2 in time.
//!
//! - `upsample2d`: nearest ×2 in H and W, then a 3×3 convolution to `C/2` channels.
//!   Computed without building the ×2 input: each of the four output phases (row and
//!   column parity) is a 3×3 convolution of the low-resolution input whose kernel sums
//!   the taps that land on the same input pixel ([`subpixel_kernel`]); the phases are
//!   then interleaved. Same products, a quarter of the input memory.
//! - `upsample3d`: first `time_conv` (causal, 3 taps, `C → 2C`) doubles the frames —
//!   output frame `2t + s` is channel half `s` at frame `t` — then as `upsample2d`. The
//!   first chunk skips the time stage (one frame stays one frame); from the second chunk
//!   on it is a causal convolution over the frames after the first.
//! - `downsample2d`: zero-pad right and bottom by 1, 3×3 convolution with stride 2.
//! - `downsample3d`: as `downsample2d`, then `time_conv` (3 taps, stride 2, no padding)
//!   over the previous chunk's last frame followed by this chunk; the first chunk skips
//!   it.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::ops::PadMode;
use lynx_store::Loader;

use crate::conv::{CausalConv3d, FeatCache, Slot, compact, last_frames, to_f32};

/// The resampling of one encoder or decoder stage.
///
/// # Shapes
/// - `resample` (upstream `resample.1`): spatial conv as `[C, C, 1, 3, 3]` when
///   downsampling; when upsampling the sub-pixel form `[4·C/2, C, 1, 3, 3]` of upstream's
///   `[C/2, C, 3, 3]` (output channel `4o + 2a + b` is channel `o` at row parity `a`,
///   column parity `b`)
/// - `time_conv`: `[2C, C, 3, 1, 1]` (up) or `[C, C, 3, 1, 1]` (down)
/// - input `[B, C, T, H, W]` → `[B, C/2, T·u, 2H, 2W]` (up) or `[B, C, T/d, H/2, W/2]`
///   (down), where `u`, `d` are 2 for the 3d modes after the first chunk, 1 otherwise
#[derive(Module, Debug)]
pub struct Resample {
    resample: CausalConv3d,
    time_conv: Option<CausalConv3d>,
    /// Up (`true`) or down.
    upsample: bool,
}

impl Resample {
    /// `WanResample(dim, mode)` with mode `upsample2d`/`upsample3d` (`upsample`) or
    /// `downsample2d`/`downsample3d`, `3d` when `temporal`: `resample.1` and `time_conv`.
    pub fn load(w: &Loader, dim: usize, upsample: bool, temporal: bool) -> Self {
        let conv = w.sub("resample").sub(1);
        let time = w.sub("time_conv");
        let (resample, time_conv) = if upsample {
            let time = temporal
                .then(|| CausalConv3d::load(&time, dim, 2 * dim, [3, 1, 1], [1; 3], [0, 0]));
            (load_subpixel(&conv, dim, dim / 2), time)
        } else {
            let time =
                temporal.then(|| CausalConv3d::load(&time, dim, dim, [3, 1, 1], [2, 1, 1], [0, 0]));
            (CausalConv3d::load_2d(&conv, dim, dim, 2, 0), time)
        };
        Self {
            resample,
            time_conv,
            upsample,
        }
    }

    /// Resamples the next chunk.
    ///
    /// # Shapes
    /// See the type's docs.
    pub fn forward(&self, x: Tensor<5>, cache: &mut FeatCache) -> Tensor<5> {
        if self.upsample {
            let x = match &self.time_conv {
                Some(conv) => time_upsample(conv, x, cache.slot()),
                None => x,
            };
            pixel_shuffle(self.resample.forward(x))
        } else {
            let x = x.pad([(0, 1), (0, 1)], PadMode::Constant(0.0));
            let x = self.resample.forward(x);
            match &self.time_conv {
                Some(conv) => time_downsample(conv, x, cache.slot()),
                None => x,
            }
        }
    }
}

fn time_upsample(conv: &CausalConv3d, x: Tensor<5>, slot: &mut Slot) -> Tensor<5> {
    if matches!(slot, Slot::Empty) {
        *slot = Slot::Started;
        return x;
    }
    let [b, c, t, h, w] = x.dims();
    conv.forward_cached(x, slot)
        .reshape([b, 2, c, t, h, w])
        .permute([0, 2, 3, 1, 4, 5])
        .reshape([b, c, 2 * t, h, w])
}

fn time_downsample(conv: &CausalConv3d, x: Tensor<5>, slot: &mut Slot) -> Tensor<5> {
    let last = compact(last_frames(&x, 1));
    match std::mem::replace(slot, Slot::Frames(last)) {
        Slot::Frames(past) => conv.forward_valid(Tensor::cat(vec![past, x], 2)),
        Slot::Empty | Slot::Started => x,
    }
}

/// `[B, 4·C, T, H, W]` with channel `4c + 2a + b` → `[B, C, T, 2H, 2W]` at `(2y + a, 2x + b)`.
fn pixel_shuffle(y: Tensor<5>) -> Tensor<5> {
    let [b, c4, t, h, w] = y.dims();
    let c = c4 / 4;
    y.reshape([b, c, 2, 2, t, h, w])
        .permute([0, 1, 4, 5, 2, 6, 3])
        .reshape([b, c, t, 2 * h, 2 * w])
}

/// The `torch.nn.Conv2d(c_in, c_out, 3, padding=1)` after a nearest ×2 upsampling, in
/// the sub-pixel form of [`subpixel_kernel`].
fn load_subpixel(w: &Loader, c_in: usize, c_out: usize) -> CausalConv3d {
    let (weight, bias) = subpixel_kernel(
        w.tensor::<4>("weight", [c_out, c_in, 3, 3]),
        w.tensor::<1>("bias", [c_out]),
    );
    CausalConv3d::new(weight, bias, [1; 3], [1, 1])
}

/// The sub-pixel form of "nearest ×2, then a 3×3 convolution with padding 1".
///
/// Output row `2y + a` reads upsampled rows `2y + a − 1 ..= 2y + a + 1`, i.e. input rows
/// `y − 1, y, y` (`a = 0`) or `y, y, y + 1` (`a = 1`), so its kernel over input rows
/// `y − 1, y, y + 1` is `[k₀, k₁ + k₂, 0]` or `[0, k₀ + k₁, k₂]`; the same along
/// columns. Sums are taken in f32 and cast back.
///
/// # Shapes
/// - `weight` `[O, C, 3, 3]`, `bias` `[O]` → `[4·O, C, 1, 3, 3]`, `[4·O]`
pub fn subpixel_kernel(weight: Tensor<4>, bias: Tensor<1>) -> (Tensor<5>, Tensor<1>) {
    let dtype = weight.dtype();
    let [o, c, _, _] = weight.dims();
    let w = to_f32(weight);
    let phases: Vec<Tensor<4>> = [0, 1]
        .into_iter()
        .flat_map(|a| [0, 1].map(|b| fold_taps(fold_taps(w.clone(), 2, a), 3, b)))
        .collect();
    let weight = Tensor::stack::<5>(phases, 1)
        .reshape([4 * o, c, 1, 3, 3])
        .cast(dtype);
    let bias = bias.reshape([o, 1]).expand([o, 4]).reshape([4 * o]);
    (weight, bias)
}

/// Along `axis` (length 3): `[k₀, k₁ + k₂, 0]` for phase 0, `[0, k₀ + k₁, k₂]` for 1.
fn fold_taps(k: Tensor<4>, axis: usize, phase: usize) -> Tensor<4> {
    let tap = |i| k.clone().narrow(axis, i, 1);
    let zero = tap(0).zeros_like();
    let parts = if phase == 0 {
        vec![tap(0), tap(1) + tap(2), zero]
    } else {
        vec![zero, tap(0) + tap(1), tap(2)]
    };
    Tensor::cat(parts, axis)
}

#[cfg(test)]
mod tests {
    use burn::tensor::module::conv2d;
    use burn::tensor::ops::ConvOptions;
    use burn::tensor::{Distribution, Tensor};

    use super::*;

    /// The sub-pixel form equals nearest ×2 followed by the 3×3 convolution.
    #[test]
    fn parity_subpixel_equals_upsample_then_conv() {
        let device = lynx_testing::test_device();
        let normal = Distribution::Normal(0.0, 1.0);
        let x = Tensor::<4>::random([2, 5, 6, 7], normal, &device);
        let weight = Tensor::<4>::random([3, 5, 3, 3], normal, &device);
        let bias = Tensor::<1>::random([3], normal, &device);
        let up = x
            .clone()
            .reshape([2 * 5, 6, 1, 7, 1])
            .expand([2 * 5, 6, 2, 7, 2])
            .reshape([2, 5, 12, 14]);
        let opts = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
        let want = conv2d(up, weight.clone(), Some(bias.clone()), opts);
        let (w5, b4) = subpixel_kernel(weight, bias);
        let conv = CausalConv3d::new(w5, b4, [1; 3], [1, 1]);
        let got = pixel_shuffle(conv.forward(x.unsqueeze_dim(2))).squeeze_dim::<4>(2);
        lynx_testing::assert_close("subpixel", &got, &want, 1e-6);
    }
}
