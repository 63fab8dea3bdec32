//! The context network: a convolutional relative positional embedding
//! (weight-normalised grouped conv, transformers 5's parametrization names
//! `pos_conv_embed.conv.parametrizations.weight.original0` = g `[1, 1, K]`
//! and `original1` = v `[H, H / groups, K]`, weight = g * v / ||v|| with the
//! norm over all dims but the last), then post-norm transformer layers
//! (`do_stable_layer_norm = false`) under `encoder.layers.{i}.*`.
use super::Wav2Vec2Config;
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

/// The weight-normalised positional convolution.
#[derive(Debug)]
pub struct PosConvEmbed {
    g: Tensor,
    v: Tensor,
    bias: Tensor,
    kernel: i64,
    groups: i64,
}

impl PosConvEmbed {
    pub fn new(p: &nn::Path, cfg: &Wav2Vec2Config) -> Self {
        let (h, k, groups) = (
            cfg.hidden_size,
            cfg.num_conv_pos_embeddings,
            cfg.num_conv_pos_embedding_groups,
        );
        let conv = p / "conv";
        let std = (4.0 / (k * h) as f64).sqrt();
        let w = &conv / "parametrizations" / "weight";
        let v = w.var(
            "original1",
            &[h, h / groups, k],
            nn::Init::Randn {
                mean: 0.0,
                stdev: std,
            },
        );
        let g = w.var("original0", &[1, 1, k], nn::Init::Const(0.0));
        tch::no_grad(|| {
            let norm = weight_norm_denominator(&v);
            g.shallow_clone().copy_(&norm);
        });
        let bias = conv.var("bias", &[h], nn::Init::Const(0.0));
        Self {
            g,
            v,
            bias,
            kernel: k,
            groups,
        }
    }

    /// `[B, T, H]` -> `[B, T, H]` (conv, same padding, GELU).
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let weight = &self.v * (&self.g / weight_norm_denominator(&self.v));
        let y = x.transpose(1, 2).conv1d(
            &weight,
            Some(&self.bias),
            [1],
            [self.kernel / 2],
            [1],
            self.groups,
        );
        let t = x.size()[1];
        y.narrow(2, 0, t).gelu("none").transpose(1, 2)
    }
}

/// `||v||` over every dim but the last (`torch.norm_except_dim(v, 2, 2)`).
fn weight_norm_denominator(v: &Tensor) -> Tensor {
    v.square()
        .sum_dim_intlist(&[0i64, 1][..], true, Kind::Float)
        .sqrt()
}

/// Multi-head self-attention with a key padding mask.
#[derive(Debug)]
struct Attention {
    q: nn::Linear,
    k: nn::Linear,
    v: nn::Linear,
    out: nn::Linear,
    heads: i64,
    dropout: f64,
}

fn linear(p: nn::Path, i: i64, o: i64) -> nn::Linear {
    nn::linear(
        p,
        i,
        o,
        nn::LinearConfig {
            ws_init: nn::Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            },
            bs_init: Some(nn::Init::Const(0.0)),
            bias: true,
        },
    )
}

impl Attention {
    fn new(p: &nn::Path, cfg: &Wav2Vec2Config) -> Self {
        let h = cfg.hidden_size;
        Self {
            q: linear(p / "q_proj", h, h),
            k: linear(p / "k_proj", h, h),
            v: linear(p / "v_proj", h, h),
            out: linear(p / "out_proj", h, h),
            heads: cfg.num_attention_heads,
            dropout: cfg.attention_dropout,
        }
    }

    /// `bias`: `[B, 1, 1, T]` additive mask (0 or a large negative), or none.
    fn forward_t(&self, x: &Tensor, bias: Option<&Tensor>, train: bool) -> Tensor {
        let (b, t, h) = x.size3().unwrap_or((0, 0, 0));
        let d = h / self.heads;
        let split = |y: Tensor| y.view([b, t, self.heads, d]).transpose(1, 2);
        let q = split(self.q.forward(x) * (d as f64).powf(-0.5));
        let k = split(self.k.forward(x));
        let v = split(self.v.forward(x));
        let mut scores = q.matmul(&k.transpose(-2, -1));
        if let Some(bias) = bias {
            scores += bias;
        }
        let attn = scores
            .softmax(-1, scores.kind())
            .dropout(self.dropout, train);
        let ctx = attn.matmul(&v).transpose(1, 2).reshape([b, t, h]);
        self.out.forward(&ctx)
    }
}

