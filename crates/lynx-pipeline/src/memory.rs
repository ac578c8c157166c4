//! Memory planning: what a run needs, component by component, found before anything is
//! loaded, and compared with what the device has.
//!
//! Weights are sized by running each component's own loader without reading
//! ([`lynx_store::Checkpoint::measure`]: the bytes in the compute dtype, with the tensors
//! the model keeps in f32 counted as f32), from the checkpoint headers alone. Activations
//! are estimated for the requested frames and size from the shapes the components work
//! on (tokens, widths, heads), plus two figures measured on this code: the VAE decode's
//! 17 KB per output pixel and the 0.19 GiB of encoding the 256×256 reference face (see
//! the `lynx-vae` crate docs), and [`RUNTIME_BYTES`] for the process itself.
//!
//! A run goes through phases (encode prompts, reference pass, adapters, denoise,
//! decode). What is on the device in each depends on the [`Offload`]:
//!
//! | phase | `none` | `model` | `blocks` |
//! |---|---|---|---|
//! | encode prompts | all weights + text activations | text encoder | 2 text layers + their activations |
//! | reference pass | all + VAE encode / DiT pass | VAE, then DiT | VAE, then DiT without blocks + 2 blocks |
//! | adapters | all + features and K/V | DiT + adapters | DiT without blocks + resampler + 2 layers |
//! | denoise | all + DiT activations | DiT | DiT without blocks + 2 blocks |
//! | decode | all + VAE decode | VAE | VAE |
//!
//! The peak is the largest phase plus the process itself. On the CPU it is compared with
//! `MemAvailable`; GPUs do not say how much memory they have through burn, so there a
//! budget must be given ([`crate::PipelineOptions::memory_budget`]) for a check.

use std::fmt;
use std::path::Path;

use burn::tensor::{DType, Device};
use lynx_adapters::Variant;
use lynx_core::device::{check_dtype, dtype_name};
use lynx_core::{Error, Result};
use lynx_dit::{WanBlock, WanConfig, WanTransformer};
use lynx_store::{Checkpoint, Offload};
use lynx_text::encoder::Umt5Block;
use lynx_text::{Umt5Config, Umt5Encoder};
use lynx_vae::WanVae;

use crate::folder::{ModelFolder, WeightFiles};

/// The process itself: code, burn's runtime, the tokenizer, allocator slack (measured:
/// the tiny model's whole run peaks at about this).
pub const RUNTIME_BYTES: u64 = 200 << 20;
/// VAE decode activations per output pixel (Wan2.1's VAE, base width 96, f32, measured;
/// see the `lynx-vae` docs). Other widths scale it.
pub const VAE_DECODE_BYTES_PER_PIXEL: u64 = 17 * 1024;
/// Encoding one 256×256 reference face with Wan2.1's VAE (measured; see the `lynx-vae`
/// docs). Other widths scale it.
pub const VAE_ENCODE_REFERENCE_BYTES: u64 = 204 << 20;
/// The base width those figures were measured at.
const VAE_BASE_DIM: u64 = 96;
/// Side of the aligned reference face.
const REF_SIDE: usize = 256;

/// The device bytes of a component's weights, and of the repeated layer that streaming
/// holds instead of all of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ComponentSize {
    /// Every weight.
    pub total: u64,
    /// One streamed layer (the largest).
    pub layer: u64,
    /// How many streamed layers.
    pub layers: usize,
    /// Other weights left in the checkpoint when streaming (the text encoder's
    /// embedding table, read by rows).
    pub table: u64,
}

impl ComponentSize {
    /// On the device while streaming: everything but the layers and the table, plus two
    /// layers (the one computing and the one prefetched).
    pub fn streamed(&self) -> u64 {
        let rest = self
            .total
            .saturating_sub(self.layer * self.layers as u64 + self.table);
        rest + 2 * self.layer.min(self.total)
    }
}

