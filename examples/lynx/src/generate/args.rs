//! `lynx generate`'s flags.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use lynx_pipeline::{DEFAULT_GUIDANCE, DEFAULT_IP_SCALE, DEFAULT_SEED, Offload, SamplerKind};

use crate::face::FaceFlags;

/// Model dtypes, as `--dtype` spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DtypeArg {
    /// 32-bit float.
    #[value(alias = "fp32", alias = "float32")]
    F32,
    /// bfloat16 (CPU and CUDA; wgpu has none).
    #[value(alias = "bfloat16")]
    Bf16,
    /// float16.
    #[value(alias = "fp16", alias = "float16")]
    F16,
}

impl From<DtypeArg> for burn::tensor::DType {
    fn from(d: DtypeArg) -> Self {
        match d {
            DtypeArg::F32 => Self::F32,
            DtypeArg::Bf16 => Self::BF16,
            DtypeArg::F16 => Self::F16,
        }
    }
}

/// Offload settings, as `--offload` spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OffloadArg {
    /// Everything on the device.
    None,
    /// Each component on the device only while it runs.
    Model,
    /// As `model`, and blocks streamed from the checkpoint.
    Blocks,
}

impl From<OffloadArg> for Offload {
    fn from(o: OffloadArg) -> Self {
        match o {
            OffloadArg::None => Self::None,
            OffloadArg::Model => Self::Model,
            OffloadArg::Blocks => Self::Blocks,
        }
    }
}

/// Samplers, as `--sampler` spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SamplerArg {
    /// UniPC multistep (the reference's).
    Unipc,
    /// First-order flow Euler.
    Euler,
}

