//! What a generation asks for, and its checks.

use std::path::Path;

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

/// The sampler to use. Any other [`lynx_sampler::Scheduler`] can be given to
/// [`LynxPipeline::generate_with_scheduler`](crate::LynxPipeline::generate_with_scheduler).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SamplerKind {
    /// UniPC multistep (the reference's choice).
    #[default]
    UniPc,
    /// First-order flow Euler.
    Euler,
}

/// Everything one video needs, as plain data: build it with [`GenerateRequest::new`] and
/// the `with_*` methods, keep it, clone it, run it again. [`GenerateRequest::new`] fills
/// the reference defaults (480×832, 50 steps, guidance 5, scales 1, seed 42); the frame
/// count, frame rate, identity guidance and Ref scale default to the loaded variant's (see
/// [`crate::VariantDefaults`]), the flow shift to the scheduler config's.
///
/// ```
/// use lynx_pipeline::{GenerateRequest, SamplerKind};
/// let request = GenerateRequest::new("A person carves a pumpkin on a porch, smiling.")
///     .with_size(480, 832)
///     .with_frames(81)
///     .with_steps(30)
///     .with_seed(7)
///     .with_sampler(SamplerKind::Euler);
/// assert_eq!(request.steps, 30);
/// ```
#[derive(Clone)]
#[non_exhaustive]
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
    /// Shift of the flow sigmas; `None`: the scheduler config's `flow_shift` (3.0 for
    /// Wan2.1 14B).
    pub flow_shift: Option<f64>,
    /// LoRA files (local paths: resolve Hub files and URLs first with
    /// [`crate::source::lora_file`]) and their strengths, applied on the fly for this
    /// request only (the model's weights are not touched; several add, on top of any fused
    /// at load).
    pub loras: Vec<(std::path::PathBuf, f64)>,
    /// Skip keys of `loras` the DiT has no place for instead of refusing the request.
    pub lora_skip_unmatched: bool,
    /// Initial latents and reference noise (seeded by default).
    pub noise: NoiseSource,
    /// Frames per second of the result; `None`: the variant's (16 for Lynx, 24 for
    /// Lynx-lite).
    pub fps: Option<u32>,
    /// Keep the latents after every step ([`crate::Generated::latents_per_step`]).
    pub trace: bool,
}

impl std::fmt::Debug for GenerateRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenerateRequest")
            .field("prompt", &self.prompt)
            .field("subject", &self.subject.as_ref().map(Subject::kind))
            .field("frames", &self.frames)
            .field("height", &self.height)
            .field("width", &self.width)
            .field("steps", &self.steps)
            .field("guidance", &self.guidance)
            .field("guidance_identity", &self.guidance_identity)
            .field("sampler", &self.sampler)
            .field("flow_shift", &self.flow_shift)
            .field("seed", &self.noise.seed())
            .finish_non_exhaustive()
    }
}

impl Subject {
    /// A photo; the face is detected in it.
    pub fn photo(image: RgbImage) -> Self {
        Subject::Photo {
            image,
            landmarks: None,
        }
    }

    /// The photo in the image file at `path` (PNG, JPEG, WebP); the face is detected.
    pub fn photo_file(path: impl AsRef<Path>) -> Result<Self> {
        Ok(Self::photo(lynx_arcface::load_rgb(path)?))
    }

    /// `photo` or `prepared`, for debug output.
    fn kind(&self) -> &'static str {
        match self {
            Subject::Photo { .. } => "photo",
            Subject::Prepared { .. } => "prepared",
        }
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
            flow_shift: None,
            loras: Vec::new(),
            lora_skip_unmatched: false,
            noise: NoiseSource::seeded(DEFAULT_SEED),
            fps: None,
            trace: false,
        }
    }

    /// With this negative prompt.
    pub fn with_negative_prompt(mut self, negative_prompt: impl Into<String>) -> Self {
        self.negative_prompt = negative_prompt.into();
        self
    }

    /// Of this subject.
    pub fn with_subject(mut self, subject: Subject) -> Self {
        self.subject = Some(subject);
        self
    }

    /// With `frames` frames (4k + 1).
    pub fn with_frames(mut self, frames: usize) -> Self {
        self.frames = Some(frames);
        self
    }

    /// Frames of `height`×`width` pixels (multiples of 16).
    pub fn with_size(mut self, height: usize, width: usize) -> Self {
        (self.height, self.width) = (height, width);
        self
    }

    /// With `steps` denoising steps.
    pub fn with_steps(mut self, steps: usize) -> Self {
        self.steps = steps;
        self
    }

    /// With text guidance `g`.
    pub fn with_guidance(mut self, guidance: f64) -> Self {
        self.guidance = guidance;
        self
    }

    /// With this identity guidance.
    pub fn with_identity_guidance(mut self, guidance: IdentityGuidance) -> Self {
        self.guidance_identity = guidance;
        self
    }

    /// With this ID-adapter weight.
    pub fn with_ip_scale(mut self, scale: f64) -> Self {
        self.ip_scale = scale;
        self
    }

    /// With this Ref-adapter weight (Lynx full).
    pub fn with_ref_scale(mut self, scale: f64) -> Self {
        self.ref_scale = Some(scale);
        self
    }

    /// With this sampler.
    pub fn with_sampler(mut self, sampler: SamplerKind) -> Self {
        self.sampler = sampler;
        self
    }

    /// With this shift of the flow sigmas instead of the scheduler config's.
    pub fn with_flow_shift(mut self, shift: f64) -> Self {
        self.flow_shift = Some(shift);
        self
    }

    /// With the LoRA file `path` applied on the fly at `strength` (repeatable: LoRAs
    /// add).
    pub fn with_lora(mut self, path: impl Into<std::path::PathBuf>, strength: f64) -> Self {
        self.loras.push((path.into(), strength));
        self
    }

    /// Skipping (`true`) or refusing LoRA keys the DiT has no place for.
    pub fn with_lora_skip_unmatched(mut self, skip: bool) -> Self {
        self.lora_skip_unmatched = skip;
        self
    }

    /// On the fast path of step-distillation LoRAs (lightx2v's): 4 steps, guidance 1
    /// (one conditional DiT pass per step, no negative prompt), flow shift 5.
    pub fn fast(mut self) -> Self {
        self.steps = FAST_STEPS;
        self.guidance = 1.0;
        self.flow_shift = Some(FAST_SHIFT);
        self
    }

    /// With this noise (seeded, or recorded latents and reference noise).
    pub fn with_noise(mut self, noise: NoiseSource) -> Self {
        self.noise = noise;
        self
    }

    /// With noise drawn from `seed` (as the reference draws it).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.noise = NoiseSource::seeded(seed);
        self
    }

    /// With this frame rate for the result.
    pub fn with_fps(mut self, fps: u32) -> Self {
        self.fps = Some(fps);
        self
    }

    /// Keeping (or not) the latents after every step.
    pub fn with_trace(mut self, trace: bool) -> Self {
        self.trace = trace;
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
        if self.fps == Some(0) {
            return Err(Error::input("fps must be at least 1"));
        }
        if let Some(shift) = self.flow_shift
            && !(shift > 0.0 && shift.is_finite())
        {
            return Err(Error::input(format!(
                "flow_shift must be a positive finite number, got {shift}"
            )));
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
