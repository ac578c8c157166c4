//! LoRAs applied on the fly: [`DitLora`], a [`LoraSet`]'s terms for every block, handed
//! to a pass through [`crate::DitInput::lora`] (and the reference pass) instead of
//! being fused into the weights, so a request can bring its own LoRAs without the model
//! being reloaded — and LoRAs stay apart from weights that should not be rewritten.
//!
//! Per linear layer `y = x·Wᵀ + b + Σ s·(x·Aᵀ)·Bᵀ + x·ΔWᵀ + Δb` (low-rank terms through
//! [`lynx_core::nn::linear_with`], `diff` and `diff_b` as dense deltas); the RMS norms
//! (`norm_q`, `norm_k`) and the cross-attention layer norm (`norm2`) run with their
//! weight and bias deltas added; a modulation table's delta (`diff_m`, `[1, 6, dim]` per
//! block, `[1, 2, dim]` for the head) is added to the timestep projection it is summed
//! with. The numbers equal the fused weights'.
//!
//! The blocks' layers and tables, the text and time embedders and the head are handled
//! here; a set that changes other tensors (the patch embedding) is refused with the
//! list — fuse such LoRAs at load.

use std::collections::BTreeSet;

use burn::tensor::{DType, Device, Tensor};
use lynx_core::nn::{LayerNorm, Linear, LowRank, RmsNorm, linear_with};
use lynx_core::{Error, Result};
use lynx_store::LoraSet;

use crate::config::WanConfig;

/// What a LoRA set adds to one linear layer on the fly.
#[derive(Debug, Clone, Default)]
pub struct LinearDelta {
    low_rank: Vec<LowRank>,
    /// `ΔWᵀ`, `[in, out]`.
    weight: Option<Tensor<2>>,
    /// `Δb`, `[out]`.
    bias: Option<Tensor<1>>,
}

impl LinearDelta {
    /// `layer(x)` with this delta: `x·W + b + Σ low-rank + x·ΔW + Δb`.
    ///
    /// # Shapes
    /// - `x` `[..., in]` → `[..., out]`.
    pub fn forward<const D: usize>(&self, layer: &Linear, x: Tensor<D>) -> Tensor<D> {
        let dtype = x.dtype();
        let mut y = linear_with(layer, x.clone(), &self.low_rank);
        if let Some(w) = &self.weight {
            y = y + x.matmul(w.clone().cast(dtype).unsqueeze::<D>());
        }
        if let Some(b) = &self.bias {
            y = y + b.clone().cast(dtype).unsqueeze::<D>();
        }
        y
    }

    fn is_empty(&self) -> bool {
        self.low_rank.is_empty() && self.weight.is_none() && self.bias.is_none()
    }
}

/// Weight and bias deltas of a norm (f32, `[dim]`).
#[derive(Debug, Clone, Default)]
pub struct NormDelta {
    weight: Option<Tensor<1>>,
    bias: Option<Tensor<1>>,
}

impl NormDelta {
    /// `norm` with the deltas added (a copy of its `[dim]` vectors), or `None` when
    /// there are none.
    pub fn rms(&self, norm: &RmsNorm) -> Option<RmsNorm> {
        let w = self.weight.as_ref()?;
        Some(RmsNorm::new(
            burn::module::Param::from_tensor(norm.weight.val() + w.clone()),
            norm.eps,
        ))
    }

    /// As [`NormDelta::rms`] for an affine layer norm.
    pub fn layer(&self, norm: &LayerNorm) -> Option<LayerNorm> {
        if self.weight.is_none() && self.bias.is_none() {
            return None;
        }
        let add = |v: Tensor<1>, d: &Option<Tensor<1>>| match d {
            Some(d) => v + d.clone(),
            None => v,
        };
        let bias = match &norm.bias {
            Some(b) => b.val(),
            None => norm.weight.val().zeros_like(),
        };
        Some(LayerNorm::new(
            burn::module::Param::from_tensor(add(norm.weight.val(), &self.weight)),
            burn::module::Param::from_tensor(add(bias, &self.bias)),
            norm.eps,
        ))
    }
}

