//! Mutation fuzzing of the checkpoint readers (see `lynx_testing::fuzz`): every
//! case goes through `Checkpoint::open` and reads every tensor, as a model load does.
//! `cargo test -- fuzz` runs these and the other crates' fuzz tests;
//! `LYNX_FUZZ_CASES=10000` runs 10 000 cases per target.

use std::path::{Path, PathBuf};

use burn::tensor::DType;
use lynx_store::Checkpoint;
use lynx_store::pth::read_index;
use lynx_testing::fixtures_dir;
use lynx_testing::fuzz::{CountingAlloc, Format, FuzzFile, Target};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Reads every tensor of the checkpoint at `path` as a model load would: through
/// `Checkpoint::tensor` (rank, dtype and f32 conversion) where the rank allows it.
fn read_all(path: &Path) -> lynx_core::Result<()> {
    let ckpt = Checkpoint::open(path)?;
    let device = lynx_core::device::parse_device("cpu")?;
    let keys: Vec<String> = ckpt.keys().map(str::to_string).collect();
    for key in keys {
        let rank = ckpt.shape(&key).map_or(0, <[usize]>::len);
        match rank {
            1 => drop(ckpt.tensor::<1>(&key, &device, DType::F32)?),
            2 => drop(ckpt.tensor::<2>(&key, &device, DType::F32)?),
            3 => drop(ckpt.tensor::<3>(&key, &device, DType::F32)?),
            4 => drop(ckpt.tensor::<4>(&key, &device, DType::F32)?),
            5 => drop(ckpt.tensor::<5>(&key, &device, DType::F32)?),
            _ => drop(ckpt.read(&key)?),
        }
    }
    Ok(())
}

fn fixture(rel: &str) -> PathBuf {
    fixtures_dir().join(rel)
}

#[test]
fn fuzz_safetensors() {
    let mut target = Target::new("safetensors").cases(1500).expect(0.5, 0.03);
    for rel in [
        "cli/face_embedding.safetensors",
        "components/resampler.safetensors",
        "components/unipc.safetensors",
        "components/torch_randn.safetensors",
        "lynx_lite/ip_layers.safetensors",
        "Wan2.1-T2V-tiny-Diffusers/transformer/diffusion_pytorch_model-00009-of-00009.safetensors",
    ] {
        let file = FuzzFile::read(fixture(rel), Format::Safetensors).named("x.safetensors");
        target = target.seed(vec![file]);
    }
    target.run(|dir| read_all(&dir.join("x.safetensors")));
}

#[test]
fn fuzz_shard_index() {
    let dir = fixture("Wan2.1-T2V-tiny-Diffusers/transformer");
    let mut files: Vec<FuzzFile> = Vec::new();
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".safetensors"))
        .collect();
    names.sort();
    for p in names {
        files.push(FuzzFile::read(p, Format::Safetensors));
    }
    let index = "diffusion_pytorch_model.safetensors.index.json";
    // The index is the parser under test: it gets as many cases as all shards together.
    files.push(FuzzFile::read(dir.join(index), Format::Json).weight(files.len()));
    Target::new("shard_index")
        .cases(400)
        .expect(0.5, 0.02)
        .seed(files)
        .run(|dir| read_all(&dir.join(index)));
}

/// Opcode runs that stress the unpickler's nesting and stack limits.
const PICKLE_RUNS: [&[u8]; 10] = [
    b"(", b"]", b"}", b")", b"(]", b"h\x00", b"\x85", b"]a", b"Na", b"N",
];

/// A `.pth` seed: zip signatures, tensor data bounds and the end of the pickles are its
/// boundaries; the pickles (before the first tensor) are where mutations go.
fn pth_seed(path: &Path) -> FuzzFile {
    let bytes = std::fs::read(path).unwrap();
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let tensors = read_index(&bytes, Path::new(&name)).unwrap_or_default();
    let mut boundaries: Vec<usize> = tensors
        .iter()
        .flat_map(|t| [t.start as usize, t.end as usize])
        .collect();
    for i in 0..bytes.len().saturating_sub(4) {
        if &bytes[i..i + 2] == b"PK" && bytes[i + 2] < 9 && bytes[i + 3] < 9 {
            boundaries.push(i);
        }
    }
    let first_data = tensors
        .iter()
        .map(|t| t.start as usize)
        .min()
        .unwrap_or(bytes.len().min(1024));
    boundaries.push(first_data);
    FuzzFile::new(name, bytes, Format::Binary)
        .boundaries(boundaries)
        .hot(0..first_data.min(64 << 10))
        .runs(&PICKLE_RUNS)
}

