//! The whole DiT (diffusers `WanTransformer3DModel.forward`, and Lynx's
//! `ref_feature_extractor` mode of it).
//!
//! # Shapes
//! - latents `x`: `[B, in_channels, F, H, W]`, `F`, `H`, `W` multiples of the patch;
//!   tokens `N = F/pt · H/ph · W/pw`, ordered frame, row, column.
//! - `timestep`: `[B]` or `[1]` (flow-matching timesteps, 0‥1000).
//! - `text`: `[B, L, text_dim]` (UMT5 hidden states, 512 rows in the pipeline).
//! - `extras`: empty, or one [`BlockExtras`] per block with K/V `[B, M, dim]`.
//! - output: `[B, out_channels, F, H, W]`, f32.
//! - reference features: one `[B, N, dim]` per block (model dtype).
//!
//! | key | module |
//! |---|---|
//! | `patch_embedding.*`, `condition_embedder.*` | [`crate::embeddings`] |
//! | `blocks.N.*` | [`WanBlock`] |
//! | `scale_shift_table` `[1, 2, dim]` | head modulation (f32) |
//! | `proj_out.*` | head projection (dim → C·pt·ph·pw) |

use std::path::Path;

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{DType, Device, Tensor};
use lynx_core::config::SizeCheck;
use lynx_core::nn::LayerNorm;
use lynx_core::{Error, Loader, Result, load_module};

use crate::attention::ExtraKv;
use crate::block::{BlockExtras, WanBlock};
use crate::config::WanConfig;
use crate::embeddings::{ConditionEmbedder, PatchEmbedding};
use crate::rope::{RopeTable, WanRope};

/// The Wan2.1 text-to-video diffusion transformer.
#[derive(Module, Debug)]
pub struct WanTransformer {
    patch_embedding: PatchEmbedding,
    condition_embedder: ConditionEmbedder,
    blocks: Vec<WanBlock>,
    /// Layer norm without affine parameters (f32).
    norm_out: LayerNorm,
    proj_out: Linear,
    /// `[1, 2, dim]`, f32: shift and scale of the head.
    scale_shift_table: Param<Tensor<3>>,
    #[module(skip)]
    config: WanConfig,
    #[module(skip)]
    rope: WanRope,
    /// The dtype of the linear layers and of the hidden states between blocks.
    #[module(skip)]
    dtype: DType,
}

/// Inputs after embedding, shared by the denoising and the reference pass.
struct Prepared {
    x: Tensor<3>,
    text: Tensor<3>,
    temb: Tensor<2>,
    timestep_proj: Tensor<3>,
    rope: RopeTable,
    grid: [usize; 3],
}

impl WanTransformer {
    /// Loads `transformer/` of a diffusers Wan2.1 folder: `config.json` and the weights
    /// (a shard index with its shards, or one `.safetensors`), converted to `dtype`
    /// (norms, modulation tables and the timestep MLP stay f32).
    pub fn from_pretrained(dir: impl AsRef<Path>, device: &Device, dtype: DType) -> Result<Self> {
        let dir = dir.as_ref();
        let config = WanConfig::load(dir)?;
        load_module(dir, device, dtype, |w| Self::load(w, config))
    }

    /// Builds the model from the state dict under `w` (keys in the module docs).
    pub fn load(w: &Loader, config: WanConfig) -> Result<Self> {
        config.validate()?;
        let dim = config.inner_dim();
        let out = config.out_channels() * config.patch_volume();
        let embedder = "condition_embedder";
        SizeCheck::new(&config.path, w)
            .dim("heads × head_dim", dim, "scale_shift_table", 2)
            .dim(
                "in_channels",
                config.in_channels,
                "patch_embedding.weight",
                1,
            )
            .dim(
                "patch_size[0]",
                config.patch_size[0],
                "patch_embedding.weight",
                2,
            )
            .dim(
                "patch_size[1]",
                config.patch_size[1],
                "patch_embedding.weight",
                3,
            )
            .dim(
                "patch_size[2]",
                config.patch_size[2],
                "patch_embedding.weight",
                4,
            )
            .dim("out_channels × patch volume", out, "proj_out.weight", 0)
            .dim(
                "text_dim",
                config.text_dim,
                &format!("{embedder}.text_embedder.linear_1.weight"),
                1,
            )
            .dim(
                "freq_dim",
                config.freq_dim,
                &format!("{embedder}.time_embedder.linear_1.weight"),
                1,
            )
            .dim(
                "ffn_dim",
                config.ffn_dim,
                "blocks.0.ffn.net.0.proj.weight",
                0,
            )
            .count("num_layers", config.num_layers, "blocks")
            .finish()?;
        Ok(Self {
            patch_embedding: PatchEmbedding::load(&w.sub("patch_embedding"), &config),
            condition_embedder: ConditionEmbedder::load(&w.sub("condition_embedder"), &config),
            blocks: (0..config.num_layers)
                .map(|i| WanBlock::load(&w.sub("blocks").sub(i), &config))
                .collect(),
            norm_out: LayerNorm::plain(dim, config.eps, w.device()),
            proj_out: w.sub("proj_out").linear(dim, out, true),
            scale_shift_table: w.param_f32("scale_shift_table", [1, 2, dim]),
            rope: WanRope::new(config.attention_head_dim, config.rope_max_seq_len),
            dtype: w.dtype(),
            config,
        })
    }

