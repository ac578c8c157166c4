//! `LynxPipeline`: the reference's `LynxWanPipeline` / `LynxLiteWanPipeline` with their
//! `generate_t2v` (bytedance/lynx `modules/full/lynx_pipeline.py`, `lynx_infer.py`,
//! `modules/lite/lynx_lite_pipeline.py`; diffusers 0.33.1 `pipelines/wan/pipeline_wan.py`).
//!
//! A generation runs in the steps diffusers' pipelines are written in:
//!
//! 1. [`check_inputs`](LynxPipeline::generate): sizes, counts, and what the loaded
//!    variant accepts; the variant's defaults fill what the request leaves open.
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

use std::path::Path;
use std::sync::atomic::Ordering;

use burn::tensor::{DType, Device, Tensor, TensorData};
use image::RgbImage;
use lynx_adapters::{Conditions, LynxAdapters, Variant};
use lynx_arcface::{FaceAnalyzer, PreparedFace};
use lynx_core::device::{check_dtype, to_host_f32};
use lynx_core::{Error, Result};
use lynx_dit::{DitInput, WanTransformer};
use lynx_sampler::{FlowMatchEuler, Guidance, Scheduler, SchedulerConfig, UniPcMultistep};
use lynx_store::Offload;
use lynx_vae::Tiling;

use crate::branches::{Branch, Branches, Stages};
use crate::budget;
use crate::components::Components;
pub use crate::components::{GuidanceBatching, PipelineOptions};
use crate::export::Video;
use crate::folder::check_model_folder;
use crate::memory::{MemoryPlan, WeightSizes};
use crate::noise::NoiseSource;
pub use crate::request::VariantDefaults;
use crate::request::{
    GenerateRequest, IdentityGuidance, REFERENCE_PROMPT, SamplerKind, Stage, StepInfo, Subject,
};

/// The generated video.
#[derive(Debug, Clone)]
pub struct Generated {
    /// `[F, H, W, 3]` in `[0, 1]`.
    pub video: Video,
    /// The same frames on the device, `[F, H, W, 3]` f32.
    pub frames: Tensor<4>,
    /// Latents after each step, `[1, C, F', H/8, W/8]` (kept only when asked for with
    /// [`LynxPipeline::generate_with_trace`]).
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

/// A request with the variant's defaults filled in and checked.
struct Plan {
    frames: usize,
    /// Whether the guidance passes run as one batch.
    batched: bool,
    guidance: Guidance,
    /// Whether the text guidance runs at all (`g > 1`, as diffusers' pipelines decide).
    use_cfg: bool,
    ref_scale: f64,
    /// Whether Lynx's reference pass runs (full, with a subject).
    reference: bool,
}

/// The prompt embeddings of a run.
struct Prompts {
    prompt: Tensor<3>,
    negative: Tensor<3>,
    /// Lynx's reference prompt, when the reference pass runs.
    reference: Option<Tensor<3>>,
}

/// The subject, ready for the DiT: face embedding `[1, 1, E]` and, for Lynx full, the
/// reference latents of the face and of the mid-grey image.
struct SubjectInputs {
    face: Tensor<3>,
    latents: Option<(Tensor<5>, Tensor<5>)>,
}

impl LynxPipeline {
    /// Loads tokenizer, text encoder, DiT, VAE and scheduler config from a diffusers Wan2.1
    /// folder (`base_dir`, checked first against its `model_index.json`, see
    /// [`crate::folder::ModelIndex`]), and the adapters from `adapter_dir`: `lynx_full/` or
    /// `lynx_lite/`, told apart by their files ([`Variant::detect`]). Without
    /// `adapter_dir` the pipeline is plain Wan2.1 text-to-video.
    ///
    /// Either may also be a Hugging Face Hub repo id, as in diffusers (feature `hub`, on by
    /// default): `"Wan-AI/Wan2.1-T2V-14B-Diffusers"`, and `"ByteDance/lynx"` with
    /// [`PipelineOptions::adapters_subfolder`] (default `lynx_full`); the files are fetched
    /// into the shared Hub cache ([`crate::source`]). An existing folder always wins.
    ///
    /// First the weights are sized from the checkpoints' headers and checked against the
    /// memory budget for the smallest run (one frame of 16×16): a model that cannot be
    /// held fails here with [`Error::Memory`], before anything is read. With
    /// [`PipelineOptions::offload`] the components are only checked now and loaded when
    /// they run.
    pub fn from_pretrained(
        base_dir: impl AsRef<Path>,
        adapter_dir: Option<&Path>,
        options: PipelineOptions,
    ) -> Result<Self> {
        let mut quiet = crate::source::NoProgress;
        let base = &crate::source::model_folder(base_dir.as_ref(), &mut quiet)?;
        let adapter_dir = adapter_dir
            .map(|a| {
                crate::source::adapter_folder(a, options.adapters_subfolder.as_deref(), &mut quiet)
            })
            .transpose()?;
        let adapter_dir = adapter_dir.as_deref();
        check_model_folder(base)?;
        check_dtype(&options.device, options.dtype)?;
        let variant = adapter_dir.map(Variant::detect).transpose()?;
        let scheduler = SchedulerConfig::load(base.join("scheduler"))?;
        scheduler.check_unipc()?;
        let mut smallest = GenerateRequest::new("");
        (smallest.frames, smallest.height, smallest.width) = (Some(1), 16, 16);
        smallest.negative_prompt = String::new();
        let plan = budget::check(base, adapter_dir, &options, &smallest)?;
        let components = Components::load(base, adapter_dir, options, variant)?;
        Ok(Self {
            components,
            scheduler,
            weights: plan.weights,
        })
    }

