//! Every model's state dict as `(key, shape, init)`, in the order PyTorch's
//! `state_dict()` yields it (a module's own parameters, then its children in registration
//! order), which is the order `save_pretrained` shards in.
//!
//! Mirrors diffusers 0.33.1 `WanTransformer3DModel` (`transformer_wan.py`) and
//! `AutoencoderKLWan` (`autoencoder_kl_wan.py`), transformers `UMT5EncoderModel`
//! (`modeling_umt5.py`, with `encoder.embed_tokens.weight` dropped as the tied copy of
//! `shared.weight`), and Lynx's `Resampler`, `WanIPAttnProcessor`, `WanRefAttnProcessor`
//! (`modules/full`) and `IPAWanAttnProcessor2_0` (`modules/lite`).

use super::spec::{DitSpec, LiteSpec, ResamplerSpec, TextSpec, VaeSpec};

/// How a synthetic tensor is filled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Zero-mean noise with this standard deviation (triangular, bounded at ±2.45 std).
    Normal(f32),
    /// All ones (norm gains).
    Ones,
    /// All zeros (biases).
    Zeros,
}

/// One tensor of a state dict.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// State-dict key.
    pub key: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Fill.
    pub init: Init,
}

impl Param {
    /// Number of elements.
    pub fn numel(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }
}

/// Default weight std: `min(0.02, 1/sqrt(fan_in))`, so that wide layers keep unit-scale
/// activations (no growth to inf through 40 bf16 blocks) and narrow ones stay at 0.02.
pub fn weight_std(fan_in: usize) -> f32 {
    (1.0 / (fan_in.max(1) as f32).sqrt()).min(0.02)
}

/// A state dict under construction.
#[derive(Default)]
struct Sd(Vec<Param>);

impl Sd {
    fn param(&mut self, key: impl Into<String>, shape: &[usize], init: Init) {
        self.0.push(Param {
            key: key.into(),
            shape: shape.to_vec(),
            init,
        });
    }

    /// `nn.Linear(inp, out)`: `weight [out, inp]`, then `bias [out]`.
    fn linear(&mut self, p: &str, out: usize, inp: usize, bias: bool) {
        self.param(
            format!("{p}.weight"),
            &[out, inp],
            Init::Normal(weight_std(inp)),
        );
        if bias {
            self.param(format!("{p}.bias"), &[out], Init::Zeros);
        }
    }

    /// A convolution: `weight [out, inp, *kernel]`, `bias [out]`.
    fn conv(&mut self, p: &str, out: usize, inp: usize, kernel: &[usize]) {
        let mut shape = vec![out, inp];
        shape.extend_from_slice(kernel);
        let fan_in = inp * kernel.iter().product::<usize>();
        self.param(
            format!("{p}.weight"),
            &shape,
            Init::Normal(weight_std(fan_in)),
        );
        self.param(format!("{p}.bias"), &[out], Init::Zeros);
    }

    /// A norm's gain (`weight`, ones) and optional `bias` (zeros).
    fn norm(&mut self, p: &str, dim: usize, bias: bool) {
        self.param(format!("{p}.weight"), &[dim], Init::Ones);
        if bias {
            self.param(format!("{p}.bias"), &[dim], Init::Zeros);
        }
    }
}

