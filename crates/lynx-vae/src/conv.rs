//! `WanCausalConv3d` and the feature cache that carries causal context from one chunk of
//! frames to the next.
//!
//! A causal convolution with `kt` time taps sees, for output frame `t`, input frames
//! `t − kt + 1 ..= t`; frames before the first are zeros. Spatial padding is symmetric.
//! When a video is processed in chunks, each such convolution keeps the last `kt − 1`
//! frames of its input in a [`Slot`], so chunked processing gives exactly what the whole
//! sequence would.

use burn::module::{Module, Param};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Tensor};
use lynx_core::nn::conv3d;
use lynx_store::Loader;

/// What one layer remembers of the chunks it has seen.
// A few dozen slots per model: their size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Default)]
pub enum Slot {
    /// No chunk seen yet.
    #[default]
    Empty,
    /// A chunk was seen but left no frames (the first chunk of a time upsampler).
    Started,
    /// The last frames of the input seen so far, in their own buffer.
    Frames(Tensor<5>),
}

impl Slot {
    /// Takes the remembered frames, leaving [`Slot::Started`].
    pub fn take_frames(&mut self) -> Option<Tensor<5>> {
        match std::mem::replace(self, Slot::Started) {
            Slot::Frames(t) => Some(t),
            Slot::Empty | Slot::Started => None,
        }
    }
}

/// The state of every cached layer of an encoder or decoder, in call order (the
/// reference's `feat_cache` list with its `feat_idx` cursor).
#[derive(Debug, Default)]
pub struct FeatCache {
    slots: Vec<Slot>,
    next: usize,
}

impl FeatCache {
    /// An empty cache, before the first chunk.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rewinds the cursor before a chunk runs through the network.
    pub fn begin_chunk(&mut self) {
        self.next = 0;
    }

    /// The next layer's slot (created empty on the first chunk).
    pub fn slot(&mut self) -> &mut Slot {
        if self.next == self.slots.len() {
            self.slots.push(Slot::Empty);
        }
        self.next += 1;
        &mut self.slots[self.next - 1]
    }
}

/// Copies `t` into a buffer of its own. Slices are views that keep their parent's whole
/// buffer alive; a cache entry must not pin a full chunk of activations.
pub(crate) fn compact<const D: usize>(t: Tensor<D>) -> Tensor<D> {
    t.mul_scalar(1.0)
}

/// The last `n` frames (axis 2) of `x`.
pub(crate) fn last_frames(x: &Tensor<5>, n: usize) -> Tensor<5> {
    let t = x.dims()[2];
    x.clone().narrow(2, t - n, n)
}

/// A 3D convolution, causal in time.
///
/// # Shapes
/// - `weight`: `[out, in, kt, kh, kw]`, `bias`: `[out]`
/// - input `[B, in, T, H, W]` → output `[B, out, T', H', W']` with `T' = T` for stride 1
///   (past frames come from the cache or are zeros) and `H' = (H + 2·ph − kh)/sh + 1`.
#[derive(Module, Debug)]
pub struct CausalConv3d {
    weight: Param<Tensor<5>>,
    bias: Param<Tensor<1>>,
    stride: [usize; 3],
    /// Symmetric spatial padding `[ph, pw]`; time is padded by `kt − 1` on the past side.
    padding: [usize; 2],
}

impl CausalConv3d {
    /// A convolution from its weight `[out, in, kt, kh, kw]`, bias `[out]`, stride and
    /// symmetric spatial padding `[ph, pw]`.
    pub fn new(
        weight: Tensor<5>,
        bias: Tensor<1>,
        stride: [usize; 3],
        padding: [usize; 2],
    ) -> Self {
        Self {
            weight: Param::from_tensor(weight),
            bias: Param::from_tensor(bias),
            stride,
            padding,
        }
    }

    /// `WanCausalConv3d(c_in, c_out, k, stride, padding)`: `weight` `[out, in, kt, kh, kw]`,
    /// `bias` `[out]`.
    pub fn load(
        w: &Loader,
        c_in: usize,
        c_out: usize,
        k: [usize; 3],
        stride: [usize; 3],
        padding: [usize; 2],
    ) -> Self {
        Self {
            weight: w.param("weight", [c_out, c_in, k[0], k[1], k[2]]),
            bias: w.param("bias", [c_out]),
            stride,
            padding,
        }
    }

