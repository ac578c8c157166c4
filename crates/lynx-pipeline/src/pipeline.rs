//! `LynxPipeline`: the reference's `LynxWanPipeline` + `LynxWanInfer.generate_t2v`
//! (bytedance/lynx `modules/full/lynx_pipeline.py`, `lynx_infer.py`; diffusers 0.33.1
//! `pipelines/wan/pipeline_wan.py`).
//!
//! Per video: text embeddings (cached), identity tokens and reference features for the
//! conditional and unconditional branches (once), then per step 2 or 3 DiT passes whose
//! predictions guidance combines, a sampler step, and finally the VAE decode.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use burn::tensor::{DType, Device, Tensor, TensorData};
use image::RgbImage;
use lynx_adapters::{IdAdapter, RefAdapter, ResamplerConfig, block_extras};
use lynx_arcface::FaceAnalyzer;
use lynx_core::{Error, Result};
use lynx_dit::{BlockExtras, WanTransformer};
use lynx_sampler::{FlowMatchEuler, Guidance, Scheduler, SchedulerConfig, UniPcMultistep};
use lynx_text::TextEncoder;
use lynx_vae::WanVae;

use crate::export::Video;
use crate::request::{GenerateRequest, REFERENCE_PROMPT, SamplerKind, StepInfo, Subject};

/// How to load a [`LynxPipeline`].
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    pub device: Device,
    /// dtype of the DiT, text encoder, adapters and VAE weights (norms stay f32;
    /// latents and the sampler are always f32).
    pub dtype: DType,
    /// ArcFace IR-SE checkpoint (`.pth` or `.safetensors`), needed for photo subjects.
    pub arcface: Option<PathBuf>,
    /// RetinaFace checkpoint, needed for photos without given landmarks.
    pub detector: Option<PathBuf>,
    /// Head width of the Perceiver Resampler, which its file does not record
    /// ([`ResamplerConfig::LYNX_DIM_HEAD`] = 64 for the released `lynx_full/`).
    pub resampler_dim_head: usize,
}

