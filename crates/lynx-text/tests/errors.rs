//! Bad input gives errors that say what to fix; edge-case prompts work.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use burn::tensor::{DType, Tensor};
use lynx_core::Error;
use lynx_store::Checkpoint;
use lynx_testing::fuzz::{CountingAlloc, Format, FuzzFile, Target};
use lynx_testing::{fixture, fixtures_dir, test_device};
use lynx_text::{TextEncoder, Tokenizer, Umt5Config, postprocess};

// The fuzz target's allocation bound counts through it.
#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn model_dir() -> PathBuf {
    fixtures_dir().join("Wan2.1-T2V-tiny-Diffusers")
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lynx-text-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// ---- a `log` sink, to see the truncation warning ----

static LOGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            LOGS.lock()
                .unwrap()
                .push(format!("{} {}", r.level(), r.args()));
        }
    }
    fn flush(&self) {}
}

static CAPTURE: Capture = Capture;

fn capture_logs() {
    let _ = log::set_logger(&CAPTURE);
    log::set_max_level(log::LevelFilter::Warn);
}

// ---- tokenizer ----

#[test]
fn missing_tokenizer_json_names_the_path() {
    let dir = tmp("no-tokenizer");
    let err = Tokenizer::from_pretrained(&dir).unwrap_err();
    let want = dir.join("tokenizer.json");
    assert!(
        matches!(&err, Error::MissingFile { path, .. } if *path == want),
        "{err:?}"
    );
    eprintln!("{err}");
    assert!(err.to_string().contains(want.to_str().unwrap()), "{err}");

    // Through the encoder, with a model folder whose tokenizer/ lacks the file.
    std::fs::create_dir_all(dir.join("tokenizer")).unwrap();
    let err = TextEncoder::from_pretrained(model_dir(), &dir, &test_device(), DType::F32)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tokenizer.json") && err.contains(dir.to_str().unwrap()),
        "{err}"
    );
}

#[test]
fn malformed_tokenizer_json_is_a_format_error() {
    let dir = tmp("bad-tokenizer");
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, "{\"model\": 3}").unwrap();
    let err = Tokenizer::from_pretrained(&path).unwrap_err();
    assert!(
        matches!(&err, Error::Format { path: p, .. } if *p == path),
        "{err:?}"
    );
}

/// What the `tokenizers` crate would panic or overflow its stack on is refused with a
/// sentence first; a long but sane vocabulary piece still loads, in a thread with the
/// default 2 MiB stack (the test threads' size).
#[test]
fn hostile_tokenizer_files_are_refused() {
    let dir = tmp("hostile-tokenizer");
    let original: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(model_dir().join("tokenizer/tokenizer.json")).unwrap(),
    )
    .unwrap();
    let write = |name: &str, v: &serde_json::Value| {
        let p = dir.join(name);
        std::fs::write(&p, serde_json::to_string(v).unwrap()).unwrap();
        p
    };
    let with_piece = |n: usize| {
        let mut v = original.clone();
        v["model"]["vocab"][150][0] = serde_json::Value::String("a".repeat(n));
        v
    };
    let long = write("long.json", &with_piece(2048));
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let t = Tokenizer::from_file(&long, 64).unwrap();
            let copy = t.clone();
            copy.tokenize(&"a".repeat(3000)).unwrap();
        })
        .unwrap()
        .join()
        .unwrap();
    let too_long = write("too_long.json", &with_piece(100_000));
    let e = Tokenizer::from_file(&too_long, 64).unwrap_err().to_string();
    assert!(
        e.contains("too_long.json") && e.contains("piece 150"),
        "{e}"
    );

    let mut v = original.clone();
    let map = &mut v["normalizer"]["normalizers"][0]["precompiled_charsmap"];
    let mut b64 = map.as_str().unwrap().to_string();
    b64.replace_range(8..12, "////");
    *map = serde_json::Value::String(b64);
    let e = Tokenizer::from_file(write("charsmap.json", &v), 64)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("charsmap.json") && e.contains("precompiled_charsmap"),
        "{e}"
    );

    let mut v = original.clone();
    v["added_tokens"][0]["content"] =
        serde_json::from_str(&format!("{}{}", "[".repeat(100), "]".repeat(100))).unwrap();
    let e = Tokenizer::from_file(write("deep.json", &v), 64)
        .unwrap_err()
        .to_string();
    assert!(e.contains("deep.json") && e.contains("nests"), "{e}");
}

