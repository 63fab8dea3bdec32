//! GRACE, DGI and GraphCL: losses against PyTorch, a few steps lower the
//! loss, and the embeddings do not collapse.
use selfsup_core::distributed::SingleProcess;
use selfsup_core::loss::{InfoNce, InfoNceConfig};
use selfsup_core::method::StepCtx;
use selfsup_core::monitor::{collapse_stats, CollapseThresholds};
use selfsup_core::source::BatchSource;
use selfsup_graph::augment::{AugmentConfig, ViewAugment};
use selfsup_graph::encoders::{gcn::GcnConfig, gin::GinConfig, Activation, EncoderConfig};
use selfsup_graph::graph::{Featurize, View};
use selfsup_graph::methods::dgi::dgi_loss;
use selfsup_graph::methods::{
    Dgi, DgiConfig, Grace, GraceConfig, GraphCl, GraphClConfig, GraphMethod,
};
use selfsup_graph::readers::karate::karate_club;
use selfsup_graph::readers::qm9::molecule_graph;
use selfsup_graph::source::{GraphViews, NodeViews};
use tch::nn::OptimizerConfig;
use tch::Tensor;

/// libtorch's global generator is shared by the tests of this binary: they
/// take turns so that each one's seeded initialisation is reproducible.
static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

fn fixture() -> (Tensor, Tensor) {
    let h1 = Tensor::from_slice(&[
        1.0f32, 0.0, 0.5, 0.2, 1.0, -0.3, -0.5, 0.3, 1.0, 0.4, -0.8, 0.1, 0.3, 0.3, 0.3,
    ])
    .view([5, 3]);
    let h2 = Tensor::from_slice(&[
        0.9f32, 0.1, 0.4, 0.0, 1.2, -0.1, -0.3, 0.5, 0.8, 0.5, -0.6, -0.2, 0.1, 0.4, 0.2,
    ])
    .view([5, 3]);
    (h1, h2)
}

// GRACE's own formulation (github.com/CRIPAC-DIG/GRACE model.py), PyTorch 2.11.0:
//   f = lambda x: torch.exp(x / 0.4)
//   def semi_loss(z1, z2):
//       refl = f(F.normalize(z1) @ F.normalize(z1).t()); btw = f(F.normalize(z1) @ F.normalize(z2).t())
//       return -torch.log(btw.diag() / (refl.sum(1) + btw.sum(1) - refl.diag()))
//   ((semi_loss(h1, h2) + semi_loss(h2, h1)) * 0.5).mean()   -> 0.956385612487793
#[test]
fn grace_objective_is_core_nt_xent_and_matches_pytorch() {
    let (h1, h2) = fixture();
    let l = InfoNce::new(InfoNceConfig { temperature: 0.4 }).nt_xent(&h1, &h2, &SingleProcess);
    let v = l.double_value(&[]);
    assert!((v - 0.956_385_612_487_793).abs() < 1e-5, "{v}");
}

// DGI's discriminator and loss (github.com/PetarV-/DGI), PyTorch 2.11.0:
//   pos = h1; neg = h2[[2, 0, 4, 1, 3]]; s = torch.sigmoid(pos.mean(0))
//   bil = nn.Bilinear(3, 3, 1); bil.weight.data = W.reshape(1, 3, 3); bil.bias.data = tensor([0.05])
//   logits = cat([bil(pos, s.expand_as(pos)), bil(neg, s.expand_as(neg))]).squeeze()
//   F.binary_cross_entropy_with_logits(logits, cat([ones(5), zeros(5)]))   -> 0.7136394381523132
#[test]
fn dgi_loss_matches_pytorch() {
    let (h1, h2) = fixture();
    let neg = h2.index_select(0, &Tensor::from_slice(&[2i64, 0, 4, 1, 3]));
    let w = Tensor::from_slice(&[0.5f32, -0.2, 0.1, 0.3, 0.8, -0.4, -0.1, 0.2, 0.6]).view([3, 3]);
    let s = h1
        .mean_dim([0i64].as_slice(), false, tch::Kind::Float)
        .sigmoid();
    let l = dgi_loss(&h1, &neg, &s, &w, &Tensor::from_slice(&[0.05f32])).double_value(&[]);
    assert!((l - 0.713_639_438_152_313_2).abs() < 1e-5, "{l}");
}

/// Trains `method` for `steps` on `source` with Adam; returns the mean loss
/// of the first and last five steps.
fn train(
    method: &mut dyn GraphMethod,
    source: &dyn BatchSource,
    steps: usize,
    lr: f64,
) -> (f64, f64) {
    let mut opt = tch::nn::Adam::default()
        .build(method.var_store(), lr)
        .unwrap();
    let mut losses = Vec::new();
    let per = source.batches_per_epoch();
    for step in 0..steps {
        let batch = source
            .epoch(step / per, step % per)
            .next()
            .unwrap()
            .unwrap();
        let ctx = StepCtx {
            step: step as u64,
            total_steps: steps as u64,
            epoch: step / per,
            steps_per_epoch: per as u64,
            comm: &SingleProcess,
        };
        let out = method.step(&batch, &ctx).unwrap();
        opt.backward_step(&out.loss);
        losses.push(out.loss.double_value(&[]));
    }
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    (mean(&losses[..5]), mean(&losses[steps - 5..]))
}

