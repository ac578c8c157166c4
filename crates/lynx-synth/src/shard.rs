//! Sharding as `save_pretrained` does it (diffusers and transformers both call
//! `huggingface_hub.split_torch_state_dict_into_shards`): walk the state dict in order,
//! put a tensor larger than `max_shard_size` in a shard of its own, start a new shard
//! when the next tensor would tip the current one over, name the shards
//! `{prefix}-0000i-of-0000n.safetensors` (or `{prefix}.safetensors` when there is one),
//! and write `{prefix}.safetensors.index.json` with `total_size` and the sorted
//! `weight_map`.

use std::collections::BTreeMap;

use serde_json::json;

use crate::json::dumps;

/// Splits tensors of the given byte sizes (state-dict order) into shards of at most
/// `max_shard_size` bytes each (a larger tensor gets a shard of its own); returns the
/// tensor indices of every shard, in shard order.
pub fn split(sizes: &[u64], max_shard_size: u64) -> Vec<Vec<usize>> {
    let mut shards = Vec::new();
    let mut current = Vec::new();
    let mut current_size = 0u64;
    for (i, &size) in sizes.iter().enumerate() {
        if size > max_shard_size {
            shards.push(vec![i]);
            continue;
        }
        if current_size + size > max_shard_size && !current.is_empty() {
            shards.push(std::mem::take(&mut current));
            current_size = 0;
        }
        current.push(i);
        current_size += size;
    }
    if !current.is_empty() {
        shards.push(current);
    }
    shards
}

/// File names of `n` shards: `{prefix}.safetensors` for one, else
/// `{prefix}-00001-of-0000n.safetensors`, ...
pub fn shard_names(prefix: &str, n: usize) -> Vec<String> {
    if n == 1 {
        return vec![format!("{prefix}.safetensors")];
    }
    (1..=n)
        .map(|i| format!("{prefix}-{i:05}-of-{n:05}.safetensors"))
        .collect()
}

/// The `{prefix}.safetensors.index.json` text: `{"metadata": {"total_size": ...},
/// "weight_map": {key: file}}`.
pub fn index_json(total_size: u64, weight_map: &BTreeMap<String, String>) -> String {
    dumps(&json!({
        "metadata": { "total_size": total_size },
        "weight_map": weight_map,
    }))
}