#[test]
fn empty_prompt_is_the_end_token_alone() {
    let tok = Tokenizer::from_pretrained(model_dir()).unwrap();
    let t = tok.tokenize("").unwrap();
    assert_eq!(t.len, 1);
    assert_eq!(t.ids[0], tok.inner().token_to_id("</s>").unwrap());
    assert!(t.ids[1..].iter().all(|&i| i == tok.pad_id()));
    assert_eq!(t.mask.iter().sum::<u32>(), 1);

    let enc = TextEncoder::from_model_dir(model_dir(), &test_device(), DType::F32).unwrap();
    let e = enc.encode("", true).unwrap();
    assert_eq!(e.dims(), [1, 512, 32]);
    let rows = e.clone().narrow(1, 1, 511).abs().max().into_scalar::<f32>();
    assert_eq!(rows, 0.0);
    assert!(e.narrow(1, 0, 1).abs().max().into_scalar::<f32>() > 0.0);
    // Only whitespace cleans to the empty prompt.
    let w = enc.encode(" \t\n ", true).unwrap();
    assert_eq!(enc.cache().len(), 2);
    assert_eq!(
        lynx_testing::diff(&w, &enc.encode("", true).unwrap()).max_abs,
        0.0
    );
}

#[test]
fn long_prompt_is_truncated_with_a_warning() {
    capture_logs();
    let tok = Tokenizer::from_pretrained(model_dir()).unwrap();
    let text = "a person smiles at the camera in the evening light ".repeat(80);
    let full = tok.inner().encode(text.as_str(), false).unwrap();
    assert!(full.len() > 600, "{}", full.len());

    let t = tok.tokenize(&text).unwrap();
    assert_eq!(t.len, 512);
    assert_eq!(t.mask, vec![1; 512]);
    assert_eq!(t.truncated_from, Some(full.len() + 1));
    // The first 511 tokens, then the end token (transformers' truncation).
    assert_eq!(&t.ids[..511], &full.get_ids()[..511]);
    assert_eq!(t.ids[511], tok.inner().token_to_id("</s>").unwrap());
    let logs = LOGS.lock().unwrap().clone();
    let needle = format!("prompt has {} tokens", full.len() + 1);
    assert!(
        logs.iter()
            .any(|l| l.starts_with("WARN") && l.contains(&needle)),
        "no warning {needle:?} in {logs:?}"
    );

    // Encoding a long prompt works too and fills all 512 rows.
    let enc = TextEncoder::from_model_dir(model_dir(), &test_device(), DType::F32).unwrap();
    let e = enc.encode(&text, true).unwrap();
    assert_eq!(e.dims(), [1, 512, 32]);
    let last = e.narrow(1, 511, 1).abs().max().into_scalar::<f32>();
    assert!(last > 0.0);
}

// ---- config ----

#[test]
fn config_errors_name_the_field() {
    let path = Path::new("text_encoder/config.json");
    let err = Umt5Config::parse(
        r#"{"d_kv": 8, "d_ff": 48, "num_heads": 4, "num_layers": 2}"#,
        path,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("d_model") && err.contains("config.json"),
        "{err}"
    );

    let t5 = r#"{"model_type": "t5", "d_model": 32, "d_kv": 8, "d_ff": 48, "num_heads": 4, "num_layers": 2}"#;
    let err = Umt5Config::parse(t5, path).unwrap_err().to_string();
    assert!(err.contains("model_type") && err.contains("t5"), "{err}");

    let relu = r#"{"d_model": 32, "d_kv": 8, "d_ff": 48, "num_heads": 4, "num_layers": 2, "feed_forward_proj": "relu"}"#;
    let err = Umt5Config::parse(relu, path).unwrap_err().to_string();
    assert!(err.contains("is_gated_act"), "{err}");

    let cfg = Umt5Config::load(model_dir().join("text_encoder")).unwrap();
    assert_eq!(cfg.activation, lynx_text::Activation::GeluTanh);
    assert_eq!((cfg.d_model, cfg.num_layers, cfg.inner_dim()), (32, 2, 32));
}

