//! `LynxPipeline`: the reference's `LynxWanPipeline` / `LynxLiteWanPipeline` with their
//! `generate_t2v` (bytedance/lynx `modules/full/lynx_pipeline.py`, `lynx_infer.py`,
//! `modules/lite/lynx_lite_pipeline.py`; diffusers 0.33.1 `pipelines/wan/pipeline_wan.py`).
//!
//! A generation runs in the steps diffusers' pipelines are written in:
//!
//! 1. [`check_inputs`](LynxPipeline::generate): sizes, counts, and what the loaded
//!    variant accepts; the variant's defaults fill what the request leaves open, and the
//!    prompts are tokenized — once, into the run's plan, which the memory check and
//!    every later step read.
//! 2. encode prompts: the prompt and the negative prompt (cached per text).
//! 3. prepare subject: face embedding (and for Lynx full the reference pass over the
//!    aligned face) → the adapters' per-block inputs, once per video.
//! 4. prepare latents: the scheduler's timesteps and the initial noise.
//! 5. denoise: per step the `cond`, `uncond` and (Lynx full) `identity` DiT passes,
//!    guidance, a scheduler step.
//! 6. decode: the VAE, then the frames back to the host.
//!
//! Before loading, and before each generation, the memory the run needs is estimated and
//! checked against what the device has ([`crate::memory`]); with offloading
//! ([`PipelineOptions::offload`], [`crate::components`]) each component is on the device
//! only while it runs, and the DiT's blocks can be streamed from the checkpoint.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor};
use lynx_adapters::{Conditions, LynxAdapters, Variant};
use lynx_arcface::{FaceAnalyzer, PreparedFace};
use lynx_core::device::{check_dtype, to_host_f32};
use lynx_core::{Error, Result};
use lynx_dit::{DitLora, WanTransformer};
use lynx_sampler::{FlowMatchEuler, Guidance, Scheduler, SchedulerConfig, UniPcMultistep};
use lynx_store::{LoraSet, Offload};
use lynx_vae::Tiling;

use crate::branches::{Branch, Branches, Denoise, Stages};
use crate::budget;
use crate::components::Components;
pub use crate::components::{GuidanceBatching, PipelineOptions};
use crate::export::Video;
use crate::folder::{ModelFolder, check_model_folder};
use crate::memory::{MemoryPlan, WeightSizes};
use crate::observer::{Observer, Stage};
use crate::plan::Plan;
pub use crate::request::VariantDefaults;
use crate::request::{GenerateRequest, SamplerKind};
use crate::source::Source;

mod subject;

/// The generated video.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Generated {
    /// `[F, H, W, 3]` in `[0, 1]`.
    pub video: Video,
    /// Frames per second: the request's, else the variant's.
    pub fps: u32,
    /// The same frames on the device, `[F, H, W, 3]` f32.
    pub frames: Tensor<4>,
    /// Latents after each step, `[1, C, F', H/8, W/8]` (kept only when asked for with
    /// [`GenerateRequest::with_trace`]).
    pub latents_per_step: Vec<Tensor<5>>,
    /// For a photo subject: the detection, landmarks, both crops and the embedding the
    /// adapters were given.
    pub face: Option<PreparedFace>,
    /// The DiT passes the denoising ran: one per step when the guidance branches ran
    /// stacked in one batch ([`GuidanceBatching::Batched`] and inputs that stack), one
    /// per branch and step when they ran one by one.
    pub dit_passes: usize,
}

/// Lynx: Wan2.1 + the adapters of `lynx_full/` or `lynx_lite/` (or none: plain Wan2.1).
pub struct LynxPipeline {
    components: Components,
    scheduler: SchedulerConfig,
    /// The weights' sizes, for each generation's memory check.
    weights: WeightSizes,
}

impl Generated {
    /// Saves the video at its frame rate, by the path's extension (see [`Video::save`]).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        self.video.save(path, self.fps)
    }
}

/// The prompt embeddings of a run.
struct Prompts {
    prompt: Tensor<3>,
    negative: Tensor<3>,
    /// Lynx's reference prompt, when the reference pass runs.
    reference: Option<Tensor<3>>,
}

