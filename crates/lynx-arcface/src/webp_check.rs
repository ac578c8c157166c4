//! A check of lossy WebP data before the decoder sees it.
//!
//! A VP8 frame (RFC 6386) holds its DCT coefficients in 1, 2, 4 or 8 partitions, whose
//! sizes (24 bits each) follow the first partition. `image-webp` 0.2 allocates each
//! partition's buffer from that size before reading it, so a file of a few kilobytes
//! can ask for 16 MiB at once, several times. Here the frame header is read far enough
//! to learn the partition count (the first partition's boolean-coded header, RFC 6386
//! §9.2–9.6 and §19.2), and the declared sizes must fit in the bytes that follow.
//! A key frame's own size (14 bits a side, independent of a `VP8X` canvas) sizes the
//! decoder's planes, which are allocated at once too: they must fit in `budget`.
//! Frames are found in the `VP8 ` chunks of the file and of its animation frames.

/// Checks every VP8 frame of the WebP file `bytes`, whose decoded planes may take at most
/// `budget` bytes; the error says what is wrong. Anything this check cannot parse is left
/// to the decoder, which refuses it without large allocations.
pub(crate) fn check_webp(bytes: &[u8], budget: u64) -> Result<(), String> {
    if bytes.len() < 12 || &bytes[..4] != b"RIFF" || &bytes[8..12] != b"WEBP" {
        return Ok(());
    }
    check_chunks(&bytes[12..], 0, budget)
}

fn check_chunks(mut data: &[u8], depth: usize, budget: u64) -> Result<(), String> {
    while data.len() >= 8 {
        let tag = &data[..4];
        let len = u32::from_le_bytes(data[4..8].try_into().unwrap()) as usize;
        let body = &data[8..8 + len.min(data.len() - 8)];
        match tag {
            b"VP8 " => check_vp8(body, budget)?,
            // An animation frame: 16 bytes of placement, then the frame's chunks.
            b"ANMF" if depth == 0 && body.len() > 16 => check_chunks(&body[16..], 1, budget)?,
            _ => {}
        }
        let next = 8usize.saturating_add(len).saturating_add(len & 1);
        if next >= data.len() {
            break;
        }
        data = &data[next..];
    }
    Ok(())
}

/// Checks one VP8 frame: its planes must fit in `budget`, and the DCT partitions it
/// declares must fit after its first partition.
fn check_vp8(frame: &[u8], budget: u64) -> Result<(), String> {
    if frame.len() < 3 {
        return Ok(());
    }
    let tag = u32::from(frame[0]) | u32::from(frame[1]) << 8 | u32::from(frame[2]) << 16;
    let key_frame = tag & 1 == 0;
    let first_len = (tag >> 5) as usize;
    // A key frame has a start code and its size after the tag; other frames do not (the
    // decoder refuses them, but only after allocating their partitions).
    let header = if key_frame { 10 } else { 3 };
    if key_frame && let Some(size) = frame.get(6..10) {
        let side = |lo: u8, hi: u8| u64::from(u16::from_le_bytes([lo, hi]) & 0x3fff);
        let (w, h) = (side(size[0], size[1]), side(size[2], size[3]));
        // Luma and both chroma planes, in whole 16-pixel macroblocks.
        let planes = w.div_ceil(16) * h.div_ceil(16) * 256 * 3 / 2;
        if planes > budget {
            return Err(format!(
                "a VP8 frame declares {w}×{h} pixels, more than the file can hold"
            ));
        }
    }
    let Some(first) = frame.get(header..header + first_len) else {
        return Ok(());
    };
    let parts = 1usize << dct_partitions_log2(first, key_frame);
    let table_start = header + first_len;
    let table_len = 3 * (parts - 1);
    let Some(table) = frame.get(table_start..table_start + table_len) else {
        return Err(format!(
            "a VP8 frame declares {parts} partitions but ends before their sizes"
        ));
    };
    let available = frame.len() - table_start - table_len;
    let declared: usize = table
        .chunks_exact(3)
        .map(|s| usize::from(s[0]) | usize::from(s[1]) << 8 | usize::from(s[2]) << 16)
        .sum();
    if declared > available {
        return Err(format!(
            "a VP8 frame declares partitions of {declared} bytes with {available} bytes left \
             (truncated or corrupt)"
        ));
    }
    Ok(())
}