/// `WanTransformer3DModel`.
pub fn dit(c: &DitSpec) -> Vec<Param> {
    let dim = c.dim();
    let mut sd = Sd::default();
    sd.param(
        "scale_shift_table",
        &[1, 2, dim],
        Init::Normal(weight_std(dim)),
    );
    sd.conv("patch_embedding", dim, c.in_channels, &c.patch_size);
    let ce = "condition_embedder";
    sd.linear(
        &format!("{ce}.time_embedder.linear_1"),
        dim,
        c.freq_dim,
        true,
    );
    sd.linear(&format!("{ce}.time_embedder.linear_2"), dim, dim, true);
    sd.linear(&format!("{ce}.time_proj"), 6 * dim, dim, true);
    sd.linear(
        &format!("{ce}.text_embedder.linear_1"),
        dim,
        c.text_dim,
        true,
    );
    sd.linear(&format!("{ce}.text_embedder.linear_2"), dim, dim, true);
    for i in 0..c.num_layers {
        let b = format!("blocks.{i}");
        sd.param(
            format!("{b}.scale_shift_table"),
            &[1, 6, dim],
            Init::Normal(weight_std(dim)),
        );
        for attn in ["attn1", "attn2"] {
            sd.norm(&format!("{b}.{attn}.norm_q"), dim, false);
            sd.norm(&format!("{b}.{attn}.norm_k"), dim, false);
            for proj in ["to_q", "to_k", "to_v", "to_out.0"] {
                sd.linear(&format!("{b}.{attn}.{proj}"), dim, dim, true);
            }
        }
        sd.norm(&format!("{b}.norm2"), dim, true);
        sd.linear(&format!("{b}.ffn.net.0.proj"), c.ffn_dim, dim, true);
        sd.linear(&format!("{b}.ffn.net.2"), dim, c.ffn_dim, true);
    }
    let patch: usize = c.patch_size.iter().product();
    sd.linear("proj_out", c.out_channels * patch, dim, true);
    sd.0
}

/// `UMT5EncoderModel` (every layer has its own `relative_attention_bias`).
pub fn umt5_encoder(c: &TextSpec) -> Vec<Param> {
    let inner = c.num_heads * c.d_kv;
    let mut sd = Sd::default();
    sd.param(
        "shared.weight",
        &[c.vocab_size, c.d_model],
        Init::Normal(weight_std(c.d_model)),
    );
    for i in 0..c.num_layers {
        let b = format!("encoder.block.{i}.layer");
        for p in ["q", "k", "v"] {
            sd.linear(&format!("{b}.0.SelfAttention.{p}"), inner, c.d_model, false);
        }
        sd.linear(&format!("{b}.0.SelfAttention.o"), c.d_model, inner, false);
        sd.param(
            format!("{b}.0.SelfAttention.relative_attention_bias.weight"),
            &[c.relative_attention_num_buckets, c.num_heads],
            Init::Normal(0.02),
        );
        sd.norm(&format!("{b}.0.layer_norm"), c.d_model, false);
        sd.linear(
            &format!("{b}.1.DenseReluDense.wi_0"),
            c.d_ff,
            c.d_model,
            false,
        );
        sd.linear(
            &format!("{b}.1.DenseReluDense.wi_1"),
            c.d_ff,
            c.d_model,
            false,
        );
        sd.linear(
            &format!("{b}.1.DenseReluDense.wo"),
            c.d_model,
            c.d_ff,
            false,
        );
        sd.norm(&format!("{b}.1.layer_norm"), c.d_model, false);
    }
    sd.norm("encoder.final_layer_norm", c.d_model, false);
    sd.0
}

/// `WanRMS_norm` gain: `[dim, 1, 1, 1]` (video) or `[dim, 1, 1]` (images, attention).
fn rms_gain(sd: &mut Sd, p: &str, dim: usize, images: bool) {
    let shape: &[usize] = if images {
        &[dim, 1, 1]
    } else {
        &[dim, 1, 1, 1]
    };
    sd.param(format!("{p}.gamma"), shape, Init::Ones);
}

/// `WanResidualBlock(inp, out)`.
fn resnet(sd: &mut Sd, p: &str, inp: usize, out: usize) {
    rms_gain(sd, &format!("{p}.norm1"), inp, false);
    sd.conv(&format!("{p}.conv1"), out, inp, &[3, 3, 3]);
    rms_gain(sd, &format!("{p}.norm2"), out, false);
    sd.conv(&format!("{p}.conv2"), out, out, &[3, 3, 3]);
    if inp != out {
        sd.conv(&format!("{p}.conv_shortcut"), out, inp, &[1, 1, 1]);
    }
}

