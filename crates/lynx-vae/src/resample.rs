//! `WanResample`: ×2 spatial up/downsampling, optionally with ×2 in time.
//!
//! - `upsample2d`: nearest ×2 in H and W, then a 3×3 convolution to `C/2` channels.
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

use crate::conv::{CausalConv3d, FeatCache, Slot, compact, last_frames};

/// The resampling of one encoder or decoder stage.
///
/// # Shapes
/// - `resample` (upstream `resample.1`): spatial conv as `[out, C, 1, 3, 3]`;
///   `out = C/2` when upsampling, `C` when downsampling
/// - `time_conv`: `[2C, C, 3, 1, 1]` (up) or `[C, C, 3, 1, 1]` (down)
/// - input `[B, C, T, H, W]` → `[B, C/2, T·u, 2H, 2W]` (up) or `[B, C, T/d, H/2, W/2]`
///   (down), where `u`, `d` are 2 for the 3d modes after the first chunk, 1 otherwise
#[derive(Module, Debug)]
pub struct Resample {
    pub resample: CausalConv3d,
    pub time_conv: Option<CausalConv3d>,
    /// Up (`true`) or down.
    pub upsample: bool,
}

impl Resample {
    pub fn forward(&self, x: Tensor<5>, cache: &mut FeatCache) -> Tensor<5> {
        if self.upsample {
            let x = match &self.time_conv {
                Some(conv) => time_upsample(conv, x, cache.slot()),
                None => x,
            };
            self.resample.forward(nearest_2x(x))
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

/// Nearest-neighbour ×2 in H and W (`nearest-exact` and `nearest` agree at scale 2).
fn nearest_2x(x: Tensor<5>) -> Tensor<5> {
    let [b, c, t, h, w] = x.dims();
    x.reshape([b * c * t, h, 1, w, 1])
        .expand([b * c * t, h, 2, w, 2])
        .reshape([b, c, t, 2 * h, 2 * w])
}
