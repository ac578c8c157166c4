//! Wan attention (diffusers `Attention` + `WanAttnProcessor2_0`, as Lynx's
//! `WanRefAttnProcessor` / `WanIPAttnProcessor` and Lynx-lite's `IPAWanAttnProcessor2_0`
//! extend it) with a hook for adapters.
//!
//! `q = norm_q(to_q(x))`, `k = norm_k(to_k(ctx))`, `v = to_v(ctx)` (RMS norms over the
//! whole width), split into heads, RoPE on `q` and `k` for self-attention, softmax
//! attention, then `to_out`. An [`ExtraKv`] set adds
//! `scale · softmax(q · k̂ᵀ/√hd) · value` with the same normalised queries and no RoPE,
//! where `k̂` is `norm_k(key)` (Lynx's Ref- and ID-adapters) or `key` as given (Lynx-lite
//! normalises its IP keys itself). Every product goes through
//! [`lynx_core::nn::attention`] without bias or scale (the fused path).
//!
//! | key (under `blocks.N.attn1` / `attn2`) | shape |
//! |---|---|
//! | `to_q`, `to_k`, `to_v`, `to_out.0` `.weight` / `.bias` | `[dim, dim]` / `[dim]` |
//! | `norm_q.weight`, `norm_k.weight` | `[dim]` (f32) |
//!
//! # Shapes
//! - `x`: `[B, N, dim]`; `context`: `[B, L, dim]` (cross-attention) or none (self).
//! - [`ExtraKv`]: `key`, `value` `[B, M, dim]`.
//! - output: `[B, N, dim]`, model dtype.

use burn::module::Module;
use burn::tensor::Tensor;
use lynx_core::nn::Linear;
use lynx_core::nn::{RmsNorm, attention, linear, merge_heads, split_heads};
use lynx_store::Loader;

use crate::config::WanConfig;
use crate::lora::{AttnLora, LinearDelta};
use crate::rope::RopeTable;

/// An extra set of keys and values attended by a block's queries, added to the
/// attention output with weight `scale` before `to_out`.
#[derive(Debug, Clone)]
pub struct ExtraKv {
    key: Tensor<3>,
    value: Tensor<3>,
    scale: f64,
    apply_norm_k: bool,
}

impl ExtraKv {
    /// Projected keys and values `[B, M, dim]` whose keys still go through the block's
    /// `norm_k` (Lynx's ID- and Ref-adapters), weighted by `scale`.
    pub fn new(key: Tensor<3>, value: Tensor<3>, scale: f64) -> Self {
        Self {
            key,
            value,
            scale,
            apply_norm_k: true,
        }
    }

    /// Keys already normalised by the adapter, used as given (Lynx-lite's IP keys,
    /// which go through a parameter-free RMS norm instead of the block's `norm_k`).
    pub fn normalized(key: Tensor<3>, value: Tensor<3>, scale: f64) -> Self {
        Self {
            apply_norm_k: false,
            ..Self::new(key, value, scale)
        }
    }

    /// The keys `[B, M, dim]`.
    pub fn key(&self) -> &Tensor<3> {
        &self.key
    }

    /// The values `[B, M, dim]`.
    pub fn value(&self) -> &Tensor<3> {
        &self.value
    }

    /// The weight of this attention's output (`ip_scale`, `ref_scale`).
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Whether the block's `norm_k` is applied to the keys.
    pub fn applies_norm_k(&self) -> bool {
        self.apply_norm_k
    }

    /// The sets of several conditions stacked along the batch, for one DiT pass over all
    /// of them; `None` when they cannot be stacked (other lengths, scales or key norms).
    ///
    /// # Shapes
    /// - each `[B_i, M, dim]` → `[Σ B_i, M, dim]`.
    pub fn stack(sets: &[&ExtraKv]) -> Option<ExtraKv> {
        let first = sets.first()?;
        let same = sets.iter().all(|e| {
            e.key.dims()[1..] == first.key.dims()[1..]
                && e.scale == first.scale
                && e.apply_norm_k == first.apply_norm_k
        });
        same.then(|| Self {
            key: Tensor::cat(sets.iter().map(|e| e.key.clone()).collect(), 0),
            value: Tensor::cat(sets.iter().map(|e| e.value.clone()).collect(), 0),
            scale: first.scale,
            apply_norm_k: first.apply_norm_k,
        })
    }
}

/// `attn1` (self) or `attn2` (cross) of a Wan block.
#[derive(Module, Debug)]
pub struct WanAttention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    /// `to_out.0` (`to_out.1` is dropout).
    to_out: Linear,
    norm_q: RmsNorm,
    norm_k: RmsNorm,
    heads: usize,
}

