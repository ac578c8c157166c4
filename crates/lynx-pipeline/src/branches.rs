//! The pieces a generation is made of besides the models: the conditioning of each DiT
//! pass of a step (`cond`, `uncond`, `identity`, or all stacked for one batched pass) and
//! the stage reporting of [`GenerateRequest::on_stage`](crate::GenerateRequest::on_stage).

use std::time::Instant;

use burn::tensor::Tensor;
use lynx_core::Result;
use lynx_dit::BlockExtras;

use crate::request::{Stage, StageEvent};

/// The conditioning of one DiT pass.
pub(crate) struct Branch {
    pub(crate) text: Tensor<3>,
    pub(crate) extras: Vec<BlockExtras>,
}

/// The caller's [`GenerateRequest::on_stage`](crate::GenerateRequest::on_stage), told as each stage starts and ends.
pub(crate) struct Stages(pub(crate) Option<Box<dyn FnMut(StageEvent) + Send>>);

impl Stages {
    pub(crate) fn run<T>(&mut self, stage: Stage, f: impl FnOnce() -> Result<T>) -> Result<T> {
        if let Some(cb) = self.0.as_mut() {
            cb(StageEvent::Start(stage));
        }
        let start = Instant::now();
        let out = f()?;
        if let Some(cb) = self.0.as_mut() {
            cb(StageEvent::Done(stage, start.elapsed()));
        }
        Ok(out)
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