/// `WanAttentionBlock(dim)`.
fn vae_attention(sd: &mut Sd, p: &str, dim: usize) {
    rms_gain(sd, &format!("{p}.norm"), dim, true);
    sd.conv(&format!("{p}.to_qkv"), 3 * dim, dim, &[1, 1]);
    sd.conv(&format!("{p}.proj"), dim, dim, &[1, 1]);
}

/// `WanMidBlock(dim, num_layers=1)`: `attentions` registered before `resnets`.
fn mid_block(sd: &mut Sd, p: &str, dim: usize) {
    vae_attention(sd, &format!("{p}.attentions.0"), dim);
    resnet(sd, &format!("{p}.resnets.0"), dim, dim);
    resnet(sd, &format!("{p}.resnets.1"), dim, dim);
}

/// `WanResample(dim, mode)`; `up` gives `upsample_out_dim = dim / 2`.
fn resample(sd: &mut Sd, p: &str, dim: usize, up: bool, temporal: bool) {
    let out = if up { dim / 2 } else { dim };
    sd.conv(&format!("{p}.resample.1"), out, dim, &[3, 3]);
    if temporal {
        let t_out = if up { 2 * dim } else { dim };
        sd.conv(&format!("{p}.time_conv"), t_out, dim, &[3, 1, 1]);
    }
}

/// `AutoencoderKLWan`: encoder, quant_conv, post_quant_conv, decoder.
pub fn vae(c: &VaeSpec) -> Vec<Param> {
    let mut sd = Sd::default();
    let n = c.dim_mult.len();
    // Encoder: dims = base * [1] + dim_mult.
    let dims: Vec<usize> = std::iter::once(1)
        .chain(c.dim_mult.iter().copied())
        .map(|m| c.base_dim * m)
        .collect();
    sd.conv("encoder.conv_in", dims[0], 3, &[3, 3, 3]);
    let mut idx = 0;
    let mut scale = 1.0;
    for i in 0..n {
        let (mut inp, out) = (dims[i], dims[i + 1]);
        for _ in 0..c.num_res_blocks {
            resnet(&mut sd, &format!("encoder.down_blocks.{idx}"), inp, out);
            idx += 1;
            if c.attn_scales.contains(&scale) {
                vae_attention(&mut sd, &format!("encoder.down_blocks.{idx}"), out);
                idx += 1;
            }
            inp = out;
        }
        if i != n - 1 {
            let temporal = c.temperal_downsample[i];
            resample(
                &mut sd,
                &format!("encoder.down_blocks.{idx}"),
                out,
                false,
                temporal,
            );
            idx += 1;
            scale /= 2.0;
        }
    }
    let top = dims[n];
    mid_block(&mut sd, "encoder.mid_block", top);
    rms_gain(&mut sd, "encoder.norm_out", top, false);
    sd.conv("encoder.conv_out", 2 * c.z_dim, top, &[3, 3, 3]);
    sd.conv("quant_conv", 2 * c.z_dim, 2 * c.z_dim, &[1, 1, 1]);
    sd.conv("post_quant_conv", c.z_dim, c.z_dim, &[1, 1, 1]);
    // Decoder: dims = base * ([dim_mult[-1]] + reversed(dim_mult)).
    let dims: Vec<usize> = std::iter::once(c.dim_mult[n - 1])
        .chain(c.dim_mult.iter().rev().copied())
        .map(|m| c.base_dim * m)
        .collect();
    let temperal_up: Vec<bool> = c.temperal_downsample.iter().rev().copied().collect();
    sd.conv("decoder.conv_in", dims[0], c.z_dim, &[3, 3, 3]);
    mid_block(&mut sd, "decoder.mid_block", dims[0]);
    for i in 0..n {
        let p = format!("decoder.up_blocks.{i}");
        let (mut inp, out) = (dims[i], dims[i + 1]);
        if i > 0 {
            // The previous block's upsampler halved the channels.
            inp /= 2;
        }
        for r in 0..=c.num_res_blocks {
            resnet(&mut sd, &format!("{p}.resnets.{r}"), inp, out);
            inp = out;
        }
        if i != n - 1 {
            resample(
                &mut sd,
                &format!("{p}.upsamplers.0"),
                out,
                true,
                temperal_up[i],
            );
        }
    }
    rms_gain(&mut sd, "decoder.norm_out", dims[n], false);
    sd.conv("decoder.conv_out", 3, dims[n], &[3, 3, 3]);
    sd.0
}