#[test]
fn fuzz_pth() {
    let public = fixture("components");
    let synthetic = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/pth");
    let mut target = Target::new("pth").cases(1600).expect(0.5, 0.01);
    for path in [
        public.join("arcface_ir_se.pth"),
        public.join("arcface_ir_se_legacy.pth"),
        public.join("retinaface_mobile0.25.pth"),
        public.join("retinaface_mobile0.25_legacy_module.pth"),
        public.join("retinaface_photo.pth"),
        // Protocol 4 (FRAME, MEMOIZE, STACK_GLOBAL), every dtype, nesting, Parameters.
        synthetic.join("synthetic_p4.pth"),
        // Legacy storage views.
        synthetic.join("synthetic_legacy.pth"),
        // The pre-0.4 tar format, which is recognised and refused.
        synthetic.join("synthetic_tar.pth"),
    ] {
        target = target.seed(vec![pth_seed(&path)]);
    }
    target.run(|dir| {
        let file = std::fs::read_dir(dir)
            .map_err(|e| lynx_core::Error::io(dir, e))?
            .next()
            .and_then(|e| e.ok())
            .map(|e| e.path())
            .expect("one file per case");
        read_all(&file)
    });
}

/// Opens a LoRA file as a load does, and makes every delta a model of the file's own
/// shapes would take (bounded as a model's tensors bound them).
fn read_lora(path: &Path) -> lynx_core::Result<()> {
    use lynx_store::{LoraFile, LoraSet};
    let file = std::sync::Arc::new(LoraFile::open(path)?);
    let mut set = LoraSet::new();
    set.add(file.clone(), 0.5)?;
    let device = lynx_core::device::parse_device("cpu")?;
    let ckpt = Checkpoint::open(path)?;
    for (module, delta) in file.modules() {
        if let Some(lr) = &delta.low_rank
            && lr.dims[0] * lr.dims[1] <= 1 << 16
        {
            set.delta::<2>(&format!("{module}.weight"), lr.dims, &device)?;
            set.low_rank(&format!("{module}.weight"), lr.dims, &device, DType::F32)?;
        }
        if let Some(key) = &delta.bias
            && let Some(&[n]) = ckpt.shape(key)
        {
            set.delta::<1>(&format!("{module}.bias"), [n], &device)?;
        }
        if let Some(key) = &delta.weight
            && delta.low_rank.is_none()
            && let Some(&[n]) = ckpt.shape(key)
        {
            set.delta::<1>(&format!("{module}.weight"), [n], &device)?;
        }
    }
    Ok(())
}

#[test]
fn fuzz_lora_files() {
    let mut target = Target::new("lora").cases(900);
    for rel in [
        "loras/style_peft.safetensors",
        "loras/style_comfy.safetensors",
        "loras/accel_comfy.safetensors",
    ] {
        let file = FuzzFile::read(fixture(rel), Format::Safetensors).named("x.safetensors");
        target = target.seed(vec![file]);
    }
    target.run(|dir| read_lora(&dir.join("x.safetensors")));
}

#[test]
fn fuzz_lora_adapter_metadata() {
    use lynx_store::lora::metadata::parse_adapter_config;
    let seed =
        FuzzFile::read(fixture("fuzz/lora_adapter_metadata.json"), Format::Json).named("meta.json");
    Target::new("lora_adapter_metadata")
        .cases(600)
        .seed(vec![seed])
        .run(|dir| {
            let path = dir.join("meta.json");
            let text = std::fs::read(&path).map_err(|e| lynx_core::Error::io(&path, e))?;
            let text = String::from_utf8_lossy(&text);
            parse_adapter_config(&text)
                .map(drop)
                .map_err(|reason| lynx_core::Error::format(&path, "LoRA metadata", reason))
        });
}
