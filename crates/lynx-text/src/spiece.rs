//! The UMT5 tokenizer from a SentencePiece model's bytes: ComfyUI's UMT5 files carry
//! theirs as the `spiece_model` uint8 tensor (`comfy/sd.py` hands it to the tokenizer;
//! `comfy/text_encoders/spiece_tokenizer.py` encodes with `SentencePieceProcessor`).
//!
//! The model is a `ModelProto` (`sentencepiece_model.proto`): its pieces (string, score,
//! type), the trainer spec (model type, special ids, byte fallback, whitespace splitting)
//! and the normalizer spec (the precompiled character map of `nmt_nfkc`, dummy prefix,
//! whitespace handling). [`tokenizer_json`] writes the `tokenizers` pipeline that encodes
//! as SentencePiece's own `encode` does, then appends `</s>` as the UMT5 tokenizers do:
//!
//! - normalizer: the precompiled map, then (`remove_extra_whitespaces`) spaces stripped at
//!   both ends and runs of spaces made one;
//! - pre-tokenizer: spaces → `▁`, a `▁` prefixed when `add_dummy_prefix`, split before
//!   each `▁` when the pieces never cross one (`split_by_whitespace`);
//! - model: Unigram over the pieces with their scores (an unknown character scores the
//!   lowest piece's score − 10 in both); user-defined pieces are matched whole first, as
//!   added tokens.
//!
//! One difference is left: SentencePiece never matches a control or unused piece in text
//! (`</s>` typed in a prompt is `</`, `s`, `>`), where the Unigram model here matches it
//! as that piece, as transformers' tokenizer does. Excluding them would take a score no
//! path takes, which would also move the unknown characters' score.
//!
//! Only what a bounded parse of the bytes gives is used: every length is checked against
//! the bytes left, and nothing is allocated from a declared size.

use serde_json::{Value, json};

/// What the tokenizer needs of a `ModelProto`.
#[derive(Debug, Clone, PartialEq)]
pub struct SpieceModel {
    /// `(piece, score, type)` in id order; type as `SentencePiece.Type` numbers it
    /// (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte).
    pub pieces: Vec<(String, f32, u32)>,
    /// `TrainerSpec.model_type`: 1 is Unigram, the only kind read here.
    pub model_type: u64,
    /// `TrainerSpec.unk_id` (default 0).
    pub unk_id: i64,
    /// `TrainerSpec.eos_id` (default 2).
    pub eos_id: i64,
    /// `TrainerSpec.byte_fallback` (default false).
    pub byte_fallback: bool,
    /// `TrainerSpec.split_by_whitespace` (default true).
    pub split_by_whitespace: bool,
    /// `TrainerSpec.treat_whitespace_as_suffix` (default false).
    pub whitespace_as_suffix: bool,
    /// `NormalizerSpec.precompiled_charsmap` (empty: no character map).
    pub charsmap: Vec<u8>,
    /// `NormalizerSpec.add_dummy_prefix` (default true).
    pub add_dummy_prefix: bool,
    /// `NormalizerSpec.remove_extra_whitespaces` (default true).
    pub remove_extra_whitespaces: bool,
    /// `NormalizerSpec.escape_whitespaces` (default true).
    pub escape_whitespaces: bool,
}

/// Protobuf wire values of one field.
enum Wire<'a> {
    Varint(u64),
    Fixed32([u8; 4]),
    Bytes(&'a [u8]),
    Fixed64,
}