fn assert_not_collapsed(method: &dyn GraphMethod, a: &View, b: &View) {
    let stats = collapse_stats(&method.represent(a), Some(&method.represent(b)));
    let w = CollapseThresholds::default().warnings(&stats);
    assert!(w.is_empty(), "{w:?} {stats:?}");
}

fn gcn(dims: Vec<i64>, activation: Activation) -> EncoderConfig {
    EncoderConfig::Gcn(GcnConfig {
        dims,
        activation,
        ..Default::default()
    })
}

#[test]
fn grace_lowers_its_loss_on_the_karate_club() {
    let _turn = serial();
    tch::manual_seed(0);
    let (g, _) = karate_club(Featurize::Identity).unwrap();
    let base = g.tensors();
    let src = NodeViews {
        base: base.share(),
        augment: AugmentConfig::default(),
        steps_per_epoch: 10,
        seed: 1,
        corrupt: false,
    };
    let mut m = Grace::new(
        base.share(),
        &gcn(vec![32, 16], Activation::Relu),
        &GraceConfig {
            proj_hidden: 16,
            temperature: 0.5,
        },
        tch::Device::Cpu,
    );
    let (first, last) = train(&mut m, &src, 40, 1e-2);
    assert!(last < first * 0.95, "{first} -> {last}");
    assert_not_collapsed(
        &m,
        &base,
        &src.augment
            .view1
            .apply(&base, &mut rand::SeedableRng::seed_from_u64(3)),
    );
}

#[test]
fn dgi_lowers_its_loss_on_the_karate_club() {
    let _turn = serial();
    tch::manual_seed(0);
    let (g, _) = karate_club(Featurize::Identity).unwrap();
    let base = g.tensors();
    let src = NodeViews {
        base: base.share(),
        augment: AugmentConfig::default(),
        steps_per_epoch: 10,
        seed: 2,
        corrupt: true,
    };
    let mut m = Dgi::new(
        base.share(),
        &gcn(vec![32], Activation::Prelu),
        &DgiConfig {},
        tch::Device::Cpu,
    );
    let (first, last) = train(&mut m, &src, 40, 1e-2);
    assert!(last < first * 0.8, "{first} -> {last}");
    assert_not_collapsed(
        &m,
        &base,
        &src.augment
            .view1
            .apply(&base, &mut rand::SeedableRng::seed_from_u64(3)),
    );
}

#[test]
fn graphcl_lowers_its_loss_on_molecules() {
    let _turn = serial();
    tch::manual_seed(0);
    let smiles = [
        "CC(=O)O",
        "c1ccccc1",
        "C1CC1",
        "CCO",
        "CCN",
        "C#N",
        "OC1=CC=CN1",
        "c1ccncc1",
        "CC(C)C",
        "CC=O",
        "NC=O",
        "C1CCOC1",
        "CC#C",
        "OCC(O)CO",
        "c1cc[nH]c1",
        "CN(C)C",
        "FC(F)F",
        "CCCC",
        "C1=CC=CC1",
        "O=C=O",
    ];
    let views: Vec<View> = smiles
        .iter()
        .map(|s| molecule_graph(s).unwrap().tensors())
        .collect();
    let refs: Vec<&View> = views.iter().collect();
    let base = View::batch_of(&refs);
    let aug = AugmentConfig {
        view1: ViewAugment {
            node_drop: 0.2,
            ..Default::default()
        },
        view2: ViewAugment {
            subgraph: 0.8,
            feature_mask: 0.2,
            ..Default::default()
        },
    };
    let src = GraphViews {
        graphs: views,
        augment: aug,
        batch_size: 10,
        seed: 3,
    };
    let enc = EncoderConfig::Gin(GinConfig {
        hidden: 16,
        layers: 2,
        ..Default::default()
    });
    let mut m = GraphCl::new(
        base.share(),
        &enc,
        &GraphClConfig { temperature: 0.5 },
        tch::Device::Cpu,
    );
    let (first, last) = train(&mut m, &src, 40, 1e-2);
    assert!(last < first * 0.95, "{first} -> {last}");
    assert_eq!(m.represent(&base).size(), [20, 32]);
    assert_not_collapsed(
        &m,
        &base,
        &src.augment
            .view1
            .apply(&base, &mut rand::SeedableRng::seed_from_u64(3)),
    );
}
