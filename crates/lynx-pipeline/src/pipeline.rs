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

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use burn::tensor::{DType, Device, Tensor, TensorData};
use image::RgbImage;
use lynx_adapters::{Conditions, LynxAdapters, ResamplerConfig, Variant};
use lynx_arcface::{DetectOptions, FaceAnalyzer, PreparedFace};
use lynx_core::device::to_host_f32;
use lynx_core::{Error, Result};
use lynx_dit::{BlockExtras, WanTransformer};
use lynx_sampler::{FlowMatchEuler, Guidance, Scheduler, SchedulerConfig, UniPcMultistep};
use lynx_text::TextEncoder;
use lynx_vae::WanVae;

use crate::export::Video;
use crate::folder::check_model_folder;
use crate::noise::NoiseSource;
use crate::request::{
    GenerateRequest, IdentityGuidance, REFERENCE_PROMPT, SamplerKind, StepInfo, Subject,
};

/// How to load a [`LynxPipeline`].
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Where everything runs.
    pub device: Device,
    /// dtype of the DiT, text encoder, adapters and VAE weights (norms stay f32;
    /// latents and the sampler are always f32).
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
}

impl PipelineOptions {
    /// f32 on `device`, no face models.
    pub fn new(device: Device) -> Self {
        Self {
            device,
            dtype: DType::F32,
            arcface: None,
            arcface_depths: None,
            detector: None,
            detect: DetectOptions::default(),
            resampler_dim_head: ResamplerConfig::LYNX_DIM_HEAD,
        }
    }
}

/// What a loaded model does by default, per variant (the reference's `infer.py` and
/// `infer_lite.py`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VariantDefaults {
    /// Frames per video: 81 (Lynx, plain Wan2.1), 121 (Lynx-lite).
    pub frames: usize,
    /// Frames per second of the written video: 16 (Lynx, Wan2.1), 24 (Lynx-lite).
    pub fps: u32,
    /// Identity guidance: 2.0 for Lynx; none for Lynx-lite and plain Wan2.1.
    pub guidance_identity: Option<f64>,
}

impl VariantDefaults {
    /// The defaults of `variant` (`None`: plain Wan2.1 text-to-video).
    pub fn of(variant: Option<Variant>) -> Self {
        match variant {
            Some(Variant::Full) => Self {
                frames: 81,
                fps: 16,
                guidance_identity: Some(2.0),
            },
            Some(Variant::Lite) => Self {
                frames: 121,
                fps: 24,
                guidance_identity: None,
            },
            None => Self {
                frames: 81,
                fps: 16,
                guidance_identity: None,
            },
        }
    }
}

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
}

/// Lynx: Wan2.1 + the adapters of `lynx_full/` or `lynx_lite/` (or none: plain Wan2.1).
pub struct LynxPipeline {
    text: TextEncoder,
    dit: WanTransformer,
    vae: WanVae,
    scheduler: SchedulerConfig,
    adapters: Option<LynxAdapters>,
    face: Option<FaceAnalyzer>,
    device: Device,
}

/// A request with the variant's defaults filled in and checked.
struct Plan {
    frames: usize,
    guidance: Guidance,
    /// Whether the text guidance runs at all (`g > 1`, as diffusers' pipelines decide).
    use_cfg: bool,
    ref_scale: f64,
}

/// The conditioning of one DiT pass.
struct Branch {
    text: Tensor<3>,
    extras: Vec<BlockExtras>,
}

/// The passes of one step: `cond` = (prompt, subject), `uncond` = (negative prompt, no
/// subject), `identity` = (negative prompt, subject), the last for Lynx's identity
/// guidance only.
struct Branches {
    cond: Branch,
    uncond: Branch,
    identity: Option<Branch>,
}

impl LynxPipeline {
    /// Loads tokenizer, text encoder, DiT, VAE and scheduler config from a diffusers Wan2.1
    /// folder (`base_dir`, checked first against its `model_index.json`, see
    /// [`crate::folder::ModelIndex`]), and the adapters from `adapter_dir`: `lynx_full/` or
    /// `lynx_lite/`, told apart by their files ([`Variant::detect`]). Without
    /// `adapter_dir` the pipeline is plain Wan2.1 text-to-video.
    pub fn from_pretrained(
        base_dir: impl AsRef<Path>,
        adapter_dir: Option<&Path>,
        options: PipelineOptions,
    ) -> Result<Self> {
        let base = base_dir.as_ref();
        check_model_folder(base)?;
        let (device, dtype) = (&options.device, options.dtype);
        lynx_core::device::check_dtype(device, dtype)?;
        let variant = adapter_dir.map(Variant::detect).transpose()?;
        let scheduler = SchedulerConfig::load(base.join("scheduler"))?;
        scheduler.check_unipc()?;
        let text = TextEncoder::from_pretrained(
            base.join("text_encoder"),
            base.join("tokenizer"),
            device,
            dtype,
        )?;
        let dit = WanTransformer::from_pretrained(base.join("transformer"), device, dtype)?;
        let vae = WanVae::from_pretrained(base.join("vae"), device, dtype)?;
        let adapters = match (adapter_dir, variant) {
            (Some(dir), Some(_)) => Some(LynxAdapters::from_dir(
                dir,
                &dit,
                options.resampler_dim_head,
                device,
                dtype,
            )?),
            _ => None,
        };
        let face = match &options.arcface {
            None if options.detector.is_some() => {
                return Err(Error::input(
                    "a face detector was given without an ArcFace checkpoint; give both",
                ));
            }
            None => None,
            Some(arcface) => {
                let depths = options.arcface_depths.as_deref();
                let arcface = lynx_arcface::load_arcface(arcface, device, depths)?;
                let detector = match &options.detector {
                    Some(d) => Some(lynx_arcface::load_retinaface(d, device)?),
                    None => None,
                };
                let mut analyzer = FaceAnalyzer::new(arcface, detector);
                analyzer.options = options.detect;
                Some(analyzer)
            }
        };
        Ok(Self {
            text,
            dit,
            vae,
            scheduler,
            adapters,
            face,
            device: device.clone(),
        })
    }