/// An attention's deltas (`attn1` or `attn2`).
#[derive(Debug, Clone, Default)]
pub struct AttnLora {
    /// `to_q`.
    pub to_q: LinearDelta,
    /// `to_k`.
    pub to_k: LinearDelta,
    /// `to_v`.
    pub to_v: LinearDelta,
    /// `to_out.0`.
    pub to_out: LinearDelta,
    /// `norm_q`.
    pub norm_q: NormDelta,
    /// `norm_k`.
    pub norm_k: NormDelta,
}

/// One block's deltas.
#[derive(Debug, Clone, Default)]
pub struct BlockLora {
    /// Self-attention.
    pub attn1: AttnLora,
    /// Cross-attention.
    pub attn2: AttnLora,
    /// The cross-attention layer norm.
    pub norm2: NormDelta,
    /// `ffn.net.0.proj`.
    pub ffn_proj: LinearDelta,
    /// `ffn.net.2`.
    pub ffn_out: LinearDelta,
    /// The delta of `scale_shift_table` (`[1, 6, dim]`, f32).
    pub modulation: Option<Tensor<3>>,
}

impl BlockLora {
    /// `timestep_proj` (`[B, 6, dim]`) with the modulation table's delta added (in f32
    /// when there is one): what the block's `scale_shift_table` is summed with.
    pub fn modulated(&self, timestep_proj: Tensor<3>) -> Tensor<3> {
        match &self.modulation {
            Some(d) => timestep_proj.cast(DType::F32) + d.clone(),
            None => timestep_proj,
        }
    }
}

/// The deltas of the layers outside the blocks.
#[derive(Debug, Clone, Default)]
pub struct OuterLora {
    /// `condition_embedder.text_embedder.linear_1`.
    pub text_1: LinearDelta,
    /// `condition_embedder.text_embedder.linear_2`.
    pub text_2: LinearDelta,
    /// `condition_embedder.time_embedder.linear_1`.
    pub time_1: LinearDelta,
    /// `condition_embedder.time_embedder.linear_2`.
    pub time_2: LinearDelta,
    /// `condition_embedder.time_proj`.
    pub time_proj: LinearDelta,
    /// `proj_out` (the head).
    pub proj_out: LinearDelta,
    /// The delta of the head's `scale_shift_table` (`[1, 2, dim]`, f32).
    pub modulation: Option<Tensor<3>>,
}

/// A LoRA set's terms for every layer of a DiT, on its device, applied per pass.
#[derive(Debug, Clone, Default)]
pub struct DitLora {
    blocks: Vec<BlockLora>,
    outer: OuterLora,
}