impl PipelineOptions {
    /// f32 on `device`, no face models.
    pub fn new(device: Device) -> Self {
        Self {
            device,
            dtype: DType::F32,
            arcface: None,
            detector: None,
            resampler_dim_head: ResamplerConfig::LYNX_DIM_HEAD,
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
}

/// Lynx: Wan2.1 + ID-adapter + Ref-adapter.
pub struct LynxPipeline {
    text: TextEncoder,
    dit: WanTransformer,
    vae: WanVae,
    scheduler: SchedulerConfig,
    id: Option<IdAdapter>,
    reference: Option<RefAdapter>,
    face: Option<FaceAnalyzer>,
    device: Device,
}

/// Conditioning of one DiT pass.
struct Branch {
    text: Tensor<3>,
    extras: Vec<BlockExtras>,
}

impl LynxPipeline {
    /// Loads tokenizer, text encoder, DiT, VAE and scheduler config from a diffusers Wan2.1
    /// folder (`base_dir`), and the adapters from a `lynx_full/` folder: the ID-adapter
    /// (`resampler.safetensors` + `ip_layers.safetensors`) and, when
    /// `ref_layers.safetensors` is present, the Ref-adapter. Without `adapter_dir` the
    /// pipeline is plain Wan2.1 text-to-video.
    pub fn from_pretrained(
        base_dir: impl AsRef<Path>,
        adapter_dir: Option<&Path>,
        options: PipelineOptions,
    ) -> Result<Self> {
        let base = base_dir.as_ref();
        if !base.is_dir() {
            return Err(Error::MissingFile {
                path: base.to_path_buf(),
                hint: "expected a diffusers Wan2.1 folder (with transformer/, vae/, \
                       text_encoder/, tokenizer/, scheduler/)"
                    .into(),
            });
        }
        for part in [
            "transformer",
            "vae",
            "text_encoder",
            "tokenizer",
            "scheduler",
        ] {
            if !base.join(part).is_dir() {
                return Err(Error::MissingFile {
                    path: base.join(part),
                    hint: format!(
                        "{} is not a complete diffusers Wan2.1 folder",
                        base.display()
                    ),
                });
            }
        }
        let (device, dtype) = (&options.device, options.dtype);
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
        let (id, reference) = match adapter_dir {
            None => (None, None),
            Some(dir) => {
                if !dir.is_dir() {
                    return Err(Error::MissingFile {
                        path: dir.to_path_buf(),
                        hint: "expected the lynx_full/ adapter folder".into(),
                    });
                }
                let id = IdAdapter::from_dir(dir, &dit, options.resampler_dim_head, device, dtype)?;
                let reference = if dir.join("ref_layers.safetensors").is_file() {
                    Some(RefAdapter::from_dir(dir, &dit, device, dtype)?)
                } else {
                    None
                };
                (Some(id), reference)
            }
        };
        let face = match &options.arcface {
            None => {
                if options.detector.is_some() {
                    return Err(Error::input(
                        "a face detector was given without an ArcFace checkpoint; give both",
                    ));
                }
                None
            }
            Some(arcface) => {
                let arcface = lynx_arcface::load_arcface(arcface, device, None)?;
                let detector = match &options.detector {
                    Some(d) => Some(lynx_arcface::load_retinaface(d, device)?),
                    None => None,
                };
                Some(FaceAnalyzer::new(arcface, detector))
            }
        };
        Ok(Self {
            text,
            dit,
            vae,
            scheduler,
            id,
            reference,
            face,
            device: device.clone(),
        })
    }

    /// The device everything runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Whether the ID-adapter / Ref-adapter are loaded.
    pub fn adapters(&self) -> (bool, bool) {
        (self.id.is_some(), self.reference.is_some())
    }

    /// The VAE (e.g. to turn on tiling with [`WanVae::set_tiling`]).
    pub fn vae_mut(&mut self) -> &mut WanVae {
        &mut self.vae
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
        req.validate()?;
        let device = &self.device;
        let cfg = self.dit.config();

        // Text: the prompts are cleaned as the Wan pipeline cleans them.
        let prompt = self.text.encode(&req.prompt, true)?;
        let negative = self.text.encode(&req.negative_prompt, true)?;

        // Subject → identity tokens and reference features, once per video.
        let (cond_extras, uncond_extras) = match &req.subject {
            None => (Vec::new(), Vec::new()),
            Some(subject) => self.subject_extras(subject, &req)?,
        };
        let c = Branch {
            text: prompt,
            extras: cond_extras.clone(),
        };
        let u = Branch {
            text: negative.clone(),
            extras: uncond_extras,
        };
        let i = Branch {
            text: negative,
            extras: cond_extras,
        };

        let guidance = Guidance::new(req.guidance, req.guidance_identity);
        let use_cfg = req.guidance > 1.0;
        let mut scheduler: Box<dyn Scheduler> = match req.sampler {
            SamplerKind::UniPc => Box::new(UniPcMultistep::new(self.scheduler.clone())?),
            SamplerKind::Euler => Box::new(FlowMatchEuler::from_config(&self.scheduler)?),
        };
        scheduler.set_timesteps(req.steps)?;
        let timesteps = scheduler.timesteps().to_vec();

        let shape = [
            1,
            cfg.in_channels,
            (req.frames - 1) / 4 + 1,
            req.height / 8,
            req.width / 8,
        ];
        let mut latents = req.noise.initial_latents(shape, device)?;
        let mut trace_latents = Vec::new();
        for (step, &t) in timesteps.iter().enumerate() {
            if req
                .cancel
                .as_ref()
                .is_some_and(|c| c.load(Ordering::Relaxed))
            {
                return Err(Error::input(format!(
                    "cancelled after {step} of {} steps",
                    timesteps.len()
                )));
            }
            let timestep =
                Tensor::<1>::from_data(TensorData::new(vec![t as f32], [1]), (device, DType::F32));
            let pass = |b: &Branch| {
                self.dit
                    .forward(latents.clone(), timestep.clone(), b.text.clone(), &b.extras)
            };
            let cond = pass(&c)?;
            let pred = if !use_cfg {
                cond
            } else {
                let uncond = pass(&u)?;
                let identity = match guidance {
                    Guidance::Lynx { .. } => Some(pass(&i)?),
                    Guidance::Cfg { .. } => None,
                };
                guidance.combine(cond, uncond, identity)
            };
            latents = scheduler.step(pred, t, latents)?;
            if trace {
                trace_latents.push(latents.clone());
            }
            if let Some(cb) = req.on_step.as_mut() {
                cb(StepInfo {
                    step: step + 1,
                    total: timesteps.len(),
                    timestep: t,
                });
            }
        }

        let frames = self.decode(latents)?;
        let [f, h, w, _] = frames.dims();
        let data = frames
            .to_data()
            .convert_dtype(DType::F32)
            .try_to_vec::<f32>()
            .map_err(|e| Error::input(format!("reading frames back: {e:?}")))?;
        Ok(Generated {
            video: Video {
                frames: f,
                height: h,
                width: w,
                data,
            },
            frames,
            latents_per_step: trace_latents,
        })
    }

    /// Latents → frames `[F, H, W, 3]` in `[0, 1]`.
    fn decode(&self, latents: Tensor<5>) -> Result<Tensor<4>> {
        let z = self.vae.denormalize(latents)?;
        let video = self.vae.decode(z)?.clamp(-1.0, 1.0) * 0.5 + 0.5;
        // [1, 3, F, H, W] → [F, H, W, 3]
        Ok(video.squeeze_dim::<4>(0).permute([1, 2, 3, 0]))
    }

    /// Per-block adapter inputs for the conditional and the unconditional branch.
    fn subject_extras(
        &self,
        subject: &Subject,
        req: &GenerateRequest,
    ) -> Result<(Vec<BlockExtras>, Vec<BlockExtras>)> {
        if self.id.is_none() && self.reference.is_none() {
            return Err(Error::input(
                "a subject was given but no adapters are loaded (pass the lynx_full/ folder)",
            ));
        }
        let (aligned, embedding) = match subject {
            Subject::Prepared {
                aligned_face,
                embedding,
            } => (aligned_face.clone(), embedding.clone()),
            Subject::Photo { image, landmarks } => {
                let face = self.face.as_ref().ok_or_else(|| {
                    Error::input(
                        "a photo subject needs the ArcFace checkpoint (PipelineOptions::arcface)",
                    )
                })?;
                let prepared = face.prepare(image, *landmarks)?;
                (prepared.aligned_256_extended, prepared.embedding)
            }
        };
        let (id_c, id_u) = match &self.id {
            None => (None, None),
            Some(id) => {
                let d = embedding.len();
                let want = id.resampler.config.embedding_dim;
                if d != want {
                    return Err(Error::input(format!(
                        "the face embedding has {d} values, the ID-adapter takes {want}"
                    )));
                }
                let e = Tensor::<3>::from_data(
                    TensorData::new(embedding, [1, 1, d]),
                    (&self.device, DType::F32),
                );
                let tokens = id.tokens(e.clone())?;
                let tokens_u = id.tokens(e.zeros_like())?;
                (
                    Some(id.block_kv(&tokens, req.ip_scale)?),
                    Some(id.block_kv(&tokens_u, req.ip_scale)?),
                )
            }
        };
        let (ref_c, ref_u) = match &self.reference {
            None => (None, None),
            Some(reference) => {
                let (fc, fu) = self.reference_features(&aligned, req)?;
                (
                    Some(reference.block_kv(&fc, req.ref_scale)?),
                    Some(reference.block_kv(&fu, req.ref_scale)?),
                )
            }
        };
        Ok((block_extras(id_c, ref_c)?, block_extras(id_u, ref_u)?))
    }

    /// The reference pass for the aligned face and for the all-zero (mid-grey) image,
    /// with the same VAE sampling noise.
    fn reference_features(
        &self,
        aligned: &RgbImage,
        req: &GenerateRequest,
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
            let eps = req.noise.ref_eps(dist.mean.dims(), &self.device)?;
            let z = self.vae.normalize(dist.sample(eps)?)?;
            self.dit.reference_features(z, ref_text.clone())
        };
        let cond = features(image.clone())?;
        let uncond = features(image.zeros_like())?;
        Ok((cond, uncond))
    }
}