    /// The memory a generation of `request` needs with these models and options (the
    /// weights sized from the checkpoints' headers, nothing read), per phase.
    pub fn plan_memory(
        base_dir: impl AsRef<Path>,
        adapter_dir: Option<&Path>,
        options: &PipelineOptions,
        request: &GenerateRequest,
    ) -> Result<MemoryPlan> {
        let base = base_dir.as_ref();
        check_model_folder(base)?;
        budget::plan(base, adapter_dir, options, request)
    }

    /// [`LynxPipeline::plan_memory`], checked against the budget
    /// ([`PipelineOptions::memory_budget`], else what the device has available): the
    /// plan when it fits, else [`Error::Memory`] with both figures in GB and the dtype
    /// and offload settings that would fit. No check on GPUs without a budget.
    pub fn check_memory(
        base_dir: impl AsRef<Path>,
        adapter_dir: Option<&Path>,
        options: &PipelineOptions,
        request: &GenerateRequest,
    ) -> Result<MemoryPlan> {
        let base = base_dir.as_ref();
        check_model_folder(base)?;
        budget::check(base, adapter_dir, options, request)
    }

    /// Checks that `base_dir` is a diffusers Wan2.1 folder (its five parts present),
    /// before anything is read from it.
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

    /// Generates a video.
    pub fn generate(&self, request: GenerateRequest) -> Result<Generated> {
        self.run(request, false)
    }

    /// [`LynxPipeline::generate`], also returning the latents after every step.
    pub fn generate_with_trace(&self, request: GenerateRequest) -> Result<Generated> {
        self.run(request, true)
    }