#[test]
fn unsupported_dtype_is_an_error() {
    let err = TextEncoder::from_model_dir(model_dir(), &test_device(), DType::I32).unwrap_err();
    assert!(err.to_string().contains("I32"), "{err}");
}

#[test]
fn postprocess_checks_lengths() {
    let x = Tensor::<3>::ones([1, 4, 2], &test_device());
    assert!(postprocess(x.clone(), &[5]).is_err());
    assert!(postprocess(x.clone(), &[1, 2]).is_err());
    let y = postprocess(x, &[0]).unwrap();
    assert_eq!(y.abs().max().into_scalar::<f32>(), 0.0);
}

// ---- weights ----

/// Writes f32 tensors as a safetensors file.
fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<u8>)]) {
    let mut header = String::from("{");
    let mut offset = 0;
    for (i, (name, shape, bytes)) in tensors.iter().enumerate() {
        let end = offset + bytes.len();
        if i > 0 {
            header.push(',');
        }
        header.push_str(&format!(
            "\"{name}\":{{\"dtype\":\"F32\",\"shape\":{shape:?},\"data_offsets\":[{offset},{end}]}}"
        ));
        offset = end;
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header.as_bytes());
    for (_, _, bytes) in tensors {
        file.extend_from_slice(bytes);
    }
    std::fs::write(path, file).unwrap();
}

fn fixture_tensors() -> Vec<(String, Vec<usize>, Vec<u8>)> {
    let ckpt = fixture("Wan2.1-T2V-tiny-Diffusers/text_encoder/model.safetensors");
    ckpt.keys()
        .map(|k| {
            let data = ckpt.read(k).unwrap();
            (
                k.to_string(),
                data.shape().to_vec(),
                data.as_bytes().to_vec(),
            )
        })
        .collect()
}

/// A text encoder folder with the fixture's config and the given weight files.
fn encoder_dir(name: &str) -> PathBuf {
    let dir = tmp(name);
    std::fs::copy(
        model_dir().join("text_encoder/config.json"),
        dir.join("config.json"),
    )
    .unwrap();
    dir
}

#[test]
fn missing_weight_names_file_and_key() {
    let dir = encoder_dir("missing-key");
    let key = "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight";
    let tensors: Vec<_> = fixture_tensors()
        .into_iter()
        .filter(|t| t.0 != key)
        .collect();
    write_safetensors(&dir.join("model.safetensors"), &tensors);
    let err =
        TextEncoder::from_pretrained(&dir, model_dir(), &test_device(), DType::F32).unwrap_err();
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(
        msg.contains(key) && msg.contains("model.safetensors"),
        "{msg}"
    );
}

#[test]
fn sharded_checkpoint_loads_like_a_single_file() {
    let dir = encoder_dir("sharded");
    let tensors = fixture_tensors();
    let (a, b) = tensors.split_at(tensors.len() / 2);
    let names = [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ];
    write_safetensors(&dir.join(names[0]), a);
    write_safetensors(&dir.join(names[1]), b);
    let map: Vec<String> = [(a, names[0]), (b, names[1])]
        .iter()
        .flat_map(|(ts, file)| ts.iter().map(move |t| format!("\"{}\": \"{file}\"", t.0)))
        .collect();
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        format!(
            "{{\"metadata\": {{}}, \"weight_map\": {{{}}}}}",
            map.join(", ")
        ),
    )
    .unwrap();
    let sharded = Checkpoint::open(&dir).unwrap();
    assert!(sharded.path().ends_with("model.safetensors.index.json"));

    let device = test_device();
    let one = TextEncoder::from_model_dir(model_dir(), &device, DType::F32).unwrap();
    let two = TextEncoder::from_pretrained(&dir, model_dir(), &device, DType::F32).unwrap();
    let p = "A person carves a pumpkin";
    let d = lynx_testing::diff(&two.encode(p, true).unwrap(), &one.encode(p, true).unwrap());
    assert_eq!(d.max_abs, 0.0, "{d:?}");
}