    /// The config the model was built from.
    pub fn config(&self) -> &WanConfig {
        &self.config
    }

    /// Model width (`heads × head_dim`).
    pub fn dim(&self) -> usize {
        self.config.inner_dim()
    }

    /// Number of blocks.
    pub fn num_layers(&self) -> usize {
        self.blocks.len()
    }

    /// The blocks.
    pub fn blocks(&self) -> &[WanBlock] {
        &self.blocks
    }

    /// The 3D RoPE of the self-attention.
    pub fn rope(&self) -> &WanRope {
        &self.rope
    }

    /// The dtype of the linear layers and of the hidden states between blocks.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The denoising forward: predicted flow for latents `x` at `timestep`, conditioned
    /// on `text` and, per block, on the adapters' extra K/V sets (`extras` empty for the
    /// plain model).
    ///
    /// # Shapes
    /// - `x` `[B, C, F, H, W]`, `timestep` `[B]` or `[1]`, `text` `[B, L, text_dim]`,
    ///   extras' K/V `[B, M, dim]` → `[B, C_out, F, H, W]` (f32).
    pub fn forward(
        &self,
        x: Tensor<5>,
        timestep: Tensor<1>,
        text: Tensor<3>,
        extras: &[BlockExtras],
    ) -> Result<Tensor<5>> {
        self.forward_observed(x, timestep, text, extras, |_, _| {})
    }

    /// [`WanTransformer::forward`], calling `observe(i, hidden)` with the hidden states
    /// `[B, N, dim]` after each block `i` (for inspection and parity tests).
    ///
    /// # Shapes
    /// As [`WanTransformer::forward`].
    pub fn forward_observed(
        &self,
        x: Tensor<5>,
        timestep: Tensor<1>,
        text: Tensor<3>,
        extras: &[BlockExtras],
        mut observe: impl FnMut(usize, &Tensor<3>),
    ) -> Result<Tensor<5>> {
        let p = self.prepare(x, timestep, text)?;
        self.check_extras(extras, p.x.dims()[0])?;
        let none = BlockExtras::default();
        let mut h = p.x;
        for (i, block) in self.blocks.iter().enumerate() {
            let extra = extras.get(i).unwrap_or(&none);
            h = block.forward(h, p.text.clone(), p.timestep_proj.clone(), &p.rope, extra);
            observe(i, &h);
        }
        Ok(self.head(h, p.temb, p.grid))
    }

    /// Lynx's reference pass: runs the plain model on the reference latents at t = 0 and
    /// returns each block's modulated norm1 output (the Ref-adapter's features). The
    /// blocks after the last norm1 and the head are skipped: nothing reads them.
    ///
    /// # Shapes
    /// - `x` `[B, C, F, H, W]`, `text` `[B, L, text_dim]` → per block `[B, N, dim]`.
    pub fn reference_features(&self, x: Tensor<5>, text: Tensor<3>) -> Result<Vec<Tensor<3>>> {
        let b = x.dims()[0];
        let t = Tensor::<1>::zeros([b], (&x.device(), DType::F32));
        let p = self.prepare(x, t, text)?;
        let mut features = Vec::with_capacity(self.blocks.len());
        let mut h = p.x;
        let last = self.blocks.len().saturating_sub(1);
        for (i, block) in self.blocks.iter().enumerate() {
            let m = block.modulation(p.timestep_proj.clone());
            let n1 = block.norm1_modulated(&h, &m);
            features.push(n1.clone());
            if i < last {
                let none = BlockExtras::default();
                h = block.forward_from_norm1(h, n1, &m, p.text.clone(), &p.rope, &none);
            }
        }
        Ok(features)
    }