/// A bounded reader of protobuf fields.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&b, rest) = self
                .rest
                .split_first()
                .ok_or("a varint runs past the end")?;
            self.rest = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("a varint is longer than 10 bytes".into())
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], String> {
        if n > self.rest.len() as u64 {
            return Err(format!(
                "a field of {n} bytes runs past the end ({} left)",
                self.rest.len()
            ));
        }
        let (head, rest) = self.rest.split_at(n as usize);
        self.rest = rest;
        Ok(head)
    }

    fn next_field(&mut self) -> Result<Option<(u64, Wire<'a>)>, String> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let (number, wire) = (key >> 3, key & 7);
        let value = match wire {
            0 => Wire::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Wire::Fixed64
            }
            2 => {
                let n = self.varint()?;
                Wire::Bytes(self.take(n)?)
            }
            5 => {
                let b = self.take(4)?;
                Wire::Fixed32([b[0], b[1], b[2], b[3]])
            }
            w => {
                return Err(format!(
                    "field {number} has wire type {w}, which is not read"
                ));
            }
        };
        Ok(Some((number, value)))
    }
}

fn fields(bytes: &[u8]) -> Fields<'_> {
    Fields { rest: bytes }
}

fn varint_of(what: &str, w: Wire<'_>) -> Result<u64, String> {
    match w {
        Wire::Varint(v) => Ok(v),
        _ => Err(format!("{what} is not a varint")),
    }
}

fn bytes_of<'a>(what: &str, w: Wire<'a>) -> Result<&'a [u8], String> {
    match w {
        Wire::Bytes(b) => Ok(b),
        _ => Err(format!("{what} is not length-delimited")),
    }
}

/// An `int32` field: negative values are sent as 64-bit two's complement.
fn int32_of(what: &str, w: Wire<'_>) -> Result<i64, String> {
    Ok(i64::from(varint_of(what, w)? as i32))
}

fn parse_piece(bytes: &[u8]) -> Result<(String, f32, u32), String> {
    let (mut piece, mut score, mut kind) = (None, 0.0f32, 1u32);
    let mut f = fields(bytes);
    while let Some((n, w)) = f.next_field()? {
        match n {
            1 => {
                let b = bytes_of("a piece's text", w)?;
                piece = Some(
                    std::str::from_utf8(b)
                        .map_err(|_| "a piece is not UTF-8".to_string())?
                        .to_string(),
                );
            }
            2 => match w {
                Wire::Fixed32(b) => score = f32::from_le_bytes(b),
                _ => return Err("a piece's score is not a float".into()),
            },
            3 => kind = varint_of("a piece's type", w)?.min(u64::from(u32::MAX)) as u32,
            _ => {}
        }
    }
    let piece = piece.ok_or("a piece has no text")?;
    if !score.is_finite() {
        return Err(format!("piece {piece:?} has the score {score}"));
    }
    Ok((piece, score, kind))
}

impl SpieceModel {
    /// Reads a serialised `ModelProto`.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let mut m = Self {
            pieces: Vec::new(),
            model_type: 1,
            unk_id: 0,
            eos_id: 2,
            byte_fallback: false,
            split_by_whitespace: true,
            whitespace_as_suffix: false,
            charsmap: Vec::new(),
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
            escape_whitespaces: true,
        };
        let mut f = fields(bytes);
        while let Some((n, w)) = f.next_field()? {
            match n {
                1 => m.pieces.push(parse_piece(bytes_of("a piece", w)?)?),
                2 => m.read_trainer(bytes_of("the trainer spec", w)?)?,
                3 => m.read_normalizer(bytes_of("the normalizer spec", w)?)?,
                _ => {}
            }
        }
        Ok(m)
    }

    fn read_trainer(&mut self, bytes: &[u8]) -> Result<(), String> {
        let mut f = fields(bytes);
        while let Some((n, w)) = f.next_field()? {
            match n {
                3 => self.model_type = varint_of("model_type", w)?,
                22 => self.split_by_whitespace = varint_of("split_by_whitespace", w)? != 0,
                24 => self.whitespace_as_suffix = varint_of("treat_whitespace_as_suffix", w)? != 0,
                35 => self.byte_fallback = varint_of("byte_fallback", w)? != 0,
                40 => self.unk_id = int32_of("unk_id", w)?,
                42 => self.eos_id = int32_of("eos_id", w)?,
                _ => {}
            }
        }
        Ok(())
    }

    fn read_normalizer(&mut self, bytes: &[u8]) -> Result<(), String> {
        let mut f = fields(bytes);
        while let Some((n, w)) = f.next_field()? {
            match n {
                2 => self.charsmap = bytes_of("precompiled_charsmap", w)?.to_vec(),
                3 => self.add_dummy_prefix = varint_of("add_dummy_prefix", w)? != 0,
                4 => self.remove_extra_whitespaces = varint_of("remove_extra_whitespaces", w)? != 0,
                5 => self.escape_whitespaces = varint_of("escape_whitespaces", w)? != 0,
                _ => {}
            }
        }
        Ok(())
    }

    /// The piece with id `id`, when it is one.
    fn piece(&self, id: i64, what: &str) -> Result<&str, String> {
        usize::try_from(id)
            .ok()
            .and_then(|i| self.pieces.get(i))
            .map(|p| p.0.as_str())
            .ok_or_else(|| format!("{what} {id} is not one of the {} pieces", self.pieces.len()))
    }
}

