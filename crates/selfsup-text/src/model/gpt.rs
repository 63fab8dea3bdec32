//! GPT-2 (Radford et al. 2019) with HF transformers' variable names, so the
//! var store *is* a `GPT2LMHeadModel` state dict: `transformer.wte`,
//! `transformer.wpe`, `transformer.h.N.{ln_1, attn.c_attn, attn.c_proj, ln_2,
//! mlp.c_fc, mlp.c_proj}`, `transformer.ln_f`; the LM head is tied to `wte`
//! and not a variable of its own. Pre-layer-norm blocks, learned absolute
//! positions, GELU with the tanh approximation (`gelu_new`), causal
//! self-attention. The projections are GPT-2's `Conv1D`: weights stored
//! `[in, out]` and applied as `x @ W + b`, the transpose of `nn.Linear`.
//! Initialised as transformers does: normal(0, 0.02), the residual
//! projections (`c_proj`) normal(0, 0.02 / sqrt(2 n_layer)), zero biases,
//! unit norms.
use super::ModelConfig;
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

/// A resolved GPT-2 architecture (what `config.json` says).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gpt2Config {
    pub vocab_size: i64,
    /// Hidden size (`n_embd`).
    pub hidden: i64,
    pub layers: i64,
    pub heads: i64,
    /// Feed-forward size (`n_inner`; GPT-2 itself uses 4 x hidden).
    pub intermediate: i64,
    /// Learned positions (`n_positions`): the longest context.
    pub max_position: i64,
    /// Dropout on embeddings, residual branches and attention probabilities.
    pub dropout: f64,
    pub layer_norm_eps: f64,
    pub initializer_range: f64,
    /// `[CLS]`: every packed sequence starts with it (`bos_token_id`).
    pub bos_token_id: i64,
    /// `[SEP]`: between documents and at the end of sequences (`eos_token_id`).
    pub eos_token_id: i64,
    pub pad_token_id: i64,
}

impl Gpt2Config {
    /// The `[model]` table read as GPT-2: its size preset and overrides
    /// (`layers`, `hidden`, `heads`, `intermediate`, `max_position`,
    /// `dropout`) with the same ranges and parameter bound as BERT's.
    /// `Err` names the key.
    pub fn resolve(
        model: &ModelConfig,
        vocab_size: usize,
        bos: i64,
        eos: i64,
        pad: i64,
    ) -> Result<Self, String> {
        let b = model.resolve(vocab_size, pad)?;
        for (name, id) in [("[CLS]", bos), ("[SEP]", eos)] {
            if !(0..b.vocab_size).contains(&id) {
                return Err(format!(
                    "{name} id {id} is outside the vocabulary of {vocab_size} pieces"
                ));
            }
        }
        Ok(Self {
            vocab_size: b.vocab_size,
            hidden: b.hidden,
            layers: b.layers,
            heads: b.heads,
            intermediate: b.intermediate,
            max_position: b.max_position,
            dropout: b.dropout,
            layer_norm_eps: 1e-5,
            initializer_range: 0.02,
            bos_token_id: bos,
            eos_token_id: eos,
            pad_token_id: pad,
        })
    }

    /// transformers' `config.json` for `GPT2LMHeadModel`.
    pub fn hf_config_json(&self) -> serde_json::Value {
        serde_json::json!({
            "architectures": ["GPT2LMHeadModel"],
            "model_type": "gpt2",
            "vocab_size": self.vocab_size,
            "n_embd": self.hidden,
            "n_layer": self.layers,
            "n_head": self.heads,
            "n_inner": self.intermediate,
            "n_positions": self.max_position,
            "n_ctx": self.max_position,
            "activation_function": "gelu_new",
            "resid_pdrop": self.dropout,
            "embd_pdrop": self.dropout,
            "attn_pdrop": self.dropout,
            "layer_norm_epsilon": self.layer_norm_eps,
            "initializer_range": self.initializer_range,
            "scale_attn_weights": true,
            "scale_attn_by_inverse_layer_idx": false,
            "reorder_and_upcast_attn": false,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "tie_word_embeddings": true,
            "use_cache": true,
            "torch_dtype": "float32"
        })
    }
}

/// GPT-2's `Conv1D`: `x @ weight + bias`, weight `[in, out]`.
#[derive(Debug)]
struct Conv1d {
    weight: Tensor,
    bias: Tensor,
}