impl LynxPipeline {
    /// Loads tokenizer, text encoder, DiT, VAE and scheduler config from a diffusers Wan2.1
    /// folder (`base`, checked first against its `model_index.json`, see
    /// [`crate::folder::ModelIndex`]) or the original release's folder
    /// ([`crate::original`]) — or, when `base` is a file, from the DiT's single file with
    /// the text encoder and VAE files of [`PipelineOptions::weights`] and the released
    /// configs ([`crate::single`]; ComfyUI's way) — and the adapters from `adapters`: `lynx_full/` or
    /// `lynx_lite/`, told apart by their files ([`Variant::detect`]). Without
    /// `adapters` the pipeline is plain Wan2.1 text-to-video.
    ///
    /// Each is a [`Source`]: a folder, or a Hugging Face Hub repo as in diffusers (feature
    /// `hub`, on by default): `Source::hub("Wan-AI/Wan2.1-T2V-14B-Diffusers")`, and
    /// `Source::hub("ByteDance/lynx")` with a subfolder (default `lynx_full`); the files
    /// are fetched into the shared Hub cache, as are the face models of `options`. A
    /// string is read by [`Source::parse`] (an existing folder always wins).
    ///
    /// First the weights are sized from the checkpoints' headers and checked against the
    /// memory budget for the smallest run (one frame of 16×16): a model that cannot be
    /// held fails here with [`Error::Memory`], before anything is read. With
    /// [`PipelineOptions::offload`] the components are only checked now and loaded when
    /// they run.
    pub fn from_pretrained(
        base: impl Into<Source>,
        adapters: Option<Source>,
        options: PipelineOptions,
    ) -> Result<Self> {
        let (base, adapter_dir, options) = Self::resolve(base.into(), adapters, &options)?;
        let (base, adapter_dir) = (base.as_path(), adapter_dir.as_deref());
        let folder = ModelFolder::open_with(base, &options.weights)?;
        check_dtype(&options.device, options.dtype)?;
        let variant = adapter_dir.map(Variant::detect).transpose()?;
        let scheduler = folder.scheduler()?;
        scheduler.check_unipc()?;
        let smallest = GenerateRequest::new("")
            .with_frames(1)
            .with_size(16, 16)
            .with_negative_prompt("");
        let plan = budget::check(base, adapter_dir, &options, &smallest)?;
        let components = Components::load(base, adapter_dir, options, variant)?;
        Ok(Self {
            components,
            scheduler,
            weights: plan.weights,
        })
    }

    /// The sources made local (fetched without progress reports).
    fn resolve(
        base: Source,
        adapters: Option<Source>,
        options: &PipelineOptions,
    ) -> Result<(PathBuf, Option<PathBuf>, PipelineOptions)> {
        let mut quiet = crate::source::NoProgress;
        let base = base.model_folder(&mut quiet)?;
        let adapters = adapters.map(|a| a.adapter_folder(&mut quiet)).transpose()?;
        Ok((base, adapters, options.resolved(&mut quiet)?))
    }

    /// The memory a generation of `request` needs with these models and options (the
    /// weights sized from the checkpoints' headers, nothing read), per phase.
    pub fn plan_memory(
        base: impl Into<Source>,
        adapters: Option<Source>,
        options: &PipelineOptions,
        request: &GenerateRequest,
    ) -> Result<MemoryPlan> {
        let (base, adapter_dir, options) = Self::resolve(base.into(), adapters, options)?;
        ModelFolder::open_with(&base, &options.weights)?;
        budget::plan(&base, adapter_dir.as_deref(), &options, request)
    }

    /// [`LynxPipeline::plan_memory`], checked against the budget
    /// ([`PipelineOptions::memory_budget`], else what the device has available): the
    /// plan when it fits, else [`Error::Memory`] with both figures in GB and the dtype
    /// and offload settings that would fit. No check on GPUs without a budget.
    pub fn check_memory(
        base: impl Into<Source>,
        adapters: Option<Source>,
        options: &PipelineOptions,
        request: &GenerateRequest,
    ) -> Result<MemoryPlan> {
        let (base, adapter_dir, options) = Self::resolve(base.into(), adapters, options)?;
        ModelFolder::open_with(&base, &options.weights)?;
        budget::check(&base, adapter_dir.as_deref(), &options, request)
    }

