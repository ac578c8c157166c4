//! What a generation asks for, and its checks.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use image::RgbImage;
use lynx_arcface::Landmarks;
use lynx_core::{Error, Result};

use crate::noise::NoiseSource;

/// The negative prompt the Lynx release uses by default.
pub const DEFAULT_NEGATIVE_PROMPT: &str = "Bright tones, overexposed, blurred background, static, subtitles, style, works, paintings, images, overall gray, worst quality, low quality, JPEG compression residue, ugly, incomplete, extra fingers, poorly drawn hands, poorly drawn faces, deformed, disfigured, misshapen limbs, fused fingers, still picture, messy background, three legs, many people in the background, walking backwards";

/// The text the reference pass is conditioned on (not cleaned, as in the reference).
pub const REFERENCE_PROMPT: &str = "image of a face";

/// Whose face the video shows.
#[derive(Debug, Clone)]
pub enum Subject {
    /// A photo. The face is found by the detector (or at the given five landmarks),
    /// aligned to 112×112 for ArcFace and to the extended 256×256 crop for the
    /// Ref-adapter. Needs the face models ([`crate::PipelineOptions::arcface`]).
    Photo {
        image: RgbImage,
        landmarks: Option<Landmarks>,
    },
    /// An already aligned face crop (used as given, no resize, like the reference's
    /// `encode_reference_images`) and its ArcFace embedding (`[D]`).
    Prepared {
        aligned_face: RgbImage,
        embedding: Vec<f32>,
    },
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

/// One step's progress, handed to [`GenerateRequest::on_step`].
#[derive(Debug, Clone, Copy)]
pub struct StepInfo {
    /// Steps done so far (1-based after the first step).
    pub step: usize,
    pub total: usize,
    pub timestep: f64,
}

/// Everything one video needs. [`GenerateRequest::new`] fills the reference defaults
/// (81 frames at 480×832, 50 steps, guidance 5, identity guidance 2, scales 1, seed 42).
pub struct GenerateRequest {
    pub prompt: String,
    pub negative_prompt: String,
    /// `None`: plain text-to-video with the base model.
    pub subject: Option<Subject>,
    /// `4k + 1` frames.
    pub frames: usize,
    /// Multiples of 16.
    pub height: usize,
    pub width: usize,
    pub steps: usize,
    /// Text guidance `g`.
    pub guidance: f64,
    /// Identity guidance `g_i`: `None` is plain CFG `u + g·(c − u)`.
    pub guidance_identity: Option<f64>,
    pub ip_scale: f64,
    pub ref_scale: f64,
    pub sampler: SamplerKind,
    /// Initial latents and reference noise (seeded by default).
    pub noise: NoiseSource,
    /// Called after every denoising step.
    pub on_step: Option<Box<dyn FnMut(StepInfo) + Send>>,
    /// Set to stop between steps; `generate` then returns [`Error::Input`] saying so.
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
            frames: 81,
            height: 480,
            width: 832,
            steps: 50,
            guidance: 5.0,
            guidance_identity: Some(2.0),
            ip_scale: 1.0,
            ref_scale: 1.0,
            sampler: SamplerKind::UniPc,
            noise: NoiseSource::seeded(42),
            on_step: None,
            cancel: None,
        }
    }

    /// Checks sizes and counts, with messages that say what would work.
    pub fn validate(&self) -> Result<()> {
        check_frames(self.frames)?;
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
        for (name, v) in [
            ("guidance", self.guidance),
            ("ip_scale", self.ip_scale),
            ("ref_scale", self.ref_scale),
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
        r.height = 470;
        let e = r.validate().unwrap_err().to_string();
        assert!(
            e.contains("height 470") && e.contains("464") && e.contains("480"),
            "{e}"
        );
    }
}