/// One post-norm transformer layer.
#[derive(Debug)]
struct Layer {
    attention: Attention,
    layer_norm: nn::LayerNorm,
    intermediate: nn::Linear,
    output: nn::Linear,
    final_layer_norm: nn::LayerNorm,
    hidden_dropout: f64,
    activation_dropout: f64,
}

impl Layer {
    fn new(p: &nn::Path, cfg: &Wav2Vec2Config) -> Self {
        let ln = nn::LayerNormConfig {
            eps: cfg.layer_norm_eps,
            ..Default::default()
        };
        let h = cfg.hidden_size;
        let ff = p / "feed_forward";
        Self {
            attention: Attention::new(&(p / "attention"), cfg),
            layer_norm: nn::layer_norm(p / "layer_norm", vec![h], ln),
            intermediate: linear(&ff / "intermediate_dense", h, cfg.intermediate_size),
            output: linear(&ff / "output_dense", cfg.intermediate_size, h),
            final_layer_norm: nn::layer_norm(p / "final_layer_norm", vec![h], ln),
            hidden_dropout: cfg.hidden_dropout,
            activation_dropout: cfg.activation_dropout,
        }
    }

    fn forward_t(&self, x: &Tensor, bias: Option<&Tensor>, train: bool) -> Tensor {
        let a = self
            .attention
            .forward_t(x, bias, train)
            .dropout(self.hidden_dropout, train);
        let x = self.layer_norm.forward(&(x + a));
        let f = self
            .intermediate
            .forward(&x)
            .gelu("none")
            .dropout(self.activation_dropout, train);
        let f = self.output.forward(&f).dropout(self.hidden_dropout, train);
        self.final_layer_norm.forward(&(x + f))
    }
}

/// Positional conv, layer norm, transformer layers (`wav2vec2.encoder`).
#[derive(Debug)]
pub struct Transformer {
    pos_conv: PosConvEmbed,
    layer_norm: nn::LayerNorm,
    layers: Vec<Layer>,
    dropout: f64,
}

impl Transformer {
    pub fn new(p: &nn::Path, cfg: &Wav2Vec2Config) -> Self {
        let ln = nn::LayerNormConfig {
            eps: cfg.layer_norm_eps,
            ..Default::default()
        };
        Self {
            pos_conv: PosConvEmbed::new(&(p / "pos_conv_embed"), cfg),
            layer_norm: nn::layer_norm(p / "layer_norm", vec![cfg.hidden_size], ln),
            layers: (0..cfg.num_hidden_layers)
                .map(|i| Layer::new(&(p / "layers" / i), cfg))
                .collect(),
            dropout: cfg.hidden_dropout,
        }
    }

    /// `[B, T, H]` and an optional `[B, T]` validity mask -> every hidden
    /// state: the embedding output (after the positional conv and layer
    /// norm) and each layer's output (`num_hidden_layers + 1` tensors).
    pub fn forward_t(&self, x: &Tensor, valid: Option<&Tensor>, train: bool) -> Vec<Tensor> {
        let (x, bias) = match valid {
            Some(m) => {
                let x = x * m.unsqueeze(-1).to_kind(x.kind());
                let bias = (m.logical_not().to_kind(Kind::Float) * -1e9)
                    .view([m.size()[0], 1, 1, m.size()[1]])
                    .to_kind(x.kind());
                (x, Some(bias))
            }
            None => (x.shallow_clone(), None),
        };
        let x = &x + self.pos_conv.forward(&x);
        let mut h = self.layer_norm.forward(&x).dropout(self.dropout, train);
        let mut states = vec![h.shallow_clone()];
        for layer in &self.layers {
            h = layer.forward_t(&h, bias.as_ref(), train);
            states.push(h.shallow_clone());
        }
        states
    }
}