    /// Checks the model `base` with the weight files of `options` (made local by
    /// [`PipelineOptions::resolved`]) as [`LynxPipeline::from_pretrained`] reads them —
    /// a folder with its replacements, or a DiT's single file with the text encoder and
    /// VAE files — before any weight is read ([`ModelFolder::open_with`]).
    pub fn check_model(base: impl AsRef<Path>, options: &PipelineOptions) -> Result<()> {
        ModelFolder::open_with(base, &options.weights).map(|_| ())
    }

    /// Checks that `base_dir` is a Wan2.1 folder lynx-rs runs — diffusers (its five parts
    /// present) or the original release ([`crate::original`]) — before anything is read
    /// from it.
    pub fn check_model_folder(base_dir: impl AsRef<Path>) -> Result<()> {
        check_model_folder(base_dir.as_ref()).map(|_| ())
    }

    /// The device everything runs on.
    pub fn device(&self) -> &Device {
        self.components.device()
    }

    /// The loaded Lynx variant; `None` for plain Wan2.1.
    pub fn variant(&self) -> Option<Variant> {
        self.components.variant()
    }

    /// The defaults of the loaded variant.
    pub fn defaults(&self) -> VariantDefaults {
        VariantDefaults::of(self.variant())
    }

    /// Where the weights live between uses.
    pub fn offload(&self) -> Offload {
        self.components.options().offload
    }

    /// The adapters, if loaded and resident (`None` when offloading).
    pub fn adapters(&self) -> Option<&LynxAdapters> {
        self.components.resident().2
    }

    /// The DiT, when resident (`None` when offloading).
    pub fn dit(&self) -> Option<&WanTransformer> {
        self.components.resident().0
    }

    /// Spatial tiling of the VAE decode ([`lynx_vae::WanVae::set_tiling`]), for every
    /// later generation.
    pub fn set_vae_tiling(&mut self, tiling: Option<Tiling>) -> Result<()> {
        self.components.set_vae_tiling(tiling)
    }

    /// The face models, if loaded and resident (`None` when offloading).
    pub fn face_analyzer(&self) -> Option<&FaceAnalyzer> {
        self.components.resident().3
    }

    /// Chooses how the guidance passes run (see [`GuidanceBatching`]).
    pub fn set_guidance_batching(&mut self, batching: GuidanceBatching) {
        self.components.set_guidance_batching(batching);
    }

    /// Generates a video. The pipeline stays loaded: call it again with other requests.
    pub fn generate(&self, request: &GenerateRequest) -> Result<Generated> {
        self.generate_with(request, &mut ())
    }

    /// [`LynxPipeline::generate`], telling `observer` of each stage and step; the
    /// observer may stop the run ([`Error::Cancelled`]).
    pub fn generate_with(
        &self,
        request: &GenerateRequest,
        observer: &mut (impl Observer + ?Sized),
    ) -> Result<Generated> {
        let mut observer = observer;
        self.run(request, None, &mut observer)
    }

    /// [`LynxPipeline::generate_with`] with `scheduler` as the sampler instead of the
    /// request's [`SamplerKind`] and flow shift: any [`Scheduler`], such as one built
    /// from [`LynxPipeline::scheduler_config`]. Its timesteps are set for the request's
    /// steps (which resets it), so one scheduler serves one run.
    pub fn generate_with_scheduler(
        &self,
        request: &GenerateRequest,
        scheduler: Box<dyn Scheduler>,
        observer: &mut (impl Observer + ?Sized),
    ) -> Result<Generated> {
        let mut observer = observer;
        self.run(request, Some(scheduler), &mut observer)
    }