/// The bytes each component's weights hold in a run of one compute dtype (weights kept
/// in an fp8 or GGUF encoding count their encoded bytes), and the shapes activations
/// depend on.
#[derive(Debug, Clone)]
pub struct WeightSizes {
    /// The compute dtype.
    pub dtype: DType,
    /// UMT5 encoder (layers: its blocks; table: the token embedding).
    pub text: ComponentSize,
    /// The DiT (layers: its blocks).
    pub dit: ComponentSize,
    /// The VAE.
    pub vae: u64,
    /// The adapters (layers: one block's IP and Ref layers), if an adapter folder is given.
    pub adapters: Option<ComponentSize>,
    /// The face models (f32), if given.
    pub face: u64,
    /// LoRA terms applied on the fly (`LoraSet::on_the_fly_bytes`): on the device whole
    /// (not streamed with the blocks) through every DiT pass of a run; 0 without.
    pub lora: u64,
    dit_cfg: WanConfig,
    text_cfg: Umt5Config,
    /// The VAE's base width (its activations scale with it; Wan2.1: 96).
    vae_base_dim: usize,
    /// ID tokens per block (queries + registers); 0 without adapters.
    id_tokens: usize,
}

/// What one run asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunSize {
    /// Video frames (4k + 1).
    pub frames: usize,
    /// Pixels.
    pub height: usize,
    /// Pixels.
    pub width: usize,
    /// DiT passes per step (3 for Lynx's identity guidance, 2 for CFG, 1 without).
    pub passes: usize,
    /// Whether the passes run as one batch ([`crate::GuidanceBatching`]): each block's
    /// working memory is then needed for all of them at once.
    pub batched: bool,
    /// Whether Lynx's reference pass runs (Lynx full with a subject).
    pub reference: bool,
    /// Tokens of the longest prompt.
    pub text_tokens: usize,
    /// Prompts encoded together.
    pub prompts: usize,
}

/// One phase's bytes on the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phase {
    /// What runs.
    pub name: &'static str,
    /// Weights on the device during it.
    pub weights: u64,
    /// Activations and results held.
    pub activations: u64,
}

impl Phase {
    /// Weights and activations.
    pub fn total(&self) -> u64 {
        self.weights + self.activations
    }
}

/// The memory a run needs under one [`Offload`] and dtype: per phase, and at its peak.
#[derive(Debug, Clone)]
pub struct MemoryPlan {
    /// How weights are held.
    pub offload: Offload,
    /// The weights.
    pub weights: WeightSizes,
    /// The run.
    pub run: RunSize,
    /// The phases in run order.
    pub phases: Vec<Phase>,
}

impl WeightSizes {
    /// Sizes the components of the Wan2.1 folder `base` (and the adapter
    /// folder, and the face model files) in `dtype` on `device`, reading only headers
    /// and configs. Every key and shape is checked on the way, as loading would.
    pub fn measure(
        base: &Path,
        adapters: Option<&Path>,
        face: &[&Path],
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        Self::measure_files(base, &WeightFiles::default(), adapters, face, device, dtype)
    }

    /// [`WeightSizes::measure`] with `files` replacing parts of the folder's weights
    /// (fp8 and GGUF Linear weights count at their encoded size).
    pub fn measure_files(
        base: &Path,
        files: &WeightFiles,
        adapters: Option<&Path>,
        face: &[&Path],
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        check_dtype(device, dtype)?;
        let folder = ModelFolder::open_with(base, files)?;
        let text_cfg = folder.text_config()?;
        let te = Checkpoint::open(folder.text_encoder()?)?;
        let text_total = te.measure(device, dtype, |w| Umt5Encoder::load(w, &text_cfg))?;
        let text_layer = te.measure_at("encoder.block.0", device, dtype, |w| {
            Ok(Umt5Block::load(w, &text_cfg))
        })?;
        let table = (text_cfg.vocab_size * text_cfg.d_model * dtype.size()) as u64;

        let dit_cfg = folder.dit_config(text_cfg.d_model)?;
        let tr = Checkpoint::open(folder.transformer()?)?;
        let dit_total = tr.measure(device, dtype, |w| WanTransformer::load(w, dit_cfg.clone()))?;
        let dit_layer = tr.measure_at("blocks.0", device, dtype, |w| {
            Ok(WanBlock::load(w, &dit_cfg))
        })?;

        let vae_cfg = folder.vae_config()?;
        let vae_ckpt = Checkpoint::open(folder.vae()?)?;
        let vae_base_dim = vae_cfg.base_dim;
        let vae = vae_ckpt.measure(device, dtype, |w| WanVae::load(w, vae_cfg))?;

        let (adapters, id_tokens) = match adapters {
            Some(dir) => {
                let (size, tokens) = adapter_sizes(dir, dtype, dit_cfg.num_layers)?;
                (Some(size), tokens)
            }
            None => (None, 0),
        };
        // The face models run in f32: their files' size.
        let mut face_bytes = 0;
        for path in face {
            face_bytes += std::fs::metadata(path)
                .map_err(|e| Error::io(path, e))?
                .len();
        }
        Ok(Self {
            dtype,
            text: ComponentSize {
                total: text_total,
                layer: text_layer,
                layers: text_cfg.num_layers,
                table,
            },
            dit: ComponentSize {
                total: dit_total,
                layer: dit_layer,
                layers: dit_cfg.num_layers,
                table: 0,
            },
            vae,
            adapters,
            face: face_bytes,
            lora: 0,
            dit_cfg,
            text_cfg,
            vae_base_dim,
            id_tokens,
        })
    }

