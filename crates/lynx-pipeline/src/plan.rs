//! A request read once: [`Plan`] holds everything a run derives from its request and the
//! loaded variant (frames, passes, whether the reference pass runs, the prompts'
//! tokens). The memory check and every stage of the generation read it; nothing is
//! derived or tokenized twice.

use lynx_adapters::Variant;
use lynx_core::{Error, Result};
use lynx_sampler::Guidance;
use lynx_text::{Tokenizer, Tokens};

use crate::memory::RunSize;
use crate::request::{
    GenerateRequest, IdentityGuidance, REFERENCE_PROMPT, SamplerKind, VariantDefaults,
};

/// A prompt of the run, with its tokens (of the cleaned text when `clean`).
pub(crate) struct PlannedPrompt {
    /// The text as given (the embedding cache's key).
    pub(crate) text: String,
    /// Whether the text encoder cleans it first (the reference prompt is used as is).
    pub(crate) clean: bool,
    pub(crate) tokens: Tokens,
}

/// A request with the variant's defaults filled in and checked.
pub(crate) struct Plan {
    /// The loaded variant (`None`: plain Wan2.1).
    pub(crate) variant: Option<Variant>,
    pub(crate) frames: usize,
    pub(crate) height: usize,
    pub(crate) width: usize,
    pub(crate) steps: usize,
    /// Frames per second of the result.
    pub(crate) fps: u32,
    /// Whether the guidance passes run as one batch.
    pub(crate) batched: bool,
    pub(crate) guidance: Guidance,
    /// Whether the text guidance runs at all (`g > 1`, as diffusers' pipelines decide).
    pub(crate) use_cfg: bool,
    /// DiT passes per step.
    pub(crate) passes: usize,
    pub(crate) ref_scale: f64,
    pub(crate) ip_scale: f64,
    /// Whether Lynx's reference pass runs (full, with a subject).
    pub(crate) reference: bool,
    pub(crate) sampler: SamplerKind,
    /// The flow shift asked for (`None`: the scheduler config's).
    pub(crate) flow_shift: Option<f64>,
    /// The prompt, the negative prompt and, when the reference pass runs, its prompt.
    pub(crate) prompts: Vec<PlannedPrompt>,
}

impl Plan {
    /// Checks `req` (sizes, counts, what `variant` accepts), fills the variant's defaults
    /// and tokenizes the prompts with `tokenizer`.
    pub(crate) fn new(
        req: &GenerateRequest,
        variant: Option<Variant>,
        tokenizer: &Tokenizer,
        batched: bool,
    ) -> Result<Plan> {
        req.validate()?;
        let defaults = VariantDefaults::of(variant);
        if variant == Some(Variant::Lite) {
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
        let reference = variant == Some(Variant::Full) && req.subject.is_some();
        let use_cfg = req.guidance > 1.0;
        let mut wanted = vec![(req.prompt.as_str(), true)];
        // Without guidance (`g` = 1) no pass reads the negative prompt: not encoded.
        if use_cfg {
            wanted.push((req.negative_prompt.as_str(), true));
        }
        if reference {
            wanted.push((REFERENCE_PROMPT, false));
        }
        let prompts = wanted
            .into_iter()
            .map(|(text, clean)| {
                let tokens = if clean {
                    tokenizer.tokenize(&lynx_text::prompt_clean(text))?
                } else {
                    tokenizer.tokenize(text)?
                };
                Ok(PlannedPrompt {
                    text: text.to_string(),
                    clean,
                    tokens,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let passes = match (use_cfg, identity) {
            (false, _) => 1,
            (true, None) => 2,
            (true, Some(_)) => 3,
        };
        Ok(Plan {
            variant,
            frames: req.frames.unwrap_or(defaults.frames),
            height: req.height,
            width: req.width,
            steps: req.steps,
            fps: req.fps.unwrap_or(defaults.fps),
            batched,
            guidance: Guidance::new(req.guidance, identity),
            use_cfg,
            passes,
            ref_scale: req.ref_scale.unwrap_or(1.0),
            ip_scale: req.ip_scale,
            reference,
            sampler: req.sampler,
            flow_shift: req.flow_shift,
            prompts,
        })
    }

    /// What the memory plan needs to know of the run.
    pub(crate) fn run_size(&self) -> RunSize {
        let text_tokens = self
            .prompts
            .iter()
            .map(|p| p.tokens.len)
            .max()
            .unwrap_or(1)
            .max(1);
        RunSize {
            frames: self.frames,
            height: self.height,
            width: self.width,
            passes: self.passes,
            batched: self.batched,
            reference: self.reference,
            text_tokens,
            prompts: self.prompts.len(),
        }
    }
}