/// Lynx's Perceiver `Resampler` (no positional embedding, no mean-pooled latents).
pub fn resampler(c: &ResamplerSpec) -> Vec<Param> {
    let inner = c.dim_head * c.heads;
    let ff = c.dim * c.ff_mult;
    let mut sd = Sd::default();
    sd.param(
        "latents",
        &[1, c.num_queries, c.dim],
        Init::Normal(weight_std(c.dim)),
    );
    sd.linear("proj_in", c.dim, c.embedding_dim, true);
    sd.linear("proj_out", c.output_dim, c.dim, true);
    sd.norm("norm_out", c.output_dim, true);
    for i in 0..c.depth {
        let a = format!("layers.{i}.0");
        sd.norm(&format!("{a}.norm1"), c.dim, true);
        sd.norm(&format!("{a}.norm2"), c.dim, true);
        sd.linear(&format!("{a}.to_q"), inner, c.dim, false);
        sd.linear(&format!("{a}.to_kv"), 2 * inner, c.dim, false);
        sd.linear(&format!("{a}.to_out"), c.dim, inner, false);
        let f = format!("layers.{i}.1");
        sd.norm(&format!("{f}.0"), c.dim, true);
        sd.linear(&format!("{f}.1"), ff, c.dim, false);
        sd.linear(&format!("{f}.3"), c.dim, ff, false);
    }
    sd.0
}

/// Lynx (full) `ip_layers`: per block `to_k_ip`, `to_v_ip` (`Linear(token_dim → dim)`,
/// with bias) and, if `n_registers > 0`, `registers [1, R, token_dim]`.
pub fn ip_layers(blocks: usize, dim: usize, token_dim: usize, n_registers: usize) -> Vec<Param> {
    let mut sd = Sd::default();
    for i in 0..blocks {
        sd.linear(&format!("{i}.to_k_ip"), dim, token_dim, true);
        sd.linear(&format!("{i}.to_v_ip"), dim, token_dim, true);
        if n_registers > 0 {
            sd.param(
                format!("{i}.registers"),
                &[1, n_registers, token_dim],
                Init::Normal(weight_std(dim)),
            );
        }
    }
    sd.0
}

/// Lynx (full) `ref_layers`: per block `to_k_ref`, `to_v_ref` (`Linear(dim → dim)`).
pub fn ref_layers(blocks: usize, dim: usize) -> Vec<Param> {
    let mut sd = Sd::default();
    for i in 0..blocks {
        sd.linear(&format!("{i}.to_k_ref"), dim, dim, true);
        sd.linear(&format!("{i}.to_v_ref"), dim, dim, true);
    }
    sd.0
}

/// Lynx-lite `ip_layers`: bias-free `to_k_ip`/`to_v_ip` for blocks `0, interval, ...`,
/// keyed by their position in that list.
pub fn lite_ip_layers(c: &LiteSpec, blocks: usize, dim: usize) -> Vec<Param> {
    let mut sd = Sd::default();
    let n = blocks.div_ceil(c.interval.max(1));
    for k in 0..n {
        sd.linear(&format!("{k}.to_k_ip"), dim, c.resampler.output_dim, false);
        sd.linear(&format!("{k}.to_v_ip"), dim, c.resampler.output_dim, false);
    }
    sd.0
}
