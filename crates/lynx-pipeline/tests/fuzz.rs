//! Mutation fuzzing (see `lynx_testing::fuzz`) of every file the pipeline reads
//! beside the checkpoints (those are fuzzed in lynx-core): the configs, each through the
//! load it configures (with the real weights beside it), `model_index.json`, the
//! tokenizer, photos, landmarks, and the face-embedding and noise files.
//! `LYNX_FUZZ_CASES=10000` runs 10 000 cases per target.

use std::path::{Path, PathBuf};

use burn::tensor::{DType, Device};
use lynx_core::Result;
use lynx_pipeline::lynx_arcface::image_io::MAX_DECODED_PER_FILE_BYTE;
use lynx_pipeline::lynx_arcface::{Landmarks, load_rgb};
use lynx_pipeline::lynx_sampler::{FlowMatchEuler, Scheduler, SchedulerConfig, UniPcMultistep};
use lynx_pipeline::lynx_text::{Tokenizer, Umt5Config, Umt5Encoder};
use lynx_pipeline::{folder::ModelIndex, inputs, lynx_dit::WanTransformer, lynx_vae::WanVae};
use lynx_store::load_module;
use lynx_testing::fixtures_dir;
use lynx_testing::fuzz::{CountingAlloc, Format, FuzzFile, Target};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn wan(part: &str) -> PathBuf {
    fixtures_dir().join("Wan2.1-T2V-tiny-Diffusers").join(part)
}

fn cpu() -> Device {
    lynx_core::device::parse_device("cpu").unwrap()
}

/// `config.json` (mutated) beside every other file of the model part `part` (fixed).
fn config_seed(part: &str, config: &str) -> Vec<FuzzFile> {
    let dir = wan(part);
    let mut files = vec![FuzzFile::read(dir.join(config), Format::Json)];
    let mut others: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != config)
        .collect();
    others.sort();
    files.extend(
        others
            .into_iter()
            .map(|p| FuzzFile::read(p, Format::Binary).fixed()),
    );
    files
}

#[test]
fn fuzz_wan_config() {
    Target::new("wan_config")
        .cases(300)
        .expect(0.5, 0.01)
        .seed(config_seed("transformer", "config.json"))
        .run(|dir| WanTransformer::from_pretrained(dir, &cpu(), DType::F32).map(drop));
}

#[test]
fn fuzz_vae_config() {
    Target::new("vae_config")
        .cases(300)
        .expect(0.5, 0.01)
        .seed(config_seed("vae", "config.json"))
        .run(|dir| WanVae::from_pretrained(dir, &cpu(), DType::F32).map(drop));
}

#[test]
fn fuzz_umt5_config() {
    Target::new("umt5_config")
        .cases(300)
        .expect(0.5, 0.02)
        .seed(config_seed("text_encoder", "config.json"))
        .run(|dir| {
            let config = Umt5Config::load(dir.join("config.json"))?;
            load_module(dir, &cpu(), DType::F32, |w| Umt5Encoder::load(w, &config)).map(drop)
        });
}

#[test]
fn fuzz_scheduler_config() {
    Target::new("scheduler_config")
        .cases(1000)
        .expect(0.5, 0.03)
        .seed(config_seed("scheduler", "scheduler_config.json"))
        .run(|dir| {
            let config = SchedulerConfig::load(dir)?;
            let mut euler = FlowMatchEuler::from_config(&config)?;
            euler.set_timesteps(4)?;
            config.check_unipc()?;
            let mut unipc = UniPcMultistep::new(config)?;
            unipc.set_timesteps(4)
        });
}

#[test]
fn fuzz_model_index() {
    let index = FuzzFile::read(wan("model_index.json"), Format::Json);
    Target::new("model_index")
        .cases(1000)
        .expect(0.5, 0.01)
        .seed(vec![index])
        .run(|dir| {
            for part in [
                "transformer",
                "vae",
                "text_encoder",
                "tokenizer",
                "scheduler",
            ] {
                std::fs::create_dir_all(dir.join(part)).unwrap();
            }
            ModelIndex::load(dir).map(drop)
        });
}

#[test]
fn fuzz_tokenizer() {
    let file = FuzzFile::read(wan("tokenizer/tokenizer.json"), Format::Json);
    Target::new("tokenizer")
        .cases(150)
        .expect(0.5, 0.01)
        .seed(vec![file])
        .run(|dir| {
            let tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"), 64)?;
            tokenizer.tokenize("A person carves a pumpkin on a porch, smiling. Ünïcödé 123")?;
            tokenizer.tokenize(&"long ".repeat(100)).map(drop)
        });
}

