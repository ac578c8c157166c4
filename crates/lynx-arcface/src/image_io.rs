//! Photos in and crops out through the `image` crate: PNG, JPEG and WebP decode to RGB u8
//! (alpha dropped, 16-bit and grey converted), crops save as PNG.

use std::path::Path;

use image::{ImageReader, RgbImage};
use lynx_core::{Error, Result};

/// Decodes the photo at `path` (PNG, JPEG or WebP, recognised from its content) to RGB u8.
///
/// A missing file is [`Error::MissingFile`]; a file that is not a decodable image of a
/// supported format is [`Error::Format`], naming the file and what the decoder said.
pub fn load_rgb(path: impl AsRef<Path>) -> Result<RgbImage> {
    let path = path.as_ref();
    if !path.is_file() {
        return Err(Error::MissingFile {
            path: path.to_path_buf(),
            hint: "no such image file".into(),
        });
    }
    let reader = ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| Error::io(path, e))?;
    if reader.format().is_none() {
        return Err(Error::format(
            path,
            "image",
            "unrecognised content (PNG, JPEG and WebP are supported)",
        ));
    }
    let image = reader
        .decode()
        .map_err(|e| Error::format(path, "image", e))?;
    let rgb = image.into_rgb8();
    if rgb.width() == 0 || rgb.height() == 0 {
        return Err(Error::format(path, "image", "it has no pixels"));
    }
    Ok(rgb)
}

/// Decodes an in-memory image (PNG, JPEG or WebP); `name` is used in error messages.
pub fn decode_rgb(bytes: &[u8], name: impl AsRef<Path>) -> Result<RgbImage> {
    let name = name.as_ref();
    let image = image::load_from_memory(bytes).map_err(|e| Error::format(name, "image", e))?;
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
