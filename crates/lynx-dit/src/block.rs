//! One Wan transformer block (diffusers `WanTransformerBlock`, as Lynx's
//! `modules/full/transformer_wan.py` extends it to hand back its norm1 features).
//!
//! ```text
//! shift, scale, gate, c_shift, c_scale, c_gate = scale_shift_table + timestep_proj   (f32)
//! n1 = LN(x)·(1 + scale) + shift                                 (f32, then model dtype)
//! x  = x + gate · attn1(n1, RoPE) [+ extra self-attention K/V]   (f32 residual)
//! x  = x + attn2(norm2(x), text)  [+ extra cross-attention K/V]
//! x  = x + c_gate · ffn(LN(x)·(1 + c_scale) + c_shift)           (f32 residual)
//! ```
//!
//! | key (under `blocks.N`) | module |
//! |---|---|
//! | `attn1.*`, `attn2.*` | [`WanAttention`] |
//! | `norm2.{weight,bias}` | affine layer norm before cross-attention (f32) |
//! | `ffn.net.0.proj.*`, `ffn.net.2.*` | [`FeedForward`] |
//! | `scale_shift_table` `[1, 6, dim]` | modulation table (f32) |
//!
//! # Shapes
//! - `x`: `[B, N, dim]` (model dtype); `text`: `[B, L, dim]` (after the text projection);
//!   `timestep_proj`: `[B, 6, dim]`.
//! - [`Modulation`] vectors: `[B, 1, dim]`, f32.

use burn::module::{Module, Param};
use burn::tensor::{DType, Tensor};
use lynx_core::nn::Linear;
use lynx_core::nn::{LayerNorm, gated_residual, gelu_tanh, layer_norm_modulate, linear};
use lynx_store::Loader;

use crate::attention::{ExtraKv, WanAttention};
use crate::config::WanConfig;
use crate::lora::BlockLora;
use crate::rope::RopeTable;

/// What adapters add to one block: extra K/V for self-attention (Lynx's Ref-adapter)
/// and for cross-attention (Lynx's ID-adapter). Both `None` is the plain Wan block.
#[derive(Debug, Clone, Default)]
pub struct BlockExtras {
    /// Attended by self-attention (`attn1`).
    pub self_attn: Option<ExtraKv>,
    /// Attended by cross-attention (`attn2`).
    pub cross_attn: Option<ExtraKv>,
}

impl BlockExtras {
    /// The inputs of several conditions stacked along the batch (see [`ExtraKv::stack`]);
    /// `None` when one has a set another lacks, or the sets do not stack.
    pub fn stack(extras: &[&BlockExtras]) -> Option<BlockExtras> {
        let pick = |f: fn(&BlockExtras) -> Option<&ExtraKv>| -> Option<Option<ExtraKv>> {
            let sets: Vec<Option<&ExtraKv>> = extras.iter().map(|e| f(e)).collect();
            if sets.iter().all(Option::is_none) {
                return Some(None);
            }
            let sets: Option<Vec<&ExtraKv>> = sets.into_iter().collect();
            ExtraKv::stack(&sets?).map(Some)
        };
        Some(BlockExtras {
            self_attn: pick(|e| e.self_attn.as_ref())?,
            cross_attn: pick(|e| e.cross_attn.as_ref())?,
        })
    }
}

/// The six per-block modulation vectors, `[B, 1, dim]` each, f32.
#[derive(Debug, Clone)]
pub struct Modulation {
    /// Shift of the modulated norm1.
    pub shift: Tensor<3>,
    /// Scale of the modulated norm1 (applied as `1 + scale`).
    pub scale: Tensor<3>,
    /// Gate of the self-attention residual.
    pub gate: Tensor<3>,
    /// Shift of the modulated norm3 (before the FFN).
    pub c_shift: Tensor<3>,
    /// Scale of the modulated norm3.
    pub c_scale: Tensor<3>,
    /// Gate of the FFN residual.
    pub c_gate: Tensor<3>,
}

/// `ffn`: `net.2(gelu_tanh(net.0.proj(x)))`.
#[derive(Module, Debug)]
pub struct FeedForward {
    /// `net.0.proj`: dim → ffn_dim.
    proj: Linear,
    /// `net.2`: ffn_dim → dim.
    out: Linear,
}