    /// These sizes with `bytes` of LoRA terms applied on the fly ([`WeightSizes::lora`]).
    pub fn with_lora(mut self, bytes: u64) -> Self {
        self.lora = bytes;
        self
    }

    /// Bytes of every weight (the LoRA terms on the fly apart: they are made per run).
    pub fn total(&self) -> u64 {
        self.text.total + self.dit.total + self.vae + self.adapter_total() + self.face
    }

    fn adapter_total(&self) -> u64 {
        self.adapters.map_or(0, |a| a.total)
    }
}

/// The adapters' bytes in `dtype` from their headers (every adapter tensor is in the model
/// dtype), one block's layers, and the ID tokens per block.
fn adapter_sizes(dir: &Path, dtype: DType, blocks: usize) -> Result<(ComponentSize, usize)> {
    let variant = Variant::detect(dir)?;
    let s = dtype.size() as u64;
    let numel = |c: &Checkpoint, prefix: &str| -> u64 {
        c.keys()
            .filter(|k| k.starts_with(prefix))
            .filter_map(|k| c.shape(k))
            .map(|shape| shape.iter().product::<usize>() as u64)
            .sum()
    };
    let resampler = Checkpoint::open(dir.join("resampler.safetensors"))?;
    let ip = Checkpoint::open(dir.join("ip_layers.safetensors"))?;
    let mut total = numel(&resampler, "") + numel(&ip, "");
    let mut layer = numel(&ip, "0.");
    let layers = match variant {
        Variant::Full => blocks,
        Variant::Lite => (0..)
            .take_while(|k| ip.has_prefix(&format!("{k}.")))
            .count(),
    };
    if variant == Variant::Full {
        let reference = Checkpoint::open(dir.join("ref_layers.safetensors"))?;
        total += numel(&reference, "");
        layer += numel(&reference, "0.");
    }
    let queries = resampler.shape("latents").map_or(0, |s| s[1]);
    let registers = ip.shape("0.registers").map_or(0, |s| s[1]);
    let size = ComponentSize {
        total: total * s,
        layer: layer * s,
        layers,
        table: 0,
    };
    Ok((size, queries + registers))
}

impl RunSize {
    /// Latent tokens the DiT sees: `F' · H/16 · W/16` (patch 1×2×2 over the VAE's 4×8×8).
    pub fn tokens(&self, cfg: &WanConfig) -> usize {
        let [pt, ph, pw] = cfg.patch_size;
        let f = (self.frames.saturating_sub(1)) / 4 + 1;
        (f / pt.max(1)) * (self.height / 8 / ph.max(1)) * (self.width / 8 / pw.max(1))
    }
}

/// Bytes of the DiT's activations for `passes` inputs of `n` tokens against `l` text rows
/// (the hidden states of every pass, and one block's work on `batch` passes at its largest:
/// attention with f32 copies of q, k, v, or the feed-forward with its f32 input copy),
/// plus the copy of the largest weight a bf16 matmul makes on the CPU.
fn dit_activations(cfg: &WanConfig, n: u64, l: u64, passes: u64, batch: u64, s: u64) -> u64 {
    let (dim, ffn, heads) = (
        cfg.inner_dim() as u64,
        cfg.ffn_dim as u64,
        cfg.num_attention_heads as u64,
    );
    let held = passes * (n * dim * s + l * dim * s + 8 * dim * 4);
    let attention = n * dim * (5 * s + 16);
    let ffn_work = n * dim * 3 * s + n * ffn * (2 * s + 4);
    let text_kv = l * dim * (2 * s + 8);
    let scores = heads * 4 * (n * n).min(256 * 1024) + heads * 4 * (n * l).min(256 * 1024);
    held + batch * (attention.max(ffn_work) + text_kv + scores) + matmul_copy(dim * ffn, s)
}