impl WanAttention {
    /// Loads `attn1` or `attn2` of a block (keys in the module docs).
    pub fn load(w: &Loader, cfg: &WanConfig) -> Self {
        let dim = cfg.inner_dim();
        // Read in `state_dict()` order (diffusers registers the norms first), which is
        // the order a synthetic checkpoint of this model is written in.
        Self {
            norm_q: w.sub("norm_q").rms_norm(dim, cfg.eps),
            norm_k: w.sub("norm_k").rms_norm(dim, cfg.eps),
            to_q: w.sub("to_q").linear(dim, dim, true),
            to_k: w.sub("to_k").linear(dim, dim, true),
            to_v: w.sub("to_v").linear(dim, dim, true),
            to_out: w.sub("to_out").sub(0).linear(dim, dim, true),
            heads: cfg.num_attention_heads,
        }
    }

    /// `to_q`.
    pub fn to_q(&self) -> &Linear {
        &self.to_q
    }

    /// `to_k`.
    pub fn to_k(&self) -> &Linear {
        &self.to_k
    }

    /// `to_v`.
    pub fn to_v(&self) -> &Linear {
        &self.to_v
    }

    /// `to_out.0`.
    pub fn to_out(&self) -> &Linear {
        &self.to_out
    }

    /// `norm_q`.
    pub fn norm_q(&self) -> &RmsNorm {
        &self.norm_q
    }

    /// `norm_k`.
    pub fn norm_k(&self) -> &RmsNorm {
        &self.norm_k
    }

    /// Number of heads.
    pub fn heads(&self) -> usize {
        self.heads
    }

    /// Self-attention when `context` is `None`, cross-attention otherwise; `rope` rotates
    /// the main queries and keys; `extra` adds an adapter's attention.
    ///
    /// # Shapes
    /// - `x`: `[B, N, dim]`, `context`: `[B, L, dim]`, extra K/V `[B, M, dim]`
    /// - output: `[B, N, dim]`
    pub fn forward(
        &self,
        x: Tensor<3>,
        context: Option<Tensor<3>>,
        rope: Option<&RopeTable>,
        extra: Option<&ExtraKv>,
    ) -> Tensor<3> {
        self.forward_lora(x, context, rope, extra, None)
    }

    /// [`WanAttention::forward`] with a LoRA's deltas applied on the fly (see
    /// [`crate::lora`]); `None` is the plain layer.
    ///
    /// # Shapes
    /// As [`WanAttention::forward`].
    pub fn forward_lora(
        &self,
        x: Tensor<3>,
        context: Option<Tensor<3>>,
        rope: Option<&RopeTable>,
        extra: Option<&ExtraKv>,
        lora: Option<&AttnLora>,
    ) -> Tensor<3> {
        let context = context.unwrap_or_else(|| x.clone());
        let owned_q = lora.and_then(|l| l.norm_q.rms(&self.norm_q));
        let owned_k = lora.and_then(|l| l.norm_k.rms(&self.norm_k));
        let norm_q = owned_q.as_ref().unwrap_or(&self.norm_q);
        let norm_k = owned_k.as_ref().unwrap_or(&self.norm_k);
        let lin = |layer: &Linear, delta: Option<&LinearDelta>, x: Tensor<3>| match delta {
            Some(d) => d.forward(layer, x),
            None => linear(layer, x),
        };
        let q = norm_q.forward(lin(&self.to_q, lora.map(|l| &l.to_q), x));
        let k = norm_k.forward(lin(&self.to_k, lora.map(|l| &l.to_k), context.clone()));
        let v = split_heads(lin(&self.to_v, lora.map(|l| &l.to_v), context), self.heads);
        let (q_main, k) = match rope {
            Some(rope) => (rope.apply(q.clone()), rope.apply(k)),
            None => (q.clone(), k),
        };
        let q = split_heads(q, self.heads);
        let mut out = attention(
            split_heads(q_main, self.heads),
            split_heads(k, self.heads),
            v,
            None,
            None,
        );
        if let Some(extra) = extra.filter(|e| e.scale != 0.0) {
            let key = if extra.apply_norm_k {
                norm_k.forward(extra.key.clone())
            } else {
                extra.key.clone()
            };
            let k = split_heads(key, self.heads);
            let v = split_heads(extra.value.clone(), self.heads);
            let added = attention(q, k, v, None, None);
            out = if extra.scale == 1.0 {
                out + added
            } else {
                out + added * extra.scale
            };
        }
        lin(&self.to_out, lora.map(|l| &l.to_out), merge_heads(out))
    }
}