impl DitLora {
    /// The terms of `set` for a DiT of `config`, read onto `device` (low-rank factors in
    /// `dtype`, the model's; dense deltas in f32). Shapes are checked against the
    /// config; tensors outside the blocks, or keys the blocks have no place for, are an
    /// error listing them (unless the set skips unmatched keys).
    pub fn new(set: &LoraSet, config: &WanConfig, device: &Device, dtype: DType) -> Result<Self> {
        let dim = config.inner_dim();
        let ffn = config.ffn_dim;
        let mut used = BTreeSet::new();
        let mut linear = |name: String, d_in: usize, d_out: usize| -> Result<LinearDelta> {
            let w = format!("{name}.weight");
            let b = format!("{name}.bias");
            let delta = LinearDelta {
                low_rank: set.low_rank(&w, [d_out, d_in], device, dtype)?,
                weight: set
                    .full_delta(&w, [d_out, d_in], device)?
                    .map(lynx_core::nn::transposed),
                bias: set.full_delta(&b, [d_out], device)?,
            };
            used.insert(w);
            used.insert(b);
            Ok(delta)
        };
        let (text_dim, freq_dim) = (config.text_dim, config.freq_dim);
        let head = config.out_channels() * config.patch_volume();
        let ce = "condition_embedder";
        let mut outer = OuterLora {
            text_1: linear(format!("{ce}.text_embedder.linear_1"), text_dim, dim)?,
            text_2: linear(format!("{ce}.text_embedder.linear_2"), dim, dim)?,
            time_1: linear(format!("{ce}.time_embedder.linear_1"), freq_dim, dim)?,
            time_2: linear(format!("{ce}.time_embedder.linear_2"), dim, dim)?,
            time_proj: linear(format!("{ce}.time_proj"), dim, 6 * dim)?,
            proj_out: linear("proj_out".into(), dim, head)?,
            modulation: None,
        };
        let mut blocks = Vec::with_capacity(config.num_layers);
        let mut norms = Vec::new();
        for i in 0..config.num_layers {
            let p = format!("blocks.{i}");
            let mut attn = |a: &str| -> Result<AttnLora> {
                Ok(AttnLora {
                    to_q: linear(format!("{p}.{a}.to_q"), dim, dim)?,
                    to_k: linear(format!("{p}.{a}.to_k"), dim, dim)?,
                    to_v: linear(format!("{p}.{a}.to_v"), dim, dim)?,
                    to_out: linear(format!("{p}.{a}.to_out.0"), dim, dim)?,
                    ..Default::default()
                })
            };
            let (attn1, attn2) = (attn("attn1")?, attn("attn2")?);
            let block = BlockLora {
                attn1,
                attn2,
                norm2: NormDelta::default(),
                ffn_proj: linear(format!("{p}.ffn.net.0.proj"), dim, ffn)?,
                ffn_out: linear(format!("{p}.ffn.net.2"), ffn, dim)?,
                modulation: None,
            };
            norms.push(p);
            blocks.push(block);
        }
        let mut table = |key: String, rows: usize| -> Result<Option<Tensor<3>>> {
            let delta = set.full_delta(&key, [1, rows, dim], device)?;
            used.insert(key);
            Ok(delta)
        };
        outer.modulation = table("scale_shift_table".into(), 2)?;
        for (block, p) in blocks.iter_mut().zip(&norms) {
            block.modulation = table(format!("{p}.scale_shift_table"), 6)?;
        }
        let mut norm = |key: String| -> Result<Option<Tensor<1>>> {
            let delta = set.full_delta(&key, [dim], device)?;
            used.insert(key);
            Ok(delta)
        };
        for (block, p) in blocks.iter_mut().zip(norms) {
            for (attn, a) in [(&mut block.attn1, "attn1"), (&mut block.attn2, "attn2")] {
                attn.norm_q.weight = norm(format!("{p}.{a}.norm_q.weight"))?;
                attn.norm_k.weight = norm(format!("{p}.{a}.norm_k.weight"))?;
            }
            if config.cross_attn_norm {
                block.norm2.weight = norm(format!("{p}.norm2.weight"))?;
                block.norm2.bias = norm(format!("{p}.norm2.bias"))?;
            }
        }
        let elsewhere: Vec<&str> = set.targets().filter(|t| !used.contains(*t)).collect();
        if !elsewhere.is_empty() && !set.skips_unmatched() {
            let shown: Vec<String> = elsewhere.iter().take(8).map(|t| format!("`{t}`")).collect();
            return Err(Error::input(format!(
                "LoRAs applied on the fly change the DiT's linear layers, norms and modulation tables only; {} \
                 tensor(s) are other tensors or have no place in this model: {}{} (fuse these LoRAs at \
                 load, or skip unmatched keys)",
                elsewhere.len(),
                shown.join(", "),
                if elsewhere.len() > 8 { ", …" } else { "" }
            )));
        }
        Ok(Self { blocks, outer })
    }

    /// The deltas of block `i`, if any.
    pub fn block(&self, i: usize) -> Option<&BlockLora> {
        self.blocks.get(i)
    }

    /// The deltas of the layers outside the blocks.
    pub fn outer(&self) -> &OuterLora {
        &self.outer
    }

    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Whether there is no block.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Whether no block layer changes.
    pub fn changes_nothing(&self) -> bool {
        self.blocks.iter().all(|b| {
            [&b.attn1, &b.attn2].iter().all(|a| {
                [&a.to_q, &a.to_k, &a.to_v, &a.to_out]
                    .iter()
                    .all(|l| l.is_empty())
                    && a.norm_q.weight.is_none()
                    && a.norm_k.weight.is_none()
            }) && b.ffn_proj.is_empty()
                && b.ffn_out.is_empty()
                && b.norm2.weight.is_none()
                && b.norm2.bias.is_none()
                && b.modulation.is_none()
        })
    }
}
