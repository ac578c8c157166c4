//! HTML character references, decoded as Python's `html.unescape` does (the Wan pipeline
//! applies it twice), plus ftfy's stricter variant that only decodes well-formed
//! `&name;` / `&#n;` references and upper-cased Latin entities.
//!
//! The entity table is the WHATWG list (via `htmlize`), which is also what Python's
//! `html.entities.html5` holds: every name with its `;`, and the legacy names without.

/// What bytes `0x80..=0x9F` mean in Windows-1252; the five positions it leaves undefined
/// keep their C1 control character (the "sloppy" codec browsers and ftfy use).
pub(crate) const CP1252_HIGH: [char; 32] = [
    '\u{20ac}', '\u{81}', '\u{201a}', '\u{192}', '\u{201e}', '\u{2026}', '\u{2020}', '\u{2021}',
    '\u{2c6}', '\u{2030}', '\u{160}', '\u{2039}', '\u{152}', '\u{8d}', '\u{17d}', '\u{8f}',
    '\u{90}', '\u{2018}', '\u{2019}', '\u{201c}', '\u{201d}', '\u{2022}', '\u{2013}', '\u{2014}',
    '\u{2dc}', '\u{2122}', '\u{161}', '\u{203a}', '\u{153}', '\u{9d}', '\u{17e}', '\u{178}',
];

/// The expansion of entity `name` (without `&`, with its `;` if it has one).
fn entity(name: &str) -> Option<&'static str> {
    let mut key = String::with_capacity(name.len() + 1);
    key.push('&');
    key.push_str(name);
    htmlize::ENTITIES
        .get(key.as_bytes())
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// Decodes every character reference in `text` with the rules of Python's
/// `html.unescape`: numeric references (decimal or hex, `;` optional, Windows-1252
/// meanings for `0x80..=0x9F`, U+FFFD for NUL, surrogates and out-of-range values,
/// nothing for other control and non-characters), and named references, falling back
/// to the longest legacy name that prefixes the text (`&notit;` → `¬it;`).
pub fn unescape(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('&') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        match decode_reference(after) {
            Some((decoded, used)) => {
                out.push_str(&decoded);
                rest = &after[used..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Matches one reference at the start of `s` (just after `&`); returns its expansion
/// and the number of bytes it spans. `None` when nothing matches (the `&` stays).
fn decode_reference(s: &str) -> Option<(String, usize)> {
    let bytes = s.as_bytes();
    if bytes.first() == Some(&b'#') {
        let (hex, start) = match bytes.get(1) {
            Some(b'x' | b'X') => (true, 2),
            _ => (false, 1),
        };
        let digits = bytes[start..]
            .iter()
            .take_while(|b| {
                if hex {
                    b.is_ascii_hexdigit()
                } else {
                    b.is_ascii_digit()
                }
            })
            .count();
        if digits == 0 {
            return None;
        }
        let end = start + digits;
        let used = end + usize::from(bytes.get(end) == Some(&b';'));
        let number = u32::from_str_radix(&s[start..end], if hex { 16 } else { 10 }).ok();
        return Some((
            numeric_reference(number)
                .map(String::from)
                .unwrap_or_default(),
            used,
        ));
    }
    // A name: 1 to 32 characters other than tab, newline, form feed, space, `<&#;`.
    let mut end = 0;
    for (count, (i, c)) in s.char_indices().enumerate() {
        if count == 32 || matches!(c, '\t' | '\n' | '\u{c}' | ' ' | '<' | '&' | '#' | ';') {
            break;
        }
        end = i + c.len_utf8();
    }
    if end == 0 {
        return None;
    }
    let used = end + usize::from(bytes.get(end) == Some(&b';'));
    let name = &s[..used];
    if let Some(v) = entity(name) {
        return Some((v.to_string(), used));
    }
    // The longest prefix (at least two characters) that is an entity.
    let bounds: Vec<usize> = name.char_indices().map(|(i, _)| i).skip(2).collect();
    for &cut in bounds.iter().rev() {
        if let Some(v) = entity(&name[..cut]) {
            return Some((format!("{v}{}", &name[cut..]), used));
        }
    }
    Some((format!("&{name}"), used))
}

/// Python's decision for `&#n;`; `None` means "drop it". `number` is `None` on overflow.
fn numeric_reference(number: Option<u32>) -> Option<char> {
    const REPLACEMENT: char = '\u{fffd}';
    let Some(n) = number else {
        return Some(REPLACEMENT);
    };
    match n {
        0 => Some(REPLACEMENT),
        0x0d => Some('\r'),
        0x80..=0x9f => Some(CP1252_HIGH[(n - 0x80) as usize]),
        0xd800..=0xdfff => Some(REPLACEMENT),
        n if n > 0x10ffff => Some(REPLACEMENT),
        0x01..=0x08 | 0x0b | 0x0e..=0x1f | 0x7f | 0xfdd0..=0xfdef => None,
        n if n & 0xfffe == 0xfffe => None,
        n => char::from_u32(n),
    }
}

/// ftfy's `unescape_html`: decodes `&name;` (semicolon required), `&#n;` / `&#xh;`
/// when the whole reference is consumed, and all-caps forms of lowercase entity names
/// (`&EACUTE;` → `É`) when Python would leave them alone. Leaves everything else,
/// such as `this&not that`, untouched.
pub fn unescape_strict(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('&') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        match strict_reference_len(after) {
            Some(len) => {
                out.push_str(&strict_fixup(&after[..len]));
                rest = &after[len..];
            }
            None => {
                out.push('&');
                rest = &after[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Length of a match of `&#?[0-9A-Za-z]{1,24};` at the start of `s`.
fn strict_reference_len(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let start = if bytes.get(1) == Some(&b'#') { 2 } else { 1 };
    let n = bytes[start..]
        .iter()
        .take(25)
        .take_while(|b| b.is_ascii_alphanumeric())
        .count();
    let end = start + n;
    ((1..=24).contains(&n) && bytes.get(end) == Some(&b';')).then_some(end + 1)
}

fn strict_fixup(reference: &str) -> String {
    let name = &reference[1..];
    if let Some(v) = entity(name) {
        return v.to_string();
    }
    if reference.starts_with("&#") {
        let decoded = unescape(reference);
        return if decoded.contains(';') {
            reference.to_string()
        } else {
            decoded
        };
    }
    // An upper-cased lowercase entity, unless Python's unescape reads it otherwise.
    let lower = name.to_ascii_lowercase();
    if lower.to_uppercase() == name
        && let Some(v) = entity(&lower)
        && unescape(reference) == reference
    {
        return v.to_uppercase();
    }
    reference.to_string()
}
