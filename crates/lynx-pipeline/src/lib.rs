//! lynx-rs: Lynx personalized video generation (ByteDance, arXiv 2509.15496) on Burn.
//!
//! One portrait photo + a prompt → a video of that person, with either released variant:
//! Lynx (`lynx_full/`) or Lynx-lite (`lynx_lite/`), detected from the adapter folder. This
//! crate composes the others — [`lynx_text`] (UMT5), [`lynx_dit`] (Wan2.1 DiT), [`lynx_adapters`] (ID and Ref
//! adapters), [`lynx_vae`] (Wan 3D causal VAE), [`lynx_sampler`] (UniPC, Euler,
//! guidance) and [`lynx_arcface`] (detection, alignment, ArcFace) — into
//! [`LynxPipeline`], mirroring bytedance/lynx `modules/full/lynx_pipeline.py`,
//! `lynx_infer.py` and `modules/lite/lynx_lite_pipeline.py`.
//!
//! ```no_run
//! use lynx_pipeline::source::Source;
//! use lynx_pipeline::{GenerateRequest, LynxPipeline, PipelineOptions, Subject};
//! # fn main() -> lynx_pipeline::Result<()> {
//! let device = lynx_pipeline::parse_device("cpu")?;
//! let options = PipelineOptions::new(device)
//!     .with_arcface("models/recognition_arcface_ir_se50.pth")
//!     .with_detector("models/detection_Resnet50_Final.pth");
//! let pipe = LynxPipeline::from_pretrained(
//!     "models/Wan2.1-T2V-14B-Diffusers", Some(Source::local("models/lynx_full")), options)?;
//! let request = GenerateRequest::new("A person carves a pumpkin on a porch, smiling.")
//!     .with_subject(Subject::photo_file("me.jpg")?);
//! pipe.generate(&request)?.save("pumpkin.mp4")?;
//! # Ok(()) }
//! ```
//!
//! | module | what |
//! |---|---|
//! | [`pipeline`] | [`LynxPipeline`], [`Generated`] |
//! | [`components`] | [`PipelineOptions`], and where each model's weights live ([`Offload`]) |
//! | [`memory`] | [`MemoryPlan`]: what a run needs, before loading |
//! | [`request`] | [`GenerateRequest`], [`Subject`], defaults, input checks |
//! | [`observer`] | [`Observer`]: progress of the stages and steps, and stopping a run |
//! | [`noise`] | [`NoiseSource`]: all randomness, seeded or replayed |
//! | [`export`] | [`Video`]: `.mp4`, `.gif`, `.webp`, PNG folder, `.safetensors`, each written whole or not at all |
//! | [`folder`] | [`folder::ModelFolder`]: the diffusers folder (its `model_index.json`), the original Wan release or a DiT's single file, checked before loading |
//! | [`original`] | the original `Wan-AI/Wan2.1-T2V-14B` folder: which file holds what, and the released configs it does not hold |
//! | [`single`] | the DiT, text encoder and VAE as three single files without a folder: configs from the DiT's shapes and the released models, the tokenizer from the text encoder file |
//! | [`inputs`] | face embeddings, recorded latents and noise read from files |
//! | [`source`] | [`Source`]: a folder or file, a Hub repo (feature `hub`), a URL, for every model and weight file |

#![warn(missing_docs)]

mod branches;
mod budget;
pub mod components;
pub mod export;
pub mod folder;
pub mod inputs;
pub mod memory;
#[cfg(feature = "export")]
mod mp4;
pub mod noise;
pub mod observer;
pub mod original;
pub mod pipeline;
mod plan;
pub mod request;
pub mod single;
pub mod source;

pub use export::Video;
pub use lynx_adapters::Variant;
pub use lynx_core::device::{auto_device, parse_device, parse_dtype};
pub use lynx_core::{Error, Result};
pub use lynx_sampler::Scheduler;
pub use lynx_store::Offload;
pub use memory::MemoryPlan;
pub use noise::NoiseSource;
pub use observer::{Observer, Stage, StageEvent, StepInfo};
pub use pipeline::{Generated, GuidanceBatching, LynxPipeline, PipelineOptions, VariantDefaults};
pub use request::{
    DEFAULT_GUIDANCE, DEFAULT_HEIGHT, DEFAULT_IP_SCALE, DEFAULT_NEGATIVE_PROMPT, DEFAULT_SEED,
    DEFAULT_STEPS, DEFAULT_WIDTH, GenerateRequest, IdentityGuidance, REFERENCE_PROMPT, SamplerKind,
    Subject, check_frames,
};
pub use source::Source;

#[cfg(feature = "hub")]
pub use lynx_hub;
pub use {
    lynx_adapters, lynx_arcface, lynx_core, lynx_dit, lynx_sampler, lynx_store, lynx_text, lynx_vae,
};

/// The README's examples, compiled as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeExamples;
