//! Optional spatial tiling of the decoder for frames too large to decode whole.
//!
//! The latent frame is cut into overlapping tiles; each tile's whole video is decoded on
//! its own (frame by frame, with its own causal cache) and added into the output with a
//! weight that ramps linearly across each overlap, the weights of all tiles summing to 1
//! at every pixel. A tile sees less context than the whole frame (the decoder's
//! receptive field and mid attention span the frame), so tiled output differs slightly
//! from untiled output; tiling is off unless asked for.

use std::ops::Range;

use burn::tensor::{DType, Tensor, TensorData};
use lynx_core::{Error, Result};

/// Tile size and stride, in output pixels (multiples of 8 for Wan2.1). Overlap is
/// `tile − stride`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiling {
    /// Side of a tile.
    pub tile: usize,
    /// Distance between tile starts.
    pub stride: usize,
}

impl Default for Tiling {
    /// 256-pixel tiles every 192 pixels (64 pixels of overlap).
    fn default() -> Self {
        Self {
            tile: 256,
            stride: 192,
        }
    }
}

impl Tiling {
    /// Checks that both sizes are multiples of `factor` and `0 < stride ≤ tile`.
    pub fn check(&self, factor: usize) -> Result<()> {
        if self.tile == 0 || self.stride == 0 || self.stride > self.tile {
            return Err(Error::input(format!(
                "tiling needs 0 < stride ≤ tile, got tile {} stride {}",
                self.tile, self.stride
            )));
        }
        if !self.tile.is_multiple_of(factor) || !self.stride.is_multiple_of(factor) {
            return Err(Error::input(format!(
                "tile {} and stride {} must be multiples of {factor} pixels",
                self.tile, self.stride
            )));
        }
        Ok(())
    }
}

/// Tiles along an axis of `n` latent cells: as few `tile`-long tiles as keep the gaps
/// between starts at most `stride`, spread evenly from `0` to `n − tile`.
pub fn spans(n: usize, tile: usize, stride: usize) -> Vec<Range<usize>> {
    if n <= tile {
        return std::iter::once(0..n).collect();
    }
    let room = n - tile;
    let gaps = room.div_ceil(stride);
    (0..=gaps)
        .map(|k| {
            let start = (k * room + gaps / 2) / gaps;
            start..start + tile
        })
        .collect()
}

/// Per tile, per pixel of the tile (pixel spans `spans × factor`): blending weights that
/// ramp up across the overlap with the previous tile and down across the overlap with
/// the next, normalised to sum to 1 at every pixel.
pub fn blend_weights(spans: &[Range<usize>], factor: usize) -> Vec<Vec<f32>> {
    let px: Vec<Range<usize>> = spans
        .iter()
        .map(|s| s.start * factor..s.end * factor)
        .collect();
    let total = px.last().map_or(0, |r| r.end);
    let mut raw: Vec<Vec<f64>> = Vec::with_capacity(px.len());
    for (k, r) in px.iter().enumerate() {
        let before = if k > 0 {
            px[k - 1].end.saturating_sub(r.start)
        } else {
            0
        };
        let after = px.get(k + 1).map_or(0, |n| r.end.saturating_sub(n.start));
        raw.push(
            r.clone()
                .map(|y| {
                    let mut v = 1.0f64;
                    if before > 0 {
                        v = v.min((y - r.start + 1) as f64 / (before + 1) as f64);
                    }
                    if after > 0 {
                        v = v.min((r.end - y) as f64 / (after + 1) as f64);
                    }
                    v
                })
                .collect(),
        );
    }
    let mut sum = vec![0.0f64; total];
    for (r, w) in px.iter().zip(&raw) {
        for (y, v) in r.clone().zip(w) {
            sum[y] += v;
        }
    }
    px.iter()
        .zip(&raw)
        .map(|(r, w)| r.clone().zip(w).map(|(y, v)| (v / sum[y]) as f32).collect())
        .collect()
}