    /// The device everything runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The loaded Lynx variant; `None` for plain Wan2.1.
    pub fn variant(&self) -> Option<Variant> {
        self.adapters.as_ref().map(LynxAdapters::variant)
    }

    /// The defaults of the loaded variant.
    pub fn defaults(&self) -> VariantDefaults {
        VariantDefaults::of(self.variant())
    }

    /// The adapters, if loaded.
    pub fn adapters(&self) -> Option<&LynxAdapters> {
        self.adapters.as_ref()
    }

    /// The VAE (e.g. to turn on tiling with [`WanVae::set_tiling`]).
    pub fn vae_mut(&mut self) -> &mut WanVae {
        &mut self.vae
    }

    /// The face models, if loaded.
    pub fn face_analyzer(&self) -> Option<&FaceAnalyzer> {
        self.face.as_ref()
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
        let (prompt, negative) = self.encode_prompts(&req)?;
        let (conditions, face) = self.prepare_subject(&req, &plan)?;
        let branches = self.branches(prompt, negative, conditions, &plan);
        let (scheduler, latents) = self.prepare_latents(&req, &plan)?;
        let (latents, steps) =
            self.denoise(&mut req, &plan, &branches, scheduler, latents, trace)?;
        let frames = self.decode(latents)?;
        let [f, h, w, _] = frames.dims();
        Ok(Generated {
            video: Video {
                frames: f,
                height: h,
                width: w,
                data: to_host_f32(frames.clone(), "the decoded frames")?,
            },
            frames,
            latents_per_step: steps,
            face,
        })
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
        let identity = match req.guidance_identity {
            IdentityGuidance::Default => defaults.guidance_identity,
            IdentityGuidance::Off => None,
            IdentityGuidance::Scale(g) => Some(g),
        }
        // Without a subject the identity pass would repeat the unconditional one.
        .filter(|_| req.subject.is_some());
        Ok(Plan {
            frames: req.frames.unwrap_or(defaults.frames),
            guidance: Guidance::new(req.guidance, identity),
            use_cfg: req.guidance > 1.0,
            ref_scale: req.ref_scale.unwrap_or(1.0),
        })
    }

    /// Step 2: the prompt and the negative prompt, cleaned as the Wan pipeline cleans them.
    fn encode_prompts(&self, req: &GenerateRequest) -> Result<(Tensor<3>, Tensor<3>)> {
        Ok((
            self.text.encode(&req.prompt, true)?,
            self.text.encode(&req.negative_prompt, true)?,
        ))
    }

    /// Step 3: the adapters' per-block inputs for the subject, conditional and
    /// unconditional, and for a photo what the face models made of it.
    fn prepare_subject(
        &self,
        req: &GenerateRequest,
        plan: &Plan,
    ) -> Result<(Option<Conditions>, Option<PreparedFace>)> {
        let Some(subject) = &req.subject else {
            return Ok((None, None));
        };
        let adapters = self.adapters.as_ref().ok_or_else(|| {
            Error::input(
                "a subject was given but no adapters are loaded (pass the lynx_full/ or \
                 lynx_lite/ folder)",
            )
        })?;
        let needs_crop = adapters.uses_reference();
        let (embedding, aligned, prepared) = match subject {
            Subject::Prepared {
                aligned_face,
                embedding,
            } => (embedding.clone(), aligned_face.clone(), None),
            Subject::Photo { image, landmarks } => {
                let face = self.face.as_ref().ok_or_else(|| {
                    Error::input(
                        "a photo subject needs the ArcFace checkpoint (PipelineOptions::arcface)",
                    )
                })?;
                let prepared = face.prepare(image, *landmarks)?;
                let crop = prepared.aligned_256_extended.clone();
                (prepared.embedding.clone(), Some(crop), Some(prepared))
            }
        };
        let (d, want) = (embedding.len(), adapters.embedding_dim());
        if d != want {
            return Err(Error::input(format!(
                "the face embedding has {d} values, the ID-adapter takes {want}"
            )));
        }
        let face = Tensor::<3>::from_data(
            TensorData::new(embedding, [1, 1, d]),
            (&self.device, DType::F32),
        );
        let features = match (needs_crop, aligned) {
            (false, _) => None,
            (true, Some(aligned)) => Some(self.reference_features(&aligned, &req.noise)?),
            (true, None) => {
                return Err(Error::input(
                    "Lynx (full) needs the aligned 256×256 face crop for its Ref-adapter: \
                     give a photo, or the crop with the embedding",
                ));
            }
        };
        let features = features.as_ref().map(|(c, u)| (c.as_slice(), u.as_slice()));
        let conditions = adapters.conditions(face, req.ip_scale, features, plan.ref_scale)?;
        Ok((Some(conditions), prepared))
    }

