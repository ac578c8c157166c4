//! The one attention function every lynx-rs model calls.
//!
//! Burn's `module::attention` runs a fused (flash) kernel on CubeCL backends only when it
//! gets no custom scale, bias or mask; anything else materialises the `[N, M]` score
//! matrix. So a custom scale is folded into the queries, and only a caller that needs an
//! additive bias (UMT5's relative positions) leaves the fused path.

use burn::tensor::Tensor;
use burn::tensor::activation::softmax;
use burn::tensor::module::attention as burn_attention;
use burn::tensor::ops::AttentionModuleOptions;

/// `softmax(q·kᵀ·scale + bias)·v` over heads.
///
/// `scale` defaults to `1/sqrt(head_dim)`; any other scale is applied to `q` beforehand,
/// keeping the fused kernel. A `bias` (broadcast to `[batch, heads, n, m]`) selects the
/// materialising path.
///
/// # Shapes
/// - `q`: `[batch, heads, n, head_dim]`
/// - `k`: `[batch, heads, m, head_dim]`
/// - `v`: `[batch, heads, m, v_dim]`
/// - `bias`: `[batch, heads, n, m]`
/// - output: `[batch, heads, n, v_dim]`
pub fn attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    bias: Option<Tensor<4>>,
    scale: Option<f64>,
) -> Tensor<4> {
    let head_dim = q.dims()[3] as f64;
    let q = match scale {
        Some(s) => {
            let factor = s * head_dim.sqrt();
            if (factor - 1.0).abs() > 0.0 {
                q * factor
            } else {
                q
            }
        }
        None => q,
    };
    burn_attention(q, k, v, None, bias, AttentionModuleOptions::default())
}

/// `[B, N, heads·hd]` → `[B, heads, N, hd]`: the layout [`attention`] takes (laid out
/// contiguously on flex, where attention would copy a strided view anyway).
///
/// # Shapes
/// - input `[batch, n, heads · head_dim]`, output `[batch, heads, n, head_dim]`.
pub fn split_heads(x: Tensor<3>, heads: usize) -> Tensor<4> {
    let [b, n, d] = x.dims();
    #[cfg(feature = "flex")]
    if let Some(t) = super::cpu::flex_f32(&x) {
        let dims = [b, n, heads, d / heads];
        return super::cpu::wrap(super::cpu_heads::swap_middle(&t, dims));
    }
    x.reshape([b, n, heads, d / heads]).swap_dims(1, 2)
}

/// `[B, heads, N, hd]` → `[B, N, heads·hd]`: the inverse of [`split_heads`].
///
/// # Shapes
/// - input `[batch, heads, n, head_dim]`, output `[batch, n, heads · head_dim]`.
pub fn merge_heads(x: Tensor<4>) -> Tensor<3> {
    let [b, h, n, d] = x.dims();
    #[cfg(feature = "flex")]
    if let Some(t) = super::cpu::flex_f32(&x) {
        let merged = super::cpu_heads::swap_middle(&t, [b, h, n, d]);
        return super::cpu::wrap::<4>(merged).reshape([b, n, h * d]);
    }
    x.swap_dims(1, 2).reshape([b, n, h * d])
}

/// The textbook computation `softmax(q·kᵀ·scale + bias)·v`, materialising the scores.
/// For tests that check [`attention`] against it.
///
/// # Shapes
/// As [`attention`].
pub fn attention_naive(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    bias: Option<Tensor<4>>,
    scale: Option<f64>,
) -> Tensor<4> {
    let scale = scale.unwrap_or(1.0 / (q.dims()[3] as f64).sqrt());
    let mut scores = q.matmul(k.swap_dims(2, 3)) * scale;
    if let Some(b) = bias {
        scores = scores + b;
    }
    softmax(scores, 3).matmul(v)
}