    fn run(
        &self,
        req: &GenerateRequest,
        custom: Option<Box<dyn Scheduler>>,
        observer: &mut dyn Observer,
    ) -> Result<Generated> {
        let plan = self.check_inputs(req)?;
        self.check_run_memory(&plan, req)?;
        let mut stages = Stages::new(observer, plan.steps);
        let prompts = stages.run(Stage::EncodePrompts, |_| self.encode_prompts(&plan))?;
        let (subject, face) =
            stages.run(Stage::PrepareSubject, |_| self.prepare_subject(req, &plan))?;
        let dit = self.components.dit()?;
        let lora = self.request_lora(&dit, req)?;
        let lora = lora.as_ref();
        let conditions = stages.run(Stage::Condition, |_| {
            self.condition(&dit, lora, subject, prompts.reference.as_ref(), &plan)
        })?;
        let branches = self.branches(prompts.prompt, prompts.negative, conditions, &plan);
        let (scheduler, latents) = self.prepare_latents(&dit, req, &plan, custom)?;
        let (latents, steps, dit_passes) = stages.run(Stage::Denoise, |stages| {
            let run = Denoise {
                dit: &dit,
                lora,
                plan: &plan,
                branches: &branches,
                trace: req.trace,
            };
            run.run(scheduler, latents, stages)
        })?;
        drop((branches, dit));
        self.components.release();
        let frames = stages.run(Stage::Decode, |_| self.decode(latents))?;
        let [f, h, w, _] = frames.dims();
        let mut video = Video::new(f, h, w, to_host_f32(frames.clone(), "the decoded frames")?)?;
        let metadata = video.metadata_mut();
        metadata.insert(
            "generator".into(),
            format!("lynx-rs {}", env!("CARGO_PKG_VERSION")),
        );
        metadata.insert("prompt".into(), req.prompt.clone());
        metadata.insert("steps".into(), req.steps.to_string());
        // A recorded start replaces the seeded noise: then the seed alone does not replay it.
        if !req.noise.has_recorded_latents() {
            metadata.insert("seed".into(), req.noise.seed().to_string());
        }
        Ok(Generated {
            video,
            fps: plan.fps,
            frames,
            latents_per_step: steps,
            face,
            dit_passes,
        })
    }

    /// LoRA keys skipped as unmatched when the pipeline loaded (with
    /// [`PipelineOptions::lora_skip_unmatched`]), as stored in the LoRA files.
    pub fn skipped_lora_keys(&self) -> &[String] {
        self.components.lora_skipped()
    }

    /// Whether the options' LoRAs ([`PipelineOptions::loras`]) run on the fly in each DiT
    /// pass instead of being fused at load: they do when they change weights the DiT
    /// keeps quantized (fp8 or GGUF files), which are never fused. The numbers are the
    /// same either way; on the fly costs the LoRA factors' memory and their matmuls.
    pub fn loras_on_the_fly(&self) -> bool {
        self.components.loras_run_on_the_fly()
    }

    /// The request's LoRAs (after the options' ones when those run on the fly: they
    /// change quantized weights), read onto the device for passes on the fly.
    fn request_lora(&self, dit: &WanTransformer, req: &GenerateRequest) -> Result<Option<DitLora>> {
        let (mut loras, mut skip) = self.components.loras_on_the_fly()?;
        loras.extend(req.loras.iter().cloned());
        skip |= req.lora_skip_unmatched;
        if loras.is_empty() {
            return Ok(None);
        }
        let set = LoraSet::open(&loras)?.skip_unmatched(skip);
        DitLora::new(&set, dit.config(), self.device(), dit.dtype()).map(Some)
    }

    /// The memory check of one generation (see [`budget::check_run`]).
    fn check_run_memory(&self, plan: &Plan, req: &GenerateRequest) -> Result<()> {
        let c = &self.components;
        let (base, adapters) = (c.base(), c.adapter_dir());
        let (mut loras, _) = c.loras_on_the_fly()?;
        loras.extend(req.loras.iter().cloned());
        budget::check_run(base, adapters, c.options(), plan, &self.weights, &loras)
    }

    /// Step 1: sizes and counts, and what the loaded variant accepts; fills its
    /// defaults and tokenizes the prompts ([`Plan`]).
    fn check_inputs(&self, req: &GenerateRequest) -> Result<Plan> {
        let batched = self.components.options().batched();
        Plan::new(
            req,
            self.variant(),
            self.components.text().tokenizer(),
            batched,
        )
    }