    /// Checks inputs, embeds patches, timestep and text, builds the RoPE table.
    fn prepare(&self, x: Tensor<5>, timestep: Tensor<1>, text: Tensor<3>) -> Result<Prepared> {
        let cfg = &self.config;
        let [b, c, f, h, w] = x.dims();
        let [pt, ph, pw] = cfg.patch_size;
        if c != cfg.in_channels {
            return Err(Error::input(format!(
                "latents have {c} channels, the DiT takes {} (shape {:?})",
                cfg.in_channels,
                x.dims()
            )));
        }
        if b == 0 || f == 0 || h == 0 || w == 0 || f % pt != 0 || h % ph != 0 || w % pw != 0 {
            return Err(Error::input(format!(
                "latents of shape {:?}: frames, height and width must be positive multiples \
                 of the patch size {:?}",
                x.dims(),
                cfg.patch_size
            )));
        }
        let [tb, tl, td] = text.dims();
        if tb != b || td != cfg.text_dim || tl == 0 {
            return Err(Error::input(format!(
                "text hidden states have shape {:?}, expected [{b}, L, {}]",
                text.dims(),
                cfg.text_dim
            )));
        }
        let timestep = match timestep.dims()[0] {
            n if n == b => timestep,
            1 => timestep.repeat_dim(0, b),
            n => {
                return Err(Error::input(format!(
                    "{n} timesteps for a batch of {b} (give one, or one per sample)"
                )));
            }
        };
        let grid = [f / pt, h / ph, w / pw];
        let rope = self.rope.table(grid, &x.device())?;
        let x = self.patch_embedding.forward(x.cast(self.dtype));
        let (temb, timestep_proj) = self.condition_embedder.time(timestep, self.dtype);
        let text = self.condition_embedder.text(text.cast(self.dtype));
        Ok(Prepared {
            x,
            text,
            temb,
            timestep_proj,
            rope,
            grid,
        })
    }

    fn check_extras(&self, extras: &[BlockExtras], batch: usize) -> Result<()> {
        if !extras.is_empty() && extras.len() != self.blocks.len() {
            return Err(Error::input(format!(
                "adapter inputs for {} blocks, the DiT has {}",
                extras.len(),
                self.blocks.len()
            )));
        }
        let dim = self.dim();
        let check = |i: usize, what: &str, e: &ExtraKv| {
            let (k, v) = (e.key().dims(), e.value().dims());
            if k != v || k[0] != batch || k[2] != dim || k[1] == 0 {
                return Err(Error::input(format!(
                    "block {i}: extra {what} keys {k:?} / values {v:?} must both be \
                     [{batch}, M, {dim}] with M > 0"
                )));
            }
            Ok(())
        };
        for (i, e) in extras.iter().enumerate() {
            if let Some(kv) = &e.self_attn {
                check(i, "self-attention", kv)?;
            }
            if let Some(kv) = &e.cross_attn {
                check(i, "cross-attention", kv)?;
            }
        }
        Ok(())
    }

    /// Output norm, modulation, projection and unpatchify.
    fn head(&self, h: Tensor<3>, temb: Tensor<2>, grid: [usize; 3]) -> Tensor<5> {
        let [b, _, dim] = h.dims();
        let table = self.scale_shift_table.val() + temb.cast(DType::F32).reshape([b, 1, dim]);
        let mut parts = table.chunk(2, 1).into_iter();
        let (shift, scale) = (parts.next().unwrap(), parts.next().unwrap());
        let h = (self.norm_out.forward(h) * (scale + 1.0) + shift).cast(self.dtype);
        let out = self.proj_out.forward(h).cast(DType::F32);
        let [nf, nh, nw] = grid;
        let [pt, ph, pw] = self.config.patch_size;
        let c = self.config.out_channels();
        out.reshape([b, nf, nh, nw, pt, ph, pw, c])
            .permute([0, 7, 1, 4, 2, 5, 3, 6])
            .reshape([b, c, nf * pt, nh * ph, nw * pw])
    }
}
