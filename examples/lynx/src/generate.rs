//! `lynx generate`: photo (or aligned face + embedding) + prompt → video.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use lynx_pipeline::lynx_arcface::{Landmarks, load_rgb};
use lynx_pipeline::{
    GenerateRequest, LynxPipeline, NoiseSource, PipelineOptions, SamplerKind, Subject,
    parse_device, parse_dtype,
};

use crate::bundled;

/// Settings the bundled tiny model is exercised with (its parity fixture's).
const TINY: (usize, usize, usize, usize) = (5, 32, 48, 4);

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Diffusers Wan2.1 folder (default: the tiny random-weight model bundled for tests).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Lynx adapter folder `lynx_full/` (default: the bundled tiny adapters).
    #[arg(long)]
    pub adapters: Option<PathBuf>,
    #[arg(
        long,
        default_value = "A person carves a pumpkin on a porch in the evening, smiling."
    )]
    pub prompt: String,
    /// Default: the Lynx release's negative prompt.
    #[arg(long)]
    pub negative_prompt: Option<String>,
    /// Photo of the subject: the face is detected (or taken from --landmarks) and aligned.
    #[arg(long, conflicts_with = "aligned_face", requires = "arcface")]
    pub face: Option<PathBuf>,
    /// ArcFace IR-SE checkpoint (facexlib `recognition_arcface_ir_se50.pth` or .safetensors).
    #[arg(long)]
    pub arcface: Option<PathBuf>,
    /// RetinaFace checkpoint (facexlib `detection_Resnet50_Final.pth`).
    #[arg(long, conflicts_with = "landmarks")]
    pub detector: Option<PathBuf>,
    /// JSON array of five [x, y] pixel points: left eye, right eye, nose, mouth corners.
    #[arg(long, requires = "face")]
    pub landmarks: Option<PathBuf>,
    /// An aligned face crop, used as given (default with the bundled model: its face).
    #[arg(long, requires = "face_embedding")]
    pub aligned_face: Option<PathBuf>,
    /// Safetensors file with key `embedding` (`[D]` or `[1, D]`), e.g. from `lynx embed-face`.
    #[arg(long, requires = "aligned_face")]
    pub face_embedding: Option<PathBuf>,
    /// Frames, 4k+1 (default 81; 5 with the bundled model).
    #[arg(long)]
    pub frames: Option<usize>,
    /// Multiple of 16 (default 480; 32 with the bundled model).
    #[arg(long)]
    pub height: Option<usize>,
    /// Multiple of 16 (default 832; 48 with the bundled model).
    #[arg(long)]
    pub width: Option<usize>,
    /// Denoising steps (default 50; 4 with the bundled model).
    #[arg(long)]
    pub steps: Option<usize>,
    #[arg(long, default_value_t = 5.0)]
    pub guidance: f64,
    /// Identity guidance g_i, or `none` for plain CFG.
    #[arg(long, default_value = "2.0")]
    pub guidance_identity: String,
    #[arg(long, default_value_t = 1.0)]
    pub ip_scale: f64,
    #[arg(long, default_value_t = 1.0)]
    pub ref_scale: f64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// cpu, wgpu or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Head width of the adapters' Perceiver Resampler (64 for the released lynx_full;
    /// 8 for the bundled tiny model, the default when --model is not given).
    #[arg(long)]
    pub resampler_dim_head: Option<usize>,
    /// Safetensors with key `latents` to start from instead of seeded noise.
    #[arg(long)]
    pub init_latents: Option<PathBuf>,
    /// Safetensors with key `eps`: the reference image's VAE sampling noise.
    #[arg(long)]
    pub ref_noise: Option<PathBuf>,
    #[arg(long, default_value = "unipc", value_parser = ["unipc", "euler"])]
    pub sampler: String,
    /// .mp4, .gif, .webp, .safetensors, or a folder for PNGs.
    #[arg(long, default_value = "lynx.mp4")]
    pub output: PathBuf,
    #[arg(long, default_value_t = 16)]
    pub fps: u32,
    /// Also write the latents after every step (keys `latents_after_step_i`).
    #[arg(long)]
    pub trace: Option<PathBuf>,
}

