//! BERT (Devlin et al. 2019) with HF transformers' variable names, so the
//! var store *is* a `BertForMaskedLM` state dict: `bert.embeddings.*`,
//! `bert.encoder.layer.N.*`, `cls.predictions.*` (the decoder is tied to the
//! word embeddings). Post-layer-norm blocks, exact (erf) GELU, learned
//! absolute positions, token types (all 0 here), initialised as transformers
//! does (normal 0.02, zero biases, unit norms).
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

/// Size presets (layers, hidden, heads, intermediate), as in Turc et al. 2019.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BertSize {
    /// 2 layers, 128 hidden, 2 heads.
    #[default]
    Tiny,
    /// 4 layers, 256 hidden, 4 heads.
    Mini,
    /// 4 layers, 512 hidden, 8 heads.
    Small,
    /// 12 layers, 768 hidden, 12 heads (bert-base).
    Base,
}

impl BertSize {
    fn dims(self) -> (i64, i64, i64, i64) {
        match self {
            BertSize::Tiny => (2, 128, 2, 512),
            BertSize::Mini => (4, 256, 4, 1024),
            BertSize::Small => (4, 512, 8, 2048),
            BertSize::Base => (12, 768, 12, 3072),
        }
    }
}

/// `[model]`: a size preset, each dimension overridable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    pub size: BertSize,
    pub layers: Option<i64>,
    pub hidden: Option<i64>,
    pub heads: Option<i64>,
    pub intermediate: Option<i64>,
    /// Tokens per sequence (packing length), at most `max_position`.
    pub max_len: usize,
    /// Learned positions (512 as in BERT).
    pub max_position: i64,
    /// Dropout on hidden states and attention probabilities.
    pub dropout: f64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            size: BertSize::Tiny,
            layers: None,
            hidden: None,
            heads: None,
            intermediate: None,
            max_len: 128,
            max_position: 512,
            dropout: 0.1,
        }
    }
}

/// The largest layer count, hidden size, heads, intermediate size and
/// learned positions `[model]` accepts (far above any BERT; they bound what
/// is allocated before anything is).
pub const MAX_LAYERS: i64 = 256;
pub const MAX_HIDDEN: i64 = 16_384;
pub const MAX_INTERMEDIATE: i64 = 65_536;
pub const MAX_POSITION: i64 = 65_536;
/// The smallest `max_len`: `[CLS]`, `[SEP]` and a few tokens of text.
pub const MIN_MAX_LEN: usize = crate::packing::MIN_MAX_LEN;
/// The most parameters a resolved model may have (4 Gi: 16 GiB of f32
/// weights before optimiser state).
pub const MAX_PARAMETERS: i64 = 1 << 32;

impl ModelConfig {
    /// Checks every size that does not depend on the vocabulary; `Err`
    /// names the key and the allowed range.
    pub fn validate(&self) -> Result<(), String> {
        let (l, h, a, i) = self.size.dims();
        let (layers, hidden, heads, intermediate) = (
            self.layers.unwrap_or(l),
            self.hidden.unwrap_or(h),
            self.heads.unwrap_or(a),
            self.intermediate.unwrap_or(i),
        );
        for (key, v, max) in [
            ("layers", layers, MAX_LAYERS),
            ("hidden", hidden, MAX_HIDDEN),
            ("heads", heads, hidden.clamp(1, MAX_HIDDEN)),
            ("intermediate", intermediate, MAX_INTERMEDIATE),
            ("max_position", self.max_position, MAX_POSITION),
        ] {
            if !(1..=max).contains(&v) {
                return Err(format!("[model] {key} = {v}: must be from 1 to {max}"));
            }
        }
        if hidden % heads != 0 {
            return Err(format!(
                "[model] hidden ({hidden}) must be a multiple of heads ({heads})"
            ));
        }
        if self.max_len < MIN_MAX_LEN || self.max_len as i64 > self.max_position {
            return Err(format!(
                "[model] max_len = {}: must be from {MIN_MAX_LEN} ([CLS], [SEP] and some text) to max_position ({})",
                self.max_len, self.max_position
            ));
        }
        if !(self.dropout.is_finite() && (0.0..1.0).contains(&self.dropout)) {
            return Err(format!(
                "[model] dropout = {}: must be at least 0 and below 1",
                self.dropout
            ));
        }
        Ok(())
    }

