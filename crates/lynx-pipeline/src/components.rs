//! The pipeline's components and where their weights live between uses.
//!
//! | [`Offload`] | text encoder | DiT | VAE, adapters, face models |
//! |---|---|---|---|
//! | `None` | on the device | on the device | on the device |
//! | `Model` | loaded for the prompts, then dropped (the embeddings stay cached) | loaded for the reference pass and the denoising, dropped before the decode | loaded when they run, dropped after |
//! | `Blocks` | streamed: embedding rows and one layer at a time | loaded without its blocks, which are streamed per step | as `Model`, the adapters' per-block layers streamed |
//!
//! With offloading the checkpoints stay memory-mapped and nothing is read until a
//! component runs; they are checked (every key and shape) when the pipeline loads.

use std::ops::Deref;
use std::path::{Path, PathBuf};

use burn::tensor::{DType, Device};
use lynx_adapters::{LynxAdapters, ResamplerConfig, Variant};
use lynx_arcface::{DetectOptions, FaceAnalyzer};
use lynx_core::{Error, Result};
use lynx_dit::WanTransformer;
use lynx_store::Offload;
use lynx_text::TextEncoder;
use lynx_vae::{Tiling, WanVae};

/// How to load a [`crate::LynxPipeline`].
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Where everything runs.
    pub device: Device,
    /// dtype of the DiT, text encoder, adapters and VAE weights (norms stay f32;
    /// latents and the sampler are always f32). Files in f32 or bf16 load into either.
    pub dtype: DType,
    /// ArcFace IR-SE checkpoint (`.pth` or `.safetensors`), needed for photo subjects.
    pub arcface: Option<PathBuf>,
    /// Units per stage of the ArcFace IR-SE backbone, needed only when two consecutive
    /// stages have the same width (see [`lynx_arcface::ArcFaceConfig::from_checkpoint`]).
    pub arcface_depths: Option<Vec<usize>>,
    /// RetinaFace checkpoint, needed for photos without given landmarks.
    pub detector: Option<PathBuf>,
    /// Detection settings for photo subjects (score threshold, NMS, downscaling).
    pub detect: DetectOptions,
    /// Head width of the Perceiver Resampler, which its file does not record
    /// ([`ResamplerConfig::LYNX_DIM_HEAD`] = 64 for the released adapters).
    pub resampler_dim_head: usize,
    /// Where weights live between uses (see the module docs): `None` keeps everything
    /// on the device; `Model` loads each component when it runs; `Blocks` also streams
    /// the big components' blocks from their checkpoints.
    pub offload: Offload,
    /// Bytes the run may use. `None`: what the device has available (`MemAvailable` on
    /// the CPU; GPUs do not report it, so there no check is made without a budget).
    /// Loading and each generation check their estimate against it first
    /// ([`crate::memory`]).
    pub memory_budget: Option<u64>,
    /// Whether a step's guidance passes run as one batch.
    pub guidance_batching: GuidanceBatching,
    /// The adapter folder inside a Hub repo or a folder holding both variants
    /// (`lynx_full` or `lynx_lite`); `None`: the folder as given, or `lynx_full` in a repo.
    pub adapters_subfolder: Option<String>,
    /// Weight files replacing the model folder's DiT, text encoder or VAE weights.
    pub weights: crate::folder::WeightFiles,
}

/// How the 2 (CFG) or 3 (Lynx) DiT passes of a denoising step run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GuidanceBatching {
    /// Batched: one wide pass is faster on every backend measured, the CPU included
    /// (`guidance_batched` vs `guidance_sequential` in the benches), at the cost of the
    /// block's working memory for every pass at once (the memory plan counts it).
    #[default]
    Auto,
    /// One DiT pass over `[cond, uncond, identity]` stacked along the batch (the
    /// reference batches `[uncond, cond]` the same way).
    Batched,
    /// One DiT pass per branch, with the working memory of one.
    Sequential,
}

impl GuidanceBatching {
    /// Whether the passes run as one batch.
    pub fn batched(self) -> bool {
        match self {
            GuidanceBatching::Auto | GuidanceBatching::Batched => true,
            GuidanceBatching::Sequential => false,
        }
    }
}

