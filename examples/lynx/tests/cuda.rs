//! A `cuda` build of `lynx` on the machine it runs on: without an NVIDIA driver (CI's
//! case) `--device auto` runs on the next device and says why, and `--device cuda:N` is
//! a one-line error with exit status 2 that writes nothing; with one, `auto` is
//! `cuda:0`. Whether the machine has the driver is read from the kernel
//! (`/proc/driver/nvidia/version`), not from the probe under test.
//!
//! Run with `cargo test -p lynx-cli --features cuda --test cuda` (see `.ci/run`).
#![cfg(feature = "cuda")]

use std::path::PathBuf;
use std::process::{Command, Output};

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lynx-cuda-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn lynx(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lynx"))
        .args(args)
        .output()
        .unwrap()
}

/// Whether the NVIDIA kernel driver is loaded here (without it no CUDA device exists).
fn nvidia_driver_loaded() -> bool {
    std::path::Path::new("/proc/driver/nvidia/version").exists()
}

#[test]
fn auto_takes_the_next_device_without_a_driver_and_says_why() {
    let dir = tmp("auto");
    let gif = dir.join("lynx.gif");
    let out = lynx(&[
        "generate",
        "--steps",
        "1",
        "--output",
        gif.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(std::fs::metadata(&gif).unwrap().len() > 100);
    let line = err
        .lines()
        .find(|l| l.contains("(--device auto)"))
        .unwrap_or_else(|| panic!("no device line: {err}"));
    if nvidia_driver_loaded() {
        assert_eq!(line, "device: cuda:0 (--device auto)", "{err}");
        return;
    }
    let next = match lynx_core::device::hardware_wgpu_adapter() {
        Some(_) => "wgpu",
        None => "cpu",
    };
    let (why, device) = line
        .split_once("; ")
        .unwrap_or_else(|| panic!("no reason given for passing CUDA over: {line}"));
    assert_eq!(device, format!("device: {next} (--device auto)"), "{err}");
    assert!(
        why.starts_with("no CUDA driver found (") || why.starts_with("the CUDA driver "),
        "{line}"
    );
}

/// `cuda:0` without a driver (or, with one, a device past the last): exit status 2, one
/// line naming the device and what is missing, no output file, for both commands.
#[test]
fn a_cuda_device_the_machine_lacks_is_a_one_line_error() {
    let dir = tmp("cuda0");
    let (device, want) = if nvidia_driver_loaded() {
        ("cuda:4096", "the CUDA driver reports ")
    } else {
        ("cuda:0", "")
    };
    let gif = dir.join("lynx.gif");
    let emb = dir.join("emb.safetensors");
    let runs: [&[&str]; 2] = [
        &[
            "generate",
            "--device",
            device,
            "--output",
            gif.to_str().unwrap(),
        ],
        &[
            "embed-face",
            "--device",
            device,
            "--arcface",
            "/nonexistent/arcface.pth",
            "--aligned-face",
            "/nonexistent/face.png",
            "--output",
            emb.to_str().unwrap(),
        ],
    ];
    for args in runs {
        let out = lynx(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        let reason = err
            .trim_end()
            .strip_prefix(&format!("Error: device `{device}`: "))
            .unwrap_or_else(|| panic!("{args:?}: {err}"));
        if want.is_empty() {
            assert!(
                reason.starts_with("no CUDA driver found (")
                    || reason.starts_with("the CUDA driver "),
                "{err}"
            );
        } else {
            assert!(reason.starts_with(want), "{err}");
        }
    }
    let written: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(written.is_empty(), "{written:?}");
}

/// The library's side: `parse_device` returns the error, and burn's CUDA devices are
/// recognised for the memory plan (`available_memory` asks the driver for them).
#[test]
fn library_device_choice_without_panics() {
    use lynx_core::device::{available_memory, cuda_driver, cuda_index, parse_device};
    let device = burn::tensor::Device::cuda(3);
    assert_eq!(cuda_index(&device), Some(3));
    assert_eq!(cuda_index(&parse_device("cpu").unwrap()), None);
    if nvidia_driver_loaded() {
        let driver = cuda_driver().unwrap();
        assert!(available_memory(&parse_device("cuda:0").unwrap()).is_some_and(|b| b > 0));
        assert!(parse_device(&format!("cuda:{}", driver.devices.len())).is_err());
        return;
    }
    let why = cuda_driver().unwrap_err();
    let err = parse_device("cuda").unwrap_err().to_string();
    assert_eq!(err, format!("device `cuda`: {why}"));
    assert_eq!(available_memory(&device), None);
}