    /// The architecture for a vocabulary of `vocab_size` with `pad_id`.
    pub fn resolve(&self, vocab_size: usize, pad_id: i64) -> Result<BertConfig, String> {
        self.validate()?;
        let (l, h, a, i) = self.size.dims();
        let cfg = BertConfig {
            vocab_size: i64::try_from(vocab_size).unwrap_or(i64::MAX),
            hidden: self.hidden.unwrap_or(h),
            layers: self.layers.unwrap_or(l),
            heads: self.heads.unwrap_or(a),
            intermediate: self.intermediate.unwrap_or(i),
            max_position: self.max_position,
            type_vocab: 2,
            dropout: self.dropout,
            layer_norm_eps: 1e-12,
            initializer_range: 0.02,
            pad_token_id: pad_id,
        };
        if !(0..cfg.vocab_size).contains(&pad_id) {
            return Err(format!(
                "[PAD] id {pad_id} is outside the vocabulary of {vocab_size} pieces"
            ));
        }
        // Embeddings (words, positions, token types), per layer the
        // attention and the feed-forward, the MLM head's transform.
        let (h, i) = (cfg.hidden, cfg.intermediate);
        let params = [cfg.vocab_size, cfg.max_position, cfg.type_vocab]
            .iter()
            .try_fold(0i64, |acc, &rows| acc.checked_add(rows.checked_mul(h)?))
            .and_then(|emb| {
                let layer = (4 * h * h).checked_add(2 * h * i)?;
                emb.checked_add(cfg.layers.checked_mul(layer)?)?
                    .checked_add(h * h)
            });
        match params {
            Some(p) if p <= MAX_PARAMETERS => Ok(cfg),
            _ => Err(format!(
                "[model] a vocabulary of {vocab_size} pieces with hidden = {h}, layers = {}, intermediate = {i} and max_position = {} makes more than {MAX_PARAMETERS} parameters: make the model smaller",
                cfg.layers, cfg.max_position
            )),
        }
    }
}

/// A resolved BERT architecture (what `config.json` says).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    pub vocab_size: i64,
    pub hidden: i64,
    pub layers: i64,
    pub heads: i64,
    pub intermediate: i64,
    pub max_position: i64,
    pub type_vocab: i64,
    pub dropout: f64,
    pub layer_norm_eps: f64,
    pub initializer_range: f64,
    pub pad_token_id: i64,
}

impl BertConfig {
    /// transformers' `config.json` for `BertForMaskedLM`.
    pub fn hf_config_json(&self) -> serde_json::Value {
        serde_json::json!({
            "architectures": ["BertForMaskedLM"],
            "model_type": "bert",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "intermediate_size": self.intermediate,
            "hidden_act": "gelu",
            "hidden_dropout_prob": self.dropout,
            "attention_probs_dropout_prob": self.dropout,
            "max_position_embeddings": self.max_position,
            "type_vocab_size": self.type_vocab,
            "initializer_range": self.initializer_range,
            "layer_norm_eps": self.layer_norm_eps,
            "pad_token_id": self.pad_token_id,
            "position_embedding_type": "absolute",
            "tie_word_embeddings": true,
            "torch_dtype": "float32"
        })
    }
}

fn linear(p: nn::Path, i: i64, o: i64, std: f64) -> nn::Linear {
    nn::linear(
        p,
        i,
        o,
        nn::LinearConfig {
            ws_init: nn::Init::Randn {
                mean: 0.0,
                stdev: std,
            },
            bs_init: Some(nn::Init::Const(0.0)),
            bias: true,
        },
    )
}

fn layer_norm(p: nn::Path, h: i64, eps: f64) -> nn::LayerNorm {
    nn::layer_norm(
        p,
        vec![h],
        nn::LayerNormConfig {
            eps,
            ..Default::default()
        },
    )
}

#[derive(Debug)]
struct Layer {
    query: nn::Linear,
    key: nn::Linear,
    value: nn::Linear,
    attn_out: nn::Linear,
    attn_ln: nn::LayerNorm,
    intermediate: nn::Linear,
    output: nn::Linear,
    out_ln: nn::LayerNorm,
}

/// BERT with its MLM head.
#[derive(Debug)]
pub struct Bert {
    pub cfg: BertConfig,
    word: nn::Embedding,
    position: nn::Embedding,
    token_type: nn::Embedding,
    emb_ln: nn::LayerNorm,
    layers: Vec<Layer>,
    head_dense: nn::Linear,
    head_ln: nn::LayerNorm,
    head_bias: Tensor,
}