impl FeedForward {
    /// Loads `ffn` (`net.0.proj`, `net.2`).
    pub fn load(w: &Loader, cfg: &WanConfig) -> Self {
        let (dim, ffn) = (cfg.inner_dim(), cfg.ffn_dim);
        let net = w.sub("net");
        Self {
            proj: net.sub(0).sub("proj").linear(dim, ffn, true),
            out: net.sub(2).linear(ffn, dim, true),
        }
    }

    /// # Shapes
    /// - input `[B, N, dim]`, output `[B, N, dim]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        linear(&self.out, gelu_tanh(linear(&self.proj, x)))
    }

    /// [`FeedForward::forward`] with a block's LoRA deltas applied on the fly.
    ///
    /// # Shapes
    /// As [`FeedForward::forward`].
    pub fn forward_lora(&self, x: Tensor<3>, lora: &BlockLora) -> Tensor<3> {
        let h = gelu_tanh(lora.ffn_proj.forward(&self.proj, x));
        lora.ffn_out.forward(&self.out, h)
    }
}

/// A Wan2.1 transformer block.
#[derive(Module, Debug)]
pub struct WanBlock {
    /// Layer norm without affine parameters (f32).
    norm1: LayerNorm,
    /// Self-attention with RoPE.
    attn1: WanAttention,
    /// Cross-attention over the text tokens.
    attn2: WanAttention,
    /// Affine layer norm before cross-attention (`cross_attn_norm`), else identity.
    norm2: Option<LayerNorm>,
    ffn: FeedForward,
    /// Layer norm without affine parameters (f32).
    norm3: LayerNorm,
    /// `[1, 6, dim]`, f32.
    scale_shift_table: Param<Tensor<3>>,
}

impl WanBlock {
    /// Loads `blocks.N` (keys in the module docs).
    pub fn load(w: &Loader, cfg: &WanConfig) -> Self {
        let dim = cfg.inner_dim();
        let device = w.device();
        Self {
            norm1: LayerNorm::plain(dim, cfg.eps, device),
            attn1: WanAttention::load(&w.sub("attn1"), cfg),
            attn2: WanAttention::load(&w.sub("attn2"), cfg),
            norm2: cfg
                .cross_attn_norm
                .then(|| w.sub("norm2").layer_norm(dim, cfg.eps)),
            ffn: FeedForward::load(&w.sub("ffn"), cfg),
            norm3: LayerNorm::plain(dim, cfg.eps, device),
            scale_shift_table: w.param_f32("scale_shift_table", [1, 6, dim]),
        }
    }

    /// Self-attention (`attn1`).
    pub fn attn1(&self) -> &WanAttention {
        &self.attn1
    }

    /// Cross-attention (`attn2`).
    pub fn attn2(&self) -> &WanAttention {
        &self.attn2
    }

    /// The block's Linear layers: `attn1` then `attn2` (`to_q`, `to_k`, `to_v`,
    /// `to_out.0`), then `ffn` (`net.0.proj`, `net.2`). Each weight is in its file's
    /// encoding when kept so ([`Linear::quantized_weight`], [`Linear::weight_bytes`]).
    pub fn linears(&self) -> [&Linear; 10] {
        let (a, b) = (&self.attn1, &self.attn2);
        [
            a.to_q(),
            a.to_k(),
            a.to_v(),
            a.to_out(),
            b.to_q(),
            b.to_k(),
            b.to_v(),
            b.to_out(),
            &self.ffn.proj,
            &self.ffn.out,
        ]
    }

    /// The modulation table `[1, 6, dim]` (f32).
    pub fn scale_shift_table(&self) -> &Param<Tensor<3>> {
        &self.scale_shift_table
    }

    /// `scale_shift_table + timestep_proj` split into its six vectors (f32).
    pub fn modulation(&self, timestep_proj: Tensor<3>) -> Modulation {
        let table = self.scale_shift_table.val() + timestep_proj.cast(DType::F32);
        let mut parts = table.chunk(6, 1).into_iter();
        let mut next = || parts.next().expect("six chunks of a [B, 6, dim] table");
        Modulation {
            shift: next(),
            scale: next(),
            gate: next(),
            c_shift: next(),
            c_scale: next(),
            c_gate: next(),
        }
    }

