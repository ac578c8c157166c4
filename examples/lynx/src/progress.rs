//! What `generate` shows while it runs: a spinner per stage of the pipeline, a bar over
//! the sampling steps (s/step, ETA), and a one-line summary of the time per stage.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use lynx_pipeline::{Stage, StageEvent, StepInfo};

/// The bars of one generation, and the stage times for the summary.
pub struct StageBars {
    quiet: bool,
    steps: usize,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    bar: Option<ProgressBar>,
    times: Vec<(Stage, Duration)>,
}

/// The closures handed to the pipeline.
type OnStep = Box<dyn FnMut(StepInfo) + Send>;
type OnStage = Box<dyn FnMut(StageEvent) + Send>;

impl StageBars {
    /// Bars for a run of `steps` sampling steps (none when `quiet`).
    pub fn new(quiet: bool, steps: usize) -> Self {
        Self {
            quiet,
            steps,
            state: Arc::default(),
        }
    }

    /// For [`lynx_pipeline::GenerateRequest::on_stage`].
    pub fn on_stage(&self) -> OnStage {
        let (state, quiet, steps) = (self.state.clone(), self.quiet, self.steps as u64);
        Box::new(move |event| {
            let Ok(mut s) = state.lock() else { return };
            match event {
                StageEvent::Start(stage) => {
                    if quiet {
                        return;
                    }
                    let bar = if stage == Stage::Denoise {
                        let bar = ProgressBar::new(steps);
                        bar.set_style(style(
                            "{msg:16} {bar:30} {pos}/{len} steps, {per_sec}, {elapsed} elapsed, ETA {eta}",
                        ));
                        bar.set_message(stage.name());
                        bar
                    } else {
                        spinner(false, stage.name())
                    };
                    s.bar = Some(bar);
                }
                StageEvent::Done(stage, took) => {
                    if let Some(bar) = s.bar.take() {
                        bar.finish();
                    }
                    s.times.push((stage, took));
                }
            }
        })
    }

    /// For [`lynx_pipeline::GenerateRequest::on_step`].
    pub fn on_step(&self) -> OnStep {
        let state = self.state.clone();
        Box::new(move |_| {
            if let Ok(s) = state.lock()
                && let Some(bar) = &s.bar
            {
                bar.inc(1);
            }
        })
    }

    /// `load 1.2s · encode prompts 3.0s · … · denoise 40.1s (2.0 s/step) · decode 5.2s ·
    /// peak 1.1 GB`.
    pub fn summary(&self, load: Duration, steps: usize, peak: Option<u64>) -> String {
        let mut parts = vec![format!("load {:.1}s", load.as_secs_f64())];
        if let Ok(s) = self.state.lock() {
            for (stage, took) in &s.times {
                let t = took.as_secs_f64();
                parts.push(match stage {
                    Stage::Denoise if steps > 0 => {
                        format!("denoise {t:.1}s ({:.2} s/step)", t / steps as f64)
                    }
                    other => format!("{} {t:.1}s", other.name()),
                });
            }
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
