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
//!
//! # Resident or streamed blocks
//! [`WanTransformer::from_pretrained`] loads every block onto the device.
//! [`WanTransformer::from_pretrained_streamed`] loads everything but the blocks and
//! leaves those in the memory-mapped checkpoint: each pass reads them one at a time
//! ([`lynx_store::LayerStream`]: block `i + 1` is read on a second thread while block `i`
//! computes, so two blocks are on the device at most). [`WanTransformer::forward_many`]
//! runs several passes (the guidance branches of a step) through each block before the
//! next is read, so a step reads the blocks once, not once per branch. Results are the
//! same either way: the same tensors meet the same operations.

use std::path::Path;
use std::sync::Arc;

use burn::module::{Module, Param};
use burn::tensor::{DType, Device, Tensor};
use lynx_core::nn::Linear;
use lynx_core::nn::{LayerNorm, layer_norm_modulate, linear};
use lynx_core::{Error, Result};
use lynx_store::SizeCheck;
use lynx_store::for_each_layer;
use lynx_store::{Checkpoint, LayerStream, Loader, load_module};

use crate::attention::ExtraKv;
use crate::block::{BlockExtras, WanBlock};
use crate::config::WanConfig;
use crate::embeddings::{ConditionEmbedder, PatchEmbedding};
use crate::lora::DitLora;
use crate::rope::{RopeTable, WanRope};

/// The Wan2.1 text-to-video diffusion transformer.
#[derive(Module, Debug)]
pub struct WanTransformer {
    patch_embedding: PatchEmbedding,
    condition_embedder: ConditionEmbedder,
    /// The blocks, when resident (empty when streamed).
    blocks: Vec<WanBlock>,
    /// The blocks, when streamed from the checkpoint.
    #[module(skip)]
    stream: Option<LayerStream<WanBlock>>,
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

/// The inputs of one denoising pass ([`WanTransformer::forward_many`]).
#[derive(Debug, Clone)]
pub struct DitInput<'a> {
    /// Latents `[B, C, F, H, W]`.
    pub x: Tensor<5>,
    /// Timesteps `[B]` or `[1]`.
    pub timestep: Tensor<1>,
    /// Text hidden states `[B, L, text_dim]`.
    pub text: Tensor<3>,
    /// Per-block adapter inputs: empty, or one per block.
    pub extras: &'a [BlockExtras],
    /// LoRAs applied on the fly in this pass (`None`: the weights as loaded).
    pub lora: Option<&'a DitLora>,
}

/// Inputs after embedding, shared by the denoising and the reference pass (the tokens
/// themselves are handed out separately).
struct Prepared {
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

    /// The model of `config` (a `transformer/` folder or its `config.json`) with the
    /// weights of `weights`: any checkpoint [`Checkpoint::open`] reads — the diffusers
    /// files, a native or ComfyUI single file, fp8, scaled fp8 or GGUF (fp8 and GGUF
    /// Linear weights stay encoded). `streamed` leaves the blocks in the file, read per
    /// pass.
    pub fn from_weights(
        config: impl AsRef<Path>,
        weights: impl AsRef<Path>,
        device: &Device,
        dtype: DType,
        streamed: bool,
    ) -> Result<Self> {
        let config = WanConfig::load(config)?;
        let ckpt = Arc::new(Checkpoint::open(weights)?);
        if streamed {
            ckpt.build(device, dtype, |w| {
                Self::load_streamed(w, config, ckpt.clone())
            })
        } else {
            ckpt.build(device, dtype, |w| Self::load(w, config))
        }
    }

    /// Builds the model from the state dict under `w` (keys in the module docs).
    pub fn load(w: &Loader, config: WanConfig) -> Result<Self> {
        config.validate()?;
        Self::load_rest(w, config, |config| {
            let blocks = (0..config.num_layers)
                .map(|i| WanBlock::load(&w.sub("blocks").sub(i), config))
                .collect();
            (blocks, None)
        })
    }

    /// [`WanTransformer::from_pretrained`] with the blocks left in the checkpoint, read
    /// one at a time during each pass (see the module docs). The blocks' keys and shapes
    /// are checked now; the rest of the model is loaded onto `device`.
    pub fn from_pretrained_streamed(
        dir: impl AsRef<Path>,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let dir = dir.as_ref();
        let config = WanConfig::load(dir)?;
        let ckpt = Arc::new(Checkpoint::open(dir)?);
        ckpt.build(device, dtype, |w| {
            Self::load_streamed(w, config, ckpt.clone())
        })
    }

    /// Builds the model from the state dict under `w` except the blocks, which stay in
    /// `ckpt` (the checkpoint `w` reads) and are read per pass. Their keys and shapes are
    /// checked through a [validating](Loader::validating) loader.
    pub fn load_streamed(w: &Loader, config: WanConfig, ckpt: Arc<Checkpoint>) -> Result<Self> {
        config.validate()?;
        Self::load_rest(w, config, |config| {
            let check = w.validating().sub("blocks");
            for i in 0..config.num_layers {
                drop(WanBlock::load(&check.sub(i), config));
            }
            let blocks = w.sub("blocks");
            let prefixes = (0..config.num_layers)
                .map(|i| blocks.key(&i.to_string()))
                .collect();
            let cfg = config.clone();
            let stream = LayerStream::new(ckpt, prefixes, w.device(), w.dtype(), move |b| {
                WanBlock::load(b, &cfg)
            });
            (Vec::new(), Some(stream))
        })
    }

