//! The pieces a generation is made of besides the models: the conditioning of each DiT
//! pass of a step (`cond`, `uncond`, `identity`, or all stacked for one batched pass), the
//! denoising loop over them, and the stage reporting to the caller's [`Observer`].

use std::ops::ControlFlow;
use std::time::Instant;

use burn::tensor::{DType, Tensor, TensorData};
use lynx_core::{Error, Result};
use lynx_dit::{BlockExtras, DitInput, DitLora, WanTransformer};
use lynx_sampler::Scheduler;

use crate::observer::{Observer, Stage, StageEvent, StepInfo};
use crate::plan::Plan;

/// The conditioning of one DiT pass.
pub(crate) struct Branch {
    pub(crate) text: Tensor<3>,
    pub(crate) extras: Vec<BlockExtras>,
}

/// The caller's [`Observer`], told as each stage starts and ends and after each step;
/// a `Break` becomes [`Error::Cancelled`] with the steps done so far.
pub(crate) struct Stages<'a> {
    observer: &'a mut dyn Observer,
    done: usize,
    total: usize,
}

impl<'a> Stages<'a> {
    /// Reports to `observer` for a run of `total` steps.
    pub(crate) fn new(observer: &'a mut dyn Observer, total: usize) -> Self {
        Self {
            observer,
            done: 0,
            total,
        }
    }

    /// Runs stage `stage` as `f`, reporting its start and end.
    pub(crate) fn run<T>(
        &mut self,
        stage: Stage,
        f: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<T> {
        self.check(|o| o.on_stage(StageEvent::Start(stage)))?;
        let start = Instant::now();
        let out = f(self)?;
        self.check(|o| o.on_stage(StageEvent::Done(stage, start.elapsed())))?;
        Ok(out)
    }

    /// Reports a finished step.
    pub(crate) fn step(&mut self, step: StepInfo) -> Result<()> {
        self.done = step.step;
        self.check(|o| o.on_step(step))
    }

    fn check(&mut self, f: impl FnOnce(&mut dyn Observer) -> ControlFlow<()>) -> Result<()> {
        match f(&mut *self.observer) {
            ControlFlow::Continue(()) => Ok(()),
            ControlFlow::Break(()) => Err(Error::Cancelled {
                done: self.done,
                total: self.total,
            }),
        }
    }
}

/// The passes of one step: `cond` = (prompt, subject), `uncond` = (negative prompt, no
/// subject), `identity` = (negative prompt, subject), the last for Lynx's identity
/// guidance only.
pub(crate) struct Branches {
    pub(crate) cond: Branch,
    pub(crate) uncond: Branch,
    pub(crate) identity: Option<Branch>,
    /// `[cond, uncond, identity]` stacked along the batch, when batching.
    pub(crate) stacked: Option<Branch>,
}

impl Branches {
    /// The branches a guided step runs, in order.
    pub(crate) fn guided(&self) -> Vec<&Branch> {
        let mut all = vec![&self.cond, &self.uncond];
        all.extend(&self.identity);
        all
    }

    /// The guided branches stacked along the batch; `None` when their adapter inputs do
    /// not stack (then they run one by one).
    pub(crate) fn stack(&self) -> Option<Branch> {
        let all = self.guided();
        let blocks = all[0].extras.len();
        if all.iter().any(|b| b.extras.len() != blocks) {
            return None;
        }
        let extras = (0..blocks)
            .map(|i| BlockExtras::stack(&all.iter().map(|b| &b.extras[i]).collect::<Vec<_>>()))
            .collect::<Option<Vec<_>>>()?;
        Some(Branch {
            text: Tensor::cat(all.iter().map(|b| b.text.clone()).collect(), 0),
            extras,
        })
    }
}

/// What the denoising loop reads.
pub(crate) struct Denoise<'a> {
    pub(crate) dit: &'a WanTransformer,
    /// The request's LoRAs, applied on the fly in every pass.
    pub(crate) lora: Option<&'a DitLora>,
    pub(crate) plan: &'a Plan,
    pub(crate) branches: &'a Branches,
    pub(crate) trace: bool,
}

impl Denoise<'_> {
    /// Step 5: the guided denoising loop; returns the final latents, when tracing the
    /// latents after every step, and the number of DiT passes run. The passes of a step run together
    /// ([`WanTransformer::forward_many`]), so streamed blocks are read once per step.
    pub(crate) fn run(
        self,
        mut scheduler: Box<dyn Scheduler>,
        mut latents: Tensor<5>,
        stages: &mut Stages<'_>,
    ) -> Result<(Tensor<5>, Vec<Tensor<5>>, usize)> {
        let Denoise {
            dit,
            lora,
            plan,
            branches,
            trace,
        } = self;
        let device = latents.device();
        let timesteps = scheduler.timesteps().to_vec();
        let total = timesteps.len();
        let mut steps = Vec::new();
        let mut passes = 0;
        for (step, &t) in timesteps.iter().enumerate() {
            let timestep =
                Tensor::<1>::from_data(TensorData::new(vec![t as f32], [1]), (&device, DType::F32));
            let missing = || Error::input("the DiT returned fewer outputs than passes");
            let pred = if let Some(stacked) = &branches.stacked {
                // One pass over [cond, uncond, identity]; the text is stacked already.
                let k = stacked.text.dims()[0];
                let input = DitInput {
                    x: Tensor::cat(vec![latents.clone(); k], 0),
                    timestep: timestep.clone(),
                    text: stacked.text.clone(),
                    extras: &stacked.extras,
                    lora,
                };
                passes += 1;
                let out = dit
                    .forward_many(std::slice::from_ref(&input))?
                    .into_iter()
                    .next()
                    .ok_or_else(missing)?;
                drop(input);
                let part = |i: usize| out.clone().narrow(0, i, 1);
                let identity = (k == 3).then(|| part(2));
                plan.guidance.combine(part(0), part(1), identity)
            } else {
                let mut branches_run = vec![&branches.cond];
                if plan.use_cfg {
                    branches_run.push(&branches.uncond);
                    branches_run.extend(branches.identity.as_ref());
                }
                let inputs: Vec<DitInput<'_>> = branches_run
                    .iter()
                    .map(|b| DitInput {
                        x: latents.clone(),
                        timestep: timestep.clone(),
                        text: b.text.clone(),
                        extras: &b.extras,
                        lora,
                    })
                    .collect();
                passes += inputs.len();
                let mut out = dit.forward_many(&inputs)?.into_iter();
                drop(inputs);
                let cond = out.next().ok_or_else(missing)?;
                if plan.use_cfg {
                    let uncond = out.next().ok_or_else(missing)?;
                    let identity = out.next();
                    plan.guidance.combine(cond, uncond, identity)
                } else {
                    cond
                }
            };
            latents = scheduler.step(pred, t, latents)?;
            if trace {
                steps.push(latents.clone());
            }
            stages.step(StepInfo {
                step: step + 1,
                total,
                timestep: t,
            })?;
        }
        Ok((latents, steps, passes))
    }
}
