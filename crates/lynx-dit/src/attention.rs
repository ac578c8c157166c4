//! Wan attention (diffusers `Attention` + `WanAttnProcessor2_0`, as Lynx's
//! `WanRefAttnProcessor` / `WanIPAttnProcessor` extend it) with a hook for adapters.
//!
//! `q = norm_q(to_q(x))`, `k = norm_k(to_k(ctx))`, `v = to_v(ctx)` (RMS norms over the
//! whole width), split into heads, RoPE on `q` and `k` for self-attention, softmax
//! attention, then `to_out`. An [`ExtraKv`] set adds
//! `scale · softmax(q · norm_k(key)ᵀ/√hd) · value` with the same normalised queries and
//! no RoPE: Lynx's Ref-adapter on self-attention and ID-adapter on cross-attention.
//! Every product goes through [`lynx_core::nn::attention`] without bias or scale (the
//! fused path).
//!
//! # Shapes
//! - `x`: `[B, N, dim]`; `context`: `[B, L, dim]` (cross-attention) or none (self).
//! - [`ExtraKv`]: `key`, `value` `[B, M, dim]`.
//! - output: `[B, N, dim]`, model dtype.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::Tensor;
use lynx_core::nn::{RmsNorm, attention};

use crate::rope::RopeTable;

/// An extra set of keys and values attended by a block's queries, added to the
/// attention output with weight `scale` before `to_out`.
#[derive(Debug, Clone)]
pub struct ExtraKv {
    /// `[B, M, dim]`: projected keys, before the block's `norm_k` (which the block applies).
    pub key: Tensor<3>,
    /// `[B, M, dim]`: projected values.
    pub value: Tensor<3>,
    /// Weight of this attention's output (`ip_scale`, `ref_scale`).
    pub scale: f64,
}

/// `attn1` (self) or `attn2` (cross) of a Wan block.
#[derive(Module, Debug)]
pub struct WanAttention {
    pub to_q: Linear,
    pub to_k: Linear,
    pub to_v: Linear,
    /// `to_out.0` (`to_out.1` is dropout).
    pub to_out: Linear,
    pub norm_q: RmsNorm,
    pub norm_k: RmsNorm,
    pub heads: usize,
}

impl WanAttention {
    /// Self-attention when `context` is `None`, cross-attention otherwise; `rope` rotates
    /// the main queries and keys; `extra` adds an adapter's attention.
    pub fn forward(
        &self,
        x: Tensor<3>,
        context: Option<Tensor<3>>,
        rope: Option<&RopeTable>,
        extra: Option<&ExtraKv>,
    ) -> Tensor<3> {
        let context = context.unwrap_or_else(|| x.clone());
        let q = self.split_heads(self.norm_q.forward(self.to_q.forward(x)));
        let k = self.split_heads(self.norm_k.forward(self.to_k.forward(context.clone())));
        let v = self.split_heads(self.to_v.forward(context));
        let mut out = match rope {
            Some(rope) => attention(rope.apply(q.clone()), rope.apply(k), v, None, None),
            None => attention(q.clone(), k, v, None, None),
        };
        if let Some(extra) = extra.filter(|e| e.scale != 0.0) {
            let k = self.split_heads(self.norm_k.forward(extra.key.clone()));
            let v = self.split_heads(extra.value.clone());
            let added = attention(q, k, v, None, None);
            out = if extra.scale == 1.0 {
                out + added
            } else {
                out + added * extra.scale
            };
        }
        self.to_out.forward(merge_heads(out))
    }

    /// `[B, N, heads·hd]` → `[B, heads, N, hd]`.
    fn split_heads(&self, x: Tensor<3>) -> Tensor<4> {
        let [b, n, d] = x.dims();
        x.reshape([b, n, self.heads, d / self.heads])
            .swap_dims(1, 2)
    }
}

/// `[B, heads, N, hd]` → `[B, N, heads·hd]`.
fn merge_heads(x: Tensor<4>) -> Tensor<3> {
    let [b, h, n, d] = x.dims();
    x.swap_dims(1, 2).reshape([b, n, h * d])
}
