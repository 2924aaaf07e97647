//! ggml tensor types and their dequantization to f32.
//!
//! Block layouts follow ggml-common.h: every quantized type packs `block_size` consecutive
//! elements of a row into `type_size` bytes, little-endian, scales as IEEE half floats.

use half::{bf16, f16};
use std::fmt;

/// A ggml tensor type, by the id GGUF stores. Ids this crate does not know stay readable as
/// [`GgmlType::Unknown`] only for error messages: their size cannot be computed, so a file that
/// uses one is rejected at open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
    IQ2XXS,
    IQ2XS,
    IQ3XXS,
    IQ1S,
    IQ4NL,
    IQ3S,
    IQ2S,
    IQ4XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4,
    Unknown(u32),
}

/// For error messages: the types [`dequantize`] handles.
pub const SUPPORTED_NAMES: &str =
    "F32, F16, BF16, F64, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K";

impl GgmlType {
    pub fn from_id(id: u32) -> Self {
        use GgmlType::*;
        match id {
            0 => F32,
            1 => F16,
            2 => Q4_0,
            3 => Q4_1,
            6 => Q5_0,
            7 => Q5_1,
            8 => Q8_0,
            9 => Q8_1,
            10 => Q2K,
            11 => Q3K,
            12 => Q4K,
            13 => Q5K,
            14 => Q6K,
            15 => Q8K,
            16 => IQ2XXS,
            17 => IQ2XS,
            18 => IQ3XXS,
            19 => IQ1S,
            20 => IQ4NL,
            21 => IQ3S,
            22 => IQ2S,
            23 => IQ4XS,
            24 => I8,
            25 => I16,
            26 => I32,
            27 => I64,
            28 => F64,
            29 => IQ1M,
            30 => BF16,
            34 => TQ1_0,
            35 => TQ2_0,
            39 => MXFP4,
            other => Unknown(other),
        }
    }

    /// The name llama.cpp and gguf-py use.
    pub fn name(self) -> String {
        use GgmlType::*;
        let s = match self {
            F32 => "F32",
            F16 => "F16",
            Q4_0 => "Q4_0",
            Q4_1 => "Q4_1",
            Q5_0 => "Q5_0",
            Q5_1 => "Q5_1",
            Q8_0 => "Q8_0",
            Q8_1 => "Q8_1",
            Q2K => "Q2_K",
            Q3K => "Q3_K",
            Q4K => "Q4_K",
            Q5K => "Q5_K",
            Q6K => "Q6_K",
            Q8K => "Q8_K",
            IQ2XXS => "IQ2_XXS",
            IQ2XS => "IQ2_XS",
            IQ3XXS => "IQ3_XXS",
            IQ1S => "IQ1_S",
            IQ4NL => "IQ4_NL",
            IQ3S => "IQ3_S",
            IQ2S => "IQ2_S",
            IQ4XS => "IQ4_XS",
            I8 => "I8",
            I16 => "I16",
            I32 => "I32",
            I64 => "I64",
            F64 => "F64",
            IQ1M => "IQ1_M",
            BF16 => "BF16",
            TQ1_0 => "TQ1_0",
            TQ2_0 => "TQ2_0",
            MXFP4 => "MXFP4",
            Unknown(id) => return format!("unknown type id {id}"),
        };
        s.to_string()
    }

    /// (elements per block, bytes per block), or None for an unknown id.
    pub fn block_layout(self) -> Option<(u64, u64)> {
        use GgmlType::*;
        Some(match self {
            F32 | I32 => (1, 4),
            F16 | BF16 | I16 => (1, 2),
            F64 | I64 => (1, 8),
            I8 => (1, 1),
            Q4_0 => (32, 18),
            Q4_1 => (32, 20),
            Q5_0 => (32, 22),
            Q5_1 => (32, 24),
            Q8_0 => (32, 34),
            Q8_1 => (32, 40),
            Q2K => (256, 84),
            Q3K => (256, 110),
            Q4K => (256, 144),
            Q5K => (256, 176),
            Q6K => (256, 210),
            Q8K => (256, 292),
            IQ2XXS => (256, 66),
            IQ2XS => (256, 74),
            IQ3XXS => (256, 98),
            IQ1S => (256, 50),
            IQ4NL => (32, 18),
            IQ3S => (256, 110),
            IQ2S => (256, 82),
            IQ4XS => (256, 136),
            IQ1M => (256, 56),
            TQ1_0 => (256, 54),
            TQ2_0 => (256, 66),
            MXFP4 => (32, 17),
            Unknown(_) => return None,
        })
    }