    /// Step 2: the prompt and the negative prompt, cleaned as the Wan pipeline cleans them,
    /// and, when Lynx's reference pass runs, its prompt (not cleaned): in one pass of the
    /// text encoder, whose weights are then free to go (the embeddings stay cached). The
    /// tokens are the plan's.
    fn encode_prompts(&self, plan: &Plan) -> Result<Prompts> {
        let wanted: Vec<_> = plan
            .prompts
            .iter()
            .map(|p| (p.text.as_str(), p.clean, Some(&p.tokens)))
            .collect();
        let mut embeddings = self
            .components
            .text()
            .encode_tokenized(&wanted)?
            .into_iter();
        self.components.release();
        let mut next = || {
            embeddings.next().ok_or_else(|| {
                Error::input("the text encoder returned fewer embeddings than prompts")
            })
        };
        let prompt = next()?;
        let negative = if plan.use_cfg {
            next()?
        } else {
            prompt.clone()
        };
        Ok(Prompts {
            prompt,
            negative,
            reference: if plan.reference { Some(next()?) } else { None },
        })
    }

    /// The passes of a step, named.
    fn branches(
        &self,
        prompt: Tensor<3>,
        negative: Tensor<3>,
        conditions: Option<Conditions>,
        plan: &Plan,
    ) -> Branches {
        let (cond, uncond) = match conditions {
            Some(c) => (c.cond, c.uncond),
            None => (Vec::new(), Vec::new()),
        };
        let identity = matches!(plan.guidance, Guidance::Lynx { .. }).then(|| Branch {
            text: negative.clone(),
            extras: cond.clone(),
        });
        let mut branches = Branches {
            cond: Branch {
                text: prompt,
                extras: cond,
            },
            uncond: Branch {
                text: negative,
                extras: uncond,
            },
            identity,
            stacked: None,
        };
        if plan.use_cfg && plan.batched {
            branches.stacked = branches.stack();
        }
        branches
    }

    /// Step 4: the sampler with its timesteps (the caller's, or the plan's kind with its
    /// flow shift), and the initial latents `[1, C, (F − 1)/4 + 1, H/8, W/8]`.
    fn prepare_latents(
        &self,
        dit: &WanTransformer,
        req: &GenerateRequest,
        plan: &Plan,
        custom: Option<Box<dyn Scheduler>>,
    ) -> Result<(Box<dyn Scheduler>, Tensor<5>)> {
        let mut scheduler = match custom {
            Some(s) => s,
            None => self.scheduler(plan.sampler, plan.flow_shift)?,
        };
        scheduler.set_timesteps(plan.steps)?;
        let shape = [
            1,
            dit.config().in_channels,
            (plan.frames - 1) / 4 + 1,
            plan.height / 8,
            plan.width / 8,
        ];
        let latents = req.noise.initial_latents(shape, self.device())?;
        Ok((scheduler, latents))
    }

    /// A sampler of `kind` on the model's scheduler config, with `flow_shift` instead of
    /// the config's when given.
    pub fn scheduler(
        &self,
        kind: SamplerKind,
        flow_shift: Option<f64>,
    ) -> Result<Box<dyn Scheduler>> {
        let mut config = self.scheduler.clone();
        if let Some(shift) = flow_shift {
            config.flow_shift = shift;
        }
        Ok(match kind {
            SamplerKind::UniPc => Box::new(UniPcMultistep::new(config)?),
            SamplerKind::Euler => Box::new(FlowMatchEuler::from_config(&config)?),
        })
    }

    /// The model's scheduler config (`scheduler/scheduler_config.json`), for building
    /// another sampler.
    pub fn scheduler_config(&self) -> &SchedulerConfig {
        &self.scheduler
    }

    /// Step 6: latents → frames `[F, H, W, 3]` in `[0, 1]`.
    fn decode(&self, latents: Tensor<5>) -> Result<Tensor<4>> {
        let vae = self.components.vae()?;
        let z = vae.denormalize(latents)?;
        let video = vae.decode(z)?.clamp(-1.0, 1.0) * 0.5 + 0.5;
        drop(vae);
        self.components.release();
        // [1, 3, F, H, W] → [F, H, W, 3]
        Ok(video.squeeze_dim::<4>(0).permute([1, 2, 3, 0]))
    }
}
