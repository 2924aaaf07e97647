//! The key/value cache, kept outside the model so the model stays `&self` and callers can fork,
//! repeat and reorder rows (SASA and RAD score each candidate on a copy of its row's cache).

use tch::{Device, Kind, Tensor};

/// Per-layer keys and values `[batch, kv_heads, seq, head_dim]`, plus which cached positions are
/// real tokens (left padding is not) and how many real tokens each row has seen (its next position).
#[derive(Debug)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    /// `[batch, seq]` bool: true where the cached position holds a real token.
    key_mask: Option<Tensor>,
    /// `[batch]` int64: count of real tokens so far; the next real token's position id.
    real_tokens: Option<Tensor>,
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        Self {
            layers: (0..num_layers).map(|_| None).collect(),
            key_mask: None,
            real_tokens: None,
        }
    }

    /// Number of cached positions (including left padding).
    pub fn seq_len(&self) -> i64 {
        self.key_mask.as_ref().map_or(0, |m| m.size()[1])
    }

    /// Rows in the cache, or `None` before the first forward pass.
    pub fn batch_size(&self) -> Option<i64> {
        self.key_mask.as_ref().map(|m| m.size()[0])
    }

    pub fn is_empty(&self) -> bool {
        self.key_mask.is_none()
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Keeps the rows named by `rows` (int64 indices, repeats and any order allowed): the one
    /// operation behind selecting finished rows away, forking a row per candidate, and reordering.
    pub fn select_rows(&mut self, rows: &Tensor) {
        let pick = |t: &Tensor| t.index_select(0, &rows.to_device(t.device()));
        for (k, v) in self.layers.iter_mut().flatten() {
            *k = pick(k);
            *v = pick(v);
        }
        if let Some(m) = &self.key_mask {
            self.key_mask = Some(pick(m));
        }
        if let Some(r) = &self.real_tokens {
            self.real_tokens = Some(pick(r));
        }
    }

    /// Repeats every row `times` times in place (row i becomes rows i*times .. (i+1)*times).
    pub fn repeat_rows(&mut self, times: i64) {
        if let Some(batch) = self.batch_size() {
            let device = self.key_mask.as_ref().map_or(Device::Cpu, Tensor::device);
            let rows = Tensor::arange(batch, (Kind::Int64, device))
                .repeat_interleave_self_int(times, 0, None);
            self.select_rows(&rows);
        }
    }

    /// A deep copy (tensors are reference-counted in tch; this one shares nothing).
    pub fn deep_clone(&self) -> Self {
        let copy = |t: &Tensor| t.copy();
        Self {
            layers: self
                .layers
                .iter()
                .map(|l| l.as_ref().map(|(k, v)| (copy(k), copy(v))))
                .collect(),
            key_mask: self.key_mask.as_ref().map(copy),
            real_tokens: self.real_tokens.as_ref().map(copy),
        }
    }

    /// Position ids for `new_mask` `[batch, t]` appended to this cache: each real token continues
    /// its row's count; left pads get position 0 (their outputs are never used).
    pub fn position_ids(&self, new_mask: &Tensor) -> Tensor {
        let mask = new_mask.to_kind(Kind::Int64);
        let running = mask.cumsum(1, Kind::Int64) - 1;
        let offset = match &self.real_tokens {
            Some(r) => running + r.unsqueeze(1),
            None => running,
        };
        offset.clamp_min(0) * &mask
    }

    /// Boolean attention mask `[batch, 1, t, past + t]` for new tokens with real-token mask
    /// `new_mask` `[batch, t]`: causal, never onto left padding. Each position may always attend to
    /// itself, so a padding query has one allowed key and softmax stays finite (an all-masked row
    /// would give NaN, and NaN times a zero attention weight still poisons real rows).
    pub fn attention_mask(&self, new_mask: &Tensor) -> Tensor {
        let device = new_mask.device();
        let t = new_mask.size()[1];
        let past = self.seq_len();
        let keys_real = match &self.key_mask {
            Some(m) => Tensor::cat(&[m, &new_mask.to_kind(Kind::Bool)], 1),
            None => new_mask.to_kind(Kind::Bool),
        };
        let query_pos = Tensor::arange_start(past, past + t, (Kind::Int64, device)).unsqueeze(1);
        let key_pos = Tensor::arange(past + t, (Kind::Int64, device)).unsqueeze(0);
        let causal = key_pos.le_tensor(&query_pos);
        let itself = key_pos.eq_tensor(&query_pos);
        let allowed = causal.logical_and(&keys_real.unsqueeze(1).logical_or(&itself));
        allowed.unsqueeze(1)
    }

    /// Appends one layer's new keys/values and returns the full keys/values for attention.
    pub fn extend_layer(&mut self, layer: usize, k: Tensor, v: Tensor) -> (Tensor, Tensor) {
        let slot = &mut self.layers[layer];
        let (k, v) = match slot.take() {
            Some((pk, pv)) => (Tensor::cat(&[pk, k], 2), Tensor::cat(&[pv, v], 2)),
            None => (k, v),
        };
        *slot = Some((k.shallow_clone(), v.shallow_clone()));
        (k, v)
    }

    /// Records that the tokens with real-token mask `new_mask` were appended. Call once per forward
    /// pass, after all layers ran.
    pub fn commit_tokens(&mut self, new_mask: &Tensor) {
        let new_mask = new_mask.to_kind(Kind::Bool);
        let added = new_mask.sum_dim_intlist(1, false, Kind::Int64);
        self.real_tokens = Some(match &self.real_tokens {
            Some(r) => r + added,
            None => added,
        });
        self.key_mask = Some(match &self.key_mask {
            Some(m) => Tensor::cat(&[m, &new_mask], 1),
            None => new_mask,
        });
    }

    /// `[batch]` count of real tokens per row.
    pub fn real_tokens(&self) -> Option<&Tensor> {
        self.real_tokens.as_ref()
    }
}
