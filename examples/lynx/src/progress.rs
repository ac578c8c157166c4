//! What `generate` shows while it runs: a spinner per stage of the pipeline, a bar over
//! the sampling steps (s/step, ETA), and a one-line summary of the time per stage.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use lynx_pipeline::observer::stop_if;
use lynx_pipeline::{Observer, Stage, StageEvent, StepInfo};

/// The bars of one generation, the stage times for the summary, and the Ctrl-C flag
/// that stops the run at the next stage or step.
pub struct StageBars {
    quiet: bool,
    steps: usize,
    cancel: Arc<AtomicBool>,
    bar: Option<ProgressBar>,
    times: Vec<(Stage, Duration)>,
}

impl StageBars {
    /// Bars for a run of `steps` sampling steps (none when `quiet`), stopping once
    /// `cancel` is set.
    pub fn new(quiet: bool, steps: usize, cancel: Arc<AtomicBool>) -> Self {
        Self {
            quiet,
            steps,
            cancel,
            bar: None,
            times: Vec::new(),
        }
    }

    fn go_on(&self) -> ControlFlow<()> {
        stop_if(self.cancel.load(Ordering::SeqCst))
    }
}

impl Observer for StageBars {
    fn on_stage(&mut self, event: StageEvent) -> ControlFlow<()> {
        match event {
            StageEvent::Start(stage) if !self.quiet => {
                let bar = if stage == Stage::Denoise {
                    let bar = ProgressBar::new(self.steps as u64);
                    bar.set_style(style(
                        "{msg:16} {bar:30} {pos}/{len} steps, {per_sec}, {elapsed} elapsed, ETA {eta}",
                    ));
                    bar.set_message(stage.name());
                    bar
                } else {
                    spinner(false, stage.name())
                };
                self.bar = Some(bar);
            }
            StageEvent::Start(_) => {}
            StageEvent::Done(stage, took) => {
                if let Some(bar) = self.bar.take() {
                    bar.finish();
                }
                self.times.push((stage, took));
            }
        }
        self.go_on()
    }

    fn on_step(&mut self, _: StepInfo) -> ControlFlow<()> {
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
        self.go_on()
    }
}

impl StageBars {
    /// `load 1.2s · encode prompts 3.0s · … · denoise 40.1s (2.0 s/step) · decode 5.2s ·
    /// peak 1.1 GB`.
    pub fn summary(&self, load: Duration, steps: usize, peak: Option<u64>) -> String {
        let mut parts = vec![format!("load {:.1}s", load.as_secs_f64())];
        for (stage, took) in &self.times {
            let t = took.as_secs_f64();
            parts.push(match stage {
                Stage::Denoise if steps > 0 => {
                    format!("denoise {t:.1}s ({:.2} s/step)", t / steps as f64)
                }
                other => format!("{} {t:.1}s", other.name()),
            });
        }
        if let Some(peak) = peak {
            parts.push(format!("peak memory {}", lynx_pipeline::memory::gb(peak)));
        }
        parts.join(" · ")
    }
}

/// A spinner named `what` with the time elapsed (hidden when `quiet`).
pub fn spinner(quiet: bool, what: &'static str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(style("{msg:16} {spinner} {elapsed}"));
    bar.enable_steady_tick(Duration::from_millis(200));
    bar.set_message(what);
    bar
}

/// An indicatif style from `template` (the default bar if the template does not parse).
pub fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}