impl PipelineOptions {
    /// Whether a step's guidance passes run as one batch ([`GuidanceBatching`]).
    pub fn batched(&self) -> bool {
        self.guidance_batching.batched()
    }

    /// f32 on `device`, no face models, no offloading, the device's memory as budget.
    pub fn new(device: Device) -> Self {
        Self {
            device,
            dtype: DType::F32,
            arcface: None,
            arcface_depths: None,
            detector: None,
            detect: DetectOptions::default(),
            resampler_dim_head: ResamplerConfig::LYNX_DIM_HEAD,
            offload: Offload::None,
            memory_budget: None,
            guidance_batching: GuidanceBatching::Auto,
            adapters_subfolder: None,
            weights: Default::default(),
        }
    }
}

/// A component for the duration of a use: the resident one, or one loaded for it (and
/// dropped with this; [`Components::release`] then hands GPU memory back).
pub(crate) enum Held<'a, T> {
    Resident(&'a T),
    Loaded(T),
}

impl<T> Deref for Held<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        match self {
            Held::Resident(t) => t,
            Held::Loaded(t) => t,
        }
    }
}

/// The models of a pipeline, resident or loaded on demand.
pub(crate) struct Components {
    base: PathBuf,
    adapter_dir: Option<PathBuf>,
    options: PipelineOptions,
    variant: Option<Variant>,
    text: TextEncoder,
    dit: Option<WanTransformer>,
    vae: Option<WanVae>,
    adapters: Option<LynxAdapters>,
    face: Option<FaceAnalyzer>,
    vae_tiling: Option<Tiling>,
}

impl Components {
    /// Loads (or, offloading, opens and checks) the components of `base` and
    /// `adapter_dir` as `options` say.
    pub(crate) fn load(
        base: &Path,
        adapter_dir: Option<&Path>,
        options: PipelineOptions,
        variant: Option<Variant>,
    ) -> Result<Self> {
        let (device, dtype, offload) = (&options.device, options.dtype, options.offload);
        if options.arcface.is_none() && options.detector.is_some() {
            return Err(Error::input(
                "a face detector was given without an ArcFace checkpoint; give both",
            ));
        }
        let text = TextEncoder::from_weights(
            base.join("text_encoder").join("config.json"),
            options.weights.text_encoder(base),
            base.join("tokenizer"),
            device,
            dtype,
            offload,
        )?;
        let mut this = Self {
            base: base.to_path_buf(),
            adapter_dir: adapter_dir.map(Path::to_path_buf),
            options,
            variant,
            text,
            dit: None,
            vae: None,
            adapters: None,
            face: None,
            vae_tiling: None,
        };
        if offload == Offload::None {
            let dit = this.load_dit()?;
            this.vae = Some(this.load_vae()?);
            this.adapters = this.load_adapters(&dit)?;
            this.dit = Some(dit);
            this.face = this.load_face()?;
        }
        Ok(this)
    }

    /// The loaded variant (`None`: plain Wan2.1).
    pub(crate) fn variant(&self) -> Option<Variant> {
        self.variant
    }

    /// The device.
    pub(crate) fn device(&self) -> &Device {
        &self.options.device
    }

    /// The diffusers Wan2.1 folder.
    pub(crate) fn base(&self) -> &Path {
        &self.base
    }

    /// The adapter folder, if any.
    pub(crate) fn adapter_dir(&self) -> Option<&Path> {
        self.adapter_dir.as_deref()
    }

    /// The options the components were loaded with.
    pub(crate) fn options(&self) -> &PipelineOptions {
        &self.options
    }

    /// The text encoder (its weights are where the offload says; its embedding cache
    /// always stays).
    pub(crate) fn text(&self) -> &TextEncoder {
        &self.text
    }

    /// The resident DiT, VAE, adapters and face models (`None` when offloading).
    pub(crate) fn resident(
        &self,
    ) -> (
        Option<&WanTransformer>,
        Option<&WanVae>,
        Option<&LynxAdapters>,
        Option<&FaceAnalyzer>,
    ) {
        (
            self.dit.as_ref(),
            self.vae.as_ref(),
            self.adapters.as_ref(),
            self.face.as_ref(),
        )
    }

