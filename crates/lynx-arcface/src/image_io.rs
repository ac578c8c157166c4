//! Photos in and crops out through the `image` crate: PNG, JPEG and WebP decode to RGB u8
//! (alpha dropped, 16-bit and grey converted), crops save as PNG.
//!
//! A photo's header is read before any pixel buffer is allocated, and a photo that
//! declares more pixels than its file can hold is refused: decoded, it may take at most
//! [`MAX_DECODED_PER_FILE_BYTE`] bytes per byte of the file (DEFLATE, PNG's compression,
//! cannot do better than about 1 000 : 1; JPEG and WebP photos stay far below) and
//! [`MAX_DECODED_BYTES`] in all, each side at most [`MAX_SIDE`] pixels. The same bounds
//! are handed to the decoders as `image::Limits`. A corrupt header or a decompression
//! bomb is thus an error naming the file, not an allocation of gigabytes. Lossy WebP
//! frames are checked first for partition sizes that do not fit the file (the decoder
//! would allocate them before reading).

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};
use lynx_core::{Error, Result};

/// Largest decoded size, in bytes, per byte of an image file.
pub const MAX_DECODED_PER_FILE_BYTE: u64 = 2048;
/// Largest decoded size of any photo, in bytes (1 GiB: a 16-bit RGB photo of 89 Mpx).
pub const MAX_DECODED_BYTES: u64 = 1 << 30;
/// Longest side of a photo, in pixels.
pub const MAX_SIDE: u32 = 32_768;

/// Decodes the photo at `path` (PNG, JPEG or WebP, recognised from its content) to RGB u8.
///
/// A missing file is [`Error::MissingFile`]; a file that is not a decodable image of a
/// supported format, or that declares more pixels than its size allows (see the module
/// docs), is [`Error::Format`], naming the file and what is wrong.
pub fn load_rgb(path: impl AsRef<Path>) -> Result<RgbImage> {
    let path = path.as_ref();
    if !path.is_file() {
        return Err(Error::MissingFile {
            path: path.to_path_buf(),
            hint: "no such image file".into(),
        });
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_rgb(&bytes, path)
}

/// Decodes an in-memory image (PNG, JPEG or WebP) with the checks of [`load_rgb`];
/// `name` is used in error messages.
pub fn decode_rgb(bytes: &[u8], name: impl AsRef<Path>) -> Result<RgbImage> {
    let name = name.as_ref();
    let bad = |reason: String| Error::format(name, "image", reason);
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::io(name, e))?;
    match reader.format() {
        Some(ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::WebP) => {}
        Some(other) => {
            return Err(bad(format!(
                "it is {other:?}; PNG, JPEG and WebP are supported"
            )));
        }
        None => {
            return Err(bad(
                "unrecognised content (PNG, JPEG and WebP are supported)".into(),
            ));
        }
    }
    let budget = (bytes.len() as u64)
        .saturating_mul(MAX_DECODED_PER_FILE_BYTE)
        .min(MAX_DECODED_BYTES);
    if reader.format() == Some(ImageFormat::WebP) {
        crate::webp_check::check_webp(bytes, budget).map_err(bad)?;
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(budget);
    reader.limits(limits);
    let decoder = reader.into_decoder().map_err(|e| bad(e.to_string()))?;
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 {
        return Err(bad("it has no pixels".into()));
    }
    // The decoder's buffer, and the RGB copy when it decodes to another layout.
    let per_pixel = u64::from(decoder.color_type().bytes_per_pixel()).max(3);
    let need = u64::from(w) * u64::from(h) * per_pixel;
    if need > budget {
        return Err(bad(format!(
            "it declares {w}×{h} pixels ({need} bytes decoded) in {} bytes, more than a \
             photo's file can hold (at most {MAX_DECODED_PER_FILE_BYTE} decoded bytes per \
             file byte, {MAX_DECODED_BYTES} in all): a corrupt header or a decompression bomb",
            bytes.len()
        )));
    }
    let image = DynamicImage::from_decoder(decoder).map_err(|e| bad(e.to_string()))?;
    Ok(image.into_rgb8())
}

/// Saves `image` as PNG at `path`.
pub fn save_png(image: &RgbImage, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    image
        .save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| match e {
            image::ImageError::IoError(io) => Error::io(path, io),
            other => Error::format(path, "PNG", other),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PNG header (signature + IHDR) declaring `w`×`h` RGB pixels, then the start of
    /// an empty IDAT chunk, where the decoder stops reading the header: no pixel data.
    fn png_header(w: u32, h: u32) -> Vec<u8> {
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend(w.to_be_bytes());
        ihdr.extend(h.to_be_bytes());
        ihdr.extend([8, 2, 0, 0, 0]);
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        for chunk in [ihdr, b"IDAT".to_vec()] {
            out.extend((chunk.len() as u32 - 4).to_be_bytes());
            out.extend(&chunk);
            out.extend(crc32(&chunk).to_be_bytes());
        }
        out
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut c = !0u32;
        for &b in bytes {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }

    #[test]
    fn huge_declared_sizes_are_refused_before_allocating() {
        let err = decode_rgb(&png_header(30_000, 30_000), "bomb.png")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("bomb.png") && err.contains("30000×30000") && err.contains("bomb"),
            "{err}"
        );
        let err = decode_rgb(&png_header(100_000, 1), "wide.png")
            .unwrap_err()
            .to_string();
        assert!(err.contains("wide.png"), "{err}");
    }

    #[test]
    fn other_formats_are_named() {
        let err = decode_rgb(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "a.gif")
            .unwrap_err()
            .to_string();
        assert!(err.contains("a.gif") && err.contains("Gif"), "{err}");
    }
}