/// The UMT5 encoder's activations for `prompts` prompts of `l` tokens.
fn text_activations(cfg: &Umt5Config, l: u64, prompts: u64, s: u64) -> u64 {
    let (d, d_ff, heads, inner) = (
        cfg.d_model as u64,
        cfg.d_ff as u64,
        cfg.num_heads as u64,
        cfg.inner_dim() as u64,
    );
    let held = prompts * l * d * 4;
    let attention = l * d * (4 + s) + 3 * l * inner * (s + 4) + heads * l * l * (s + 8);
    let ffn = l * d_ff * (3 * s + 4);
    held + attention.max(ffn) + matmul_copy(d * d_ff, s)
}

/// A bf16 matmul on the CPU makes its weight contiguous and converts it to f32 (three
/// bf16 sizes of the weight); f32 and f16 ones work in place.
fn matmul_copy(elements: u64, s: u64) -> u64 {
    if s == 2 { elements * 6 } else { 0 }
}

impl MemoryPlan {
    /// The plan of a run of `run` with `weights` held as `offload` says.
    pub fn new(weights: WeightSizes, offload: Offload, run: RunSize) -> Self {
        let w = &weights;
        let s = w.dtype.size() as u64;
        let dim = w.dit_cfg.inner_dim() as u64;
        let blocks = w.dit_cfg.num_layers as u64;
        let n = run.tokens(&w.dit_cfg) as u64;
        let n_ref = ((REF_SIDE / 16) * (REF_SIDE / 16)) as u64;
        let text_rows = 512;
        let adapters = w.adapters.unwrap_or_default();
        let (te, dit, ad) = match offload {
            Offload::Blocks => (w.text.streamed(), w.dit.streamed(), adapters.streamed()),
            _ => (w.text.total, w.dit.total, adapters.total),
        };
        let all = (offload == Offload::None).then(|| w.total());
        // The DiT's passes hold the LoRA terms on the fly, whatever the offload.
        let dit_phase = |weights: u64| all.unwrap_or(weights) + w.lora;
        // Results kept through the run: the prompt embeddings, the adapters' K/V.
        let embeddings = run.prompts as u64 * text_rows * w.text_cfg.d_model as u64 * s;
        let refs = if run.reference { n_ref } else { 0 };
        let extras = if w.adapters.is_some() {
            2 * 2 * blocks * (refs + w.id_tokens as u64) * dim * s
        } else {
            0
        };
        let features = 2 * blocks * refs * dim * s;
        let latents = 4 * n * 64 * 4;
        let vae_scale = |bytes: u64| bytes * w.vae_base_dim as u64 / VAE_BASE_DIM;
        let mut phases = vec![Phase {
            name: "encode prompts",
            weights: all.unwrap_or(te),
            activations: text_activations(
                &w.text_cfg,
                run.text_tokens as u64,
                run.prompts as u64,
                s,
            ),
        }];
        if run.reference {
            phases.push(Phase {
                name: "encode reference face",
                weights: all.unwrap_or(w.vae),
                activations: embeddings + vae_scale(VAE_ENCODE_REFERENCE_BYTES),
            });
            phases.push(Phase {
                name: "reference pass",
                weights: dit_phase(dit),
                activations: embeddings
                    + features
                    + dit_activations(&w.dit_cfg, n_ref, text_rows, 2, 1, s),
            });
        }
        if w.adapters.is_some() {
            phases.push(Phase {
                name: "adapters",
                weights: dit_phase(dit + ad),
                activations: embeddings + features + extras,
            });
        }
        phases.push(Phase {
            name: "denoise",
            weights: dit_phase(dit),
            activations: embeddings
                + extras
                + latents
                + dit_activations(
                    &w.dit_cfg,
                    n,
                    text_rows,
                    run.passes as u64,
                    if run.batched { run.passes as u64 } else { 1 },
                    s,
                ),
        });
        let pixels = (run.height * run.width) as u64;
        phases.push(Phase {
            name: "decode",
            weights: all.unwrap_or(w.vae),
            activations: vae_scale(pixels * VAE_DECODE_BYTES_PER_PIXEL)
                + 2 * run.frames as u64 * pixels * 12,
        });
        Self {
            offload,
            weights,
            run,
            phases,
        }
    }

