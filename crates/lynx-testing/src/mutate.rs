//! The mutations the fuzz driver (`testing::fuzz`) applies: byte-level ones for every file, token-level ones for
//! JSON (and the JSON header of safetensors files), data-level ones (NaN/Inf) for tensor
//! data, and fix-ups that carry a mutation past a format's checksum or length prefix so
//! that it reaches the parser's deeper checks.

use std::ops::Range;
use std::sync::OnceLock;

/// xorshift64*: small, deterministic from its seed, good enough to pick mutations.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is replaced, xorshift would stay at 0).
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// A random element of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// How a file is laid out, which decides the mutations and fix-ups it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Opaque bytes (pickles, zip archives): byte-level mutations only.
    Binary,
    /// JSON text: token-level mutations (numbers, strings, types, nesting) as well.
    Json,
    /// safetensors: the JSON header mutated as JSON (its length prefix mostly kept
    /// right), the data with NaN/Inf and bit flips.
    Safetensors,
    /// PNG: chunk CRCs recomputed after most mutations.
    Png,
    /// JPEG: segment markers are the structural boundaries.
    Jpeg,
    /// RIFF (WebP): chunk headers are the structural boundaries.
    Riff,
}

/// A token of a JSON text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tok {
    Number,
    Str,
    Literal,
}

/// Numbers written over JSON numbers: signs, limits of every integer width, overflow,
/// and the non-standard spellings some writers emit.
const NUMBERS: &[&str] = &[
    "-1",
    "0",
    "-0",
    "1",
    "2",
    "3",
    "7",
    "255",
    "256",
    "65536",
    "2147483647",
    "2147483648",
    "-2147483649",
    "4294967296",
    "9007199254740993",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "1000000000000",
    "1e308",
    "1e309",
    "-1e309",
    "1e-400",
    "0.5",
    "-2.5",
    "1.0",
    "NaN",
    "Infinity",
    "-Infinity",
];

/// Strings written over JSON strings: dtypes (valid and not), keys, paths.
const STRINGS: &[&str] = &[
    "",
    "F32",
    "F16",
    "BF16",
    "F64",
    "I64",
    "I32",
    "I16",
    "I8",
    "U8",
    "U64",
    "BOOL",
    "F8_E4M3",
    "F8_E5M2",
    "C64",
    "f32",
    "<pad>",
    "</s>",
    "module.",
    "blocks.0",
    "../../../../etc/passwd",
    "/dev/zero",
    "diffusion_pytorch_model-00001-of-00009.safetensors",
    "\\u0000",
    "\\ud800",
];

/// Values of another type written over any JSON value.
const VALUES: &[&str] = &[
    "null",
    "true",
    "false",
    "\"x\"",
    "[]",
    "{}",
    "[[[]]]",
    "[-1]",
    "[1e400]",
    "{\"a\":1}",
    "[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]",
];

/// Integers written over binary fields.
const INTEGERS: [u64; 16] = [
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX,
    u64::MAX - 7,
    1 << 20,
    1 << 40,
];

/// NaN and infinity in f32, f16 and bf16 (little-endian).
const NON_FINITE: [&[u8]; 6] = [
    &[0x00, 0x00, 0xc0, 0x7f],
    &[0x00, 0x00, 0x80, 0x7f],
    &[0x00, 0x00, 0x80, 0xff],
    &[0x00, 0x7e],
    &[0x00, 0x7c],
    &[0xc0, 0x7f],
];