/// Reads the frame header (RFC 6386 §19.2) from the first partition of a frame up to
/// `log2_nbr_of_dct_partitions`, and returns it.
fn dct_partitions_log2(first: &[u8], key_frame: bool) -> u32 {
    let mut d = BoolDecoder::new(first);
    if key_frame {
        d.literal(2); // color_space, clamping_type
    }
    if d.flag() {
        // segmentation_enabled: update_segmentation()
        let update_map = d.flag();
        if d.flag() {
            // update_segment_feature_data
            d.literal(1); // segment_feature_mode
            d.optional_signed(4, 7); // quantizer updates
            d.optional_signed(4, 6); // loop filter updates
        }
        if update_map {
            for _ in 0..3 {
                if d.flag() {
                    d.literal(8); // segment_prob
                }
            }
        }
    }
    d.literal(1 + 6 + 3); // filter_type, loop_filter_level, sharpness_level
    if d.flag() && d.flag() {
        // loop_filter_adj_enable and mode_ref_lf_delta_update
        d.optional_signed(4, 6); // ref_frame deltas
        d.optional_signed(4, 6); // mb_mode deltas
    }
    d.literal(2)
}

/// RFC 6386's boolean entropy decoder (§7.3), reading zeros past the end of its data as
/// libvpx does.
struct BoolDecoder<'a> {
    data: &'a [u8],
    pos: usize,
    value: u32,
    range: u32,
    bits: u32,
}

impl<'a> BoolDecoder<'a> {
    fn new(data: &'a [u8]) -> Self {
        let mut d = Self {
            data,
            pos: 0,
            value: 0,
            range: 255,
            bits: 0,
        };
        d.value = u32::from(d.byte()) << 8 | u32::from(d.byte());
        d
    }

    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    fn bool(&mut self, prob: u32) -> bool {
        let split = 1 + (((self.range - 1) * prob) >> 8);
        let big_split = split << 8;
        let bit = self.value >= big_split;
        if bit {
            self.range -= split;
            self.value -= big_split;
        } else {
            self.range = split;
        }
        while self.range < 128 {
            self.value <<= 1;
            self.range <<= 1;
            self.bits += 1;
            if self.bits == 8 {
                self.bits = 0;
                self.value |= u32::from(self.byte());
            }
        }
        bit
    }

    fn flag(&mut self) -> bool {
        self.bool(128)
    }

    /// An unsigned `n`-bit literal, most significant bit first.
    fn literal(&mut self, n: u32) -> u32 {
        (0..n).fold(0, |v, _| v << 1 | u32::from(self.flag()))
    }

