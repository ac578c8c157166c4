//! 3D rotary position embedding (diffusers `WanRotaryPosEmbed` and the rotation in
//! `WanAttnProcessor2_0`).
//!
//! A head of `hd` channels is `hd/2` complex numbers (adjacent channel pairs). The first
//! `hd/2 − 2⌊hd/6⌋` rotate with the frame index, the next `⌊hd/6⌋` with the row and the
//! last `⌊hd/6⌋` with the column. Each axis of `2c` channels has frequencies
//! `θ^(−2j/2c)`, `j < c`, θ = 10000, computed in f64 like the reference; the angles'
//! cosines and sines are then kept in f32 and the rotation runs in f32.
//!
//! # Shapes
//! - [`RopeTable`] for a `(F', H', W')` token grid: `cos`, `sin` `[F'·H'·W', hd/2]`.
//! - [`RopeTable::apply`]: `[B, N, heads·hd]` → same shape and dtype.

use burn::tensor::{DType, Device, Tensor, TensorData};
use lynx_core::nn::rope_rotate;
use lynx_core::{Error, Result};

const THETA: f64 = 10000.0;

/// Frequencies of the three axes for heads of `head_dim` channels.
#[derive(Debug, Clone)]
pub struct WanRope {
    /// Width of one head.
    pub head_dim: usize,
    /// Largest position per axis (`rope_max_seq_len`).
    pub max_seq_len: usize,
}

/// Cosines and sines for one token grid, on the device.
#[derive(Debug, Clone)]
pub struct RopeTable {
    /// `[N, hd/2]`, f32.
    pub cos: Tensor<2>,
    /// `[N, hd/2]`, f32.
    pub sin: Tensor<2>,
}

impl WanRope {
    /// RoPE for heads of `head_dim` channels over at most `max_seq_len` positions per axis.
    pub fn new(head_dim: usize, max_seq_len: usize) -> Self {
        Self {
            head_dim,
            max_seq_len,
        }
    }

    /// Complex channels per axis `(t, h, w)`; they sum to `head_dim / 2`.
    pub fn axis_pairs(&self) -> [usize; 3] {
        let hw = self.head_dim / 6;
        [self.head_dim / 2 - 2 * hw, hw, hw]
    }

    /// The table for a grid of `frames × rows × cols` tokens (in that order).
    pub fn table(&self, grid: [usize; 3], device: &Device) -> Result<RopeTable> {
        if let Some(&n) = grid.iter().find(|&&n| n > self.max_seq_len) {
            return Err(Error::input(format!(
                "the token grid {grid:?} has an axis of {n} positions, more than the \
                 model's rope_max_seq_len = {}",
                self.max_seq_len
            )));
        }
        let [f, h, w] = grid;
        let pairs = self.axis_pairs();
        let parts: Vec<[Tensor<4>; 2]> = (0..3)
            .map(|axis| {
                let (c, n) = (pairs[axis], grid[axis]);
                let [cos, sin] = axis_table(n, c, device);
                let view = match axis {
                    0 => [n, 1, 1, c],
                    1 => [1, n, 1, c],
                    _ => [1, 1, n, c],
                };
                [cos, sin].map(|t| t.reshape(view).expand([f, h, w, c]))
            })
            .collect();
        let n = f * h * w;
        let half = self.head_dim / 2;
        let join = |i: usize| {
            let axes = parts.iter().map(|p| p[i].clone()).collect();
            Tensor::cat(axes, 3).reshape([n, half])
        };
        Ok(RopeTable {
            cos: join(0),
            sin: join(1),
        })
    }
}

/// `[n, c]` cosines and sines of `pos · θ^(−2j/2c)`, computed in f64.
fn axis_table(n: usize, c: usize, device: &Device) -> [Tensor<2>; 2] {
    let dim = (2 * c) as f64;
    let inv: Vec<f64> = (0..c)
        .map(|j| 1.0 / THETA.powf((2 * j) as f64 / dim))
        .collect();
    let mut cos = Vec::with_capacity(n * c);
    let mut sin = Vec::with_capacity(n * c);
    for pos in 0..n {
        for f in &inv {
            let angle = pos as f64 * f;
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    [cos, sin].map(|v| Tensor::from_data(TensorData::new(v, [n, c]), (device, DType::F32)))
}

impl RopeTable {
    /// Number of tokens the table covers.
    pub fn len(&self) -> usize {
        self.cos.dims()[0]
    }

    /// Whether the table covers no token.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rotates each channel pair `(a, b)` of every head of `x` by its token's angle:
    /// `(a·cos − b·sin, a·sin + b·cos)`, in f32 (see [`lynx_core::nn::rope_rotate`]).
    ///
    /// # Shapes
    /// - input `[B, N, heads·head_dim]` (before the head split), output: same shape and
    ///   dtype.
    pub fn apply(&self, x: Tensor<3>) -> Tensor<3> {
        rope_rotate(x, &self.cos, &self.sin)
    }
}
