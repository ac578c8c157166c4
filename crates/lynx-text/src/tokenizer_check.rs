//! Checks of a `tokenizer.json` before the `tokenizers` crate sees it, for what that
//! crate would panic or overflow its stack on.
//!
//! - Nesting: the file is parsed (untagged enums buffered and replayed) recursively, so a
//!   file nested a hundred levels deep overflows a thread's stack. Tokenizer files nest
//!   a handful of levels; more than [`MAX_DEPTH`] is refused.
//! - Unigram vocabulary pieces: `tokenizers` keeps them in a trie of one nested node
//!   per byte, which it clones and drops recursively, so one piece of 100 000 bytes
//!   overflows the stack. Pieces longer than [`MAX_PIECE`] bytes are refused
//!   (SentencePiece's own limit on a piece is 512 characters).
//! - The SentencePiece `Precompiled` normalizer: `tokenizers` 0.22 builds it with
//!   `.expect("Precompiled")` (a corrupt `precompiled_charsmap` panics while loading),
//!   and normalizes through its double-array trie with unchecked indexing (a corrupt
//!   trie panics while encoding). So every `precompiled_charsmap` is decoded and walked
//!   here first: strict base64; a trie of whole `u32` units followed by UTF-8
//!   replacement text; and for every unit a lookup can land on (the root and every unit
//!   that is not a value unit), the child block and the value unit it points to lie
//!   inside the trie, and a leaf's value is a character boundary of the replacement
//!   text. Those are exactly the reads the normalizer makes.

use lynx_core::config::json_kind;
use serde_json::Value;

/// Deepest nesting of arrays and objects accepted (the Wan tokenizer's is 5).
pub(crate) const MAX_DEPTH: usize = 16;

/// Longest Unigram vocabulary piece accepted, in bytes.
pub(crate) const MAX_PIECE: usize = 2048;

/// Checks the parsed `tokenizer.json`; the error says what is wrong.
pub(crate) fn check(json: &Value) -> Result<(), String> {
    let depth = depth(json);
    if depth > MAX_DEPTH {
        return Err(format!(
            "it nests {depth} levels deep (tokenizer files nest a handful; at most \
             {MAX_DEPTH} are accepted)"
        ));
    }
    if let Some(model) = json.get("model")
        && model.get("type").and_then(Value::as_str) == Some("Unigram")
        && let Some(Value::Array(vocab)) = model.get("vocab")
    {
        for (i, entry) in vocab.iter().enumerate() {
            if let Some(piece) = entry.get(0).and_then(Value::as_str)
                && piece.len() > MAX_PIECE
            {
                return Err(format!(
                    "vocabulary piece {i} is {} bytes long (at most {MAX_PIECE} are accepted)",
                    piece.len()
                ));
            }
        }
    }
    match json.get("normalizer") {
        Some(normalizer) => check_normalizers(normalizer),
        None => Ok(()),
    }
}

/// Nesting depth: the most arrays and objects on one path from the root (`[]` is 1,
/// `[[1]]` is 2, a lone number 0), without recursion.
fn depth(v: &Value) -> usize {
    let mut stack = vec![(v, 1usize)];
    let mut deepest = 0;
    while let Some((v, d)) = stack.pop() {
        match v {
            Value::Array(items) => {
                deepest = deepest.max(d);
                stack.extend(items.iter().map(|x| (x, d + 1)));
            }
            Value::Object(map) => {
                deepest = deepest.max(d);
                stack.extend(map.values().map(|x| (x, d + 1)));
            }
            _ => {}
        }
    }
    deepest
}

/// Checks every `Precompiled` normalizer under `normalizer` (the `normalizer` entry of
/// a `tokenizer.json`, possibly a `Sequence`); the error says what is wrong.
fn check_normalizers(normalizer: &Value) -> Result<(), String> {
    match normalizer {
        Value::Object(map) => {
            let tagged = map.get("type").and_then(Value::as_str) == Some("Precompiled");
            match map.get("precompiled_charsmap") {
                Some(Value::String(s)) => check_charsmap(s)?,
                Some(other) => {
                    return Err(format!(
                        "the Precompiled normalizer's `precompiled_charsmap` is {}, not a \
                         base64 string",
                        json_kind(other)
                    ));
                }
                None if tagged => {
                    return Err("the Precompiled normalizer has no `precompiled_charsmap`".into());
                }
                None => {}
            }
            map.values().try_for_each(check_normalizers)
        }
        Value::Array(items) => items.iter().try_for_each(check_normalizers),
        _ => Ok(()),
    }
}

