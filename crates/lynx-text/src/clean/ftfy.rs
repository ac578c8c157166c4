//! The parts of ftfy's `fix_text` (ftfy 6, default settings) that are well defined
//! without its statistical "badness" model:
//!
//! - HTML entities (`&eacute;`, `&EACUTE;`, `&#233;`) when the line holds no `<`;
//! - UTF-8 mojibake read as Windows-1252 / Latin-1 (`cafÃ©` → `café`, `â€™` → `’`),
//!   decoded run by run, for the common lead bytes (Latin, Greek, Cyrillic, the
//!   three-byte ranges and emoji). Not reproduced: ftfy's guesses of other code pages
//!   (1250, 1251, MacRoman, …), its repair of mojibake whose `U+00A0` became a space
//!   or whose bytes were lost (`restore_byte_a0`, `replace_lossy_sequences`), and the
//!   "badness" check that may leave rare look-alike sequences undecoded;
//! - C1 control characters read as Windows-1252, Latin ligatures (`ﬁ` → `fi`),
//!   full- and half-width forms, curly quotes, line breaks, terminal escapes,
//!   unwanted control characters, and NFC normalisation.
//!
//! Like ftfy, the text is fixed line by line and each line until it stops changing.

use unicode_normalization::UnicodeNormalization;

use super::html::{CP1252_HIGH, unescape_strict};

/// Fixes `text` as described in the module docs.
pub fn fix_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut unescape_html = true;
    for line in text.split_inclusive('\n') {
        if line.contains('<') {
            // ftfy turns HTML unescaping off for this line and all after it.
            unescape_html = false;
        }
        out.push_str(&fix_segment(line, unescape_html));
    }
    out
}

fn fix_segment(text: &str, unescape_html: bool) -> String {
    let mut text = text.to_string();
    loop {
        let before = text.clone();
        if unescape_html {
            text = unescape_strict(&text);
        }
        text = fix_encoding(&text);
        text = fix_c1_controls(&text);
        text = map_chars(&text, latin_ligature);
        text = map_chars(&text, character_width);
        text = map_chars(&text, straight_quote);
        text = text.replace("\r\n", "\n");
        text = map_chars(&text, line_break);
        text = remove_terminal_escapes(&text);
        text.retain(|c| !is_unwanted_control(c));
        text = text.nfc().collect();
        if text == before {
            return text;
        }
    }
}

/// Replaces each character for which `f` returns a replacement.
fn map_chars<S: AsRef<str>>(text: &str, f: impl Fn(char) -> Option<S>) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match f(c) {
            Some(s) => out.push_str(s.as_ref()),
            None => out.push(c),
        }
    }
    out
}

/// Latin typographic ligatures and legacy digraphs (not `æ`, `œ`, which are letters).
fn latin_ligature(c: char) -> Option<&'static str> {
    Some(match c {
        '\u{132}' => "IJ",
        '\u{133}' => "ij",
        '\u{149}' => "\u{2bc}n",
        '\u{1f1}' => "DZ",
        '\u{1f2}' => "Dz",
        '\u{1f3}' => "dz",
        '\u{1c4}' => "D\u{17d}",
        '\u{1c5}' => "D\u{17e}",
        '\u{1c6}' => "d\u{17e}",
        '\u{1c7}' => "LJ",
        '\u{1c8}' => "Lj",
        '\u{1c9}' => "lj",
        '\u{1ca}' => "NJ",
        '\u{1cb}' => "Nj",
        '\u{1cc}' => "nj",
        '\u{fb00}' => "ff",
        '\u{fb01}' => "fi",
        '\u{fb02}' => "fl",
        '\u{fb03}' => "ffi",
        '\u{fb04}' => "ffl",
        '\u{fb05}' => "\u{17f}t",
        '\u{fb06}' => "st",
        _ => return None,
    })
}

/// Full-width and half-width forms (`U+FF01..=U+FFEF`) become their NFKC form; the
/// ideographic space becomes a space.
fn character_width(c: char) -> Option<String> {
    match c {
        '\u{3000}' => Some(" ".into()),
        '\u{ff01}'..='\u{ffef}' => {
            let nfkc: String = std::iter::once(c).nfkc().collect();
            (nfkc.chars().ne(std::iter::once(c))).then_some(nfkc)
        }
        _ => None,
    }
}

fn straight_quote(c: char) -> Option<&'static str> {
    match c {
        '\u{2bc}' | '\u{2018}'..='\u{201b}' => Some("'"),
        '\u{201c}'..='\u{201f}' => Some("\""),
        _ => None,
    }
}