    /// Latent tokens of one DiT pass.
    pub fn dit_tokens(&self) -> usize {
        self.run.tokens(&self.weights.dit_cfg)
    }

    /// Bytes at the run's peak: the largest phase and the process itself.
    pub fn peak(&self) -> u64 {
        RUNTIME_BYTES + self.phases.iter().map(Phase::total).max().unwrap_or(0)
    }

    /// The phase at the peak.
    pub fn peak_phase(&self) -> Option<&Phase> {
        self.phases.iter().max_by_key(|p| p.total())
    }

    /// Bytes on the device between runs (the resident weights; nothing when offloading).
    pub fn resident(&self) -> u64 {
        match self.offload {
            Offload::None => self.weights.total(),
            _ => 0,
        }
    }

    /// `Ok` when the peak fits in `available` bytes; otherwise [`Error::Memory`] with
    /// both figures and the settings among `alternatives` that fit.
    pub fn check(&self, available: u64, alternatives: &[MemoryPlan]) -> Result<()> {
        let needed = self.peak();
        if needed <= available {
            return Ok(());
        }
        let w = &self.weights;
        let mut parts = vec![
            format!("text encoder {}", gb(w.text.total)),
            format!("DiT {}", gb(w.dit.total)),
            format!("VAE {}", gb(w.vae)),
        ];
        if let Some(a) = w.adapters {
            parts.push(format!("adapters {}", gb(a.total)));
        }
        let fits: Vec<String> = alternatives
            .iter()
            .filter(|p| p.peak() <= available)
            .map(|p| format!("{} (about {})", p.flags(), gb(p.peak())))
            .collect();
        let advice = if fits.is_empty() {
            let least = alternatives.iter().map(MemoryPlan::peak).min();
            match least {
                Some(least) => format!(
                    "nothing fits: even the smallest setting needs {}; free memory, or ask \
                     for fewer frames or a smaller size",
                    gb(least)
                ),
                None => "free memory, or ask for fewer frames or a smaller size".into(),
            }
        } else {
            format!("it fits with {}", fits.join(", or "))
        };
        let phase = self.peak_phase().map_or("", |p| p.name);
        Err(Error::Memory {
            needed,
            available,
            message: format!(
                "this run needs about {} of memory ({} weights as held in a {} run: {}; \
                 peak while \"{}\") but {} is available; {advice}",
                gb(needed),
                match self.offload {
                    Offload::None => "all",
                    Offload::Model => "per-component",
                    Offload::Blocks => "per-block",
                },
                dtype_name(w.dtype),
                parts.join(", "),
                phase,
                gb(available),
            ),
        })
    }

    /// The command-line flags of this plan's settings (`--dtype bf16 --offload blocks`).
    pub fn flags(&self) -> String {
        format!(
            "--dtype {} --offload {}",
            dtype_name(self.weights.dtype),
            self.offload.name()
        )
    }
}

/// `bytes` in GB (10^9), one decimal.
pub fn gb(bytes: u64) -> String {
    format!("{:.1} GB", bytes as f64 / 1e9)
}

impl fmt::Display for MemoryPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = &self.weights;
        writeln!(
            f,
            "memory plan ({}): weights text encoder {}, DiT {} ({} blocks of {}), VAE {}{}{}",
            self.flags(),
            gb(w.text.total),
            gb(w.dit.total),
            w.dit.layers,
            gb(w.dit.layer),
            gb(w.vae),
            w.adapters
                .map(|a| format!(", adapters {}", gb(a.total)))
                .unwrap_or_default(),
            if w.lora > 0 {
                format!(", LoRAs on the fly {}", gb(w.lora))
            } else {
                String::new()
            }
        )?;
        for p in &self.phases {
            writeln!(
                f,
                "  {:<22} {:>9} (weights {}, activations {})",
                p.name,
                gb(p.total()),
                gb(p.weights),
                gb(p.activations)
            )?;
        }
        write!(
            f,
            "  peak with the process itself: about {}",
            gb(self.peak())
        )
    }
}