/// Checks one base64 `precompiled_charsmap` (see the module docs).
fn check_charsmap(b64: &str) -> Result<(), String> {
    let bad = |what: &str| format!("the Precompiled normalizer's precompiled_charsmap {what}");
    let bytes = decode_base64(b64).ok_or_else(|| bad("is not valid base64"))?;
    let trie_size = bytes
        .get(..4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize)
        .ok_or_else(|| bad("is shorter than its header"))?;
    let units = trie_size / 4;
    let trie_end = units
        .checked_mul(4)
        .and_then(|n| n.checked_add(4))
        .filter(|&end| end <= bytes.len())
        .ok_or_else(|| bad("declares a trie longer than itself"))?;
    let trie: Vec<usize> = bytes[4..trie_end]
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()) as usize)
        .collect();
    let text = std::str::from_utf8(&bytes[trie_end..])
        .map_err(|_| bad("holds replacement text that is not UTF-8"))?;
    if trie.is_empty() {
        return Err(bad("has an empty trie"));
    }
    let len = trie.len();
    // A lookup xors a byte (< 256) into a child block's base: the whole block of 256
    // units must exist.
    let block_inside = |base: usize| (base | 0xff) < len;
    for (i, &unit) in trie.iter().enumerate() {
        let is_value_unit = unit & (1 << 31) != 0;
        if i != 0 && is_value_unit {
            continue;
        }
        let base = i ^ offset(unit);
        if !block_inside(base) {
            return Err(bad(&format!(
                "has a trie unit ({i}) pointing outside the trie"
            )));
        }
        if i != 0 && (unit >> 8) & 1 == 1 {
            let value = trie[base] & ((1 << 31) - 1);
            if !text.is_char_boundary(value) {
                return Err(bad(&format!(
                    "has a trie leaf ({i}) pointing outside its replacement text"
                )));
            }
        }
    }
    Ok(())
}

/// The child-block offset of a double-array unit (darts-clone's layout).
fn offset(unit: usize) -> usize {
    (unit >> 10) << ((unit & (1 << 9)) >> 6)
}

/// Standard base64 with padding (what [`decode_base64`] reads back).
pub(crate) fn encode_base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let mut n = 0u32;
        for (i, &b) in group.iter().enumerate() {
            n |= u32::from(b) << (16 - 8 * i);
        }
        for i in 0..4 {
            if i <= group.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64 with padding, strictly: whole 4-character groups, `=` only at the
/// end, unused bits zero. Stricter than any decoder the `tokenizers` crate may use.
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let s = s.as_bytes();
    if !s.len().is_multiple_of(4) {
        return None;
    }
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for (k, group) in s.chunks_exact(4).enumerate() {
        let last = k + 1 == s.len() / 4;
        let pad = group.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &group[..4 - pad] {
            n = n << 6 | value(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = n.to_be_bytes();
        // The bits past the last whole byte must be zero.
        if (pad == 1 && bytes[3] != 0) || (pad == 2 && bytes[2] != 0) {
            return None;
        }
        out.extend_from_slice(&bytes[1..4 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_nesting_is_refused() {
        let deep: Value =
            serde_json::from_str(&format!("{}{}", "[".repeat(20), "]".repeat(20))).unwrap();
        assert!(check(&deep).unwrap_err().contains("20 levels"));
        let limit: Value = serde_json::from_str(&format!(
            "{}{}",
            "[".repeat(MAX_DEPTH),
            "]".repeat(MAX_DEPTH)
        ))
        .unwrap();
        check(&limit).unwrap();
        let shallow: Value = serde_json::from_str(r#"{"model": {"vocab": [["a", 1.0]]}}"#).unwrap();
        check(&shallow).unwrap();
    }

    #[test]
    fn base64_round_trips() {
        for n in 0..40u8 {
            let bytes: Vec<u8> = (0..n).map(|i| i.wrapping_mul(97).wrapping_add(n)).collect();
            assert_eq!(decode_base64(&encode_base64(&bytes)), Some(bytes));
        }
        assert_eq!(encode_base64(b"Ma"), "TWE=");
    }

    #[test]
    fn base64_is_strict() {
        assert_eq!(decode_base64("TWFu").unwrap(), b"Man");
        assert_eq!(decode_base64("TWE=").unwrap(), b"Ma");
        assert_eq!(decode_base64("TQ==").unwrap(), b"M");
        assert!(decode_base64("TWF").is_none());
        assert!(decode_base64("TR==").is_none(), "non-zero trailing bits");
        assert!(decode_base64("T===").is_none());
        assert!(decode_base64("TQ==TWFu").is_none());
        assert!(decode_base64("TW!u").is_none());
    }

    #[test]
    fn corrupt_tries_are_refused() {
        let b64 = |bytes: &[u8]| {
            // Encode with the inverse of the decoder above.
            const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            let mut s = String::new();
            for c in bytes.chunks(3) {
                let n = c.iter().fold(0u32, |n, &b| n << 8 | u32::from(b)) << (8 * (3 - c.len()));
                for k in 0..=c.len() {
                    s.push(A[(n >> (18 - 6 * k) & 63) as usize] as char);
                }
                s.push_str(&"=".repeat(3 - c.len()));
            }
            s
        };
        // A root whose child block lies past the one-unit trie.
        let mut bytes = 4u32.to_le_bytes().to_vec();
        bytes.extend(0u32.to_le_bytes());
        let e = check_charsmap(&b64(&bytes)).unwrap_err();
        assert!(e.contains("outside the trie"), "{e}");
        // A trie declared longer than the data.
        let e = check_charsmap(&b64(&1024u32.to_le_bytes())).unwrap_err();
        assert!(e.contains("longer than itself"), "{e}");
        // 256 zero units and some text: a valid (empty) trie.
        let mut bytes = 1024u32.to_le_bytes().to_vec();
        bytes.extend([0; 1024]);
        bytes.extend(b"a\0");
        check_charsmap(&b64(&bytes)).unwrap();
    }
}
