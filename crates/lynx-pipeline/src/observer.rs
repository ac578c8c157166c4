//! Watching a generation: the named stages as they start and end, each sampling step, and
//! the one place to stop a run ([`Observer`], given to
//! [`LynxPipeline::generate_with`](crate::LynxPipeline::generate_with)).
//!
//! Stopping is cooperative: a `Break` from [`Observer::on_stage`] or
//! [`Observer::on_step`] ends the run at that boundary with
//! [`Error::Cancelled`](crate::Error::Cancelled), and nothing is returned. An
//! `AtomicBool` (or an `Arc` of one, as a Ctrl-C handler sets it) is an observer that
//! stops the run once it is set.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The named steps of a generation, as [`Observer::on_stage`] reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
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
    Done(Stage, Duration),
}

/// One step's progress, handed to [`Observer::on_step`].
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct StepInfo {
    /// Steps done so far (1 after the first step).
    pub step: usize,
    /// Steps in all.
    pub total: usize,
    /// The timestep of the step just done.
    pub timestep: f64,
}

/// Told how a generation goes; may stop it. Both methods have defaults that only go
/// on, so an observer implements what it needs.
pub trait Observer {
    /// A stage starts or ends. `Break` stops the run here.
    fn on_stage(&mut self, event: StageEvent) -> ControlFlow<()> {
        let _ = event;
        ControlFlow::Continue(())
    }

    /// A sampling step is done. `Break` stops the run here.
    fn on_step(&mut self, step: StepInfo) -> ControlFlow<()> {
        let _ = step;
        ControlFlow::Continue(())
    }
}

/// Watches nothing, never stops ([`LynxPipeline::generate`](crate::LynxPipeline::generate)).
impl Observer for () {}

impl<T: Observer + ?Sized> Observer for &mut T {
    fn on_stage(&mut self, event: StageEvent) -> ControlFlow<()> {
        (**self).on_stage(event)
    }

    fn on_step(&mut self, step: StepInfo) -> ControlFlow<()> {
        (**self).on_step(step)
    }
}

impl<T: Observer + ?Sized> Observer for Box<T> {
    fn on_stage(&mut self, event: StageEvent) -> ControlFlow<()> {
        (**self).on_stage(event)
    }

    fn on_step(&mut self, step: StepInfo) -> ControlFlow<()> {
        (**self).on_step(step)
    }
}

/// A cancel flag: stops the run at the next stage or step once set.
impl Observer for AtomicBool {
    fn on_stage(&mut self, _: StageEvent) -> ControlFlow<()> {
        stop_if(self.load(Ordering::Relaxed))
    }

    fn on_step(&mut self, _: StepInfo) -> ControlFlow<()> {
        stop_if(self.load(Ordering::Relaxed))
    }
}

/// A shared cancel flag (as a signal handler holds the other end).
impl Observer for Arc<AtomicBool> {
    fn on_stage(&mut self, _: StageEvent) -> ControlFlow<()> {
        stop_if(self.load(Ordering::Relaxed))
    }

    fn on_step(&mut self, _: StepInfo) -> ControlFlow<()> {
        stop_if(self.load(Ordering::Relaxed))
    }
}

/// `Break` when `stop`.
pub fn stop_if(stop: bool) -> ControlFlow<()> {
    if stop {
        ControlFlow::Break(())
    } else {
        ControlFlow::Continue(())
    }
}
