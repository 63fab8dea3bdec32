//! The text tower: selfsup-text's BERT under `text_model.` (so its names are
//! `text_model.bert.embeddings.word_embeddings.weight`, ...: transformers'
//! `BertForMaskedLM` names below the prefix), pooled by the mean of the
//! final hidden states over the caption's tokens. The MLM head BERT carries
//! (`text_model.cls.*`) gets no gradient and is not exported.
use crate::tower::Tower;
use selfsup_text::model::{Bert, BertConfig};
use tch::{nn, Kind, Tensor};

/// Var-store prefix of the text tower (HF `CLIPModel`'s name).
pub const TEXT_PREFIX: &str = "text_model";

/// BERT with mean pooling.
pub struct TextTower {
    pub bert: Bert,
}

impl TextTower {
    /// Builds BERT `cfg` under `root / text_model`.
    pub fn new(root: &nn::Path, cfg: &BertConfig) -> Self {
        Self {
            bert: Bert::new(&(root / TEXT_PREFIX), cfg),
        }
    }

    /// Width of the pooled representation.
    pub fn out_dim(&self) -> i64 {
        self.bert.cfg.hidden
    }

    /// Mean of the final hidden states over the tokens of `ids` `[B, L]`
    /// (`attention` `[B, L]`: 1 = token, 0 = padding).
    pub fn forward(&self, ids: &Tensor, attention: &Tensor, train: bool) -> Tensor {
        let padded = attention.eq(0).any().int64_value(&[]) != 0;
        let hidden = self.bert.forward(ids, padded.then_some(attention), train);
        let kind = hidden.kind();
        let m = attention.to_kind(kind).unsqueeze(-1);
        (hidden * &m).sum_dim_intlist(1, false, kind)
            / m.sum_dim_intlist(1, false, Kind::Float).clamp_min(1.0)
    }
}

impl Tower for TextTower {
    const INPUTS: usize = 2;
    const PROJECTION: &'static str = "text_projection";

    fn out_dim(&self) -> i64 {
        self.bert.cfg.hidden
    }

    /// Token ids `[B, L]` and their attention `[B, L]` (ids alone: no padding).
    fn forward(&self, inputs: &[Tensor], train: bool) -> Tensor {
        match inputs {
            [ids, attention, ..] => TextTower::forward(self, ids, attention, train),
            [ids] => TextTower::forward(self, ids, &ids.ones_like(), train),
            [] => Tensor::zeros([0, self.bert.cfg.hidden], (Kind::Float, tch::Device::Cpu)),
        }
    }
}
