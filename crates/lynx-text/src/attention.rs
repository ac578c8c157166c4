//! UMT5 self-attention with a relative position bias of its own in every layer
//! (transformers `UMT5Attention`, `has_relative_attention_bias=True`).

use burn::module::{Module, Param};
use burn::tensor::{Int, Tensor};
use lynx_core::nn::Linear;
use lynx_core::nn::{linear, merge_heads, split_heads};
use lynx_store::Loader;

use crate::config::Umt5Config;

/// Multi-head self-attention without score scaling (T5 folds it into the weights),
/// biased by learned per-head offsets of bucketed relative positions.
///
/// # Shapes
/// - input and output: `[batch, seq, d_model]`
/// - `relative_attention_bias`: `[num_buckets, num_heads]`
#[derive(Module, Debug)]
pub struct Umt5Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    relative_attention_bias: Param<Tensor<2>>,
    num_heads: usize,
}

impl Umt5Attention {
    /// Loads `SelfAttention` (`q`, `k`, `v`, `o` without bias; `relative_attention_bias`
    /// `[num_buckets, num_heads]`).
    pub fn load(w: &Loader, cfg: &Umt5Config) -> Self {
        let (d, inner) = (cfg.d_model, cfg.inner_dim());
        Self {
            q: w.sub("q").linear(d, inner, false),
            k: w.sub("k").linear(d, inner, false),
            v: w.sub("v").linear(d, inner, false),
            o: w.sub("o").linear(inner, d, false),
            relative_attention_bias: w.sub("relative_attention_bias").param(
                "weight",
                [cfg.relative_attention_num_buckets, cfg.num_heads],
            ),
            num_heads: cfg.num_heads,
        }
    }

    /// Attends with the position bias looked up at `buckets` (`[seq · seq]`, from
    /// [`relative_position_buckets`]) plus `mask_bias` (`[batch, 1, 1, seq]`, 0 for
    /// tokens, a large negative value for padding).
    ///
    /// # Shapes
    /// - `x` `[batch, seq, d_model]` → `[batch, seq, d_model]`.
    pub fn forward(
        &self,
        x: Tensor<3>,
        buckets: Tensor<1, Int>,
        mask_bias: Option<Tensor<4>>,
    ) -> Tensor<3> {
        let seq = x.dims()[1];
        let q = split_heads(linear(&self.q, x.clone()), self.num_heads);
        let k = split_heads(linear(&self.k, x.clone()), self.num_heads);
        let v = split_heads(linear(&self.v, x), self.num_heads);
        let bias = self.position_bias(buckets, seq);
        let bias = match mask_bias {
            Some(m) => bias + m,
            None => bias,
        };
        // T5 does not scale the scores by 1/sqrt(d_kv).
        let out = lynx_core::nn::attention(q, k, v, Some(bias), Some(1.0));
        linear(&self.o, merge_heads(out))
    }

    /// `[1, heads, seq, seq]`: the learned bias of each query/key pair's bucket.
    ///
    /// # Shapes
    /// - `buckets` `[seq · seq]` → `[1, heads, seq, seq]`.
    pub fn position_bias(&self, buckets: Tensor<1, Int>, seq: usize) -> Tensor<4> {
        self.relative_attention_bias
            .val()
            .select(0, buckets)
            .reshape([seq, seq, self.num_heads])
            .permute([2, 0, 1])
            .unsqueeze::<4>()
    }
}

/// The bidirectional T5 bucket of every (query, key) pair of a `seq`-long sequence,
/// row-major (`[query · seq + key]`).
///
/// Half of the buckets hold keys after the query. In each half, the first half of the
/// buckets are exact distances and the rest grow logarithmically up to `max_distance`;
/// the logarithm is taken in f32 and truncated, as transformers computes it.
pub fn relative_position_buckets(seq: usize, num_buckets: usize, max_distance: usize) -> Vec<i64> {
    let half = num_buckets / 2;
    let max_exact = half / 2;
    // torch: log(d / max_exact) / math.log(max_distance / max_exact) * (half - max_exact),
    // in f32 with the Python float divisor rounded to f32.
    let log_span = ((max_distance as f64) / (max_exact as f64)).ln() as f32;
    let log_buckets = (half - max_exact) as f32;
    let bucket_of_distance = |d: usize| -> i64 {
        if d < max_exact {
            return d as i64;
        }
        let ratio = (d as f32 / max_exact as f32).ln() / log_span * log_buckets;
        let large = max_exact as i64 + ratio as i64;
        large.min(half as i64 - 1)
    };
    // Buckets only depend on key − query, in (−seq, seq).
    let by_offset: Vec<i64> = (0..2 * seq.max(1) - 1)
        .map(|i| {
            let rel = i as i64 - (seq as i64 - 1);
            let side = if rel > 0 { half as i64 } else { 0 };
            side + bucket_of_distance(rel.unsigned_abs() as usize)
        })
        .collect();
    let mut out = Vec::with_capacity(seq * seq);
    for q in 0..seq {
        for k in 0..seq {
            out.push(by_offset[k + seq - 1 - q]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::relative_position_buckets;

    /// The bucket of `key − query = rel` with T5's 32 buckets and max distance 128.
    fn bucket(rel: i64) -> i64 {
        // A sequence long enough for |rel|; entry (query, key) = (0, rel) or (−rel, 0).
        let seq = rel.unsigned_abs() as usize + 1;
        let b = relative_position_buckets(seq, 32, 128);
        if rel >= 0 {
            b[rel as usize]
        } else {
            b[(-rel) as usize * seq]
        }
    }

    #[test]
    fn buckets_follow_the_t5_formula() {
        // Keys before the query use buckets 0..16, keys after it 16..32; distances
        // below 8 are exact, then 8 + floor(8 · ln(d/8) / ln(16)), capped at 15.
        let cases = [
            (0, 0),
            (-1, 1),
            (1, 17),
            (-7, 7),
            (-8, 8),
            (-15, 9),
            (-16, 10),
            (-32, 12),
            (-64, 14),
            (-127, 15),
            (-300, 15),
            (16, 26),
            (300, 31),
        ];
        for (rel, want) in cases {
            assert_eq!(bucket(rel), want, "relative position {rel}");
        }
    }
}