impl Bert {
    /// Creates the variables under `root` (names as in transformers).
    pub fn new(root: &nn::Path, cfg: &BertConfig) -> Self {
        let std = cfg.initializer_range;
        let emb_cfg = nn::EmbeddingConfig {
            ws_init: nn::Init::Randn {
                mean: 0.0,
                stdev: std,
            },
            ..Default::default()
        };
        let bert = root / "bert";
        let e = &bert / "embeddings";
        let word = nn::embedding(&e / "word_embeddings", cfg.vocab_size, cfg.hidden, emb_cfg);
        tch::no_grad(|| {
            if (0..cfg.vocab_size).contains(&cfg.pad_token_id) {
                let _ = word.ws.get(cfg.pad_token_id).zero_();
            }
        });
        let position = nn::embedding(
            &e / "position_embeddings",
            cfg.max_position,
            cfg.hidden,
            emb_cfg,
        );
        let token_type = nn::embedding(
            &e / "token_type_embeddings",
            cfg.type_vocab,
            cfg.hidden,
            emb_cfg,
        );
        let emb_ln = layer_norm(&e / "LayerNorm", cfg.hidden, cfg.layer_norm_eps);
        let h = cfg.hidden;
        let layers = (0..cfg.layers)
            .map(|i| {
                let l = &bert / "encoder" / "layer" / i;
                let att = &l / "attention";
                Layer {
                    query: linear(&att / "self" / "query", h, h, std),
                    key: linear(&att / "self" / "key", h, h, std),
                    value: linear(&att / "self" / "value", h, h, std),
                    attn_out: linear(&att / "output" / "dense", h, h, std),
                    attn_ln: layer_norm(&att / "output" / "LayerNorm", h, cfg.layer_norm_eps),
                    intermediate: linear(&l / "intermediate" / "dense", h, cfg.intermediate, std),
                    output: linear(&l / "output" / "dense", cfg.intermediate, h, std),
                    out_ln: layer_norm(&l / "output" / "LayerNorm", h, cfg.layer_norm_eps),
                }
            })
            .collect();
        let pred = root / "cls" / "predictions";
        let head_dense = linear(&pred / "transform" / "dense", h, h, std);
        let head_ln = layer_norm(&pred / "transform" / "LayerNorm", h, cfg.layer_norm_eps);
        let head_bias = pred.zeros("bias", &[cfg.vocab_size]);
        Self {
            cfg: cfg.clone(),
            word,
            position,
            token_type,
            emb_ln,
            layers,
            head_dense,
            head_ln,
            head_bias,
        }
    }

    /// Final hidden states `[B, L, H]` of `ids` `[B, L]`; `attention` is
    /// `[B, L]` (nonzero = token) or `None` when nothing is padding.
    pub fn forward(&self, ids: &Tensor, attention: Option<&Tensor>, train: bool) -> Tensor {
        let (b, l) = ids.size2().expect("ids are [B, L]");
        let p = if train { self.cfg.dropout } else { 0.0 };
        let positions = Tensor::arange(l, (Kind::Int64, ids.device()));
        let x = self.word.forward(ids)
            + self.position.forward(&positions).unsqueeze(0)
            + self.token_type.ws.get(0).view([1, 1, -1]);
        let mut x = self.emb_ln.forward(&x).dropout(p, train);
        let mask = attention.map(|a| a.ne(0).view([b, 1, 1, l]));
        let (heads, dh) = (self.cfg.heads, self.cfg.hidden / self.cfg.heads);
        let split = |t: Tensor| t.view([b, l, heads, dh]).transpose(1, 2);
        for layer in &self.layers {
            let q = split(layer.query.forward(&x));
            let k = split(layer.key.forward(&x));
            let v = split(layer.value.forward(&x));
            let ctx = Tensor::scaled_dot_product_attention(
                &q,
                &k,
                &v,
                mask.as_ref(),
                p,
                false,
                None,
                false,
            );
            let ctx = ctx
                .transpose(1, 2)
                .contiguous()
                .view([b, l, self.cfg.hidden]);
            let a = layer.attn_out.forward(&ctx).dropout(p, train);
            x = layer.attn_ln.forward(&(a + &x));
            let i = layer.intermediate.forward(&x).gelu("none");
            let o = layer.output.forward(&i).dropout(p, train);
            x = layer.out_ln.forward(&(o + &x));
        }
        x
    }

    /// MLM logits `[N, V]` of hidden states `[N, H]` (the decoder is the word
    /// embedding matrix, transposed).
    pub fn mlm_logits(&self, hidden: &Tensor) -> Tensor {
        let t = self
            .head_ln
            .forward(&self.head_dense.forward(hidden).gelu("none"));
        t.matmul(&self.word.ws.tr()) + &self.head_bias
    }
}