    /// `count` times: a flag, and when set an `n`-bit magnitude and a sign.
    fn optional_signed(&mut self, count: usize, n: u32) {
        for _ in 0..count {
            if self.flag() {
                self.literal(n + 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6386's boolean entropy encoder (§7.3), to make frame headers with several
    /// partitions (libwebp's encoder writes one).
    struct BoolEncoder {
        out: Vec<u8>,
        range: u32,
        bottom: u32,
        bit_count: i32,
    }

    impl BoolEncoder {
        fn new() -> Self {
            Self {
                out: Vec::new(),
                range: 255,
                bottom: 0,
                bit_count: 24,
            }
        }

        fn carry(&mut self) {
            let mut i = self.out.len();
            while i > 0 && self.out[i - 1] == 255 {
                self.out[i - 1] = 0;
                i -= 1;
            }
            self.out[i - 1] += 1;
        }

        fn bit(&mut self, bit: bool) {
            let split = 1 + (((self.range - 1) * 128) >> 8);
            if bit {
                self.bottom = self.bottom.wrapping_add(split);
                self.range -= split;
            } else {
                self.range = split;
            }
            while self.range < 128 {
                self.range <<= 1;
                if self.bottom & (1 << 31) != 0 {
                    self.carry();
                }
                self.bottom <<= 1;
                self.bit_count -= 1;
                if self.bit_count == 0 {
                    self.out.push((self.bottom >> 24) as u8);
                    self.bottom &= (1 << 24) - 1;
                    self.bit_count = 8;
                }
            }
        }

        fn literal(&mut self, v: u32, n: u32) {
            for k in (0..n).rev() {
                self.bit(v >> k & 1 == 1);
            }
        }

        fn finish(mut self) -> Vec<u8> {
            for _ in 0..32 {
                self.bit(false);
            }
            self.out
        }
    }

    /// A key frame whose header declares 2^`log2` partitions of `sizes` bytes, followed
    /// by `data` bytes.
    fn frame(log2: u32, sizes: &[u32], data: usize) -> Vec<u8> {
        let mut e = BoolEncoder::new();
        e.literal(0, 2); // colour space, clamping
        e.literal(1, 1); // segmentation on
        e.literal(1, 1); // update map
        e.literal(1, 1); // update data
        e.literal(1, 1); // absolute values
        for _ in 0..4 {
            e.literal(1, 1);
            e.literal(0b1010101, 7 + 1);
        }
        for _ in 0..4 {
            e.literal(0, 1);
        }
        for p in [47, 13, 157] {
            e.literal(1, 1);
            e.literal(p, 8);
        }
        e.literal(42 << 3 | 3, 10); // filter type 0, level 42, sharpness 3
        e.literal(0b11, 2); // loop filter deltas on, updated
        for _ in 0..8 {
            e.literal(1, 1);
            e.literal(0b0111111, 7);
        }
        e.literal(log2, 2);
        let first = e.finish();
        assert_eq!(dct_partitions_log2(&first, true), log2);
        let tag = (first.len() as u32) << 5 | 0b1_0000;
        let mut f = tag.to_le_bytes()[..3].to_vec();
        f.extend([0x9d, 0x01, 0x2a, 16, 0, 16, 0]);
        f.extend(&first);
        for s in sizes {
            f.extend(&s.to_le_bytes()[..3]);
        }
        f.extend(vec![0; data]);
        f
    }

    fn check_vp8_(frame: &[u8]) -> Result<(), String> {
        check_vp8(frame, 1 << 20)
    }

    #[test]
    fn partition_sizes_must_fit_the_frame() {
        assert!(check_vp8_(&frame(3, &[10, 20, 30, 0, 0, 0, 5], 100)).is_ok());
        assert!(check_vp8_(&frame(2, &[10, 20, 70], 100)).is_ok());
        let e = check_vp8_(&frame(3, &[10, 0xff_ffff, 0, 0, 0, 0, 0], 100)).unwrap_err();
        assert!(
            e.contains("8 partitions") || e.contains("bytes left"),
            "{e}"
        );
        let e = check_vp8_(&frame(2, &[60, 50, 0], 100)).unwrap_err();
        assert!(e.contains("110 bytes with 100 bytes left"), "{e}");
        // The sizes themselves cut off.
        let mut f = frame(3, &[1, 1, 1, 1, 1, 1, 1], 0);
        f.truncate(f.len() - 4);
        assert!(
            check_vp8_(&f)
                .unwrap_err()
                .contains("ends before their sizes")
        );
    }

    #[test]
    fn webp_files_are_walked_to_their_frames() {
        let vp8 = frame(2, &[60, 50, 0], 100);
        let mut riff = b"RIFF\0\0\0\0WEBPVP8 ".to_vec();
        riff.extend((vp8.len() as u32).to_le_bytes());
        riff.extend(&vp8);
        assert!(check_webp(&riff, 1 << 20).is_err());
        let good =
            std::fs::read(lynx_testing::fixtures_dir().join("fuzz/photo_lossy.webp")).unwrap();
        check_webp(&good, 1 << 20).unwrap();
        // The same frame declaring 16383×16383 pixels.
        let mut big = good.clone();
        big[26..30].copy_from_slice(&[0xff, 0x3f, 0xff, 0x3f]);
        let e = check_webp(&big, 1 << 20).unwrap_err();
        assert!(e.contains("16383×16383"), "{e}");
    }
}
