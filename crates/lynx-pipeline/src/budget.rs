//! The memory check of a run: its [`MemoryPlan`] from the request and the options,
//! compared with the budget ([`PipelineOptions::memory_budget`], else what the device has
//! available), with the settings that would fit when it does not.

use std::path::Path;

use burn::tensor::DType;
use lynx_adapters::Variant;
use lynx_core::Result;
use lynx_core::device::available_memory;
use lynx_store::Offload;
use lynx_text::Tokenizer;

use crate::components::PipelineOptions;
use crate::folder::ModelFolder;
use crate::memory::{MemoryPlan, RUNTIME_BYTES, RunSize, WeightSizes};
use crate::plan::Plan;
use crate::request::GenerateRequest;

/// The plan of `request` on the models of `base` and `adapter_dir` with `options`: the
/// weights sized from the headers (every key and shape checked), nothing read.
pub(crate) fn plan(
    base: &Path,
    adapter_dir: Option<&Path>,
    options: &PipelineOptions,
    request: &GenerateRequest,
) -> Result<MemoryPlan> {
    let variant = adapter_dir.map(Variant::detect).transpose()?;
    let tokenizer = Tokenizer::from_pretrained(ModelFolder::open(base)?.tokenizer())?;
    let run = Plan::new(request, variant, &tokenizer, options.batched())?.run_size();
    sized(base, adapter_dir, options, run)
}

/// The plan of a run of `run`'s size with `options`.
fn sized(
    base: &Path,
    adapter_dir: Option<&Path>,
    options: &PipelineOptions,
    run: RunSize,
) -> Result<MemoryPlan> {
    let weights = measure(base, adapter_dir, options, options.dtype)?;
    Ok(MemoryPlan::new(weights, options.offload, run))
}

/// [`plan`], checked against the budget; see [`MemoryPlan::check`].
pub(crate) fn check(
    base: &Path,
    adapter_dir: Option<&Path>,
    options: &PipelineOptions,
    request: &GenerateRequest,
) -> Result<MemoryPlan> {
    let plan = plan(base, adapter_dir, options, request)?;
    let budget = options
        .memory_budget
        .or_else(|| available_memory(&options.device));
    if let Some(budget) = budget
        && plan.peak() > budget
    {
        let alternatives = alternatives(base, adapter_dir, options, plan.run)?;
        plan.check(budget, &alternatives)?;
    }
    Ok(plan)
}

/// The check of a generation on a loaded pipeline (`weights` as measured at loading),
/// sized from its `plan`: against the budget; or, without one, the peak beyond what the
/// process already holds (itself and its resident weights) against what the device has
/// left.
pub(crate) fn check_run(
    base: &Path,
    adapter_dir: Option<&Path>,
    options: &PipelineOptions,
    plan: &Plan,
    weights: &WeightSizes,
) -> Result<()> {
    let (budget, already_held) = match options.memory_budget {
        Some(b) => (b, false),
        None => match available_memory(&options.device) {
            Some(available) => (available, true),
            None => return Ok(()),
        },
    };
    let run = plan.run_size();
    let plan = MemoryPlan::new(weights.clone(), options.offload, run);
    let budget = if already_held {
        budget + RUNTIME_BYTES + plan.resident()
    } else {
        budget
    };
    if plan.peak() > budget {
        plan.check(budget, &alternatives(base, adapter_dir, options, run)?)?;
    }
    Ok(())
}

/// The weights in `dtype`, with the face models of `options`.
fn measure(
    base: &Path,
    adapter_dir: Option<&Path>,
    options: &PipelineOptions,
    dtype: DType,
) -> Result<WeightSizes> {
    let (arcface, detector) = options.face_files()?;
    let face: Vec<&Path> = [arcface, detector].into_iter().flatten().collect();
    WeightSizes::measure_files(
        base,
        &options.weights,
        adapter_dir,
        &face,
        &options.device,
        dtype,
    )
}

/// Plans of the same request in the other dtype and offload settings (bf16 where the
/// device has it), for the advice of a failed check.
fn alternatives(
    base: &Path,
    adapter_dir: Option<&Path>,
    options: &PipelineOptions,
    run: RunSize,
) -> Result<Vec<MemoryPlan>> {
    let mut dtypes = vec![options.dtype];
    if options.dtype == DType::F32 && options.device.supports_dtype(DType::BF16) {
        dtypes.push(DType::BF16);
    }
    let mut plans = Vec::new();
    for dtype in dtypes {
        for offload in [Offload::None, Offload::Model, Offload::Blocks] {
            if dtype == options.dtype && offload == options.offload {
                continue;
            }
            let mut o = options.clone();
            (o.dtype, o.offload) = (dtype, offload);
            plans.push(sized(base, adapter_dir, &o, run)?);
        }
    }
    Ok(plans)
}
