//! What a generation asks for, and its checks.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use image::RgbImage;
use lynx_adapters::Variant;
use lynx_arcface::Landmarks;
use lynx_core::{Error, Result};

use crate::noise::NoiseSource;

/// The negative prompt the Lynx release uses by default.
pub const DEFAULT_NEGATIVE_PROMPT: &str = "Bright tones, overexposed, blurred background, static, subtitles, style, works, paintings, images, overall gray, worst quality, low quality, JPEG compression residue, ugly, incomplete, extra fingers, poorly drawn hands, poorly drawn faces, deformed, disfigured, misshapen limbs, fused fingers, still picture, messy background, three legs, many people in the background, walking backwards";

/// The text the reference pass is conditioned on (not cleaned, as in the reference).
pub const REFERENCE_PROMPT: &str = "image of a face";

/// Default frame height (the reference's).
pub const DEFAULT_HEIGHT: usize = 480;
/// Default frame width.
pub const DEFAULT_WIDTH: usize = 832;
/// Default number of denoising steps.
pub const DEFAULT_STEPS: usize = 50;
/// Default text guidance `g`.
pub const DEFAULT_GUIDANCE: f64 = 5.0;
/// Default weight of the ID-adapter.
pub const DEFAULT_IP_SCALE: f64 = 1.0;
/// Default seed.
pub const DEFAULT_SEED: u64 = 42;
/// Steps of the fast path ([`GenerateRequest::fast`]).
pub const FAST_STEPS: usize = 4;
/// Flow shift of the fast path.
pub const FAST_SHIFT: f64 = 5.0;

/// Whose face the video shows.
#[derive(Debug, Clone)]
pub enum Subject {
    /// A photo. The face is found by the detector (or at the given five landmarks),
    /// aligned to 112×112 for ArcFace and, for Lynx full, to the extended 256×256 crop
    /// for the Ref-adapter. Needs the face models ([`crate::PipelineOptions::arcface`]).
    Photo {
        /// The photo, RGB.
        image: RgbImage,
        /// The five landmarks; detected when `None`.
        landmarks: Option<Landmarks>,
    },
    /// An ArcFace embedding (`[D]`, e.g. from `lynx embed-face`) and, for Lynx full, the
    /// already aligned extended face crop the Ref-adapter sees (used as given, no resize,
    /// like the reference's `encode_reference_images`). Lynx-lite needs the embedding
    /// only.
    Prepared {
        /// The aligned 256×256 extended crop (Lynx full only).
        aligned_face: Option<RgbImage>,
        /// The ArcFace embedding.
        embedding: Vec<f32>,
    },
}

/// Lynx's identity guidance `g_i`: a third DiT pass, (negative prompt, subject), and
/// `u + g_i·(i − u) + g·(c − i)` instead of plain CFG `u + g·(c − u)`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum IdentityGuidance {
    /// The variant's: 2.0 for Lynx full; none for Lynx-lite and plain Wan2.1.
    #[default]
    Default,
    /// Plain CFG (two passes per step).
    Off,
    /// Identity guidance at this scale (Lynx full only).
    Scale(f64),
}

/// The sampler to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SamplerKind {
    /// UniPC multistep (the reference's choice).
    #[default]
    UniPc,
    /// First-order flow Euler.
    Euler,
}

/// The named steps of a generation, as [`GenerateRequest::on_stage`] reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The text encoder on the prompts.
    EncodePrompts,
    /// Face models and, for Lynx full, the VAE on the aligned face.
    PrepareSubject,
    /// Lynx full's reference pass through the DiT, and the adapters' inputs.
    Condition,
    /// The sampling steps.
    Denoise,
    /// The VAE decode and the frames' read-back.
    Decode,
}

impl Stage {
    /// The stage as the CLI prints it.
    pub fn name(self) -> &'static str {
        match self {
            Stage::EncodePrompts => "encode prompts",
            Stage::PrepareSubject => "prepare subject",
            Stage::Condition => "reference pass",
            Stage::Denoise => "denoise",
            Stage::Decode => "decode",
        }
    }
}