pub fn run(args: GenerateArgs) -> Result<()> {
    let bundled_model = args.model.is_none();
    let model = args
        .model
        .clone()
        .unwrap_or_else(|| bundled("Wan2.1-T2V-tiny-Diffusers"));
    let adapters = args
        .adapters
        .clone()
        .unwrap_or_else(|| bundled("lynx_full"));
    let device = parse_device(&args.device)?;
    let mut options = PipelineOptions::new(device.clone());
    options.dtype = parse_dtype(&args.dtype)?;
    options.arcface = args.arcface.clone();
    options.detector = args.detector.clone();
    options.resampler_dim_head = args
        .resampler_dim_head
        .unwrap_or(if args.adapters.is_none() { 8 } else { 64 });
    if args.face.is_some() && args.detector.is_none() && args.landmarks.is_none() {
        bail!("--face needs --detector FILE (RetinaFace .pth) or --landmarks JSON");
    }

    let (frames, height, width, steps) = if bundled_model {
        TINY
    } else {
        (81, 480, 832, 50)
    };
    let mut request = GenerateRequest::new(&args.prompt);
    if let Some(n) = &args.negative_prompt {
        request.negative_prompt = n.clone();
    }
    request.frames = args.frames.unwrap_or(frames);
    request.height = args.height.unwrap_or(height);
    request.width = args.width.unwrap_or(width);
    request.steps = args.steps.unwrap_or(steps);
    request.validate()?;
    request.guidance = args.guidance;
    request.guidance_identity =
        match args.guidance_identity.as_str() {
            "none" | "None" => None,
            v => Some(v.parse().with_context(|| {
                format!("--guidance-identity takes a number or `none`, not `{v}`")
            })?),
        };
    request.ip_scale = args.ip_scale;
    request.ref_scale = args.ref_scale;
    request.sampler = match args.sampler.as_str() {
        "euler" => SamplerKind::Euler,
        _ => SamplerKind::UniPc,
    };
    let mut noise = NoiseSource::seeded(args.seed);
    if let Some(p) = &args.init_latents {
        noise = noise.with_initial_latents(read_tensor::<5>(p, "latents", &device)?);
    }
    if let Some(p) = &args.ref_noise {
        noise = noise.with_ref_eps(read_tensor::<5>(p, "eps", &device)?);
    }
    request.noise = noise;

    eprintln!("loading {} and {}", model.display(), adapters.display());
    let start = Instant::now();
    let pipe = LynxPipeline::from_pretrained(&model, Some(&adapters), options)?;
    eprintln!("loaded in {:.1}s", start.elapsed().as_secs_f64());
    request.subject = Some(subject(&args, bundled_model)?);
    let bar = indicatif::ProgressBar::new(request.steps as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} steps, {elapsed} elapsed, ETA {eta}",
        )
        .expect("valid template"),
    );
    let on_step = bar.clone();
    request.on_step = Some(Box::new(move |_| on_step.inc(1)));
    let generated = if args.trace.is_some() {
        pipe.generate_with_trace(request)?
    } else {
        pipe.generate(request)?
    };
    bar.finish();
    if let Some(trace) = &args.trace {
        write_trace(trace, &generated.latents_per_step)?;
    }
    generated.video.save(&args.output, args.fps)?;
    eprintln!(
        "wrote {} ({} frames of {}×{}) in {:.1}s",
        args.output.display(),
        generated.video.frames,
        generated.video.width,
        generated.video.height,
        start.elapsed().as_secs_f64()
    );
    if bundled_model {
        eprintln!(
            "note: the bundled model has tiny random weights, so this video is noise; \
             real videos need Wan2.1-T2V-14B-Diffusers and lynx_full (see the README)"
        );
    }
    Ok(())
}

fn subject(args: &GenerateArgs, bundled_model: bool) -> Result<Subject> {
    if let Some(face) = &args.face {
        let landmarks = match &args.landmarks {
            Some(p) => Some(Landmarks::from_json_file(p)?),
            None => None,
        };
        return Ok(Subject::Photo {
            image: load_rgb(face)?,
            landmarks,
        });
    }
    let (aligned, embedding) = match (&args.aligned_face, &args.face_embedding) {
        (Some(a), Some(e)) => (a.clone(), e.clone()),
        _ if bundled_model => (
            bundled("components/pipeline_aligned_face.png"),
            bundled("cli/face_embedding.safetensors"),
        ),
        _ => bail!(
            "give the subject: --face PHOTO --arcface FILE (--detector FILE | --landmarks JSON), \
             or --aligned-face PNG --face-embedding FILE.safetensors"
        ),
    };
    Ok(Subject::Prepared {
        aligned_face: load_rgb(&aligned)?,
        embedding: read_vec(&embedding, "embedding")?,
    })
}

fn read_vec(path: &Path, key: &str) -> Result<Vec<f32>> {
    let ckpt = lynx_pipeline::lynx_core::Checkpoint::open(path)?;
    let shape = ckpt
        .shape(key)
        .with_context(|| format!("{} has no tensor `{key}`", path.display()))?
        .to_vec();
    let n: usize = shape.iter().product();
    if !(shape.len() == 1 || (shape.len() == 2 && shape[0] == 1)) {
        bail!(
            "{}: `{key}` has shape {shape:?}; expected [D] or [1, D]",
            path.display()
        );
    }
    let data = ckpt.read(key)?.convert_dtype(burn::tensor::DType::F32);
    let v = data
        .try_to_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("{}: `{key}`: {e:?}", path.display()))?;
    debug_assert_eq!(v.len(), n);
    Ok(v)
}

fn read_tensor<const D: usize>(
    path: &Path,
    key: &str,
    device: &burn::tensor::Device,
) -> Result<burn::tensor::Tensor<D>> {
    let ckpt = lynx_pipeline::lynx_core::Checkpoint::open(path)?;
    if !ckpt.contains(key) {
        bail!("{} has no tensor `{key}`", path.display());
    }
    Ok(ckpt.tensor::<D>(key, device, burn::tensor::DType::F32)?)
}

fn write_trace(path: &Path, latents: &[burn::tensor::Tensor<5>]) -> Result<()> {
    let mut data = Vec::new();
    for (i, l) in latents.iter().enumerate() {
        let v = l
            .to_data()
            .convert_dtype(burn::tensor::DType::F32)
            .try_to_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        data.push((format!("latents_after_step_{i}"), l.dims().to_vec(), bytes));
    }
    let views = data
        .iter()
        .map(|(k, s, b)| {
            Ok((
                k.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize_to_file(views, None, path)
        .with_context(|| format!("writing {}", path.display()))
}