    /// The reference pass for the aligned face and for the all-zero (mid-grey) image,
    /// each with the VAE sampling noise the reference draws for it.
    fn reference_features(
        &self,
        aligned: &RgbImage,
        noise: &NoiseSource,
    ) -> Result<(Vec<Tensor<3>>, Vec<Tensor<3>>)> {
        let (w, h) = aligned.dimensions();
        let (w, h) = (w as usize, h as usize);
        if w % 8 != 0 || h % 8 != 0 {
            return Err(Error::input(format!(
                "the aligned face is {w}×{h}; the VAE needs sides divisible by 8 (the crop is 256×256)"
            )));
        }
        // [H, W, 3] u8 → [1, 3, 1, H, W] in [-1, 1]
        let pixels: Vec<f32> = aligned
            .as_raw()
            .iter()
            .map(|&v| v as f32 / 255.0 * 2.0 - 1.0)
            .collect();
        let image = Tensor::<3>::from_data(
            TensorData::new(pixels, [h, w, 3]),
            (&self.device, DType::F32),
        )
        .permute([2, 0, 1])
        .unsqueeze_dims::<5>(&[0, 2]);
        let ref_text = self.text.encode(REFERENCE_PROMPT, false)?;
        let features = |img: Tensor<5>| -> Result<Vec<Tensor<3>>> {
            let dist = self.vae.encode(img)?;
            let eps = noise.ref_eps(dist.mean.dims(), self.vae.dtype(), &self.device)?;
            let z = self.vae.normalize(dist.sample(eps)?)?;
            self.dit.reference_features(z, ref_text.clone())
        };
        let cond = features(image.clone())?;
        let uncond = features(image.zeros_like())?;
        Ok((cond, uncond))
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
        Branches {
            cond: Branch {
                text: prompt,
                extras: cond,
            },
            uncond: Branch {
                text: negative,
                extras: uncond,
            },
            identity,
        }
    }

    /// Step 4: the sampler with its timesteps, and the initial latents
    /// `[1, C, (F − 1)/4 + 1, H/8, W/8]`.
    fn prepare_latents(
        &self,
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
            self.dit.config().in_channels,
            (plan.frames - 1) / 4 + 1,
            req.height / 8,
            req.width / 8,
        ];
        let latents = req.noise.initial_latents(shape, &self.device)?;
        Ok((scheduler, latents))
    }

    /// Step 5: the guided denoising loop; returns the final latents and, when `trace` is
    /// set, the latents after every step.
    fn denoise(
        &self,
        req: &mut GenerateRequest,
        plan: &Plan,
        branches: &Branches,
        mut scheduler: Box<dyn Scheduler>,
        mut latents: Tensor<5>,
        trace: bool,
    ) -> Result<(Tensor<5>, Vec<Tensor<5>>)> {
        let timesteps = scheduler.timesteps().to_vec();
        let total = timesteps.len();
        let mut steps = Vec::new();
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
                (&self.device, DType::F32),
            );
            let pass = |b: &Branch| {
                self.dit
                    .forward(latents.clone(), timestep.clone(), b.text.clone(), &b.extras)
            };
            let cond = pass(&branches.cond)?;
            let pred = if plan.use_cfg {
                let uncond = pass(&branches.uncond)?;
                let identity = branches.identity.as_ref().map(pass).transpose()?;
                plan.guidance.combine(cond, uncond, identity)
            } else {
                cond
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
        Ok((latents, steps))
    }

    /// Step 6: latents → frames `[F, H, W, 3]` in `[0, 1]`.
    fn decode(&self, latents: Tensor<5>) -> Result<Tensor<4>> {
        let z = self.vae.denormalize(latents)?;
        let video = self.vae.decode(z)?.clamp(-1.0, 1.0) * 0.5 + 0.5;
        // [1, 3, F, H, W] → [F, H, W, 3]
        Ok(video.squeeze_dim::<4>(0).permute([1, 2, 3, 0]))
    }
}