    fn run(&self, mut req: GenerateRequest, trace: bool) -> Result<Generated> {
        let plan = self.check_inputs(&req)?;
        self.check_run_memory(&req)?;
        let mut stages = Stages(req.on_stage.take());
        let prompts = stages.run(Stage::EncodePrompts, || self.encode_prompts(&req, &plan))?;
        let (subject, face) =
            stages.run(Stage::PrepareSubject, || self.prepare_subject(&req, &plan))?;
        let dit = self.components.dit()?;
        let conditions = stages.run(Stage::Condition, || {
            self.condition(&dit, subject, prompts.reference.as_ref(), &req, &plan)
        })?;
        let branches = self.branches(prompts.prompt, prompts.negative, conditions, &plan);
        let (scheduler, latents) = self.prepare_latents(&dit, &req, &plan)?;
        let (latents, steps, dit_passes) = stages.run(Stage::Denoise, || {
            self.denoise(&dit, &mut req, &plan, &branches, scheduler, latents, trace)
        })?;
        drop((branches, dit));
        self.components.release();
        let frames = stages.run(Stage::Decode, || self.decode(latents))?;
        let [f, h, w, _] = frames.dims();
        let mut metadata = std::collections::BTreeMap::new();
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
            video: Video {
                frames: f,
                height: h,
                width: w,
                data: to_host_f32(frames.clone(), "the decoded frames")?,
                metadata,
            },
            frames,
            latents_per_step: steps,
            face,
            dit_passes,
        })
    }

    /// The memory check of one generation (see [`budget::check_run`]).
    fn check_run_memory(&self, req: &GenerateRequest) -> Result<()> {
        let c = &self.components;
        let (base, adapters) = (c.base(), c.adapter_dir());
        let tokenizer = c.text().tokenizer();
        budget::check_run(base, adapters, c.options(), req, &self.weights, tokenizer)
    }

    /// Step 1: sizes and counts, and what the loaded variant accepts; fills its defaults.
    fn check_inputs(&self, req: &GenerateRequest) -> Result<Plan> {
        req.validate()?;
        let variant = self.variant();
        let defaults = self.defaults();
        let lite = variant == Some(Variant::Lite);
        if lite {
            if let IdentityGuidance::Scale(g) = req.guidance_identity {
                return Err(Error::input(format!(
                    "Lynx-lite has no identity guidance (guidance_identity = {g}): it runs \
                     plain classifier-free guidance; leave it unset"
                )));
            }
            if let Some(s) = req.ref_scale {
                return Err(Error::input(format!(
                    "Lynx-lite has no Ref-adapter (ref_scale = {s}); leave it unset"
                )));
            }
        }
        let identity = req.identity_guidance(variant);
        Ok(Plan {
            frames: req.frames.unwrap_or(defaults.frames),
            batched: self.components.options().batched(),
            guidance: Guidance::new(req.guidance, identity),
            use_cfg: req.guidance > 1.0,
            ref_scale: req.ref_scale.unwrap_or(1.0),
            reference: variant == Some(Variant::Full) && req.subject.is_some(),
        })
    }

    /// Step 2: the prompt and the negative prompt, cleaned as the Wan pipeline cleans them,
    /// and, when Lynx's reference pass runs, its prompt (not cleaned): in one pass of the
    /// text encoder, whose weights are then free to go (the embeddings stay cached).
    fn encode_prompts(&self, req: &GenerateRequest, plan: &Plan) -> Result<Prompts> {
        let mut wanted = vec![
            (req.prompt.as_str(), true),
            (req.negative_prompt.as_str(), true),
        ];
        if plan.reference {
            wanted.push((REFERENCE_PROMPT, false));
        }
        let mut embeddings = self.components.text().encode_all(&wanted)?.into_iter();
        self.components.release();
        let mut next = || {
            embeddings.next().ok_or_else(|| {
                Error::input("the text encoder returned fewer embeddings than prompts")
            })
        };
        Ok(Prompts {
            prompt: next()?,
            negative: next()?,
            reference: if plan.reference { Some(next()?) } else { None },
        })
    }

    /// Step 3a: the subject's face embedding `[1, 1, E]` and, for Lynx full, the VAE
    /// latents of its aligned face and of the mid-grey image (the face models and the
    /// VAE run here, before the DiT is needed); for a photo also what the face models
    /// made of it.
    fn prepare_subject(
        &self,
        req: &GenerateRequest,
        plan: &Plan,
    ) -> Result<(Option<SubjectInputs>, Option<PreparedFace>)> {
        let Some(subject) = &req.subject else {
            return Ok((None, None));
        };
        if self.variant().is_none() {
            return Err(Error::input(
                "a subject was given but no adapters are loaded (pass the lynx_full/ or \
                 lynx_lite/ folder)",
            ));
        }
        let (embedding, aligned, prepared) = match subject {
            Subject::Prepared {
                aligned_face,
                embedding,
            } => (embedding.clone(), aligned_face.clone(), None),
            Subject::Photo { image, landmarks } => {
                let face = self.components.face()?.ok_or_else(|| {
                    Error::input(
                        "a photo subject needs the ArcFace checkpoint (PipelineOptions::arcface)",
                    )
                })?;
                let prepared = face.prepare(image, *landmarks)?;
                let crop = prepared.aligned_256_extended.clone();
                (prepared.embedding.clone(), Some(crop), Some(prepared))
            }
        };
        self.components.release();
        let d = embedding.len();
        let face = Tensor::<3>::from_data(
            TensorData::new(embedding, [1, 1, d]),
            (self.device(), DType::F32),
        );
        let latents = match (plan.reference, aligned) {
            (false, _) => None,
            (true, Some(aligned)) => Some(self.reference_latents(&aligned, &req.noise)?),
            (true, None) => {
                return Err(Error::input(
                    "Lynx (full) needs the aligned 256×256 face crop for its Ref-adapter: \
                     give a photo, or the crop with the embedding",
                ));
            }
        };
        Ok((Some(SubjectInputs { face, latents }), prepared))
    }

    /// The VAE latents of the aligned face and of the all-zero (mid-grey) image, each
    /// sampled with the noise the reference draws for it.
    fn reference_latents(
        &self,
        aligned: &RgbImage,
        noise: &NoiseSource,
    ) -> Result<(Tensor<5>, Tensor<5>)> {
        let (w, h) = aligned.dimensions();
        let (w, h) = (w as usize, h as usize);
        if w % 8 != 0 || h % 8 != 0 {
            return Err(Error::input(format!(
                "the aligned face is {w}×{h}; the VAE needs sides divisible by 8 (the crop is 256×256)"
            )));
        }
        let device = self.device();
        // [H, W, 3] u8 → [1, 3, 1, H, W] in [-1, 1]
        let pixels: Vec<f32> = aligned
            .as_raw()
            .iter()
            .map(|&v| v as f32 / 255.0 * 2.0 - 1.0)
            .collect();
        let image =
            Tensor::<3>::from_data(TensorData::new(pixels, [h, w, 3]), (device, DType::F32))
                .permute([2, 0, 1])
                .unsqueeze_dims::<5>(&[0, 2]);
        let vae = self.components.vae()?;
        let latents = |img: Tensor<5>| -> Result<Tensor<5>> {
            let dist = vae.encode(img)?;
            let eps = noise.ref_eps(dist.mean.dims(), vae.dtype(), device)?;
            vae.normalize(dist.sample(eps)?)
        };
        let cond = latents(image.clone())?;
        let uncond = latents(image.zeros_like())?;
        drop(vae);
        self.components.release();
        Ok((cond, uncond))
    }

    /// Step 3b: with the DiT, the reference pass over the subject's latents (Lynx full)
    /// and the adapters' per-block inputs, conditional and unconditional.
    fn condition(
        &self,
        dit: &WanTransformer,
        subject: Option<SubjectInputs>,
        ref_text: Option<&Tensor<3>>,
        req: &GenerateRequest,
        plan: &Plan,
    ) -> Result<Option<Conditions>> {
        let Some(subject) = subject else {
            return Ok(None);
        };
        let features = match (subject.latents, ref_text) {
            (Some((c, u)), Some(text)) => {
                let mut f = dit
                    .reference_features_many(&[(c, text.clone()), (u, text.clone())])?
                    .into_iter();
                match (f.next(), f.next()) {
                    (Some(c), Some(u)) => Some((c, u)),
                    _ => return Err(Error::input("the reference pass returned too few features")),
                }
            }
            _ => None,
        };
        let Some(adapters) = self.components.adapters(dit)? else {
            return Err(Error::input(
                "a subject was given but no adapters are loaded (pass the lynx_full/ or \
                 lynx_lite/ folder)",
            ));
        };
        let (d, want) = (subject.face.dims()[2], adapters.embedding_dim());
        if d != want {
            return Err(Error::input(format!(
                "the face embedding has {d} values, the ID-adapter takes {want}"
            )));
        }
        let features = features.as_ref().map(|(c, u)| (c.as_slice(), u.as_slice()));
        let conditions =
            adapters.conditions(subject.face, req.ip_scale, features, plan.ref_scale)?;
        drop(adapters);
        self.components.release();
        Ok(Some(conditions))
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

    /// Step 4: the sampler with its timesteps, and the initial latents
    /// `[1, C, (F − 1)/4 + 1, H/8, W/8]`.
    fn prepare_latents(
        &self,
        dit: &WanTransformer,
        req: &GenerateRequest,
        plan: &Plan,
    ) -> Result<(Box<dyn Scheduler>, Tensor<5>)> {
        let mut scheduler: Box<dyn Scheduler> = match req.sampler {
            SamplerKind::UniPc => Box::new(UniPcMultistep::new(self.scheduler.clone())?),
            SamplerKind::Euler => Box::new(FlowMatchEuler::from_config(&self.scheduler)?),
        };
        scheduler.set_timesteps(req.steps)?;
        let shape = [
            1,
            dit.config().in_channels,
            (plan.frames - 1) / 4 + 1,
            req.height / 8,
            req.width / 8,
        ];
        let latents = req.noise.initial_latents(shape, self.device())?;
        Ok((scheduler, latents))
    }

    /// Step 5: the guided denoising loop; returns the final latents, when `trace` is
    /// set the latents after every step, and the number of DiT passes run. The passes of a step run together
    /// ([`WanTransformer::forward_many`]), so streamed blocks are read once per step.
    #[allow(clippy::too_many_arguments)]
    fn denoise(
        &self,
        dit: &WanTransformer,
        req: &mut GenerateRequest,
        plan: &Plan,
        branches: &Branches,
        mut scheduler: Box<dyn Scheduler>,
        mut latents: Tensor<5>,
        trace: bool,
    ) -> Result<(Tensor<5>, Vec<Tensor<5>>, usize)> {
        let timesteps = scheduler.timesteps().to_vec();
        let total = timesteps.len();
        let mut steps = Vec::new();
        let mut passes = 0;
        for (step, &t) in timesteps.iter().enumerate() {
            if req
                .cancel
                .as_ref()
                .is_some_and(|c| c.load(Ordering::Relaxed))
            {
                return Err(Error::Cancelled { done: step, total });
            }
            let timestep = Tensor::<1>::from_data(
                TensorData::new(vec![t as f32], [1]),
                (self.device(), DType::F32),
            );
            let missing = || Error::input("the DiT returned fewer outputs than passes");
            let pred = if let Some(stacked) = &branches.stacked {
                // One pass over [cond, uncond, identity]; the text is stacked already.
                let k = stacked.text.dims()[0];
                let input = DitInput {
                    x: Tensor::cat(vec![latents.clone(); k], 0),
                    timestep: timestep.clone(),
                    text: stacked.text.clone(),
                    extras: &stacked.extras,
                };
                passes += 1;
                let out = dit
                    .forward_many(std::slice::from_ref(&input))?
                    .into_iter()
                    .next()
                    .ok_or_else(missing)?;
                drop(input);
                let part = |i: usize| out.clone().narrow(0, i, 1);
                let identity = (k == 3).then(|| part(2));
                plan.guidance.combine(part(0), part(1), identity)
            } else {
                let mut branches_run = vec![&branches.cond];
                if plan.use_cfg {
                    branches_run.push(&branches.uncond);
                    branches_run.extend(branches.identity.as_ref());
                }
                let inputs: Vec<DitInput<'_>> = branches_run
                    .iter()
                    .map(|b| DitInput {
                        x: latents.clone(),
                        timestep: timestep.clone(),
                        text: b.text.clone(),
                        extras: &b.extras,
                    })
                    .collect();
                passes += inputs.len();
                let mut out = dit.forward_many(&inputs)?.into_iter();
                drop(inputs);
                let cond = out.next().ok_or_else(missing)?;
                if plan.use_cfg {
                    let uncond = out.next().ok_or_else(missing)?;
                    let identity = out.next();
                    plan.guidance.combine(cond, uncond, identity)
                } else {
                    cond
                }
            };
            latents = scheduler.step(pred, t, latents)?;
            if trace {
                steps.push(latents.clone());
            }
            if let Some(cb) = req.on_step.as_mut() {
                cb(StepInfo {
                    step: step + 1,
                    total,
                    timestep: t,
                });
            }
        }
        Ok((latents, steps, passes))
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