impl From<SamplerArg> for SamplerKind {
    fn from(s: SamplerArg) -> Self {
        match s {
            SamplerArg::Unipc => Self::UniPc,
            SamplerArg::Euler => Self::Euler,
        }
    }
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Diffusers Wan2.1 folder, or Hub repo id (`Wan-AI/Wan2.1-T2V-14B-Diffusers`,
    /// `org/name@revision`) fetched into the Hugging Face cache [default: the tiny
    /// random-weight model bundled for tests; none when --transformer, --text-encoder
    /// and --vae are all given: then the DiT's config is read off its weights and the
    /// UMT5-XXL, VAE, tokenizer (inside the text encoder file) and sampler are the
    /// released ones].
    #[arg(long, visible_alias = "base_model_path", help_heading = "Model")]
    pub model: Option<String>,
    /// Lynx adapter folder (`lynx_full/` or `lynx_lite/`), or Hub repo id (`ByteDance/lynx`)
    /// [default: the bundled tiny lynx_full; needed with weight files and no --model].
    #[arg(long, visible_alias = "adapter_path", help_heading = "Model")]
    pub adapters: Option<String>,
    /// The adapter folder inside a Hub repo (or a folder holding both): `lynx_full` or
    /// `lynx_lite` [default: lynx_full for a repo].
    #[arg(long, help_heading = "Model")]
    pub adapters_subfolder: Option<String>,
    /// A LoRA to fuse into the DiT as it loads, `FILE[:STRENGTH]` (strength 1 by
    /// default): a path, a Hub file `org/name/file.safetensors` or a URL. Repeat to
    /// stack LoRAs (diffusers/PEFT or native Wan/ComfyUI files, e.g. lightx2v's).
    #[arg(long, value_name = "FILE[:STRENGTH]", help_heading = "Model")]
    pub lora: Vec<String>,
    /// Skip LoRA keys the model has no place for (printing them) instead of refusing
    /// the file.
    #[arg(long, help_heading = "Model")]
    pub lora_skip_unmatched: bool,
    /// DiT weights replacing `--model`'s: a file (native Wan or ComfyUI keys, bf16, fp8,
    /// scaled fp8, GGUF — read from its content), a URL, or a Hub file
    /// `org/name/path/in/repo`. fp8 and GGUF weights stay encoded in memory.
    #[arg(long, help_heading = "Model")]
    pub transformer: Option<String>,
    /// Text encoder weights replacing `--model`'s (e.g. ComfyUI's
    /// `umt5_xxl_fp8_e4m3fn_scaled.safetensors`): a file, a URL or a Hub file.
    #[arg(long, help_heading = "Model")]
    pub text_encoder: Option<String>,
    /// VAE weights replacing `--model`'s (e.g. `Wan2.1_VAE.pth`, ComfyUI's
    /// `wan_2.1_vae.safetensors`): a file, a URL or a Hub file.
    #[arg(long, help_heading = "Model")]
    pub vae: Option<String>,
    /// Head width of the adapters' Perceiver Resampler (64 for the released adapters;
    /// 8 for the bundled tiny ones) [default: 64, or 8 with the bundled model].
    #[arg(long, help_heading = "Model")]
    pub resampler_dim_head: Option<usize>,

    /// What the video shows.
    #[arg(
        long,
        default_value = "A person carves a pumpkin on a porch in the evening, smiling.",
        help_heading = "Prompt"
    )]
    pub prompt: String,
    /// Read the prompt from this text file (as the reference's prompt files).
    #[arg(long, help_heading = "Prompt")]
    pub prompt_file: Option<PathBuf>,
    /// What it should not show [default: the Lynx release's negative prompt].
    #[arg(long, help_heading = "Prompt")]
    pub negative_prompt: Option<String>,

    /// Photo of the subject: the face is detected (or taken from --landmarks) and aligned.
    #[arg(long, visible_alias = "subject_image", conflicts_with_all = ["aligned_face", "face_embedding"], requires = "arcface", help_heading = "Subject")]
    pub face: Option<PathBuf>,
    /// ArcFace IR-SE checkpoint (facexlib `recognition_arcface_ir_se50.pth` or
    /// .safetensors), or its URL (fetched once into the Hugging Face cache folder).
    #[arg(long, help_heading = "Subject")]
    pub arcface: Option<PathBuf>,
    /// RetinaFace checkpoint (facexlib `detection_Resnet50_Final.pth`), or its URL.
    #[arg(long, conflicts_with = "landmarks", help_heading = "Subject")]
    pub detector: Option<PathBuf>,
    #[command(flatten, next_help_heading = "Subject")]
    pub face_flags: FaceFlags,
    /// JSON array of five [x, y] pixel points: left eye, right eye, nose, mouth corners.
    #[arg(long, requires = "face", help_heading = "Subject")]
    pub landmarks: Option<PathBuf>,
    /// The aligned 256×256 extended face crop, used as given (Lynx full needs it with
    /// --face-embedding; Lynx-lite does not).
    #[arg(long, requires = "face_embedding", help_heading = "Subject")]
    pub aligned_face: Option<PathBuf>,
    /// Safetensors file with key `embedding` (`[D]` or `[1, D]`), e.g. from `lynx embed-face`.
    #[arg(long, help_heading = "Subject")]
    pub face_embedding: Option<PathBuf>,

    /// Frames, 4k+1 [default: the variant's, 81 for Lynx, 121 for Lynx-lite; 5 with the
    /// bundled model].
    #[arg(long, visible_alias = "num_frames", help_heading = "Video")]
    pub frames: Option<usize>,
    /// Multiple of 16 [default: 480; 32 with the bundled model].
    #[arg(long, help_heading = "Video")]
    pub height: Option<usize>,
    /// Multiple of 16 [default: 832; 48 with the bundled model].
    #[arg(long, help_heading = "Video")]
    pub width: Option<usize>,
    /// Denoising steps [default: 50; 4 with the bundled model].
    #[arg(long, visible_alias = "num_inference_steps", help_heading = "Video")]
    pub steps: Option<usize>,
    /// Frames per second of the video [default: the variant's, 16 for Lynx, 24 for
    /// Lynx-lite].
    #[arg(long, help_heading = "Video")]
    pub fps: Option<u32>,
    /// Seed of the noise, drawn as the reference draws it (PyTorch's CPU generator), so
    /// the same seed gives the reference's noise; negative (-1): a random seed, printed.
    #[arg(long, default_value_t = DEFAULT_SEED as i64, allow_negative_numbers = true, help_heading = "Video")]
    pub seed: i64,
    /// The sampler.
    #[arg(long, value_enum, default_value_t = SamplerArg::Unipc, help_heading = "Video")]
    pub sampler: SamplerArg,
    /// Flow shift of the sampler's schedule [default: the model's scheduler config].
    #[arg(long, visible_alias = "flow_shift", help_heading = "Video")]
    pub shift: Option<f64>,
    /// The fast path of step-distillation LoRAs (e.g. lightx2v's): 4 steps, guidance 1
    /// (one DiT pass per step, no negative prompt), shift 5; --steps and --shift still
    /// apply.
    #[arg(long, conflicts_with = "guidance", help_heading = "Video")]
    pub fast: bool,
    /// Safetensors with key `latents` to start from instead of seeded noise.
    #[arg(long, help_heading = "Video")]
    pub init_latents: Option<PathBuf>,
    /// Safetensors with key `eps`: the reference image's VAE sampling noise.
    #[arg(long, help_heading = "Video")]
    pub ref_noise: Option<PathBuf>,

    /// Text guidance g.
    #[arg(long, visible_alias = "guidance_scale", default_value_t = DEFAULT_GUIDANCE, help_heading = "Guidance")]
    pub guidance: f64,
    /// Identity guidance g_i, or `none` for plain CFG [default: 2 for Lynx; Lynx-lite has
    /// none].
    #[arg(long, visible_alias = "guidance_scale_i", help_heading = "Guidance")]
    pub guidance_identity: Option<String>,
    /// Weight of the ID-adapter (0: no identity).
    #[arg(long, default_value_t = DEFAULT_IP_SCALE, help_heading = "Guidance")]
    pub ip_scale: f64,
    /// Weight of the Ref-adapter [default: 1; Lynx full only].
    #[arg(long, help_heading = "Guidance")]
    pub ref_scale: Option<f64>,

    /// `auto` (a GPU the build supports and the machine has, else the CPU; printed, with
    /// why CUDA was passed over in a `cuda` build), cpu, wgpu or cuda:N.
    #[arg(long, default_value = "auto", help_heading = "Runtime")]
    pub device: String,
    /// Model dtype.
    #[arg(long, visible_alias = "torch_dtype", value_enum, default_value_t = DtypeArg::F32, help_heading = "Runtime")]
    pub dtype: DtypeArg,
    /// Where weights live between uses: `none` (all on the device), `model` (each
    /// component loaded when it runs), `blocks` (also the DiT's and text encoder's blocks
    /// read one at a time from the checkpoint).
    #[arg(long, value_enum, default_value_t = OffloadArg::None, help_heading = "Runtime")]
    pub offload: OffloadArg,
    /// Memory the run may use, in GB [default: what the device has available, from the
    /// driver on CUDA; wgpu reports none, so no check there without it].
    #[arg(long, help_heading = "Runtime")]
    pub memory_budget: Option<f64>,
    /// No progress bars or messages, errors only.
    #[arg(long, short, help_heading = "Runtime")]
    pub quiet: bool,

    /// .mp4, .gif, .webp, .safetensors, or a folder for PNGs; checked before the models
    /// load, written to a temporary name and renamed when complete [default:
    /// `{output-dir}/{subject}/{name}-fr{frames}-s{seed}.{ext}`, as the reference names it].
    #[arg(long, help_heading = "Output")]
    pub output: Option<PathBuf>,
    /// Folder for videos named as the reference names them, when --output is not given.
    #[arg(
        long,
        visible_alias = "output_dir",
        default_value = "results",
        help_heading = "Output"
    )]
    pub output_dir: PathBuf,
    /// The `{name}` part of that file name.
    #[arg(long, default_value = "demo", help_heading = "Output")]
    pub name: String,
    /// The extension of that file name: mp4, gif, webp or safetensors.
    #[arg(long, default_value = "mp4", help_heading = "Output")]
    pub ext: String,
    /// Also write the latents after every step (keys `latents_after_step_i`) and, for a
    /// photo, what the face models made of it (`detection`, `landmarks`, `aligned_112`,
    /// `aligned_256`, `embedding`), as .safetensors.
    #[arg(long, help_heading = "Output")]
    pub trace: Option<PathBuf>,
}

/// `FILE[:STRENGTH]` of `--lora`: the strength after the last `:` when it is a number
/// (so URLs and Windows paths keep their colons), else 1.
pub(super) fn lora_arg(spec: &str) -> Result<(&str, f64)> {
    if let Some((file, tail)) = spec.rsplit_once(':')
        && let Ok(strength) = tail.parse::<f64>()
    {
        if !strength.is_finite() || file.is_empty() {
            bail!("--lora {spec}: expected FILE[:STRENGTH] with a finite strength");
        }
        return Ok((file, strength));
    }
    Ok((spec, 1.0))
}