    pub fn is_supported(self) -> bool {
        use GgmlType::*;
        matches!(
            self,
            F32 | F16 | BF16 | F64 | Q8_0 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q4K | Q5K | Q6K
        )
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Dequantizes `data` (whole blocks of `ty`) into f32, appending to `out`. Returns false for a
/// type this module cannot decode. The caller has checked that `data` holds whole blocks.
pub(crate) fn dequantize_into(ty: GgmlType, data: &[u8], out: &mut Vec<f32>) -> bool {
    use GgmlType::*;
    let Some((_, type_size)) = ty.block_layout() else {
        return false;
    };
    let blocks = data.chunks_exact(type_size as usize);
    match ty {
        F32 => out.extend(blocks.map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        F16 => out.extend(blocks.map(|b| f16_at(b, 0))),
        BF16 => out.extend(blocks.map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())),
        F64 => out.extend(blocks.map(|b| {
            let mut x = [0u8; 8];
            x.copy_from_slice(b);
            f64::from_le_bytes(x) as f32
        })),
        Q8_0 => blocks.for_each(|b| q8_0(b, out)),
        Q4_0 => blocks.for_each(|b| q4_0(b, out)),
        Q4_1 => blocks.for_each(|b| q4_1(b, out)),
        Q5_0 => blocks.for_each(|b| q5_0(b, out)),
        Q5_1 => blocks.for_each(|b| q5_1(b, out)),
        Q4K => blocks.for_each(|b| q4_k(b, out)),
        Q5K => blocks.for_each(|b| q5_k(b, out)),
        Q6K => blocks.for_each(|b| q6_k(b, out)),
        _ => return false,
    }
    true
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

fn q8_0(b: &[u8], out: &mut Vec<f32>) {
    let d = f16_at(b, 0);
    out.extend(b[2..34].iter().map(|&q| f32::from(q as i8) * d));
}

// 4-bit types store element j in the low nibble of byte j and element j + 16 in its high nibble.
fn q4_0(b: &[u8], out: &mut Vec<f32>) {
    let d = f16_at(b, 0);
    let qs = &b[2..18];
    out.extend(qs.iter().map(|&q| (i32::from(q & 0x0f) - 8) as f32 * d));
    out.extend(qs.iter().map(|&q| (i32::from(q >> 4) - 8) as f32 * d));
}

fn q4_1(b: &[u8], out: &mut Vec<f32>) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qs = &b[4..20];
    out.extend(qs.iter().map(|&q| f32::from(q & 0x0f) * d + m));
    out.extend(qs.iter().map(|&q| f32::from(q >> 4) * d + m));
}

// 5-bit types keep the fifth bit of all 32 elements in one u32: bit j for element j.
fn q5_high_bits(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn q5_0(b: &[u8], out: &mut Vec<f32>) {
    let d = f16_at(b, 0);
    let qh = q5_high_bits(&b[2..6]);
    let qs = &b[6..22];
    for half in 0..2 {
        out.extend(qs.iter().enumerate().map(|(j, &q)| {
            let nibble = if half == 0 { q & 0x0f } else { q >> 4 };
            let high = ((qh >> (j + 16 * half)) & 1) as u8;
            (i32::from(nibble | (high << 4)) - 16) as f32 * d
        }));
    }
}

fn q5_1(b: &[u8], out: &mut Vec<f32>) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qh = q5_high_bits(&b[4..8]);
    let qs = &b[8..24];
    for half in 0..2 {
        out.extend(qs.iter().enumerate().map(|(j, &q)| {
            let nibble = if half == 0 { q & 0x0f } else { q >> 4 };
            let high = ((qh >> (j + 16 * half)) & 1) as u8;
            f32::from(nibble | (high << 4)) * d + m
        }));
    }
}

/// K-quants pack eight 6-bit (scale, min) pairs into 12 bytes; this is ggml's get_scale_min_k4.
fn scale_min_k4(j: usize, q: &[u8]) -> (f32, f32) {
    let (sc, m) = if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    };
    (f32::from(sc), f32::from(m))
}

fn q4_k(b: &[u8], out: &mut Vec<f32>) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    for (chunk, qs) in b[16..144].chunks_exact(32).enumerate() {
        let (sc1, m1) = scale_min_k4(2 * chunk, scales);
        let (sc2, m2) = scale_min_k4(2 * chunk + 1, scales);
        let (d1, m1, d2, m2) = (d * sc1, dmin * m1, d * sc2, dmin * m2);
        out.extend(qs.iter().map(|&q| d1 * f32::from(q & 0x0f) - m1));
        out.extend(qs.iter().map(|&q| d2 * f32::from(q >> 4) - m2));
    }
}