    /// A `torch.nn.Conv2d(c_in, c_out, 3, stride, padding)` applied frame by frame:
    /// `weight` `[out, in, 3, 3]` becomes `[out, in, 1, 3, 3]`.
    pub fn load_2d(w: &Loader, c_in: usize, c_out: usize, stride: usize, padding: usize) -> Self {
        let weight = w
            .tensor::<4>("weight", [c_out, c_in, 3, 3])
            .unsqueeze_dim::<5>(2);
        Self::new(
            weight,
            w.tensor("bias", [c_out]),
            [1, stride, stride],
            [padding, padding],
        )
    }

    /// Time taps `kt`.
    pub fn time_kernel(&self) -> usize {
        self.weight.dims()[2]
    }

    fn options(&self) -> ConvOptions<3> {
        ConvOptions::new(
            self.stride,
            [0, self.padding[0], self.padding[1]],
            [1, 1, 1],
            1,
        )
    }

    /// Runs on `x` with `past` frames before it (none: zeros), padding the rest of the
    /// causal window with zero frames. `past` plus `x` must hold at least one frame.
    fn run(&self, x: Tensor<5>, past: Option<Tensor<5>>) -> Tensor<5> {
        let kt = self.time_kernel();
        let have = past.as_ref().map_or(0, |p| p.dims()[2]);
        let zeros = (kt - 1).saturating_sub(have);
        if past.is_none() && zeros > 0 && x.dims()[2] == 1 && self.stride[0] == 1 {
            // A lone frame after zeros: only the last tap sees data (same sum, fewer FLOPs).
            let w = compact(self.weight.val().narrow(2, kt - 1, 1));
            return conv3d(x, &w, Some(&self.bias.val()), self.options());
        }
        let mut parts = Vec::with_capacity(3);
        if zeros > 0 {
            let [b, c, _, h, w] = x.dims();
            parts.push(Tensor::zeros([b, c, zeros, h, w], (&x.device(), x.dtype())));
        }
        parts.extend(past);
        parts.push(x);
        let input = if parts.len() == 1 {
            parts.pop().expect("one part")
        } else {
            Tensor::cat(parts, 2)
        };
        conv3d(
            input,
            &self.weight.val(),
            Some(&self.bias.val()),
            self.options(),
        )
    }

    /// The convolution without time padding (`T' = (T − kt)/st + 1`).
    ///
    /// # Shapes
    /// - input `[B, in, T, H, W]` → `[B, out, T', H', W']`.
    pub fn forward_valid(&self, x: Tensor<5>) -> Tensor<5> {
        conv3d(
            x,
            &self.weight.val(),
            Some(&self.bias.val()),
            self.options(),
        )
    }

    /// The convolution over a whole sequence (zeros before the first frame).
    ///
    /// # Shapes
    /// - input `[B, in, T, H, W]` → `[B, out, T', H', W']` (`T' = T` for stride 1).
    pub fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        self.run(x, None)
    }

    /// The convolution over the next chunk `x`, taking the past frames from `slot` and
    /// leaving there the last `kt − 1` frames of (past ‖ x) for the next chunk.
    ///
    /// # Shapes
    /// - input `[B, in, T, H, W]` → `[B, out, T, H', W']`.
    pub fn forward_cached(&self, x: Tensor<5>, slot: &mut Slot) -> Tensor<5> {
        let keep = self.time_kernel() - 1;
        if keep == 0 {
            return self.run(x, None);
        }
        let past = slot.take_frames();
        let t = x.dims()[2];
        let next = if t >= keep {
            compact(last_frames(&x, keep))
        } else {
            match &past {
                // Fewer new frames than the window: keep the tail of the old ones too.
                Some(p) => {
                    let from_past = keep.min(p.dims()[2] + t) - t;
                    Tensor::cat(vec![last_frames(p, from_past), x.clone()], 2)
                }
                None => x.clone(),
            }
        };
        *slot = Slot::Frames(next);
        self.run(x, past)
    }
}

/// Casts to f32 for norms; a no-op when already f32.
pub(crate) fn to_f32<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if x.dtype() == DType::F32 {
        x
    } else {
        x.cast(DType::F32)
    }
}