#[test]
fn tied_embedding_copy_is_accepted() {
    // Files saved from a full UMT5 model may hold `encoder.embed_tokens.weight` too.
    let dir = encoder_dir("tied");
    let mut tensors = fixture_tensors();
    let shared = tensors
        .iter()
        .find(|t| t.0 == "shared.weight")
        .unwrap()
        .clone();
    tensors.push(("encoder.embed_tokens.weight".into(), shared.1, shared.2));
    write_safetensors(&dir.join("model.safetensors"), &tensors);
    TextEncoder::from_pretrained(&dir, model_dir(), &test_device(), DType::F32).unwrap();
}

/// A SentencePiece model's bytes (the `spiece_model` of a ComfyUI UMT5 file): cut
/// anywhere, or with fields that cannot be read, it is refused naming the file and what
/// is wrong, never a panic.
#[test]
fn hostile_spiece_models_are_refused() {
    let path = model_dir().join("tokenizer/spiece.model");
    let bytes = std::fs::read(&path).unwrap();
    let err = |b: &[u8]| {
        Tokenizer::from_spiece(b, "umt5.safetensors", 64)
            .unwrap_err()
            .to_string()
    };
    let e = err(&[]);
    assert!(
        e.contains("umt5.safetensors") && e.contains("no pieces"),
        "{e}"
    );
    // Cut anywhere: an error or (at a field boundary) a smaller model, never a panic.
    let cuts = (0..2048).chain((2048..bytes.len()).step_by(997));
    for cut in cuts {
        let _ = Tokenizer::from_spiece(&bytes[..cut], "cut", 64);
    }
    let e = err(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]);
    assert!(e.contains("runs past the end"), "{e}");
    // A later trainer spec overrides fields of the first, as protobuf merges them.
    let with = |extra: &[u8]| [&bytes[..], extra].concat();
    let e = err(&with(&[0x12, 0x02, 0x18, 0x02])); // model_type = BPE
    assert!(e.contains("model type is 2"), "{e}");
    let e = err(&with(&[0x12, 0x04, 0xd0, 0x02, 0xe8, 0x07])); // eos_id = 1000
    assert!(e.contains("eos_id 1000"), "{e}");
    let e = err(&with(&[0x0b])); // field 1, wire type 3 (a group)
    assert!(e.contains("wire type 3"), "{e}");
    // A corrupt character map is caught by the tokenizer.json check.
    let model = lynx_text::spiece::SpieceModel::parse(&bytes).unwrap();
    let mut bad = model.clone();
    for b in &mut bad.charsmap[4..64] {
        *b = 0xff;
    }
    let json = lynx_text::spiece::tokenizer_json(&bad).unwrap();
    let file = tmp("spiece-charsmap").join("tokenizer.json");
    std::fs::write(&file, serde_json::to_string(&json).unwrap()).unwrap();
    let e = Tokenizer::from_file(&file, 64).unwrap_err().to_string();
    assert!(e.contains("precompiled_charsmap"), "{e}");
}

/// Fuzzing of the SentencePiece model reader (see `lynx_testing::fuzz`): mutated
/// `spiece.model` bytes, read into a tokenizer and used on a prompt.
#[test]
fn fuzz_spiece_model() {
    let bytes = std::fs::read(model_dir().join("tokenizer/spiece.model")).unwrap();
    // The pieces and the specs come first; the character map (the bulk) last.
    let file = FuzzFile::new("spiece.model", bytes, Format::Binary).hot(0..4096);
    Target::new("spiece")
        .cases(600)
        .expect(0.25, 0.01)
        .seed(vec![file])
        .run(|dir| {
            let path = dir.join("spiece.model");
            let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
            let tok = Tokenizer::from_spiece(&bytes, &path, 64)?;
            tok.tokenize("A woman smiles at the camera.").map(drop)
        });
}
