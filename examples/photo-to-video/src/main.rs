//! One photo + a prompt → an `.mp4`, as an application uses lynx-pipeline:
//!
//! ```sh
//! photo-to-video me.jpg "A person carves a pumpkin on a porch, smiling." pumpkin.mp4
//! ```
//!
//! The models come from the Hugging Face Hub (cached as `huggingface_hub` caches them)
//! and facexlib's releases; a progress line shows the stages and steps, and Ctrl-C stops
//! the run at the next step without writing anything.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use lynx_pipeline::observer::stop_if;
use lynx_pipeline::source::Source;
use lynx_pipeline::{GenerateRequest, LynxPipeline, Observer, PipelineOptions, StageEvent};
use lynx_pipeline::{StepInfo, Subject, parse_device};

const FACEXLIB: &str = "https://github.com/xinntao/facexlib/releases/download/v0.1.0";

/// Prints the stage and step on one line; stops once Ctrl-C has set the flag.
struct Progress(Arc<AtomicBool>);

impl Observer for Progress {
    fn on_stage(&mut self, event: StageEvent) -> ControlFlow<()> {
        if let StageEvent::Start(stage) = event {
            eprint!("\r\x1b[K{}…", stage.name());
        }
        stop_if(self.0.load(Ordering::Relaxed))
    }

    fn on_step(&mut self, step: StepInfo) -> ControlFlow<()> {
        eprint!("\r\x1b[Kdenoise: step {}/{}", step.step, step.total);
        stop_if(self.0.load(Ordering::Relaxed))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let [_, photo, prompt, output] = &std::env::args().collect::<Vec<_>>()[..] else {
        return Err("usage: photo-to-video PHOTO PROMPT OUTPUT.mp4".into());
    };
    let cancel = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, cancel.clone())?;
    let face = |file: &str| Source::url(format!("{FACEXLIB}/{file}"));
    let options = PipelineOptions::new(parse_device(lynx_pipeline::auto_device().name)?)
        .with_arcface(face("recognition_arcface_ir_se50.pth"))
        .with_detector(face("detection_Resnet50_Final.pth"));
    let base = Source::hub("Wan-AI/Wan2.1-T2V-14B-Diffusers");
    let pipe = LynxPipeline::from_pretrained(base, Some(Source::hub("ByteDance/lynx")), options)?;
    let request = GenerateRequest::new(prompt.as_str()).with_subject(Subject::photo_file(photo)?);
    pipe.generate_with(&request, &mut Progress(cancel))?
        .save(output)?;
    Ok(())
}