    /// The modulated norm1 output `LN(x)·(1 + scale) + shift`, computed in f32 and
    /// returned in `x`'s dtype: what self-attention reads, and what Lynx's reference pass
    /// keeps as the Ref-adapter's features.
    pub fn norm1_modulated(&self, x: &Tensor<3>, m: &Modulation) -> Tensor<3> {
        layer_norm_modulate(x, &m.scale, &m.shift, self.norm1.eps).cast(x.dtype())
    }

    /// The block from its norm1 output `n1` on (see [`WanBlock::norm1_modulated`]).
    ///
    /// # Shapes
    /// - `x`, `n1`: `[B, N, dim]`; `text`: `[B, L, dim]`; output `[B, N, dim]`.
    pub fn forward_from_norm1(
        &self,
        x: Tensor<3>,
        n1: Tensor<3>,
        m: &Modulation,
        text: Tensor<3>,
        rope: &RopeTable,
        extras: &BlockExtras,
    ) -> Tensor<3> {
        self.forward_from_norm1_lora(x, n1, m, text, rope, extras, None)
    }

    /// [`WanBlock::forward_from_norm1`] with the block's LoRA deltas applied on the fly
    /// (see [`crate::lora`]); `None` is the plain block.
    ///
    /// # Shapes
    /// As [`WanBlock::forward_from_norm1`].
    #[allow(clippy::too_many_arguments)]
    pub fn forward_from_norm1_lora(
        &self,
        x: Tensor<3>,
        n1: Tensor<3>,
        m: &Modulation,
        text: Tensor<3>,
        rope: &RopeTable,
        extras: &BlockExtras,
        lora: Option<&BlockLora>,
    ) -> Tensor<3> {
        let dtype = x.dtype();
        // 1. self-attention
        let attn = self.attn1.forward_lora(
            n1,
            None,
            Some(rope),
            extras.self_attn.as_ref(),
            lora.map(|l| &l.attn1),
        );
        let x = gated_residual(x, attn, &m.gate).cast(dtype);
        // 2. cross-attention
        let norm2 = match (&self.norm2, lora) {
            (Some(norm), Some(l)) => l.norm2.layer(norm),
            _ => None,
        };
        let n2 = match norm2.as_ref().or(self.norm2.as_ref()) {
            Some(norm) => norm.forward(x.clone()).cast(dtype),
            None => x.clone(),
        };
        let x = x + self.attn2.forward_lora(
            n2,
            Some(text),
            None,
            extras.cross_attn.as_ref(),
            lora.map(|l| &l.attn2),
        );
        // 3. feed-forward
        let n3 = layer_norm_modulate(&x, &m.c_scale, &m.c_shift, self.norm3.eps).cast(dtype);
        let ff = match lora {
            Some(l) => self.ffn.forward_lora(n3, l),
            None => self.ffn.forward(n3),
        };
        gated_residual(x, ff, &m.c_gate).cast(dtype)
    }

    /// The whole block.
    ///
    /// # Shapes
    /// - `x`: `[B, N, dim]`; `text`: `[B, L, dim]`; `timestep_proj`: `[B, 6, dim]`;
    ///   output `[B, N, dim]`.
    pub fn forward(
        &self,
        x: Tensor<3>,
        text: Tensor<3>,
        timestep_proj: Tensor<3>,
        rope: &RopeTable,
        extras: &BlockExtras,
    ) -> Tensor<3> {
        self.forward_lora(x, text, timestep_proj, rope, extras, None)
    }

    /// [`WanBlock::forward`] with the block's LoRA deltas applied on the fly.
    ///
    /// # Shapes
    /// As [`WanBlock::forward`].
    pub fn forward_lora(
        &self,
        x: Tensor<3>,
        text: Tensor<3>,
        timestep_proj: Tensor<3>,
        rope: &RopeTable,
        extras: &BlockExtras,
        lora: Option<&BlockLora>,
    ) -> Tensor<3> {
        let m = self.modulation(match lora {
            Some(l) => l.modulated(timestep_proj),
            None => timestep_proj,
        });
        let n1 = self.norm1_modulated(&x, &m);
        self.forward_from_norm1_lora(x, n1, &m, text, rope, extras, lora)
    }
}
