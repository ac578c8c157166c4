//! Copying tensors out of memory-mapped checkpoint files.
//!
//! A tensor is copied in steps of [`STEP`] bytes, converted to the dtype asked for on the
//! way (f32, f16, bf16 or f64 files to an f32, f16 or bf16 tensor: one pass, no second
//! copy of the tensor), and the pages of each step are released from the process
//! (`MADV_DONTNEED`) as soon as they are copied. So reading a whole model never makes its
//! files resident on top of the weights: the process holds the weights once, and the
//! file pages stay in the OS page cache, which does not count against the process and
//! which the kernel reclaims under pressure.

use burn::tensor::{DType, bf16, f16};
use memmap2::Mmap;

/// Bytes copied (and then released) per step.
pub(crate) const STEP: usize = 16 << 20;

/// Releases the pages of `mmap[start..end]` from this process (`MADV_DONTNEED`; the range
/// is widened to whole pages). The next access reads them back from the file (or the
/// page cache).
pub(crate) fn release(mmap: &Mmap, start: usize, end: usize) {
    #[cfg(unix)]
    if end > start {
        // SAFETY: the map is read-only and backed by a file, so dropping its pages changes
        // nothing any reader can see: the next access faults the same bytes back in. (A
        // file modified while mapped is the caller's to avoid, as for every mmap loader.)
        let advice = memmap2::UncheckedAdvice::DontNeed;
        let _ = unsafe { mmap.unchecked_advise_range(advice, start, end - start) };
    }
    #[cfg(not(unix))]
    let _ = (mmap, start, end);
}

/// The float element types a tensor is read into.
pub(crate) trait Target: bytemuck::Pod + Default {
    /// The burn dtype of `Self`.
    const DTYPE: DType;
    fn from_f32(v: f32) -> Self;
    fn from_f64(v: f64) -> Self;
    fn from_bf16(v: bf16) -> Self;
    fn from_f16(v: f16) -> Self;
}

impl Target for f32 {
    const DTYPE: DType = DType::F32;
    fn from_f32(v: f32) -> Self {
        v
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn from_bf16(v: bf16) -> Self {
        v.to_f32()
    }
    fn from_f16(v: f16) -> Self {
        v.to_f32()
    }
}

impl Target for bf16 {
    const DTYPE: DType = DType::BF16;
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
    fn from_f64(v: f64) -> Self {
        bf16::from_f64(v)
    }
    fn from_bf16(v: bf16) -> Self {
        v
    }
    fn from_f16(v: f16) -> Self {
        bf16::from_f32(v.to_f32())
    }
}

impl Target for f16 {
    const DTYPE: DType = DType::F16;
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
    fn from_f64(v: f64) -> Self {
        f16::from_f64(v)
    }
    fn from_bf16(v: bf16) -> Self {
        f16::from_f32(v.to_f32())
    }
    fn from_f16(v: f16) -> Self {
        v
    }
}

/// Size in bytes of one element of the float dtypes a file may hold.
pub(crate) fn float_size(dtype: DType) -> Option<usize> {
    match dtype {
        DType::F64 => Some(8),
        DType::F32 => Some(4),
        DType::F16 | DType::BF16 => Some(2),
        _ => None,
    }
}

/// Appends the little-endian elements of `src` (of the float dtype `from`) to `out`,
/// converted.
fn convert<T: Target>(src: &[u8], from: DType, out: &mut Vec<T>) {
    fn le<const N: usize>(c: &[u8]) -> [u8; N] {
        let mut b = [0u8; N];
        b.copy_from_slice(c);
        b
    }
    if from == T::DTYPE && cfg!(target_endian = "little") {
        // The bytes are the elements: one copy.
        let old = out.len();
        out.resize(old + src.len() / size_of::<T>(), T::default());
        bytemuck::cast_slice_mut::<T, u8>(&mut out[old..]).copy_from_slice(src);
        return;
    }
    match from {
        DType::F32 => out.extend(
            src.chunks_exact(4)
                .map(|c| T::from_f32(f32::from_le_bytes(le(c)))),
        ),
        DType::F64 => out.extend(
            src.chunks_exact(8)
                .map(|c| T::from_f64(f64::from_le_bytes(le(c)))),
        ),
        DType::BF16 => out.extend(
            src.chunks_exact(2)
                .map(|c| T::from_bf16(bf16::from_bits(u16::from_le_bytes(le(c))))),
        ),
        DType::F16 => out.extend(
            src.chunks_exact(2)
                .map(|c| T::from_f16(f16::from_bits(u16::from_le_bytes(le(c))))),
        ),
        // Callers check the source dtype first.
        _ => {}
    }
}

/// Appends `mmap[start..end]`, elements of the float dtype `from`, to `out` converted to
/// `T`, [`STEP`] bytes at a time, releasing each step's pages once copied.
pub(crate) fn copy_converted<T: Target>(
    mmap: &Mmap,
    (start, end): (usize, usize),
    from: DType,
    out: &mut Vec<T>,
) {
    let Some(elem) = float_size(from) else {
        return;
    };
    let step = (STEP / elem).max(1) * elem;
    let mut pos = start;
    while pos < end {
        let stop = (pos + step).min(end);
        convert(&mmap[pos..stop], from, out);
        release(mmap, pos, stop);
        pos = stop;
    }
}

/// `mmap[start..end]` as bytes, copied [`STEP`] bytes at a time, releasing each step's
/// pages once copied.
pub(crate) fn copy_bytes(mmap: &Mmap, (start, end): (usize, usize)) -> Vec<u8> {
    let mut out = Vec::with_capacity(end.saturating_sub(start));
    let mut pos = start;
    while pos < end {
        let stop = (pos + STEP).min(end);
        out.extend_from_slice(&mmap[pos..stop]);
        release(mmap, pos, stop);
        pos = stop;
    }
    out
}

/// Appends `mmap[start..end]`, whole blocks of `encoding` (fp8, GGUF blocks, or plain
/// floats with a scale), decoded to f32 (times `scale`) and converted to `T`, about
/// [`STEP`] bytes at a time, releasing each step's pages once decoded.
///
/// The caller checks that the range is a whole number of blocks inside the map.
pub(crate) fn copy_decoded<T: Target>(
    mmap: &Mmap,
    (start, end): (usize, usize),
    encoding: lynx_core::quant::Encoding,
    scale: Option<f32>,
    out: &mut Vec<T>,
) {
    let (values, bytes) = encoding.block();
    let step = (STEP / 4 / values).max(1) * bytes;
    let mut buf = Vec::new();
    let mut pos = start;
    while pos < end {
        let stop = (pos + step).min(end);
        buf.resize((stop - pos) / bytes * values, 0f32);
        lynx_core::quant::dequantize(encoding, &mmap[pos..stop], scale, &mut buf);
        out.extend(buf.iter().map(|&v| T::from_f32(v)));
        release(mmap, pos, stop);
        pos = stop;
    }
}