    /// The sizes checked, then the model read in `state_dict()` order: the embeddings,
    /// the blocks (made by `blocks`), the output projection.
    #[allow(clippy::type_complexity)]
    fn load_rest(
        w: &Loader,
        config: WanConfig,
        blocks: impl FnOnce(&WanConfig) -> (Vec<WanBlock>, Option<LayerStream<WanBlock>>),
    ) -> Result<Self> {
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
        let patch_embedding = PatchEmbedding::load(&w.sub("patch_embedding"), &config);
        let condition_embedder = ConditionEmbedder::load(&w.sub("condition_embedder"), &config);
        let (blocks, stream) = blocks(&config);
        Ok(Self {
            patch_embedding,
            condition_embedder,
            blocks,
            stream,
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
        self.config.num_layers
    }

    /// The blocks, when resident; empty when they are streamed
    /// ([`WanTransformer::is_streamed`]).
    pub fn blocks(&self) -> &[WanBlock] {
        &self.blocks
    }

    /// Whether the blocks are read from the checkpoint during each pass.
    pub fn is_streamed(&self) -> bool {
        self.stream.is_some()
    }

    /// Calls `f(i, block)` for every block in order: the resident ones, or each read in
    /// its turn when streamed.
    pub fn for_each_block(&self, f: impl FnMut(usize, &WanBlock) -> Result<()>) -> Result<()> {
        for_each_layer(&self.blocks, self.stream.as_ref(), f)
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
        let input = DitInput {
            x,
            timestep,
            text,
            extras,
            lora: None,
        };
        let mut out = self.run(std::slice::from_ref(&input), |i, h| observe(i, &h[0]))?;
        out.pop()
            .ok_or_else(|| Error::input("the DiT returned no output for its one input"))
    }

    /// Several denoising passes (e.g. the guidance branches of a step) at once: each
    /// block runs every pass before the next block, so streamed blocks are read once for
    /// all of them. The results equal those of [`WanTransformer::forward`] per input.
    ///
    /// # Shapes
    /// - per input as [`WanTransformer::forward`]; one output per input.
    pub fn forward_many(&self, inputs: &[DitInput<'_>]) -> Result<Vec<Tensor<5>>> {
        self.run(inputs, |_, _| {})
    }

    fn run(
        &self,
        inputs: &[DitInput<'_>],
        mut observe: impl FnMut(usize, &[Tensor<3>]),
    ) -> Result<Vec<Tensor<5>>> {
        let mut prepared = Vec::with_capacity(inputs.len());
        let mut hidden = Vec::with_capacity(inputs.len());
        for input in inputs {
            let (x, p) = self.prepare(
                input.x.clone(),
                input.timestep.clone(),
                input.text.clone(),
                input.lora,
            )?;
            self.check_extras(input.extras, x.dims()[0])?;
            self.check_lora(input.lora)?;
            hidden.push(x);
            prepared.push(p);
        }
        let none = BlockExtras::default();
        self.for_each_block(|i, block| {
            hidden = std::mem::take(&mut hidden)
                .into_iter()
                .zip(inputs.iter().zip(&prepared))
                .map(|(h, (input, p))| {
                    let extra = input.extras.get(i).unwrap_or(&none);
                    let lora = input.lora.and_then(|l| l.block(i));
                    let (text, tproj) = (p.text.clone(), p.timestep_proj.clone());
                    block.forward_lora(h, text, tproj, &p.rope, extra, lora)
                })
                .collect();
            observe(i, &hidden);
            Ok(())
        })?;
        Ok(hidden
            .into_iter()
            .zip(prepared)
            .zip(inputs)
            .map(|((h, p), input)| self.head(h, p.temb, p.grid, input.lora))
            .collect())
    }

    /// Lynx's reference pass: runs the plain model on the reference latents at t = 0 and
    /// returns each block's modulated norm1 output (the Ref-adapter's features). The
    /// blocks after the last norm1 and the head are skipped: nothing reads them.
    ///
    /// # Shapes
    /// - `x` `[B, C, F, H, W]`, `text` `[B, L, text_dim]` → per block `[B, N, dim]`.
    pub fn reference_features(&self, x: Tensor<5>, text: Tensor<3>) -> Result<Vec<Tensor<3>>> {
        let mut all = self.reference_features_many(&[(x, text)])?;
        all.pop()
            .ok_or_else(|| Error::input("the reference pass returned nothing for its one input"))
    }

    /// [`WanTransformer::reference_features`] for several `(latents, text)` inputs, each
    /// block running all of them before the next (streamed blocks are read once).
    ///
    /// # Shapes
    /// - per input as [`WanTransformer::reference_features`]; per input, per block
    ///   `[B, N, dim]`.
    pub fn reference_features_many(
        &self,
        inputs: &[(Tensor<5>, Tensor<3>)],
    ) -> Result<Vec<Vec<Tensor<3>>>> {
        self.reference_features_lora(inputs, None)
    }

    /// [`WanTransformer::reference_features_many`] with LoRAs applied on the fly (the
    /// reference pass runs through the same LoRA'd transformer as the denoising passes).
    ///
    /// # Shapes
    /// As [`WanTransformer::reference_features_many`].
    pub fn reference_features_lora(
        &self,
        inputs: &[(Tensor<5>, Tensor<3>)],
        lora: Option<&DitLora>,
    ) -> Result<Vec<Vec<Tensor<3>>>> {
        self.check_lora(lora)?;
        let mut prepared = Vec::with_capacity(inputs.len());
        let mut hidden = Vec::with_capacity(inputs.len());
        for (x, text) in inputs {
            let b = x.dims()[0];
            let t = Tensor::<1>::zeros([b], (&x.device(), DType::F32));
            let (x, p) = self.prepare(x.clone(), t, text.clone(), lora)?;
            hidden.push(x);
            prepared.push(p);
        }
        let mut features: Vec<Vec<Tensor<3>>> = inputs
            .iter()
            .map(|_| Vec::with_capacity(self.num_layers()))
            .collect();
        let last = self.num_layers().saturating_sub(1);
        let none = BlockExtras::default();
        self.for_each_block(|i, block| {
            hidden = std::mem::take(&mut hidden)
                .into_iter()
                .zip(prepared.iter().zip(features.iter_mut()))
                .map(|(h, (p, out))| {
                    let lora = lora.and_then(|l| l.block(i));
                    let tproj = p.timestep_proj.clone();
                    let m = block.modulation(lora.map_or(tproj.clone(), |l| l.modulated(tproj)));
                    let n1 = block.norm1_modulated(&h, &m);
                    out.push(n1.clone());
                    if i < last {
                        let text = p.text.clone();
                        block.forward_from_norm1_lora(h, n1, &m, text, &p.rope, &none, lora)
                    } else {
                        h
                    }
                })
                .collect();
            Ok(())
        })?;
        Ok(features)
    }

    /// Checks inputs, embeds patches (the tokens `[B, N, dim]`, returned first),
    /// timestep and text, builds the RoPE table.
    fn prepare(
        &self,
        x: Tensor<5>,
        timestep: Tensor<1>,
        text: Tensor<3>,
        lora: Option<&DitLora>,
    ) -> Result<(Tensor<3>, Prepared)> {
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
        let outer = lora.map(DitLora::outer);
        let (temb, timestep_proj) = self
            .condition_embedder
            .time_lora(timestep, self.dtype, outer);
        let text = self
            .condition_embedder
            .text_lora(text.cast(self.dtype), outer);
        Ok((
            x,
            Prepared {
                text,
                temb,
                timestep_proj,
                rope,
                grid,
            },
        ))
    }

    /// A LoRA for as many blocks as this model has.
    fn check_lora(&self, lora: Option<&DitLora>) -> Result<()> {
        match lora {
            Some(l) if l.len() != self.num_layers() => Err(Error::input(format!(
                "the LoRA was made for {} blocks, the DiT has {}",
                l.len(),
                self.num_layers()
            ))),
            _ => Ok(()),
        }
    }

    fn check_extras(&self, extras: &[BlockExtras], batch: usize) -> Result<()> {
        if !extras.is_empty() && extras.len() != self.num_layers() {
            return Err(Error::input(format!(
                "adapter inputs for {} blocks, the DiT has {}",
                extras.len(),
                self.num_layers()
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
    fn head(
        &self,
        h: Tensor<3>,
        temb: Tensor<2>,
        grid: [usize; 3],
        lora: Option<&DitLora>,
    ) -> Tensor<5> {
        let [b, _, dim] = h.dims();
        let mut table = self.scale_shift_table.val() + temb.cast(DType::F32).reshape([b, 1, dim]);
        if let Some(delta) = lora.and_then(|l| l.outer().modulation.clone()) {
            table = table + delta;
        }
        let mut parts = table.chunk(2, 1).into_iter();
        let (shift, scale) = (parts.next().unwrap(), parts.next().unwrap());
        let h = layer_norm_modulate(&h, &scale, &shift, self.norm_out.eps).cast(self.dtype);
        let out = match lora {
            Some(l) => l.outer().proj_out.forward(&self.proj_out, h),
            None => linear(&self.proj_out, h),
        }
        .cast(DType::F32);
        let [nf, nh, nw] = grid;
        let [pt, ph, pw] = self.config.patch_size;
        let c = self.config.out_channels();
        out.reshape([b, nf, nh, nw, pt, ph, pw, c])
            .permute([0, 7, 1, 4, 2, 5, 3, 6])
            .reshape([b, c, nf * pt, nh * ph, nw * pw])
    }
}
