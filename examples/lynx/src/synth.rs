//! `lynx synth-model`: a synthetic model set — random weights in exactly the released
//! layout and at the real sizes — to check a machine (loading, memory, speed) before
//! downloading the real weights, and to test with.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use lynx_pipeline::memory::gb;
use lynx_synth::subject::write_subject;
use lynx_synth::{Component, DitEncoding, Preset, SynthOptions, WeightDtype, plan, write_plan};

use crate::bundled::bundled;

/// The model sets `--preset` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PresetArg {
    /// Wan2.1-T2V-14B (40 blocks, dim 5120) + UMT5-XXL + lynx_full at its real sizes:
    /// 49.8 GB in bf16, 99 GB in f32.
    #[value(name = "14b")]
    Wan14B,
    /// Wan2.1-T2V-1.3B (30 blocks, dim 1536) + UMT5-XXL + lynx_full sized for it:
    /// 15.5 GB in bf16.
    #[value(name = "1.3b")]
    Wan1_3B,
    /// The tiny test model's sizes (kilobytes).
    Tiny,
}

/// Weight dtypes of the written files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WeightDtypeArg {
    /// bfloat16: half the size of the release.
    Bf16,
    /// float32, as released.
    F32,
}

/// Encodings of the DiT as one file (`--encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EncodingArg {
    /// `float8_e4m3fn` block matrices, bare native keys (as Kijai's files).
    Fp8,
    /// ComfyUI's scaled fp8 (`scale_weight` per layer), `model.diffusion_model.` keys.
    #[value(name = "fp8-scaled")]
    Fp8Scaled,
    /// GGUF Q8_0 (city96's recipe).
    #[value(name = "q8_0")]
    Q8_0,
    /// GGUF Q4_K_M (city96's recipe: Q6_K for `*.v` and `ffn.2`, Q4_K for the other
    /// block matrices).
    #[value(name = "q4_k_m")]
    Q4KM,
}

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Which model set.
    #[arg(long, value_enum)]
    pub preset: PresetArg,
    /// Dtype of the weights in the files (the model can run in either).
    #[arg(long, value_enum, default_value_t = WeightDtypeArg::Bf16)]
    pub dtype: WeightDtypeArg,
    /// Folder to write `Wan2.1-T2V-*-Diffusers/`, `lynx_full/` and `subject/` into.
    #[arg(long)]
    pub output: PathBuf,
    /// Also write `lynx_lite/`.
    #[arg(long)]
    pub lite: bool,
    /// Cap the DiT's blocks and the text encoder's layers at N: the real widths at a
    /// fraction of the size (e.g. 2 for a 14B-wide model of 6 GB).
    #[arg(long)]
    pub layers: Option<usize>,
    /// Folder whose tokenizer files are copied into `tokenizer/` [default: the bundled
    /// test tokenizer; the real UMT5 one cannot be made offline].
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Also write `loras/<model>-synthetic-lora-rankN.safetensors`: a LoRA for the DiT of
    /// rank N in the layout of lightx2v's step-distillation LoRAs (native
    /// `diffusion_model.` keys: `lora_down`/`lora_up`/`alpha` for every linear layer,
    /// `diff_b` for biases, `diff` for norms, `diff_m` for modulation tables). 64 is the
    /// rank of `Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank64.safetensors`; pass
    /// the file to `lynx generate --fast --lora FILE`.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub lora_rank: Option<u64>,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 1234)]
    pub seed: u64,
    /// Write the DiT as one file in this encoding, in native Wan keys, beside the
    /// folder (whose `transformer/` then holds only its config): give it to `generate`
    /// with `--transformer`.
    #[arg(long, value_enum)]
    pub encoding: Option<EncodingArg>,
    /// Print the files and sizes without writing anything.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn run(args: SynthArgs) -> Result<()> {
    let preset = match args.preset {
        PresetArg::Wan14B => Preset::Wan14B,
        PresetArg::Wan1_3B => Preset::Wan1_3B,
        PresetArg::Tiny => Preset::Tiny,
    };
    let dtype = match args.dtype {
        WeightDtypeArg::Bf16 => WeightDtype::BF16,
        WeightDtypeArg::F32 => WeightDtype::F32,
    };
    let tokenizer = match args.tokenizer.clone() {
        Some(t) => t,
        None => bundled("Wan2.1-T2V-tiny-Diffusers/tokenizer")?,
    };
    if !tokenizer.join("tokenizer.json").is_file() {
        bail!(
            "{} holds no tokenizer.json; give --tokenizer DIR (e.g. a Wan2.1 model's tokenizer/)",
            tokenizer.display()
        );
    }
    let options = SynthOptions {
        seed: args.seed,
        tokenizer_dir: Some(tokenizer),
        lite: args.lite,
        layers: args.layers,
        lora_rank: args.lora_rank.map(|r| r as usize),
        encoding: args.encoding.map(|e| match e {
            EncodingArg::Fp8 => DitEncoding::Fp8,
            EncodingArg::Fp8Scaled => DitEncoding::Fp8Scaled,
            EncodingArg::Q8_0 => DitEncoding::Q8_0,
            EncodingArg::Q4KM => DitEncoding::Q4KM,
        }),
    };
    let plan = plan(&preset.model_set(), dtype, &options)?;
    let total = plan.total_bytes();
    eprintln!(
        "{} in {}: {} files, {}",
        plan.models.wan_folder,
        dtype.torch_name(),
        plan.files.len(),
        gb(total)
    );
    for (component, bytes) in plan.component_bytes() {
        eprintln!("  {:<13} {:>9}", component.name(), gb(bytes));
    }
    if args.dry_run {
        for f in &plan.files {
            println!("{:>14}  {}", f.bytes, f.path.display());
        }
        return Ok(());
    }
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("cannot create {}", args.output.display()))?;
    check_free_space(&args.output, total)?;
    let mut last = u64::MAX;
    let report = write_plan(&plan, &args.output, |p| {
        let percent = p.done * 100 / p.total.max(1);
        if percent != last {
            last = percent;
            eprint!("\r  {percent:>3}% {}", gb(p.done));
            let _ = std::io::stderr().flush();
        }
    })?;
    eprintln!();
    let subject = write_subject(&args.output.join("subject"), args.seed)?;
    eprintln!(
        "wrote {} in {:.0} s ({:.0} MB/s) under {}",
        gb(report.total_bytes),
        report.elapsed.as_secs_f64(),
        report.mb_per_s(),
        args.output.display()
    );
    let model = args.output.join(&plan.models.wan_folder);
    let dit = match options.encoding {
        Some(_) => {
            let file = plan
                .files
                .iter()
                .rev() // the encoded file comes after transformer/config.json
                .find(|f| f.component == Component::Transformer);
            let file = file.map(|f| args.output.join(&f.path));
            format!(" --transformer {}", file.unwrap_or_default().display())
        }
        None => String::new(),
    };
    eprintln!(
        "run it with:\n  lynx generate --model {}{dit} --adapters {} --face-embedding {} \
         --aligned-face {} --frames 1 --height 64 --width 64 --steps 2 --dtype bf16 \
         --offload blocks --output out.safetensors",
        model.display(),
        args.output.join("lynx_full").display(),
        subject.embedding.display(),
        subject.aligned_face.display()
    );
    if let Some(lora) = plan.files.iter().find(|f| f.component == Component::Lora) {
        eprintln!(
            "and fast, with the LoRA: add --fast --lora {}",
            args.output.join(&lora.path).display()
        );
    }
    Ok(())
}

/// Refuses to start a write the disk cannot hold (free space as `df -Pk` reports it;
/// no check where `df` does not answer).
fn check_free_space(dir: &std::path::Path, needed: u64) -> Result<()> {
    let Some(free) = free_space(dir) else {
        return Ok(());
    };
    if free < needed {
        bail!(
            "{} has {} free; this model set needs {} (try --dtype bf16, or --layers N)",
            dir.display(),
            gb(free),
            gb(needed)
        );
    }
    Ok(())
}

/// Free bytes on the file system of `dir`, from `df` (POSIX), if it answers.
fn free_space(dir: &std::path::Path) -> Option<u64> {
    let out = std::process::Command::new("df")
        .arg("-Pk")
        .arg(dir)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let kib: u64 = text
        .lines()
        .nth(1)?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    Some(kib * 1024)
}