/// A stage starting, or done after the given time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StageEvent {
    /// The stage begins.
    Start(Stage),
    /// The stage ended after this long.
    Done(Stage, std::time::Duration),
}

/// One step's progress, handed to [`GenerateRequest::on_step`].
#[derive(Debug, Clone, Copy)]
pub struct StepInfo {
    /// Steps done so far (1-based after the first step).
    pub step: usize,
    /// Steps in all.
    pub total: usize,
    /// The timestep of the step just done.
    pub timestep: f64,
}

/// Everything one video needs. [`GenerateRequest::new`] fills the reference defaults
/// (480×832, 50 steps, guidance 5, scales 1, seed 42); the frame count, identity
/// guidance and Ref scale default to the loaded variant's (see [`crate::VariantDefaults`]).
pub struct GenerateRequest {
    /// What the video shows.
    pub prompt: String,
    /// What it should not (the Lynx release's by default).
    pub negative_prompt: String,
    /// `None`: plain text-to-video with the base model.
    pub subject: Option<Subject>,
    /// `4k + 1` frames; `None`: the variant's (81 for Lynx, 121 for Lynx-lite).
    pub frames: Option<usize>,
    /// Multiple of 16.
    pub height: usize,
    /// Multiple of 16.
    pub width: usize,
    /// Denoising steps.
    pub steps: usize,
    /// Text guidance `g`.
    pub guidance: f64,
    /// Identity guidance `g_i` (Lynx full).
    pub guidance_identity: IdentityGuidance,
    /// Weight of the ID-adapter's attention. 0 means no identity (unlike the reference
    /// Lynx-lite, where `ip_scale or 1.0` turns 0 into 1).
    pub ip_scale: f64,
    /// Weight of the Ref-adapter's attention (Lynx full); `None`: 1.
    pub ref_scale: Option<f64>,
    /// The sampler.
    pub sampler: SamplerKind,
    /// Flow shift of the sampler's schedule; `None`: the scheduler config's (Wan's 3.0
    /// for 480p, 5.0 for 720p; distillation LoRAs such as lightx2v's are trained at 5).
    pub shift: Option<f64>,
    /// LoRA files and their strengths applied on the fly for this request only (the
    /// model's weights are not touched; several add, on top of any fused at load).
    pub loras: Vec<(std::path::PathBuf, f64)>,
    /// Skip keys of `loras` the DiT has no place for instead of refusing the request.
    pub lora_skip_unmatched: bool,
    /// Initial latents and reference noise (seeded by default).
    pub noise: NoiseSource,
    /// Called after every denoising step.
    pub on_step: Option<Box<dyn FnMut(StepInfo) + Send>>,
    /// Called as each named step of the generation starts and ends (for progress
    /// display and per-stage timing).
    pub on_stage: Option<Box<dyn FnMut(StageEvent) + Send>>,
    /// Set to stop between steps; `generate` then returns [`Error::Cancelled`].
    pub cancel: Option<Arc<AtomicBool>>,
}

impl std::fmt::Debug for GenerateRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenerateRequest")
            .field("prompt", &self.prompt)
            .field("frames", &self.frames)
            .field("height", &self.height)
            .field("width", &self.width)
            .field("steps", &self.steps)
            .field("guidance", &self.guidance)
            .field("guidance_identity", &self.guidance_identity)
            .finish_non_exhaustive()
    }
}

impl GenerateRequest {
    /// A request for `prompt` with the reference's defaults.
    pub fn new(prompt: impl Into<String>) -> Self {
        Self {
            prompt: prompt.into(),
            negative_prompt: DEFAULT_NEGATIVE_PROMPT.into(),
            subject: None,
            frames: None,
            height: DEFAULT_HEIGHT,
            width: DEFAULT_WIDTH,
            steps: DEFAULT_STEPS,
            guidance: DEFAULT_GUIDANCE,
            guidance_identity: IdentityGuidance::Default,
            ip_scale: DEFAULT_IP_SCALE,
            ref_scale: None,
            sampler: SamplerKind::UniPc,
            shift: None,
            loras: Vec::new(),
            lora_skip_unmatched: false,
            noise: NoiseSource::seeded(DEFAULT_SEED),
            on_step: None,
            on_stage: None,
            cancel: None,
        }
    }

