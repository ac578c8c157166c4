//! `lynx`: Lynx personalized video generation from the command line.
//!
//! - `lynx generate`: photo (or aligned face + embedding) + prompt → video.
//! - `lynx embed-face`: photo or aligned crop → ArcFace embedding (`.safetensors`).
//! - `lynx synth-model`: a synthetic model (random weights, released layout, real sizes).
//!
//! With no model flags, `generate` runs the tiny random-weight model bundled for tests
//! (`tests/fixtures/`, compiled into the binary: see `bundled`), so a fresh clone or a
//! `cargo install` makes a (noise) video at once.

mod bundled;
mod embed;
mod face;
mod generate;
mod models;
mod progress;
mod synth;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "lynx",
    version,
    about = "Lynx: personalized video from one photo and a prompt"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate a video of the subject doing what the prompt says.
    Generate(Box<generate::GenerateArgs>),
    /// Compute the ArcFace identity embedding of a face.
    EmbedFace(embed::EmbedArgs),
    /// Write a synthetic model: random weights in the released layout, at the real sizes.
    SynthModel(synth::SynthArgs),
}

/// A `--device` this build or this machine cannot run (no such backend, no CUDA driver,
/// no such GPU): a usage error, told in one line with exit status 2 (as clap's), before
/// anything is read or written.
#[derive(Debug)]
struct BadDevice(lynx_pipeline::Error);

impl std::fmt::Display for BadDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for BadDevice {}

fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let result = match Cli::parse().command {
        Command::Generate(args) => generate::run(*args),
        Command::EmbedFace(args) => embed::run(args),
        Command::SynthModel(args) => synth::run(args),
    };
    if let Err(e) = &result
        && let Some(bad) = e.downcast_ref::<BadDevice>()
    {
        eprintln!("Error: {bad}");
        std::process::exit(2);
    }
    if let Err(e) = &result
        && let Some(cancelled @ lynx_pipeline::Error::Cancelled { .. }) = e.downcast_ref()
    {
        // Ctrl-C: the conventional status of a process ended by SIGINT.
        eprintln!("{cancelled}; nothing was written");
        std::process::exit(130);
    }
    result
}