impl Conv1d {
    fn new(p: nn::Path, i: i64, o: i64, std: f64) -> Self {
        Self {
            weight: p.var(
                "weight",
                &[i, o],
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: std,
                },
            ),
            bias: p.var("bias", &[o], nn::Init::Const(0.0)),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        x.matmul(&self.weight) + &self.bias
    }
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
struct Block {
    ln_1: nn::LayerNorm,
    c_attn: Conv1d,
    attn_proj: Conv1d,
    ln_2: nn::LayerNorm,
    c_fc: Conv1d,
    mlp_proj: Conv1d,
}

/// GPT-2 with its tied LM head.
#[derive(Debug)]
pub struct Gpt2 {
    pub cfg: Gpt2Config,
    wte: nn::Embedding,
    wpe: nn::Embedding,
    blocks: Vec<Block>,
    ln_f: nn::LayerNorm,
}

impl Gpt2 {
    /// Creates the variables under `root` (names as in transformers).
    pub fn new(root: &nn::Path, cfg: &Gpt2Config) -> Self {
        let std = cfg.initializer_range;
        let proj_std = std / (2.0 * cfg.layers.max(1) as f64).sqrt();
        let emb_cfg = nn::EmbeddingConfig {
            ws_init: nn::Init::Randn {
                mean: 0.0,
                stdev: std,
            },
            ..Default::default()
        };
        let t = root / "transformer";
        let wte = nn::embedding(&t / "wte", cfg.vocab_size, cfg.hidden, emb_cfg);
        let wpe = nn::embedding(&t / "wpe", cfg.max_position, cfg.hidden, emb_cfg);
        let (h, eps) = (cfg.hidden, cfg.layer_norm_eps);
        let blocks = (0..cfg.layers)
            .map(|i| {
                let b = &t / "h" / i;
                Block {
                    ln_1: layer_norm(&b / "ln_1", h, eps),
                    c_attn: Conv1d::new(&b / "attn" / "c_attn", h, 3 * h, std),
                    attn_proj: Conv1d::new(&b / "attn" / "c_proj", h, h, proj_std),
                    ln_2: layer_norm(&b / "ln_2", h, eps),
                    c_fc: Conv1d::new(&b / "mlp" / "c_fc", h, cfg.intermediate, std),
                    mlp_proj: Conv1d::new(&b / "mlp" / "c_proj", cfg.intermediate, h, proj_std),
                }
            })
            .collect();
        let ln_f = layer_norm(&t / "ln_f", h, eps);
        Self {
            cfg: cfg.clone(),
            wte,
            wpe,
            blocks,
            ln_f,
        }
    }

    /// Final hidden states `[B, L, H]` (after `ln_f`) of `ids` `[B, L]`,
    /// each position attending to itself and the positions before it.
    /// `L` must be at most `max_position` (callers bound it: packing by
    /// `[model] max_len`, generation by keeping the last `max_position`
    /// tokens). Padding at the end of a row changes nothing before it.
    pub fn forward(&self, ids: &Tensor, train: bool) -> Tensor {
        let size = ids.size();
        let (b, l) = (size[0], size[size.len() - 1]);
        let p = if train { self.cfg.dropout } else { 0.0 };
        let positions = Tensor::arange(l, (Kind::Int64, ids.device()));
        let x = self.wte.forward(ids) + self.wpe.forward(&positions).unsqueeze(0);
        let mut x = x.dropout(p, train);
        let (heads, h) = (self.cfg.heads, self.cfg.hidden);
        let dh = h / heads;
        let split = |t: &Tensor| t.view([b, l, heads, dh]).transpose(1, 2);
        for blk in &self.blocks {
            let qkv = blk.c_attn.forward(&blk.ln_1.forward(&x));
            let parts = qkv.split(h, -1);
            let ctx = Tensor::scaled_dot_product_attention::<Tensor>(
                &split(&parts[0]),
                &split(&parts[1]),
                &split(&parts[2]),
                None,
                p,
                true,
                None,
                false,
            );
            let ctx = ctx.transpose(1, 2).contiguous().view([b, l, h]);
            x = &x + blk.attn_proj.forward(&ctx).dropout(p, train);
            let m = blk.c_fc.forward(&blk.ln_2.forward(&x)).gelu("tanh");
            x = &x + blk.mlp_proj.forward(&m).dropout(p, train);
        }
        self.ln_f.forward(&x)
    }

    /// Next-token logits `[..., V]` of hidden states `[..., H]` (the head is
    /// the token embedding matrix, transposed; no bias, as in GPT-2).
    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        hidden.matmul(&self.wte.ws.tr())
    }

    /// The LM head's weight `[V, H]`: the token embedding matrix (tied).
    pub fn head_weight(&self) -> &Tensor {
        &self.wte.ws
    }
}
