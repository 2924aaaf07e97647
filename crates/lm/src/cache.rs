//! The key/value cache, kept outside the model so the model stays `&self` and callers can fork,
//! repeat and reorder rows (SASA and RAD score each candidate on a copy of its row's cache).

use tch::{Device, Kind, Tensor};

/// Per-layer keys and values `[batch, kv_heads, seq, head_dim]`, plus which cached positions are
/// real tokens (left padding is not) and how many real tokens each row has seen (its next position).
#[derive(Debug)]
pub struct KvCache {
    /// Per layer: key and value buffers `[batch, kv_heads, capacity, head_dim]`; the first
    /// `seq_len()` positions are filled. Preallocated so a decoding step writes one position
    /// instead of copying the whole cache.
    layers: Vec<Option<(Tensor, Tensor)>>,
    /// `[batch, seq]` bool: true where the cached position holds a real token.
    key_mask: Option<Tensor>,
    /// `[batch]` int64: count of real tokens so far; the next real token's position id.
    real_tokens: Option<Tensor>,
    /// Whether any cached position is left padding (then attention needs an explicit mask).
    has_padding: bool,
}

/// Capacity grows in steps of this many positions.
const CAPACITY_STEP: i64 = 64;

/// What attention must mask, from cheapest to most general.
#[derive(Debug)]
pub enum AttentionMask {
    /// Nothing: one new token per row and no padding anywhere.
    None,
    /// Plain causal mask over the new tokens (empty cache, no padding).
    Causal,
    /// Boolean `[batch, 1, t, past + t]`, true where attention is allowed.
    Explicit(Tensor),
}

/// What one forward pass needs besides the weights: its inputs on the model's device, their
/// position ids and the attention mask, all derived from the cache's state.
pub struct StepInputs {
    pub input_ids: Tensor,
    pub real_mask: Tensor,
    pub positions: Tensor,
    pub mask: AttentionMask,
}

impl KvCache {
    /// Moves `input_ids` and `real_mask` `[batch, t]` to `device` and derives their positions
    /// and attention mask. After the layers ran, call [`commit_tokens`](Self::commit_tokens)
    /// with `real_mask`.
    pub fn step_inputs(
        &self,
        input_ids: &Tensor,
        real_mask: &Tensor,
        device: Device,
    ) -> StepInputs {
        let real_mask = real_mask.to_device(device);
        StepInputs {
            input_ids: input_ids.to_device(device),
            positions: self.position_ids(&real_mask),
            mask: self.attention_mask(&real_mask),
            real_mask,
        }
    }

    pub fn new(num_layers: usize) -> Self {
        Self {
            layers: (0..num_layers).map(|_| None).collect(),
            key_mask: None,
            real_tokens: None,
            has_padding: false,
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
            has_padding: self.has_padding,
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

    /// The attention mask for new tokens with real-token mask `new_mask` `[batch, t]`: causal,
    /// never onto left padding. Each position may always attend to itself, so a padding query has
    /// one allowed key and softmax stays finite (an all-masked row would give NaN, and NaN times
    /// a zero attention weight still poisons real rows). Without padding the mask is implicit.
    pub fn attention_mask(&self, new_mask: &Tensor) -> AttentionMask {
        let t = new_mask.size()[1];
        let past = self.seq_len();
        let new_padding = new_mask.min().int64_value(&[]) == 0;
        if !self.has_padding && !new_padding {
            if t == 1 {
                return AttentionMask::None;
            }
            if past == 0 {
                return AttentionMask::Causal;
            }
        }
        let device = new_mask.device();
        let keys_real = match &self.key_mask {
            Some(m) => Tensor::cat(&[m, &new_mask.to_kind(Kind::Bool)], 1),
            None => new_mask.to_kind(Kind::Bool),
        };
        let query_pos = Tensor::arange_start(past, past + t, (Kind::Int64, device)).unsqueeze(1);
        let key_pos = Tensor::arange(past + t, (Kind::Int64, device)).unsqueeze(0);
        let causal = key_pos.le_tensor(&query_pos);
        let itself = key_pos.eq_tensor(&query_pos);
        let allowed = causal.logical_and(&keys_real.unsqueeze(1).logical_or(&itself));
        AttentionMask::Explicit(allowed.unsqueeze(1))
    }

    /// Writes one layer's new keys/values `[batch, kv_heads, t, head_dim]` after the cached ones
    /// and returns views of all of them for attention. Call for every layer, then
    /// [`commit_tokens`](Self::commit_tokens) once.
    pub fn extend_layer(&mut self, layer: usize, k: Tensor, v: Tensor) -> (Tensor, Tensor) {
        let past = self.seq_len();
        let t = k.size()[2];
        let needed = past + t;
        let slot = &mut self.layers[layer];
        let grow = |old: Option<&Tensor>, new: &Tensor| {
            let mut shape = new.size();
            shape[2] = (needed + CAPACITY_STEP - 1) / CAPACITY_STEP * CAPACITY_STEP;
            let buffer = Tensor::zeros(&shape, (new.kind(), new.device()));
            if let Some(old) = old {
                buffer.narrow(2, 0, past).copy_(&old.narrow(2, 0, past));
            }
            buffer
        };
        let (kb, vb) = match slot.take() {
            Some((kb, vb)) if kb.size()[2] >= needed => (kb, vb),
            Some((kb, vb)) => (grow(Some(&kb), &k), grow(Some(&vb), &v)),
            None => (grow(None, &k), grow(None, &v)),
        };
        kb.narrow(2, past, t).copy_(&k);
        vb.narrow(2, past, t).copy_(&v);
        let views = (kb.narrow(2, 0, needed), vb.narrow(2, 0, needed));
        *slot = Some((kb, vb));
        views
    }

    /// Records that the tokens with real-token mask `new_mask` were appended. Call once per forward
    /// pass, after all layers ran.
    pub fn commit_tokens(&mut self, new_mask: &Tensor) {
        let new_mask = new_mask.to_kind(Kind::Bool);
        self.has_padding |= new_mask.all().int64_value(&[]) == 0;
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
