//! A tiny original-layout Wan2.1 folder (as `Wan-AI/Wan2.1-T2V-14B` is released) built
//! from the tiny diffusers fixtures, for the tests of `--model <original folder>`.

use std::collections::BTreeMap;
use std::path::Path;

use lynx_store::formats::{Layout, layout};
use lynx_store::safetensors_io::{self, Dtype};

use crate::fixtures_dir;

/// A tensor to write: its name, shape and raw little-endian bytes.
type Tensor = (String, Vec<usize>, Vec<u8>);

/// The native Wan name of the diffusers DiT key `key` (the inverse of the loader's
/// renaming; [`original_folder`] checks each against it).
pub fn native_dit_key(key: &str) -> String {
    const TOP: [(&str, &str); 7] = [
        (
            "condition_embedder.text_embedder.linear_1.",
            "text_embedding.0.",
        ),
        (
            "condition_embedder.text_embedder.linear_2.",
            "text_embedding.2.",
        ),
        (
            "condition_embedder.time_embedder.linear_1.",
            "time_embedding.0.",
        ),
        (
            "condition_embedder.time_embedder.linear_2.",
            "time_embedding.2.",
        ),
        ("condition_embedder.time_proj.", "time_projection.1."),
        ("proj_out.", "head.head."),
        ("scale_shift_table", "head.modulation"),
    ];
    const BLOCK: [(&str, &str); 14] = [
        ("attn1.to_q.", "self_attn.q."),
        ("attn1.to_k.", "self_attn.k."),
        ("attn1.to_v.", "self_attn.v."),
        ("attn1.to_out.0.", "self_attn.o."),
        ("attn1.", "self_attn."),
        ("attn2.to_q.", "cross_attn.q."),
        ("attn2.to_k.", "cross_attn.k."),
        ("attn2.to_v.", "cross_attn.v."),
        ("attn2.to_out.0.", "cross_attn.o."),
        ("attn2.", "cross_attn."),
        ("norm2.", "norm3."),
        ("ffn.net.0.proj.", "ffn.0."),
        ("ffn.net.2.", "ffn.2."),
        ("scale_shift_table", "modulation"),
    ];
    let swap = |k: &str, table: &[(&str, &str)]| {
        table
            .iter()
            .find_map(|(from, to)| k.strip_prefix(from).map(|rest| format!("{to}{rest}")))
    };
    if let Some((n, inner)) = key.strip_prefix("blocks.").and_then(|r| r.split_once('.')) {
        return match swap(inner, &BLOCK) {
            Some(k) => format!("blocks.{n}.{k}"),
            None => key.to_string(),
        };
    }
    swap(key, &TOP).unwrap_or_else(|| key.to_string())
}

/// Writes into `dest` the tiny model in the original release's layout: Wan's
/// `config.json`, the DiT in native keys sharded in two files behind
/// `diffusion_pytorch_model.safetensors.index.json`, the T5 and the VAE as `torch.save`
/// files (`tests/fixtures/wan_original/`, made by `tools/make_wan_original.py`) and the
/// tokenizer in `google/umt5-xxl/`. The tiny text encoder and VAE are not the released
/// ones, so their diffusers configs go beside them (`text_encoder/config.json`,
/// `vae/config.json`), as the original-folder loader allows.
///
/// # Panics
/// On any I/O error, or when a native name does not map back to its diffusers name.
pub fn original_folder(dest: &Path) {
    let tiny = fixtures_dir().join("Wan2.1-T2V-tiny-Diffusers");
    let own = fixtures_dir().join("wan_original");
    let mkdir = |p: &Path| std::fs::create_dir_all(p).unwrap();
    let copy = |from: &Path, to: &Path| {
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    };
    mkdir(dest);
    for file in [
        "config.json",
        "models_t5_umt5-xxl-enc-bf16.pth",
        "Wan2.1_VAE.pth",
    ] {
        copy(&own.join(file), &dest.join(file));
    }
    let tok = dest.join("google/umt5-xxl");
    mkdir(&tok);
    for entry in std::fs::read_dir(tiny.join("tokenizer")).unwrap() {
        let entry = entry.unwrap();
        copy(&entry.path(), &tok.join(entry.file_name()));
    }
    for part in ["text_encoder", "vae"] {
        mkdir(&dest.join(part));
        copy(
            &tiny.join(part).join("config.json"),
            &dest.join(part).join("config.json"),
        );
    }

    let dit = lynx_store::Checkpoint::open(tiny.join("transformer")).unwrap();
    let native = Layout::WanDitNative { prefixed: false };
    let mut shards: [Vec<Tensor>; 2] = [Vec::new(), Vec::new()];
    for (i, key) in dit.keys().enumerate() {
        let name = native_dit_key(key);
        assert_eq!(
            layout::rename(native, &name).as_deref(),
            Some(key),
            "native `{name}`"
        );
        let data = dit.read(key).unwrap();
        assert_eq!(data.dtype(), burn::tensor::DType::F32, "{key}");
        let shape = dit.shape(key).unwrap().to_vec();
        shards[usize::from(i % 2 == 1)].push((name, shape, data.as_bytes().to_vec()));
    }
    let mut weight_map = BTreeMap::new();
    for (i, shard) in shards.iter().enumerate() {
        let file = format!("diffusion_pytorch_model-0000{}-of-00002.safetensors", i + 1);
        let tensors: Vec<(&str, Dtype, &[usize], &[u8])> = shard
            .iter()
            .map(|(n, s, b)| (n.as_str(), Dtype::F32, s.as_slice(), b.as_slice()))
            .collect();
        safetensors_io::save(dest.join(&file), &tensors, None).unwrap();
        for (name, _, _) in shard {
            weight_map.insert(name.clone(), serde_json::Value::String(file.clone()));
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(
        dest.join("diffusion_pytorch_model.safetensors.index.json"),
        serde_json::to_string_pretty(&index).unwrap(),
    )
    .unwrap();
}
