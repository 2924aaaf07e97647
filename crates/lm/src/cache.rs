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

    /// A new cache holding the rows named by `rows` (int64 indices, repeats and any order
    /// allowed), sharing nothing with this one: how SASA and RAD give every candidate token its
    /// own copy of its row's cache in one operation.
    ///
    /// Only the filled positions are copied, gathered straight into buffers with room for
    /// exactly one more position (the usual next step runs one token per forked row), so a fork
    /// costs one copy of the rows' real history — not of the preallocated capacity, and not a
    /// deep copy of the whole cache followed by a selection. A second token on the fork grows it
    /// as usual.
    pub fn fork_rows(&self, rows: &Tensor) -> KvCache {
        let past = self.seq_len();
        let fork = |t: &Tensor| {
            let index = rows.to_device(t.device());
            let mut shape = t.size();
            shape[0] = index.size()[0];
            shape[2] = past + 1;
            let buffer = Tensor::empty(&shape, (t.kind(), t.device()));
            // The gather writes into the strided view of the first `past` positions: one copy.
            let _ = t
                .narrow(2, 0, past)
                .index_select_out(&buffer.narrow(2, 0, past), 0, &index);
            buffer
        };
        let pick = |t: &Tensor| t.index_select(0, &rows.to_device(t.device()));
        Self {
            layers: self
                .layers
                .iter()
                .map(|l| l.as_ref().map(|(k, v)| (fork(k), fork(v))))
                .collect(),
            key_mask: self.key_mask.as_ref().map(pick),
            real_tokens: self.real_tokens.as_ref().map(pick),
            has_padding: self.has_padding,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache of `batch` left-padded rows and `len` positions over two layers, filled with
    /// distinct values so a row or position mix-up shows.
    fn filled_cache(batch: i64, len: i64) -> KvCache {
        let mut cache = KvCache::new(2);
        let mask = Tensor::ones([batch, len], (Kind::Int64, Device::Cpu));
        // Row 1 is left-padded by two positions.
        let _ = mask.get(1).narrow(0, 0, 2).fill_(0);
        for layer in 0..2 {
            let values = Tensor::arange(batch * 3 * len * 4, (Kind::Float, Device::Cpu))
                .view([batch, 3, len, 4])
                + 1000.0 * layer as f64;
            let _views = cache.extend_layer(layer, values.shallow_clone(), -values);
        }
        cache.commit_tokens(&mask);
        cache
    }

    #[test]
    fn fork_rows_equals_clone_then_select_and_shares_nothing() {
        let cache = filled_cache(3, 5);
        let rows = Tensor::from_slice(&[2i64, 0, 1, 1, 2]);
        let fork = cache.fork_rows(&rows);
        let mut reference = cache.deep_clone();
        reference.select_rows(&rows);
        assert_eq!(fork.batch_size(), Some(5));
        assert_eq!(fork.seq_len(), 5);
        assert!(fork.has_padding);
        for layer in 0..2 {
            let (k, v) = fork.layers[layer].as_ref().unwrap();
            let (rk, rv) = reference.layers[layer].as_ref().unwrap();
            // Room for exactly one more position, and the filled part equal to the reference's.
            assert_eq!(k.size(), [5, 3, 6, 4]);
            assert!(k.narrow(2, 0, 5).equal(&rk.narrow(2, 0, 5)));
            assert!(v.narrow(2, 0, 5).equal(&rv.narrow(2, 0, 5)));
        }
        assert!(fork
            .key_mask
            .as_ref()
            .unwrap()
            .equal(reference.key_mask.as_ref().unwrap()));
        assert_eq!(
            Vec::<i64>::try_from(fork.real_tokens().unwrap()).unwrap(),
            vec![5, 5, 3, 3, 5]
        );

        // One token on the fork fills its spare position without growing it; a second one grows
        // it. Neither touches the original.
        let original = cache.layers[0].as_ref().unwrap().0.copy();
        let mut fork = fork;
        for step in 0..2 {
            let new = Tensor::full([5, 3, 1, 4], -7.0, (Kind::Float, Device::Cpu));
            for layer in 0..2 {
                let (k, _) = fork.extend_layer(layer, new.shallow_clone(), new.shallow_clone());
                assert_eq!(k.size(), [5, 3, 6 + step, 4]);
                assert!(k.narrow(2, 5 + step, 1).equal(&new));
                let (rk, _) = reference.layers[layer].as_ref().unwrap();
                assert!(k.narrow(2, 0, 5).equal(&rk.narrow(2, 0, 5)));
            }
            fork.commit_tokens(&Tensor::ones([5, 1], (Kind::Int64, Device::Cpu)));
        }
        assert_eq!(fork.seq_len(), 7);
        assert!(cache.layers[0].as_ref().unwrap().0.equal(&original));
        assert_eq!(cache.seq_len(), 5);
    }

    #[test]
    fn fork_of_an_empty_cache_is_empty() {
        let cache = KvCache::new(3);
        let fork = cache.fork_rows(&Tensor::from_slice(&[0i64, 0]));
        assert!(fork.is_empty());
        assert_eq!(fork.num_layers(), 3);
    }
}
