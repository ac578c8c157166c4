//! The CLI as a user of the reference's `infer.py` types it: its flag spellings, the
//! prompt file, the reference's output naming, `--quiet`, and the bundled tiny model
//! running from the copy compiled into the binary.

use std::path::PathBuf;
use std::process::Command;

use lynx_testing::fixtures_dir;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lynx-familiar-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn lynx(args: &[&str], cache: &std::path::Path) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_lynx"))
        .args(args)
        .env("XDG_CACHE_HOME", cache)
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", cache.join("hf"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The reference's spellings, a prompt file and the reference's file naming
/// (`{output_dir}/{subject}/{name}-fr{frames}-s{seed}.{ext}`), quietly.
#[test]
fn reference_spellings_and_naming() {
    let dir = tmp("spellings");
    let fx = fixtures_dir();
    let prompt = dir.join("prompt.txt");
    std::fs::write(&prompt, "A person carves a pumpkin.\n").unwrap();
    let s = |p: PathBuf| p.to_str().unwrap().to_string();
    let (model, adapters) = (
        s(fx.join("Wan2.1-T2V-tiny-Diffusers")),
        s(fx.join("lynx_lite")),
    );
    let (embedding, prompt, out_dir) = (
        s(fx.join("cli/face_embedding_512.safetensors")),
        s(prompt),
        s(dir.join("results")),
    );
    let out = lynx(
        &[
            "generate",
            "--base_model_path",
            &model,
            "--adapter_path",
            &adapters,
            "--face-embedding",
            &embedding,
            "--prompt-file",
            &prompt,
            "--num_frames",
            "5",
            "--num_inference_steps",
            "2",
            "--guidance_scale",
            "5",
            "--torch_dtype",
            "fp32",
            "--height",
            "32",
            "--width",
            "48",
            "--resampler-dim-head",
            "8",
            "--device",
            "cpu",
            "--seed",
            "7",
            "--output_dir",
            &out_dir,
            "--name",
            "pumpkin",
            "--ext",
            "gif",
            "--quiet",
        ],
        &dir,
    );
    let video = dir.join("results/face_embedding_512/pumpkin-fr5-s7.gif");
    assert!(video.is_file(), "no {}", video.display());
    assert!(
        out.stderr.is_empty(),
        "--quiet printed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// With no model flags the tiny model comes from the binary (written once into the
/// cache folder), not from the source tree: what `cargo install` users get.
#[test]
fn quick_start_runs_from_the_embedded_model() {
    let dir = tmp("embedded");
    let video = dir.join("out.gif");
    let out = lynx(&["generate", "--output", video.to_str().unwrap()], &dir);
    assert!(video.is_file());
    let copies: Vec<_> = std::fs::read_dir(dir.join("lynx-rs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert!(
        copies[0]
            .join("Wan2.1-T2V-tiny-Diffusers/model_index.json")
            .is_file()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(copies[0].to_str().unwrap()), "{stderr}");
    // The summary line names each stage.
    for stage in ["load", "encode prompts", "denoise", "decode"] {
        assert!(stderr.contains(stage), "no `{stage}` in {stderr}");
    }
}

/// A repo id that is not in the cache, offline, is a sentence naming the repo.
#[test]
fn offline_repo_id_names_what_is_missing() {
    let dir = tmp("offline");
    let out = Command::new(env!("CARGO_BIN_EXE_lynx"))
        .args([
            "generate",
            "--model",
            "Wan-AI/Wan2.1-T2V-14B-Diffusers",
            "--output",
            dir.join("x.gif").to_str().unwrap(),
        ])
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", dir.join("hf"))
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("Wan-AI/Wan2.1-T2V-14B-Diffusers"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!dir.join("x.gif").exists());
}

/// `--seed -1` draws a seed, prints it, and records it in the output where the format has
/// room (`.safetensors`' `__metadata__`), so the run can be replayed.
#[test]
fn random_seed_is_printed_and_recorded() {
    let dir = tmp("seed");
    let video = dir.join("out.safetensors");
    let out = lynx(
        &[
            "generate",
            "--seed",
            "-1",
            "--output",
            video.to_str().unwrap(),
        ],
        &dir,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let printed = stderr
        .lines()
        .find_map(|l| l.strip_prefix("seed: "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no seed printed: {stderr}"))
        .to_string();
    let bytes = std::fs::read(&video).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let recorded = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("seed"))
        .cloned();
    assert_eq!(recorded.as_deref(), Some(printed.as_str()));
}