/// Decodes `latents` tile by tile with `decode_tile` (a latent tile → its unclamped f32
/// video) and blends the tiles (see the module docs). `factors` are the VAE's spatial and
/// temporal factors.
///
/// # Shapes
/// - `latents` `[B, C, F, h, w]` → `[B, 3, 1 + (F − 1)·tf, h·sf, w·sf]`, clamped to `[−1, 1]`.
pub fn decode_tiled(
    latents: Tensor<5>,
    tiling: Tiling,
    factors: (usize, usize),
    mut decode_tile: impl FnMut(Tensor<5>) -> Result<Tensor<5>>,
) -> Result<Tensor<5>> {
    let (sf, tf) = factors;
    tiling.check(sf)?;
    let device = latents.device();
    let [b, c, f, h, w] = latents.dims();
    let (tile, stride) = (tiling.tile / sf, tiling.stride / sf);
    let (ys, xs) = (spans(h, tile, stride), spans(w, tile, stride));
    let (wys, wxs) = (blend_weights(&ys, sf), blend_weights(&xs, sf));
    let frames = 1 + (f - 1) * tf;
    let mut out = Tensor::<5>::zeros([b, 3, frames, h * sf, w * sf], (&device, DType::F32));
    for (yr, wy) in ys.iter().zip(&wys) {
        for (xr, wx) in xs.iter().zip(&wxs) {
            let part = latents
                .clone()
                .slice([0..b, 0..c, 0..f, yr.clone(), xr.clone()]);
            let decoded = decode_tile(part)?;
            let wy = Tensor::<5>::from_data(
                TensorData::new(wy.clone(), [1, 1, 1, wy.len(), 1]),
                (&device, DType::F32),
            );
            let wx = Tensor::<5>::from_data(
                TensorData::new(wx.clone(), [1, 1, 1, 1, wx.len()]),
                (&device, DType::F32),
            );
            let region = [
                0..b,
                0..3,
                0..frames,
                yr.start * sf..yr.end * sf,
                xr.start * sf..xr.end * sf,
            ];
            let acc = out.clone().slice(region.clone()) + decoded * wy * wx;
            out = out.slice_assign(region, acc);
        }
    }
    Ok(out.clamp(-1.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_cover_evenly() {
        assert_eq!(spans(8, 8, 6).len(), 1);
        assert_eq!(spans(8, 8, 6)[0], 0..8);
        assert_eq!(spans(12, 8, 6), vec![0..8, 4..12]);
        assert_eq!(spans(16, 8, 4), vec![0..8, 4..12, 8..16]);
        // Wan2.1 at 480×832 with the default 256/192-pixel tiles (latent 32/24).
        assert_eq!(spans(60, 32, 24), vec![0..32, 14..46, 28..60]);
        assert_eq!(spans(104, 32, 24), vec![0..32, 24..56, 48..80, 72..104]);
    }

    #[test]
    fn weights_sum_to_one_and_ramp() {
        for (n, tile, stride) in [
            (12, 8, 6),
            (16, 8, 4),
            (60, 32, 24),
            (104, 32, 24),
            (20, 8, 3),
        ] {
            let s = spans(n, tile, stride);
            let w = blend_weights(&s, 8);
            let mut sum = vec![0.0f32; n * 8];
            for (r, wr) in s.iter().zip(&w) {
                assert_eq!(wr.len(), r.len() * 8);
                for (y, v) in (r.start * 8..r.end * 8).zip(wr) {
                    assert!(*v > 0.0);
                    sum[y] += v;
                }
            }
            assert!(
                sum.iter().all(|v| (v - 1.0).abs() < 1e-6),
                "{n} {tile} {stride}: {sum:?}"
            );
        }
        // Two tiles overlapping by 32 pixels: the first fades out linearly over them.
        let w = blend_weights(&[0..8, 4..12], 8);
        assert_eq!(w[0][31], 1.0);
        assert!((w[0][32] - 32.0 / 33.0).abs() < 1e-6 && (w[0][63] - 1.0 / 33.0).abs() < 1e-6);
    }
}