/// An image target: `load_rgb` on each seed, allocations bounded as it bounds them, at
/// least the shares `expect` (rejected, accepted) of the cases.
fn image_target(
    name: &str,
    seeds: &[PathBuf],
    format: Format,
    cases: usize,
    (rejected, accepted): (f64, f64),
) {
    let mut target = Target::new(name)
        .cases(cases)
        .expect(rejected, accepted)
        .alloc_bound(MAX_DECODED_PER_FILE_BYTE as usize, 1 << 20);
    for path in seeds {
        let ext = path.extension().unwrap().to_string_lossy().into_owned();
        let file = FuzzFile::read(path, format).named(format!("photo.{ext}"));
        target = target.seed(vec![file]);
    }
    target.run(|dir| {
        let path = std::fs::read_dir(dir)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        load_rgb(path).map(drop)
    });
}

fn seeds(names: &[&str]) -> Vec<PathBuf> {
    names.iter().map(|n| fixtures_dir().join(n)).collect()
}

#[test]
fn fuzz_png() {
    let png = seeds(&[
        "components/photo.png",
        "components/pipeline_aligned_face.png",
        "fuzz/photo_palette.png",
        "fuzz/photo_grey16.png",
    ]);
    image_target("png", &png, Format::Png, 600, (0.4, 0.05));
}

#[test]
fn fuzz_jpeg() {
    let jpeg = seeds(&[
        "fuzz/photo_baseline.jpg",
        "fuzz/photo_progressive.jpg",
        "fuzz/photo_grey.jpg",
        "fuzz/photo_444.jpg",
    ]);
    // Most JPEG mutations land in entropy-coded data, which decodes to other pixels.
    image_target("jpeg", &jpeg, Format::Jpeg, 600, (0.15, 0.3));
}

#[test]
fn fuzz_webp() {
    let webp = seeds(&[
        "fuzz/photo_lossy.webp",
        "fuzz/photo_lossless.webp",
        "fuzz/photo_alpha.webp",
    ]);
    image_target("webp", &webp, Format::Riff, 600, (0.2, 0.25));
}

#[test]
fn fuzz_landmarks_json() {
    let points = Landmarks([
        [52.3, 70.1],
        [91.8, 68.4],
        [73.0, 92.6],
        [57.5, 113.2],
        [88.9, 112.0],
    ]);
    let file = FuzzFile::new(
        "landmarks.json",
        points.to_json().into_bytes(),
        Format::Json,
    );
    Target::new("landmarks_json")
        .cases(1500)
        .expect(0.5, 0.03)
        .seed(vec![file])
        .run(|dir| Landmarks::from_json_file(dir.join("landmarks.json")).map(drop));
}

#[test]
fn fuzz_face_embedding() {
    let mut target = Target::new("face_embedding").cases(1500).expect(0.5, 0.01);
    for rel in [
        "cli/face_embedding.safetensors",
        "cli/face_embedding_512.safetensors",
    ] {
        let file = FuzzFile::read(fixtures_dir().join(rel), Format::Safetensors)
            .named("embedding.safetensors");
        target = target.seed(vec![file]);
    }
    target.run(|dir| inputs::read_embedding(dir.join("embedding.safetensors")).map(drop));
}

/// A one-tensor safetensors file holding `from` of the pipeline fixture as `key`.
fn one_tensor(from: &str, key: &str) -> Vec<u8> {
    let fx = lynx_testing::fixture("components/pipeline.safetensors");
    let data = fx.read(from).unwrap();
    let shape = data.shape().to_vec();
    let dir = std::env::temp_dir().join(format!("lynx-fuzz-seed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{key}.safetensors"));
    let dtype = lynx_store::safetensors_io::Dtype::F32;
    lynx_store::safetensors_io::save(&path, &[(key, dtype, &shape, data.as_bytes())], None)
        .unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let _ = std::fs::remove_dir_all(dir);
    bytes
}

#[test]
fn fuzz_noise_files() {
    let latents = one_tensor("initial_latents", inputs::LATENTS_KEY);
    let eps = one_tensor("ref_vae_eps", inputs::REF_NOISE_KEY);
    Target::new("noise_files")
        .cases(1000)
        .expect(0.5, 0.02)
        .seed(vec![FuzzFile::new(
            "latents.safetensors",
            latents,
            Format::Safetensors,
        )])
        .seed(vec![FuzzFile::new(
            "eps.safetensors",
            eps,
            Format::Safetensors,
        )])
        .run(read_noise);
}

fn read_noise(dir: &Path) -> Result<()> {
    let latents = dir.join("latents.safetensors");
    if latents.exists() {
        inputs::read_latents(latents, &cpu()).map(drop)
    } else {
        inputs::read_ref_noise(dir.join("eps.safetensors"), &cpu()).map(drop)
    }
}