/// The `tokenizer.json` of `model` (see the module docs), or why it cannot be made: a
/// model kind other than Unigram, whitespace handling SentencePiece's UMT5 models do not
/// use, no pieces, or special ids outside them.
pub fn tokenizer_json(model: &SpieceModel) -> Result<Value, String> {
    if model.model_type != 1 {
        return Err(format!(
            "the model type is {} (1 is Unigram, the only kind read)",
            model.model_type
        ));
    }
    if !model.escape_whitespaces || model.whitespace_as_suffix {
        return Err("whitespace that is not escaped to a `▁` prefix is not read".into());
    }
    if model.pieces.is_empty() {
        return Err("the model has no pieces".into());
    }
    model.piece(model.unk_id, "unk_id")?;
    let eos = model.piece(model.eos_id, "eos_id")?.to_string();
    // User-defined pieces are matched whole before the model runs (SentencePiece's
    // prefix matcher): added tokens, on the normalized text.
    let added: Vec<Value> = model
        .pieces
        .iter()
        .enumerate()
        .filter(|(_, p)| p.2 == 4)
        .map(|(id, (piece, _, _))| {
            json!({
                "id": id, "content": piece, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": true, "special": false,
            })
        })
        .collect();
    let vocab: Vec<Value> = model
        .pieces
        .iter()
        .map(|(piece, score, _)| json!([piece, f64::from(*score)]))
        .collect();
    let mut normalizers = Vec::new();
    if !model.charsmap.is_empty() {
        normalizers.push(json!({
            "type": "Precompiled",
            "precompiled_charsmap": crate::tokenizer_check::encode_base64(&model.charsmap),
        }));
    }
    if model.remove_extra_whitespaces {
        normalizers.push(json!({"type": "Strip", "strip_left": true, "strip_right": true}));
        normalizers.push(json!({"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}));
    }
    let metaspace = json!({
        "type": "Metaspace",
        "replacement": "\u{2581}",
        "prepend_scheme": if model.add_dummy_prefix { "always" } else { "never" },
        "split": model.split_by_whitespace,
    });
    let eos_id = model.eos_id;
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": normalizers},
        "pre_tokenizer": metaspace,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": eos, "type_id": 0}},
            ],
            "pair": [
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": eos, "type_id": 0}},
                {"Sequence": {"id": "B", "type_id": 0}},
                {"SpecialToken": {"id": eos, "type_id": 0}},
            ],
            "special_tokens": {eos.clone(): {"id": eos, "ids": [eos_id], "tokens": [eos]}},
        },
        "decoder": metaspace,
        "model": {
            "type": "Unigram",
            "unk_id": model.unk_id,
            "vocab": vocab,
            "byte_fallback": model.byte_fallback,
        },
    }))
}