    /// The DiT for a use.
    pub(crate) fn dit(&self) -> Result<Held<'_, WanTransformer>> {
        match &self.dit {
            Some(d) => Ok(Held::Resident(d)),
            None => Ok(self.held(self.load_dit()?)),
        }
    }

    /// The VAE for a use (with the tiling set by [`Components::set_vae_tiling`]).
    pub(crate) fn vae(&self) -> Result<Held<'_, WanVae>> {
        match &self.vae {
            Some(v) => Ok(Held::Resident(v)),
            None => Ok(self.held(self.load_vae()?)),
        }
    }

    /// The adapters for a use with `dit`, if an adapter folder was given.
    pub(crate) fn adapters(&self, dit: &WanTransformer) -> Result<Option<Held<'_, LynxAdapters>>> {
        match &self.adapters {
            Some(a) => Ok(Some(Held::Resident(a))),
            None => Ok(self.load_adapters(dit)?.map(|a| self.held(a))),
        }
    }

    /// The face models for a use, if an ArcFace checkpoint was given.
    pub(crate) fn face(&self) -> Result<Option<Held<'_, FaceAnalyzer>>> {
        match &self.face {
            Some(f) => Ok(Some(Held::Resident(f))),
            None => Ok(self.load_face()?.map(|f| self.held(f))),
        }
    }

    /// Spatial tiling of the VAE decode, now and for every VAE loaded later.
    pub(crate) fn set_guidance_batching(&mut self, batching: GuidanceBatching) {
        self.options.guidance_batching = batching;
    }

    pub(crate) fn set_vae_tiling(&mut self, tiling: Option<Tiling>) -> Result<()> {
        if let Some(vae) = &mut self.vae {
            vae.set_tiling(tiling)?;
        } else if let Some(t) = &tiling {
            // Checked against the VAE's factor now rather than at the next decode.
            let config = lynx_vae::VaeConfig::load(self.base.join("vae/config.json"))?;
            t.check(config.spatial_factor())?;
        }
        self.vae_tiling = tiling;
        Ok(())
    }

    fn held<T>(&self, t: T) -> Held<'_, T> {
        Held::Loaded(t)
    }

    /// Hands the memory of dropped components back to the device (GPU backends keep
    /// freed buffers pooled; a no-op on the CPU).
    pub(crate) fn release(&self) {
        if self.options.offload.on_demand() {
            self.options.device.memory_cleanup();
        }
    }

    fn load_dit(&self) -> Result<WanTransformer> {
        let (device, dtype) = (&self.options.device, self.options.dtype);
        WanTransformer::from_weights(
            self.base.join("transformer"),
            self.options.weights.transformer(&self.base),
            device,
            dtype,
            self.options.offload == Offload::Blocks,
        )
    }

    fn load_vae(&self) -> Result<WanVae> {
        let mut vae = WanVae::from_weights(
            self.base.join("vae").join("config.json"),
            self.options.weights.vae(&self.base),
            &self.options.device,
            self.options.dtype,
        )?;
        vae.set_tiling(self.vae_tiling)?;
        Ok(vae)
    }

    fn load_adapters(&self, dit: &WanTransformer) -> Result<Option<LynxAdapters>> {
        let (Some(dir), Some(_)) = (&self.adapter_dir, self.variant) else {
            return Ok(None);
        };
        let o = &self.options;
        LynxAdapters::from_dir_with(
            dir,
            dit,
            o.resampler_dim_head,
            &o.device,
            o.dtype,
            o.offload == Offload::Blocks,
        )
        .map(Some)
    }

    fn load_face(&self) -> Result<Option<FaceAnalyzer>> {
        let Some(arcface) = &self.options.arcface else {
            return Ok(None);
        };
        let device = &self.options.device;
        let depths = self.options.arcface_depths.as_deref();
        let arcface = lynx_arcface::load_arcface(arcface, device, depths)?;
        let detector = match &self.options.detector {
            Some(d) => Some(lynx_arcface::load_retinaface(d, device)?),
            None => None,
        };
        let mut analyzer = FaceAnalyzer::new(arcface, detector);
        analyzer.options = self.options.detect;
        Ok(Some(analyzer))
    }
}