    /// This request with the LoRA file `path` applied on the fly at `strength`
    /// (repeatable: LoRAs add).
    pub fn with_lora(mut self, path: impl Into<std::path::PathBuf>, strength: f64) -> Self {
        self.loras.push((path.into(), strength));
        self
    }

    /// This request with flow shift `shift` ([`GenerateRequest::shift`]).
    pub fn with_shift(mut self, shift: f64) -> Self {
        self.shift = Some(shift);
        self
    }

    /// This request on the fast path of step-distillation LoRAs (lightx2v's): 4 steps,
    /// guidance 1 (one conditional DiT pass per step, no negative prompt), flow shift 5.
    pub fn fast(mut self) -> Self {
        self.steps = FAST_STEPS;
        self.guidance = 1.0;
        self.shift = Some(FAST_SHIFT);
        self
    }

    /// The identity guidance of this request for `variant`: asked for, or the variant's
    /// default; none without a subject (the identity pass would repeat the
    /// unconditional one).
    pub fn identity_guidance(&self, variant: Option<Variant>) -> Option<f64> {
        match self.guidance_identity {
            IdentityGuidance::Default => VariantDefaults::of(variant).guidance_identity,
            IdentityGuidance::Off => None,
            IdentityGuidance::Scale(g) => Some(g),
        }
        .filter(|_| self.subject.is_some())
    }

    /// Checks sizes and counts, with messages that say what would work.
    pub fn validate(&self) -> Result<()> {
        if let Some(frames) = self.frames {
            check_frames(frames)?;
        }
        for (name, v) in [("height", self.height), ("width", self.width)] {
            if v == 0 || v % 16 != 0 {
                let down = v / 16 * 16;
                let up = down + 16;
                let hint = if down == 0 {
                    format!("use {up}")
                } else {
                    format!("use {down} or {up}")
                };
                return Err(Error::input(format!(
                    "{name} {v} is not a multiple of 16 (the VAE's 8× and the DiT's 2× patch); {hint}"
                )));
            }
        }
        if self.steps == 0 {
            return Err(Error::input("steps must be at least 1"));
        }
        let identity = match self.guidance_identity {
            IdentityGuidance::Scale(g) => g,
            _ => 0.0,
        };
        for (name, v) in [
            ("guidance", self.guidance),
            ("guidance_identity", identity),
            ("ip_scale", self.ip_scale),
            ("ref_scale", self.ref_scale.unwrap_or(1.0)),
        ] {
            if !v.is_finite() {
                return Err(Error::input(format!(
                    "{name} must be a finite number, got {v}"
                )));
            }
        }
        Ok(())
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

/// Frame counts must be `4k + 1` (the VAE compresses time 4×, keeping the first frame).
pub fn check_frames(frames: usize) -> Result<()> {
    if frames % 4 == 1 {
        return Ok(());
    }
    let rounded = frames / 4 * 4 + 1;
    let down = if frames == 0 {
        1
    } else {
        (frames - 1) / 4 * 4 + 1
    };
    let up = down + 4;
    Err(Error::input(format!(
        "frames must be 4k+1 (1, 5, 9, …, 81); {frames} is not — the reference pipeline \
         would round it to {rounded}; use {down} or {up}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_and_size_messages_say_what_works() {
        let e = check_frames(80).unwrap_err().to_string();
        assert!(
            e.contains("round it to 81") && e.contains("use 77 or 81"),
            "{e}"
        );
        assert!(check_frames(81).is_ok() && check_frames(1).is_ok());
        let mut r = GenerateRequest::new("x");
        r.frames = Some(80);
        assert!(r.validate().unwrap_err().to_string().contains("4k+1"));
        r.frames = None;
        r.height = 470;
        let e = r.validate().unwrap_err().to_string();
        assert!(
            e.contains("height 470") && e.contains("464") && e.contains("480"),
            "{e}"
        );
    }
}