/// The tokens of JSON text (numbers, strings with their quotes, `true`/`false`/`null`),
/// offset by `base`, and the offsets of its structural characters.
pub(crate) fn json_tokens(text: &[u8], base: usize) -> (Vec<(Tok, Range<usize>)>, Vec<usize>) {
    let (mut toks, mut marks) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < text.len() {
        let c = text[i];
        match c {
            b'"' => {
                let start = i;
                i += 1;
                while i < text.len() && text[i] != b'"' {
                    i += if text[i] == b'\\' { 2 } else { 1 };
                }
                i = (i + 1).min(text.len());
                toks.push((Tok::Str, base + start..base + i));
                marks.push(base + start);
                continue;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < text.len()
                    && matches!(text[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
                toks.push((Tok::Number, base + start..base + i));
                continue;
            }
            b't' | b'f' | b'n' => {
                let start = i;
                while i < text.len() && text[i].is_ascii_alphabetic() {
                    i += 1;
                }
                toks.push((Tok::Literal, base + start..base + i));
                continue;
            }
            b'{' | b'}' | b'[' | b']' | b',' | b':' => {
                marks.push(base + i);
                marks.push(base + i + 1);
            }
            _ => {}
        }
        i += 1;
    }
    (toks, marks)
}

/// Structural offsets of a PNG (chunk starts), JPEG (markers) or RIFF (chunk headers).
pub(crate) fn format_boundaries(format: Format, b: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    match format {
        Format::Png => {
            let mut pos = 8;
            out.push(pos);
            while pos + 12 <= b.len() {
                let len = u32::from_be_bytes(b[pos..pos + 4].try_into().unwrap()) as usize;
                // Length, type, data (IHDR: width, then height at + 12).
                out.extend([pos + 4, pos + 8, pos + 12]);
                pos = pos.saturating_add(12).saturating_add(len);
                out.push(pos.min(b.len()));
            }
        }
        Format::Jpeg => {
            for i in 0..b.len().saturating_sub(1) {
                if b[i] == 0xff && b[i + 1] != 0 && b[i + 1] != 0xff {
                    // Marker, segment length, and (in a frame header) height and width.
                    out.extend([i, i + 2, i + 4, i + 5, i + 7]);
                }
            }
        }
        Format::Riff => {
            out.extend([4, 8, 12]);
            let mut pos = 12;
            while pos + 8 <= b.len() {
                let len = u32::from_le_bytes(b[pos + 4..pos + 8].try_into().unwrap()) as usize;
                out.extend([pos + 4, pos + 8]);
                // Sizes inside the payloads: a VP8 frame's tag and width/height, a
                // VP8X canvas, a VP8L header.
                match &b[pos..pos + 4] {
                    b"VP8 " => out.extend([pos + 14, pos + 16]),
                    b"VP8X" => out.extend([pos + 12, pos + 15]),
                    b"VP8L" => out.push(pos + 9),
                    _ => {}
                }
                pos = pos.saturating_add(8).saturating_add(len + (len & 1));
                out.push(pos.min(b.len()));
            }
        }
        Format::Safetensors => {
            out.push(8);
            if let Some(n) = b
                .get(..8)
                .map(|s| u64::from_le_bytes(s.try_into().unwrap()))
            {
                let end = 8usize.saturating_add(n as usize).min(b.len());
                out.push(end);
                if let Ok(serde_json::Value::Object(h)) = serde_json::from_slice(&b[8..end]) {
                    for v in h.values() {
                        if let Some(o) = v.get("data_offsets").and_then(|o| o.as_array()) {
                            out.extend(
                                o.iter()
                                    .filter_map(|x| x.as_u64())
                                    .map(|x| end + x as usize),
                            );
                        }
                    }
                }
            }
        }
        Format::Binary | Format::Json => {}
    }
    out
}

/// What a mutation needs to know about the file it mutates.
pub(crate) struct Shape<'a> {
    pub format: Format,
    pub boundaries: &'a [usize],
    pub hot: Range<usize>,
    pub runs: &'a [Vec<u8>],
    pub tokens: &'a [(Tok, Range<usize>)],
    /// The JSON region (the whole file for JSON, the header for safetensors).
    pub json: Option<Range<usize>>,
    /// Where tensor data lies (safetensors), for NaN/Inf.
    pub data: Option<Range<usize>>,
}

/// Applies one mutation to `data`, returning what it did. `first` is whether `data` is
/// still the original (token positions hold only then).
pub(crate) fn mutate(rng: &mut Rng, s: &Shape<'_>, data: &mut Vec<u8>, first: bool) -> String {
    if first && s.json.is_some() && !s.tokens.is_empty() && rng.below(3) != 0 {
        let what = mutate_json(rng, s, data);
        if s.format == Format::Safetensors && rng.below(4) != 0 {
            fix_safetensors_prefix(s, data);
        }
        return what;
    }
    if let Some(d) = s
        .data
        .as_ref()
        .filter(|d| first && d.end <= data.len() && d.len() > 8)
        && rng.below(4) == 0
    {
        let n = 1 + rng.below(8);
        for _ in 0..n {
            let pat = rng.pick(&NON_FINITE);
            let at = d.start + rng.below(d.len() - 4) / 2 * 2;
            data[at..at + pat.len()].copy_from_slice(pat);
        }
        return format!("write {n} NaN/Inf values into the tensor data");
    }
    let what = mutate_bytes(rng, s, data);
    if s.format == Format::Png && rng.below(4) != 0 {
        fix_png_crcs(data);
    }
    what
}

fn mutate_json(rng: &mut Rng, s: &Shape<'_>, data: &mut Vec<u8>) -> String {
    let json = s.json.clone().unwrap_or(0..data.len());
    let (kind, tok) = rng.pick(s.tokens).clone();
    let replace = |data: &mut Vec<u8>, r: Range<usize>, with: &[u8]| {
        data.splice(r, with.iter().copied());
    };
    match rng.below(8) {
        0 | 1 if kind == Tok::Number => {
            let n = rng.pick(NUMBERS);
            replace(data, tok.clone(), n.as_bytes());
            format!("number at {} := {n}", tok.start)
        }
        0 | 1 if kind == Tok::Str => {
            let new = if rng.below(3) == 0 {
                let (_, other) = rng.pick(s.tokens).clone();
                data[other].to_vec()
            } else if rng.below(8) == 0 {
                format!("\"{}\"", "a".repeat(1 + rng.below(200_000))).into_bytes()
            } else {
                format!("\"{}\"", rng.pick(STRINGS)).into_bytes()
            };
            let shown = String::from_utf8_lossy(&new[..new.len().min(40)]).into_owned();
            replace(data, tok.clone(), &new);
            format!("string at {} := {shown}", tok.start)
        }
        0..=2 => {
            let v = rng.pick(VALUES);
            replace(data, tok.clone(), v.as_bytes());
            format!("value at {} := {v}", tok.start)
        }
        3 => {
            let open: &[u8] = if rng.below(2) == 0 { b"[" } else { b"{\"a\":" };
            let span = if rng.below(2) == 0 { 200 } else { 200_000 };
            let n = 1 + rng.below(span);
            let at = pick_mark(rng, s.boundaries, &json).min(data.len());
            let run: Vec<u8> = open.iter().copied().cycle().take(open.len() * n).collect();
            data.splice(at..at, run);
            format!("nest {n} × {} at {at}", String::from_utf8_lossy(open))
        }
        4 => {
            let at = pick_mark(rng, s.boundaries, &json).min(data.len());
            data.truncate(at);
            format!("truncate at structural offset {at}")
        }
        5 => {
            let (a, b) = two_marks(rng, s.boundaries, &json, data.len());
            data.drain(a..b);
            format!("delete {a}..{b}")
        }
        6 => {
            let (a, b) = two_marks(rng, s.boundaries, &json, data.len());
            let copy = data[a..b].to_vec();
            let at = pick_mark(rng, s.boundaries, &json).min(data.len());
            data.splice(at..at, copy);
            format!("duplicate {a}..{b} at {at}")
        }
        _ => {
            // Swap two tokens: keys with values, numbers with strings.
            let (_, other) = rng.pick(s.tokens).clone();
            let (x, y) = if tok.start < other.start {
                (tok, other)
            } else {
                (other, tok)
            };
            if x.end > y.start {
                return "no-op swap".into();
            }
            let (bx, by) = (data[x.clone()].to_vec(), data[y.clone()].to_vec());
            data.splice(y.clone(), bx);
            data.splice(x.clone(), by);
            format!("swap tokens at {} and {}", x.start, y.start)
        }
    }
}

/// A structural offset inside `within` (or a random offset there when there is none).
fn pick_mark(rng: &mut Rng, marks: &[usize], within: &Range<usize>) -> usize {
    for _ in 0..8 {
        let m = *rng.pick(marks);
        if within.contains(&m) {
            return m;
        }
    }
    within.start + rng.below(within.len().max(1))
}

fn two_marks(rng: &mut Rng, marks: &[usize], within: &Range<usize>, len: usize) -> (usize, usize) {
    let a = pick_mark(rng, marks, within).min(len);
    let b = pick_mark(rng, marks, within).min(len);
    (a.min(b), a.max(b))
}

fn mutate_bytes(rng: &mut Rng, s: &Shape<'_>, data: &mut Vec<u8>) -> String {
    let len = data.len();
    if len < 2 {
        data.push(rng.next_u64() as u8);
        return "append a byte".into();
    }
    let hot = s.hot.start.min(len - 1)..s.hot.end.clamp(s.hot.start.min(len - 1) + 1, len);
    let pos = |rng: &mut Rng| -> usize {
        match rng.below(4) {
            0 | 1 => hot.start + rng.below(hot.len()),
            2 => len - 1 - rng.below(len.min(70_000)),
            _ => rng.below(len),
        }
    };
    match rng.below(10) {
        0 => {
            let n = 1 + rng.below(8);
            for _ in 0..n {
                let p = pos(rng);
                data[p] ^= 1 << rng.below(8);
            }
            format!("flip {n} bits")
        }
        1 | 2 => {
            let p = if rng.below(2) == 0 && !s.boundaries.is_empty() {
                (*rng.pick(s.boundaries)).min(len - 1)
            } else {
                pos(rng)
            };
            let width = *rng.pick(&[1, 2, 4, 8]);
            let mut v = *rng.pick(&INTEGERS);
            if rng.below(4) == 0 {
                v = (len as u64)
                    .wrapping_add(rng.below(3) as u64)
                    .wrapping_sub(1);
            }
            let big = rng.below(2) == 0;
            let bytes = if big {
                v.to_be_bytes()[8 - width..].to_vec()
            } else {
                v.to_le_bytes()[..width].to_vec()
            };
            let end = (p + width).min(len);
            data[p..end].copy_from_slice(&bytes[..end - p]);
            let endian = if big { "BE" } else { "LE" };
            format!("write {v:#x} as {width} {endian} bytes at {p}")
        }
        3 if !s.boundaries.is_empty() => {
            let b = *rng.pick(s.boundaries);
            let cut = (b + rng.below(9)).saturating_sub(4).min(len - 1);
            data.truncate(cut);
            format!("truncate at {cut} (near a boundary)")
        }
        3 | 4 => {
            let cut = pos(rng);
            data.truncate(cut);
            format!("truncate at {cut}")
        }
        5 => {
            let p = pos(rng);
            let span = if rng.below(2) == 0 { 16 } else { 4096 };
            let n = 1 + rng.below(span);
            let end = (p + n).min(len);
            data.drain(p..end);
            format!("delete {p}..{end}")
        }
        6 => {
            let p = pos(rng);
            let span = if rng.below(2) == 0 { 16 } else { 4096 };
            let n = 1 + rng.below(span);
            let end = (p + n).min(len);
            let copy = data[p..end].to_vec();
            let at = pos(rng);
            data.splice(at..at, copy);
            format!("duplicate {p}..{end} at {at}")
        }
        7 => {
            let at = pos(rng);
            let n = 1 + rng.below(32);
            let junk: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            data.splice(at..at, junk);
            format!("insert {n} random bytes at {at}")
        }
        8 if !s.runs.is_empty() => {
            let at = hot.start + rng.below(hot.len());
            let run = rng.pick(s.runs).clone();
            let n = 1 + rng.below(100_000);
            let bytes: Vec<u8> = run.iter().copied().cycle().take(run.len() * n).collect();
            data.splice(at..at, bytes);
            format!("insert {n} × {run:?} at {at}")
        }
        _ => {
            let (a, b) = (pos(rng), pos(rng));
            data.swap(a, b);
            format!("swap bytes {a} and {b}")
        }
    }
}

/// Rewrites a safetensors length prefix to the header's new length (the header ends
/// where the original data began, shifted by what the mutation added or removed).
fn fix_safetensors_prefix(s: &Shape<'_>, data: &mut [u8]) {
    let (Some(json), Some(d)) = (&s.json, &s.data) else {
        return;
    };
    let original_total = d.end;
    let grown = data.len() as i64 - original_total as i64;
    let header = json.len() as i64 + grown;
    if header >= 0 && data.len() >= 8 {
        data[..8].copy_from_slice(&(header as u64).to_le_bytes());
    }
}

/// Recomputes the CRC of every complete PNG chunk.
fn fix_png_crcs(data: &mut [u8]) {
    let mut pos = 8;
    while pos + 12 <= data.len() {
        let len = u32::from_be_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
        let Some(end) = pos.checked_add(8).and_then(|p| p.checked_add(len)) else {
            return;
        };
        if end + 4 > data.len() {
            return;
        }
        let crc = crc32(&data[pos + 4..end]);
        data[end..end + 4].copy_from_slice(&crc.to_be_bytes());
        pos = end + 4;
    }
}

/// CRC-32 (IEEE), as PNG chunks carry it.
fn crc32(bytes: &[u8]) -> u32 {
    static TABLE: OnceLock<[u32; 256]> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        std::array::from_fn(|n| {
            (0..8).fold(n as u32, |c, _| {
                if c & 1 == 1 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                }
            })
        })
    });
    !bytes.iter().fold(!0u32, |c, &b| {
        table[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_png_spec_example() {
        // CRC of the IEND chunk type, as every PNG ends with it.
        assert_eq!(crc32(b"IEND"), 0xae42_6082);
    }

    #[test]
    fn json_scanner_finds_tokens_and_structure() {
        let (toks, marks) = json_tokens(br#"{"a": [1, -2.5e3, true], "b\"c": null}"#, 0);
        let kinds: Vec<Tok> = toks.iter().map(|t| t.0).collect();
        use Tok::*;
        assert_eq!(kinds, [Str, Number, Number, Literal, Str, Literal]);
        assert!(marks.contains(&0) && marks.contains(&6));
    }
}