fn q5_k(b: &[u8], out: &mut Vec<f32>) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    let qh = &b[16..48];
    for (chunk, qs) in b[48..176].chunks_exact(32).enumerate() {
        let (sc1, m1) = scale_min_k4(2 * chunk, scales);
        let (sc2, m2) = scale_min_k4(2 * chunk + 1, scales);
        let (d1, m1, d2, m2) = (d * sc1, dmin * m1, d * sc2, dmin * m2);
        let (bit1, bit2) = (2 * chunk, 2 * chunk + 1);
        out.extend(
            qs.iter()
                .zip(qh)
                .map(|(&q, &h)| d1 * f32::from((q & 0x0f) | (((h >> bit1) & 1) << 4)) - m1),
        );
        out.extend(
            qs.iter()
                .zip(qh)
                .map(|(&q, &h)| d2 * f32::from((q >> 4) | (((h >> bit2) & 1) << 4)) - m2),
        );
    }
}

fn q6_k(b: &[u8], out: &mut Vec<f32>) {
    let (ql, qh, scales) = (&b[0..128], &b[128..192], &b[192..208]);
    let d = f16_at(b, 208);
    let start = out.len();
    out.resize(start + 256, 0.0);
    let y = &mut out[start..];
    for half in 0..2 {
        let (ql, qh) = (&ql[64 * half..], &qh[32 * half..]);
        let sc = &scales[8 * half..];
        let y = &mut y[128 * half..];
        for l in 0..32 {
            let is = l / 16;
            let q =
                |low: u8, shift: u32| f32::from((low | (((qh[l] >> shift) & 3) << 4)) as i8 - 32);
            let scale = |k: usize| d * f32::from(sc[is + k] as i8);
            y[l] = scale(0) * q(ql[l] & 0x0f, 0);
            y[l + 32] = scale(2) * q(ql[l + 32] & 0x0f, 2);
            y[l + 64] = scale(4) * q(ql[l] >> 4, 4);
            y[l + 96] = scale(6) * q(ql[l + 32] >> 4, 6);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deq(ty: GgmlType, data: &[u8]) -> Vec<f32> {
        let mut out = Vec::new();
        assert!(dequantize_into(ty, data, &mut out));
        out
    }

    fn h(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn plain_floats() {
        let mut data = Vec::new();
        for x in [1.5f32, -2.25, 0.0] {
            data.extend(x.to_le_bytes());
        }
        assert_eq!(deq(GgmlType::F32, &data), vec![1.5, -2.25, 0.0]);

        let data: Vec<u8> = [0.5f32, -3.0, 65504.0].iter().flat_map(|&x| h(x)).collect();
        assert_eq!(deq(GgmlType::F16, &data), vec![0.5, -3.0, 65504.0]);

        let data: Vec<u8> = [1.0f32, -0.5, 3.0e38]
            .iter()
            .flat_map(|&x| bf16::from_f32(x).to_le_bytes())
            .collect();
        assert_eq!(
            deq(GgmlType::BF16, &data),
            vec![1.0, -0.5, bf16::from_f32(3.0e38).to_f32()]
        );
    }

    #[test]
    fn q8_0_block() {
        let mut block = h(0.5).to_vec();
        block.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let expected: Vec<f32> = (0..32).map(|i| (i as f32 - 16.0) * 0.5).collect();
        assert_eq!(deq(GgmlType::Q8_0, &block), expected);
    }

    /// Packs 32 nibbles the ggml way: element j low, element j + 16 high.
    fn pack_nibbles(q: &[u8; 32]) -> Vec<u8> {
        (0..16).map(|j| q[j] | (q[j + 16] << 4)).collect()
    }

    fn nibbles() -> [u8; 32] {
        std::array::from_fn(|i| ((i * 7 + 3) % 16) as u8)
    }

    #[test]
    fn q4_0_block() {
        let q = nibbles();
        let mut block = h(0.25).to_vec();
        block.extend(pack_nibbles(&q));
        let expected: Vec<f32> = q.iter().map(|&x| (x as f32 - 8.0) * 0.25).collect();
        assert_eq!(deq(GgmlType::Q4_0, &block), expected);
        // A hand-picked byte: 0x3A is element 0 = 10 and element 16 = 3.
        let mut block = h(1.0).to_vec();
        block.extend([0x3A; 16]);
        let out = deq(GgmlType::Q4_0, &block);
        assert_eq!((out[0], out[15], out[16], out[31]), (2.0, 2.0, -5.0, -5.0));
    }

    #[test]
    fn q4_1_block() {
        let q = nibbles();
        let mut block = h(0.5).to_vec();
        block.extend(h(-1.0));
        block.extend(pack_nibbles(&q));
        let expected: Vec<f32> = q.iter().map(|&x| x as f32 * 0.5 - 1.0).collect();
        assert_eq!(deq(GgmlType::Q4_1, &block), expected);
    }

    #[test]
    fn q5_blocks() {
        let q: [u8; 32] = std::array::from_fn(|i| ((i * 11 + 5) % 32) as u8);
        let low: [u8; 32] = std::array::from_fn(|i| q[i] & 0x0f);
        let qh: u32 = (0..32).map(|i| u32::from(q[i] >> 4) << i).sum();

        let mut block = h(2.0).to_vec();
        block.extend(qh.to_le_bytes());
        block.extend(pack_nibbles(&low));
        let expected: Vec<f32> = q.iter().map(|&x| (x as f32 - 16.0) * 2.0).collect();
        assert_eq!(deq(GgmlType::Q5_0, &block), expected);

        let mut block = h(0.5).to_vec();
        block.extend(h(3.0));
        block.extend(qh.to_le_bytes());
        block.extend(pack_nibbles(&low));
        let expected: Vec<f32> = q.iter().map(|&x| x as f32 * 0.5 + 3.0).collect();
        assert_eq!(deq(GgmlType::Q5_1, &block), expected);
    }

    #[test]
    fn q4_k_block_with_simple_scales() {
        // Sub-block scales 1..=8 and mins 0..=7, all below 64 so the first four bytes hold
        // scales 0..4 and bytes 4..8 mins 0..4; sub-blocks 4..8 split over bytes 8..12 and the
        // top bits of 0..8.
        let sc: [u8; 8] = std::array::from_fn(|i| i as u8 + 1);
        let mn: [u8; 8] = std::array::from_fn(|i| i as u8);
        let mut scales = [0u8; 12];
        for j in 0..4 {
            scales[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
            scales[j + 4] = mn[j] | ((mn[j + 4] >> 4) << 6);
            scales[j + 8] = (sc[j + 4] & 0x0f) | ((mn[j + 4] & 0x0f) << 4);
        }
        let q: Vec<u8> = (0..256).map(|i| (i % 16) as u8).collect();
        let mut block = h(0.5).to_vec();
        block.extend(h(0.25));
        block.extend(scales);
        for chunk in 0..4 {
            let lo = &q[64 * chunk..64 * chunk + 32];
            let hi = &q[64 * chunk + 32..64 * chunk + 64];
            block.extend(lo.iter().zip(hi).map(|(&l, &h)| l | (h << 4)));
        }
        let expected: Vec<f32> = (0..256)
            .map(|i| {
                let sub = i / 32;
                0.5 * sc[sub] as f32 * q[i] as f32 - 0.25 * mn[sub] as f32
            })
            .collect();
        assert_eq!(deq(GgmlType::Q4K, &block), expected);
    }

    #[test]
    fn q6_k_block_with_simple_scales() {
        let q: Vec<u8> = (0..256).map(|i| ((i * 5) % 64) as u8).collect();
        let sc: [i8; 16] = std::array::from_fn(|i| i as i8 - 8);
        let mut ql = [0u8; 128];
        let mut qh = [0u8; 64];
        for half in 0..2 {
            for l in 0..32 {
                let at = |k: usize| q[128 * half + l + 32 * k];
                ql[64 * half + l] = (at(0) & 0x0f) | ((at(2) & 0x0f) << 4);
                ql[64 * half + l + 32] = (at(1) & 0x0f) | ((at(3) & 0x0f) << 4);
                qh[32 * half + l] =
                    (at(0) >> 4) | ((at(1) >> 4) << 2) | ((at(2) >> 4) << 4) | ((at(3) >> 4) << 6);
            }
        }
        let mut block = ql.to_vec();
        block.extend(qh);
        block.extend(sc.iter().map(|&s| s as u8));
        block.extend(h(0.125));
        let expected: Vec<f32> = (0..256)
            .map(|i| 0.125 * sc[i / 16] as f32 * (q[i] as f32 - 32.0))
            .collect();
        assert_eq!(deq(GgmlType::Q6K, &block), expected);
    }

    #[test]
    fn unsupported_type_is_refused() {
        assert!(!dequantize_into(GgmlType::Q2K, &[0; 84], &mut Vec::new()));
        assert!(!dequantize_into(
            GgmlType::Unknown(99),
            &[0; 4],
            &mut Vec::new()
        ));
        assert_eq!(GgmlType::from_id(12).name(), "Q4_K");
        assert_eq!(GgmlType::from_id(77), GgmlType::Unknown(77));
    }
}
