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
use std::sync::Arc;

use burn::tensor::{DType, Device};
use lynx_adapters::{LynxAdapters, ResamplerConfig, Variant};
use lynx_arcface::{DetectOptions, FaceAnalyzer};
use lynx_core::{Error, Result};
use lynx_dit::WanTransformer;
use lynx_store::{Checkpoint, LoraSet, Offload};
use lynx_text::TextEncoder;
use lynx_vae::{Tiling, WanVae};

use crate::folder::ModelFolder;
use crate::source::{Progress, Source};

/// How to load a [`crate::LynxPipeline`]: plain data, built with
/// [`PipelineOptions::new`] and the `with_*` methods.
///
/// ```
/// use lynx_pipeline::{Offload, PipelineOptions, parse_device};
/// use lynx_pipeline::source::Source;
/// # fn main() -> lynx_pipeline::Result<()> {
/// let options = PipelineOptions::new(parse_device("cpu")?)
///     .with_offload(Offload::Model)
///     .with_arcface(Source::url("https://example.com/recognition_arcface_ir_se50.pth"))
///     .with_detector("models/detection_Resnet50_Final.pth");
/// # let _ = options; Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PipelineOptions {
    /// Where everything runs.
    pub device: Device,
    /// dtype of the DiT, text encoder, adapters and VAE weights (norms stay f32;
    /// latents and the sampler are always f32). Files in f32 or bf16 load into either.
    pub dtype: DType,
    /// ArcFace IR-SE checkpoint (`.pth` or `.safetensors`), needed for photo subjects.
    pub arcface: Option<Source>,
    /// Units per stage of the ArcFace IR-SE backbone, needed only when two consecutive
    /// stages have the same width (see [`lynx_arcface::ArcFaceConfig::from_checkpoint`]).
    pub arcface_depths: Option<Vec<usize>>,
    /// RetinaFace checkpoint, needed for photos without given landmarks.
    pub detector: Option<Source>,
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
    /// LoRA files and their strengths, fused into the DiT as it loads (each streamed
    /// block as it is read, with `--offload blocks`); Hub files and URLs are fetched by
    /// [`PipelineOptions::resolved`]. When they change weights the DiT keeps quantized
    /// (fp8, GGUF), which a LoRA is not fused into, they are applied on the fly in every
    /// pass instead (same numbers; their factors stay resident).
    pub loras: Vec<(Source, f64)>,
    /// Skip LoRA keys the DiT has no place for instead of refusing the file
    /// ([`crate::LynxPipeline::skipped_lora_keys`] lists them).
    pub lora_skip_unmatched: bool,
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
            loras: Vec::new(),
            lora_skip_unmatched: false,
            weights: Default::default(),
        }
    }

    /// With weights in `dtype`.
    pub fn with_dtype(mut self, dtype: DType) -> Self {
        self.dtype = dtype;
        self
    }

    /// With this ArcFace checkpoint (for photo subjects).
    pub fn with_arcface(mut self, arcface: impl Into<Source>) -> Self {
        self.arcface = Some(arcface.into());
        self
    }

    /// With the ArcFace backbone's units per stage.
    pub fn with_arcface_depths(mut self, depths: Vec<usize>) -> Self {
        self.arcface_depths = Some(depths);
        self
    }

    /// With this RetinaFace checkpoint (for photos without landmarks).
    pub fn with_detector(mut self, detector: impl Into<Source>) -> Self {
        self.detector = Some(detector.into());
        self
    }

    /// With these detection settings.
    pub fn with_detect(mut self, detect: DetectOptions) -> Self {
        self.detect = detect;
        self
    }

    /// With this head width of the Perceiver Resampler.
    pub fn with_resampler_dim_head(mut self, dim_head: usize) -> Self {
        self.resampler_dim_head = dim_head;
        self
    }

    /// With weights held as `offload` says.
    pub fn with_offload(mut self, offload: Offload) -> Self {
        self.offload = offload;
        self
    }

    /// With at most `bytes` for the run.
    pub fn with_memory_budget(mut self, bytes: u64) -> Self {
        self.memory_budget = Some(bytes);
        self
    }

    /// With the guidance passes run as `batching` says.
    pub fn with_guidance_batching(mut self, batching: GuidanceBatching) -> Self {
        self.guidance_batching = batching;
        self
    }

    /// With the LoRA file `lora` fused at `strength` (repeatable: LoRAs add).
    pub fn with_lora(mut self, lora: impl Into<Source>, strength: f64) -> Self {
        self.loras.push((lora.into(), strength));
        self
    }

    /// Skipping (`true`) or refusing LoRA keys the DiT has no place for.
    pub fn with_lora_skip_unmatched(mut self, skip: bool) -> Self {
        self.lora_skip_unmatched = skip;
        self
    }

    /// With `transformer` replacing the model folder's DiT weights (see
    /// [`crate::folder::WeightFiles`]).
    pub fn with_transformer(mut self, transformer: impl Into<Source>) -> Self {
        self.weights.transformer = Some(transformer.into());
        self
    }

    /// With `text_encoder` replacing the model folder's text encoder weights.
    pub fn with_text_encoder(mut self, text_encoder: impl Into<Source>) -> Self {
        self.weights.text_encoder = Some(text_encoder.into());
        self
    }

    /// With `vae` replacing the model folder's VAE weights.
    pub fn with_vae(mut self, vae: impl Into<Source>) -> Self {
        self.weights.vae = Some(vae.into());
        self
    }

    /// These options with the face models, LoRA files and weight files made local ([`Source::file`]:
    /// URLs and Hub files fetched into the cache).
    pub fn resolved(&self, progress: &mut dyn Progress) -> Result<Self> {
        let mut o = self.clone();
        let loras = o.loras.iter_mut().map(|(s, _)| s);
        for source in [&mut o.arcface, &mut o.detector]
            .into_iter()
            .flatten()
            .chain(loras)
        {
            *source = Source::Local(source.file(progress)?);
        }
        o.weights = o.weights.resolved(progress)?;
        Ok(o)
    }

    /// The local LoRA files (after [`PipelineOptions::resolved`]).
    pub(crate) fn lora_files(&self) -> Result<Vec<(PathBuf, f64)>> {
        self.loras
            .iter()
            .map(|(s, strength)| match s.as_local() {
                Some(path) => Ok((path.to_path_buf(), *strength)),
                None => Err(Error::input(format!("{s} was not fetched before use"))),
            })
            .collect()
    }

    /// The local face model files (after [`PipelineOptions::resolved`]).
    pub(crate) fn face_files(&self) -> Result<(Option<&Path>, Option<&Path>)> {
        fn local(s: &Option<Source>) -> Result<Option<&Path>> {
            s.as_ref()
                .map(|s| {
                    s.as_local()
                        .ok_or_else(|| Error::input(format!("{s} was not fetched before use")))
                })
                .transpose()
        }
        Ok((local(&self.arcface)?, local(&self.detector)?))
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

/// Whether `set` changes a weight `dit` stores quantized (fp8, GGUF): one the DiT keeps
/// so and a LoRA is not fused into.
pub(crate) fn changes_quantized(set: &LoraSet, dit: &Checkpoint) -> bool {
    set.targets()
        .any(|t| dit.encoding(t).is_some_and(|e| !e.is_plain_float()))
}

/// The models of a pipeline, resident or loaded on demand.
pub(crate) struct Components {
    base: PathBuf,
    /// `base`'s layout: where each part's config and weights are.
    folder: ModelFolder,
    adapter_dir: Option<PathBuf>,
    options: PipelineOptions,
    variant: Option<Variant>,
    text: TextEncoder,
    dit: Option<WanTransformer>,
    vae: Option<WanVae>,
    adapters: Option<LynxAdapters>,
    face: Option<FaceAnalyzer>,
    vae_tiling: Option<Tiling>,
    /// The fused LoRAs, checked against the DiT's checkpoint.
    loras: Option<LoraSet>,
    /// The options' LoRAs run on the fly instead (they change quantized weights).
    loras_on_the_fly: bool,
    /// LoRA keys skipped as unmatched.
    lora_skipped: Vec<String>,
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
        let folder = ModelFolder::open_with(base, &options.weights)?;
        let text = TextEncoder::from_config(
            folder.text_config()?,
            folder.text_encoder()?,
            folder.tokenizer()?,
            device,
            dtype,
            offload,
        )?;
        let mut this = Self {
            base: base.to_path_buf(),
            folder,
            adapter_dir: adapter_dir.map(Path::to_path_buf),
            options,
            variant,
            text,
            dit: None,
            vae: None,
            adapters: None,
            face: None,
            vae_tiling: None,
            loras: None,
            loras_on_the_fly: false,
            lora_skipped: Vec::new(),
        };
        if !this.options.loras.is_empty() {
            let mut set = LoraSet::open(&this.options.lora_files()?)?
                .skip_unmatched(this.options.lora_skip_unmatched);
            let ckpt = Checkpoint::open(this.folder.transformer()?)?;
            this.lora_skipped = set.check(&ckpt)?;
            if changes_quantized(&set, &ckpt) {
                this.loras_on_the_fly = true;
            } else {
                this.loras = Some(set);
            }
        }
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

    /// The model folder (diffusers or the original Wan release).
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
            let config = self.folder.vae_config()?;
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

    /// The options' LoRAs that run on the fly (they change weights the DiT keeps
    /// quantized; none otherwise): the files and strengths, and whether unmatched keys
    /// are skipped.
    pub(crate) fn loras_on_the_fly(&self) -> Result<(Vec<(PathBuf, f64)>, bool)> {
        if !self.loras_on_the_fly {
            return Ok((Vec::new(), false));
        }
        Ok((self.options.lora_files()?, self.options.lora_skip_unmatched))
    }

    /// Whether the options' LoRAs run on the fly (see
    /// [`crate::LynxPipeline::loras_on_the_fly`]).
    pub(crate) fn loras_run_on_the_fly(&self) -> bool {
        self.loras_on_the_fly
    }

    /// LoRA keys skipped as unmatched (with [`PipelineOptions::lora_skip_unmatched`]).
    pub(crate) fn lora_skipped(&self) -> &[String] {
        &self.lora_skipped
    }

    fn load_dit(&self) -> Result<WanTransformer> {
        let (device, dtype) = (&self.options.device, self.options.dtype);
        let weights = self.folder.transformer()?;
        let streamed = self.options.offload == Offload::Blocks;
        let config = self.folder.dit_config(self.text.config().d_model)?;
        let mut ckpt = Checkpoint::open(&weights)?;
        if let Some(set) = &self.loras {
            ckpt.set_loras(set.clone())?;
        }
        let ckpt = Arc::new(ckpt);
        if streamed {
            ckpt.build(device, dtype, |w| {
                WanTransformer::load_streamed(w, config, ckpt.clone())
            })
        } else {
            ckpt.build(device, dtype, |w| WanTransformer::load(w, config))
        }
    }

    fn load_vae(&self) -> Result<WanVae> {
        let config = self.folder.vae_config()?;
        let mut vae = Checkpoint::open(self.folder.vae()?)?.build(
            &self.options.device,
            self.options.dtype,
            |w| WanVae::load(w, config),
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
        let (Some(arcface), detector) = self.options.face_files()? else {
            return Ok(None);
        };
        let device = &self.options.device;
        let depths = self.options.arcface_depths.as_deref();
        let arcface = lynx_arcface::load_arcface(arcface, device, depths)?;
        let detector = match detector {
            Some(d) => Some(lynx_arcface::load_retinaface(d, device)?),
            None => None,
        };
        let mut analyzer = FaceAnalyzer::new(arcface, detector);
        analyzer.options = self.options.detect;
        Ok(Some(analyzer))
    }
}
