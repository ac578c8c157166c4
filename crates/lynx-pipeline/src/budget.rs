//! The memory check of a run: its [`MemoryPlan`] from the request and the options,
//! compared with the budget ([`PipelineOptions::memory_budget`], else what the device has
//! available), with the settings that would fit when it does not.

use std::path::{Path, PathBuf};

use burn::tensor::DType;
use lynx_adapters::Variant;
use lynx_core::Result;
use lynx_core::device::available_memory;
use lynx_store::{Checkpoint, LoraSet, Offload};

use crate::components::{PipelineOptions, changes_quantized};
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
    let tokenizer = ModelFolder::open_with(base, &options.weights)?.tokenizer()?;
    let run = Plan::new(request, variant, &tokenizer, options.batched())?.run_size();
    let loras = loras_on_the_fly(base, options, &request.loras)?;
    sized(base, adapter_dir, options, run, &loras)
}

/// The LoRAs a run applies on the fly: the options' when they change weights the DiT
/// keeps quantized (see [`PipelineOptions::loras`]), then the request's `loras`.
pub(crate) fn loras_on_the_fly(
    base: &Path,
    options: &PipelineOptions,
    loras: &[(PathBuf, f64)],
) -> Result<Vec<(PathBuf, f64)>> {
    let mut all = Vec::new();
    if !options.loras.is_empty() {
        let files = options.lora_files()?;
        let dit = Checkpoint::open(ModelFolder::open_with(base, &options.weights)?.transformer()?)?;
        if changes_quantized(&LoraSet::open(&files)?, &dit) {
            all = files;
        }
    }
    all.extend(loras.iter().cloned());
    Ok(all)
}

/// The device bytes of `loras` applied on the fly in `dtype` (their headers read).
fn lora_bytes(loras: &[(PathBuf, f64)], dtype: DType) -> Result<u64> {
    if loras.is_empty() {
        return Ok(0);
    }
    Ok(LoraSet::open(loras)?.on_the_fly_bytes(dtype))
}

/// The plan of a run of `run`'s size with `options`, `loras` applied on the fly.
fn sized(
    base: &Path,
    adapter_dir: Option<&Path>,
    options: &PipelineOptions,
    run: RunSize,
    loras: &[(PathBuf, f64)],
) -> Result<MemoryPlan> {
    let weights = measure(base, adapter_dir, options, options.dtype)?
        .with_lora(lora_bytes(loras, options.dtype)?);
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
        let loras = loras_on_the_fly(base, options, &request.loras)?;
        let alternatives = alternatives(base, adapter_dir, options, plan.run, &loras)?;
        plan.check(budget, &alternatives)?;
    }
    Ok(plan)
}

/// The check of a generation on a loaded pipeline (`weights` as measured at loading),
/// sized from its `plan` with `loras` applied on the fly: against the budget; or,
/// without one, the peak beyond what the process already holds (itself and its resident
/// weights) against what the device has left.
pub(crate) fn check_run(
    base: &Path,
    adapter_dir: Option<&Path>,
    options: &PipelineOptions,
    plan: &Plan,
    weights: &WeightSizes,
    loras: &[(PathBuf, f64)],
) -> Result<()> {
    let (budget, already_held) = match options.memory_budget {
        Some(b) => (b, false),
        None => match available_memory(&options.device) {
            Some(available) => (available, true),
            None => return Ok(()),
        },
    };
    let run = plan.run_size();
    let weights = weights.clone().with_lora(lora_bytes(loras, options.dtype)?);
    let plan = MemoryPlan::new(weights, options.offload, run);
    let budget = if already_held {
        budget + RUNTIME_BYTES + plan.resident()
    } else {
        budget
    };
    if plan.peak() > budget {
        plan.check(
            budget,
            &alternatives(base, adapter_dir, options, run, loras)?,
        )?;
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
    loras: &[(PathBuf, f64)],
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
            plans.push(sized(base, adapter_dir, &o, run, loras)?);
        }
    }
    Ok(plans)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `style_comfy.safetensors`: 2 blocks of 8 attention layers of rank 4 (48 → 48) and
    /// `ffn.0`, `ffn.2` (48 ↔ 96): 2 · (8 · 4 · 96 + 2 · 4 · 144) values.
    const STYLE_VALUES: u64 = 2 * (8 * 4 * 96 + 2 * 4 * 144);

    #[test]
    fn loras_on_the_fly_count_in_every_dit_phase() {
        let fixtures = lynx_testing::fixtures_dir();
        let base = fixtures.join("Wan2.1-T2V-tiny-Diffusers");
        let lora = fixtures.join("loras/style_comfy.safetensors");
        let device = lynx_testing::test_device();
        for offload in [Offload::None, Offload::Blocks] {
            let mut options = PipelineOptions::new(device.clone());
            options.offload = offload;
            let request = GenerateRequest::new("a cat")
                .with_frames(1)
                .with_size(64, 64);
            let plain = plan(&base, None, &options, &request).unwrap();
            let with = plan(&base, None, &options, &request.with_lora(&lora, 0.5)).unwrap();
            assert_eq!(with.weights.lora, STYLE_VALUES * 4, "{offload:?}");
            for (p, w) in plain.phases.iter().zip(&with.phases) {
                let extra = match p.name {
                    "reference pass" | "adapters" | "denoise" => STYLE_VALUES * 4,
                    _ => 0,
                };
                assert_eq!(w.weights, p.weights + extra, "{offload:?} {}", p.name);
            }
            assert_eq!(with.resident(), plain.resident());
        }
    }
}