/// CR, the Unicode line and paragraph separators and NEXT LINE become `\n` (CRLF is
/// folded first).
fn line_break(c: char) -> Option<&'static str> {
    matches!(c, '\r' | '\u{2028}' | '\u{2029}' | '\u{85}').then_some("\n")
}

/// Control characters ftfy removes: C0 except tab, LF, FF, CR; DEL; deprecated Arabic
/// format controls; the BOM; interlinear annotation and object replacement characters.
fn is_unwanted_control(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{8}' | '\u{b}' | '\u{e}'..='\u{1f}' | '\u{7f}'
        | '\u{206a}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffc}')
}

/// The byte a character stands for in sloppy Windows-1252 (Latin-1 plus the
/// Windows-1252 meanings of `0x80..=0x9F`).
fn sloppy_cp1252_byte(c: char) -> Option<u8> {
    match c as u32 {
        n @ 0..=0xff => Some(n as u8),
        _ => CP1252_HIGH
            .iter()
            .position(|&h| h == c)
            .map(|i| 0x80 + i as u8),
    }
}

/// How many continuation bytes a lead byte takes, for the leads this fixer accepts:
/// Latin-1 and Latin Extended-A (`C2`–`C5`), Greek (`CE`, `CF`), Cyrillic (`D0`,
/// `D1`), every three-byte lead (punctuation, symbols, CJK, Hangul) and four-byte leads
/// (emoji). Other two-byte leads are ordinary capitals (`ß`, `×`, `Ü`, …) often
/// followed by punctuation such as `»` in real text.
fn continuation_count(lead: u8) -> Option<usize> {
    match lead {
        0xc2..=0xc5 | 0xce | 0xcf | 0xd0 | 0xd1 => Some(1),
        0xe0..=0xef => Some(2),
        0xf0..=0xf4 => Some(3),
        _ => None,
    }
}

fn is_continuation(c: char) -> bool {
    sloppy_cp1252_byte(c).is_some_and(|b| (0x80..=0xbf).contains(&b))
}

/// Decodes runs of characters that are the Windows-1252 / Latin-1 reading of UTF-8
/// bytes, until nothing changes (double mojibake takes two rounds).
fn fix_encoding(text: &str) -> String {
    let mut text = text.to_string();
    while !text.is_ascii() {
        let fixed = decode_mojibake_runs(&text);
        if fixed == text {
            break;
        }
        text = fixed;
    }
    text
}

fn decode_mojibake_runs(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let after_continuation = i > 0 && is_continuation(chars[i - 1]);
        let mut bytes = Vec::new();
        let mut j = i;
        if !after_continuation {
            // The longest run of whole lead + continuation sequences starting at `i`.
            while let Some(n) = chars
                .get(j)
                .and_then(|&c| sloppy_cp1252_byte(c))
                .and_then(continuation_count)
            {
                let seq = &chars.get(j + 1..j + 1 + n);
                match seq {
                    Some(cont) if cont.iter().all(|&c| is_continuation(c)) => {
                        bytes.push(sloppy_cp1252_byte(chars[j]).unwrap_or_default());
                        bytes.extend(cont.iter().filter_map(|&c| sloppy_cp1252_byte(c)));
                        j += 1 + n;
                    }
                    _ => break,
                }
            }
        }
        match (j > i).then(|| String::from_utf8(bytes).ok()).flatten() {
            Some(decoded) => {
                out.push_str(&decoded);
                i = j;
            }
            None => {
                out.push(chars[i]);
                i += 1;
            }
        }
    }
    out
}

/// C1 control characters left over are read as Windows-1252, as browsers do.
fn fix_c1_controls(text: &str) -> String {
    text.chars()
        .map(|c| match c as u32 {
            n @ 0x80..=0x9f => CP1252_HIGH[(n - 0x80) as usize],
            _ => c,
        })
        .collect()
}

/// Removes ANSI terminal escapes `ESC [ (digits|;)* letter`.
fn remove_terminal_escapes(text: &str) -> String {
    if !text.contains('\u{1b}') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('\u{1b}') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let params = after.strip_prefix('[').map(|p| {
            p.len()
                - p.trim_start_matches(|c: char| c.is_ascii_digit() || c == ';')
                    .len()
        });
        match params {
            Some(n) if after[1 + n..].starts_with(|c: char| c.is_ascii_alphabetic()) => {
                rest = &after[2 + n..];
            }
            _ => {
                out.push('\u{1b}');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}
