//! The method a vision config names, built for its images
//! ([`build_method`]), and what its encoder takes once exported
//! ([`VisionMethod`], [`export`]).
use crate::config::VisionRunConfig;
use crate::data::Normalize;
use crate::export::export_encoder;
use crate::methods::{
    BarlowTwins, Beit, Byol, Colorization, Context, DeepCluster, Dino, Dinov2, Ijepa, Jigsaw, Mae,
    MethodConfig, MocoV2, MocoV3, Rotation, SimClr, SimSiam, Swav, VicReg, VqTokenizer,
};
use selfsup_core::method::Method;
use selfsup_core::Result;
use std::path::Path;

/// Builds the method a config asks for, for images of `in_channels`
/// channels; fails when the method cannot train on such data (colorization
/// on grey images), the method and the encoder do not go together (MAE and
/// I-JEPA need a ViT) or a setting is invalid.
pub fn build_method(
    cfg: &VisionRunConfig,
    device: tch::Device,
    in_channels: i64,
) -> Result<Box<dyn VisionMethod>> {
    cfg.model.validate()?;
    let (m, c) = (&cfg.model, in_channels);
    Ok(match &cfg.method {
        MethodConfig::Simclr(x) => Box::new(SimClr::new(device, m, c, x)),
        MethodConfig::MocoV2(x) => Box::new(MocoV2::new(device, m, c, x)?),
        MethodConfig::MocoV3(x) => Box::new(MocoV3::new(device, m, c, x)?),
        MethodConfig::Byol(x) => Box::new(Byol::new(device, m, c, x)?),
        MethodConfig::Simsiam(x) => Box::new(SimSiam::new(device, m, c, x)),
        MethodConfig::Dino(x) => Box::new(Dino::new(device, m, c, x)?),
        MethodConfig::Dinov2(x) => Box::new(Dinov2::new(device, m, c, x)?),
        MethodConfig::BarlowTwins(x) => Box::new(BarlowTwins::new(device, m, c, x)),
        MethodConfig::Vicreg(x) => Box::new(VicReg::new(device, m, c, x)),
        MethodConfig::Swav(x) => Box::new(Swav::new(device, m, c, x)),
        MethodConfig::Rotation(x) => Box::new(Rotation::new(device, m, c, x)?),
        MethodConfig::Context(x) => Box::new(Context::new(device, m, c, x)?),
        MethodConfig::Jigsaw(x) => Box::new(Jigsaw::new(device, m, c, x)?),
        MethodConfig::Mae(x) => Box::new(Mae::new(device, m, c, x)?),
        MethodConfig::Ijepa(x) => Box::new(Ijepa::new(device, m, c, x)?),
        MethodConfig::Deepcluster(x) => Box::new(DeepCluster::new(device, m, c, x)?),
        MethodConfig::VqTokenizer(x) => Box::new(VqTokenizer::new(device, m, c, x)?),
        MethodConfig::Beit(x) => Box::new(Beit::new(device, m, c, x)?),
        MethodConfig::Colorization(x) => Box::new(Colorization::new(
            device,
            m,
            c,
            &Normalize::for_channels(in_channels.max(0) as usize),
            x,
        )?),
    })
}

/// What an exported encoder takes: channels, their normalisation and, when
/// the images are transformed before normalising, how.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderInput {
    /// Channels of the encoder's input.
    pub channels: i64,
    /// Per-channel mean/std applied to that input.
    pub normalize: Normalize,
    /// How the input is made from the images, when it is not the images themselves.
    pub preprocess: Option<String>,
}

impl EncoderInput {
    /// The images themselves, normalised with the default statistics.
    pub fn images(channels: i64) -> Self {
        Self {
            channels,
            normalize: Normalize::for_channels(channels as usize),
            preprocess: None,
        }
    }
}

/// A method whose encoder can be exported.
pub trait VisionMethod: Method {
    /// Variable prefix of the encoder inside the method's var store.
    fn encoder_prefix(&self) -> &'static str {
        "encoder"
    }
    /// What the encoder takes when the method trains on `data_channels`-channel
    /// images (default: those images).
    fn encoder_input(&self, data_channels: i64) -> EncoderInput {
        EncoderInput::images(data_channels)
    }
    /// Collapse warnings the method raises itself, beyond the trainer's
    /// monitors (DeepCluster: a clustering dominated by one cluster).
    fn method_warnings(&self) -> Vec<String> {
        Vec::new()
    }
    /// Figures the method measures itself on the evaluation data, for the
    /// summary (the VQ tokenizer: reconstruction PSNR and codebook usage).
    fn method_report(&self, _data: &crate::evaluate::EvalData) -> Option<serde_json::Value> {
        None
    }
    /// The method's own export into `dir` with the export's `info`, instead
    /// of the encoder export (the VQ tokenizer: its whole network); `None`:
    /// the encoder export.
    fn own_export(&self, _dir: &Path, _info: &serde_json::Value) -> Option<Result<()>> {
        None
    }
}

impl VisionMethod for SimClr {}
impl VisionMethod for MocoV2 {}
impl VisionMethod for MocoV3 {}
impl VisionMethod for Byol {}
impl VisionMethod for SimSiam {}
impl VisionMethod for Dino {}
impl VisionMethod for BarlowTwins {}
impl VisionMethod for VicReg {}
impl VisionMethod for Swav {}
impl VisionMethod for DeepCluster {
    fn method_warnings(&self) -> Vec<String> {
        self.warnings().to_vec()
    }
}

impl VisionMethod for Rotation {
    fn encoder_prefix(&self) -> &'static str {
        Rotation::ENCODER_PREFIX
    }
}

impl VisionMethod for Jigsaw {
    fn encoder_prefix(&self) -> &'static str {
        Jigsaw::ENCODER_PREFIX
    }
}

impl VisionMethod for Colorization {
    fn encoder_prefix(&self) -> &'static str {
        Colorization::ENCODER_PREFIX
    }
    /// The lightness channel: 1 channel whatever the data has.
    fn encoder_input(&self, _data_channels: i64) -> EncoderInput {
        EncoderInput {
            channels: 1,
            normalize: Colorization::lightness_normalize(),
            preprocess: Some(
                "the CIE L* (lightness, D65) channel of the sRGB image in [0, 1] as \
                 skimage.color.rgb2lab computes it, divided by 100, then normalised with `normalize`"
                    .into(),
            ),
        }
    }
}

impl VisionMethod for Context {
    fn encoder_prefix(&self) -> &'static str {
        Context::ENCODER_PREFIX
    }
}

impl VisionMethod for Mae {
    fn encoder_prefix(&self) -> &'static str {
        Mae::ENCODER_PREFIX
    }
}

impl VisionMethod for Dinov2 {
    fn encoder_prefix(&self) -> &'static str {
        Dinov2::ENCODER_PREFIX
    }
}

impl VisionMethod for VqTokenizer {
    fn method_report(&self, data: &crate::evaluate::EvalData) -> Option<serde_json::Value> {
        Some(self.report(data))
    }
    fn own_export(&self, dir: &Path, info: &serde_json::Value) -> Option<Result<()>> {
        Some(self.export(dir, info))
    }
}

impl VisionMethod for Beit {
    fn encoder_prefix(&self) -> &'static str {
        Beit::ENCODER_PREFIX
    }
    /// The encoder export (timm `VisionTransformer` names, what `selfsup
    /// embed` reads) and, in `beit/`, the same encoder with timm's `Beit`
    /// names.
    fn own_export(&self, dir: &Path, info: &serde_json::Value) -> Option<Result<()>> {
        let both = || -> Result<()> {
            export_encoder(self.var_store(), Beit::ENCODER_PREFIX, dir, info)?;
            crate::export_beit::export_beit(
                self.var_store(),
                Beit::ENCODER_PREFIX,
                self.encoder().spec(),
                &dir.join("beit"),
                info,
            )
        };
        Some(both())
    }
}

impl VisionMethod for Ijepa {
    fn encoder_prefix(&self) -> &'static str {
        Ijepa::ENCODER_PREFIX
    }
}

/// Exports a method's encoder with its config into `dir`; `in_channels` are
/// the channels of the training images (the encoder's own input may differ,
/// see [`VisionMethod::encoder_input`]).
pub fn export(
    cfg: &VisionRunConfig,
    method: &dyn VisionMethod,
    in_channels: i64,
    dir: &Path,
    extra: serde_json::Value,
) -> Result<()> {
    let input = method.encoder_input(in_channels);
    let mut info = serde_json::json!({
        "method": method.name(),
        "in_channels": input.channels,
        "model": cfg.model,
        "normalize": input.normalize,
    });
    if let (Some(obj), Some(how)) = (info.as_object_mut(), input.preprocess) {
        obj.insert("preprocess".into(), how.into());
    }
    if let (Some(dst), serde_json::Value::Object(src)) = (info.as_object_mut(), extra) {
        dst.extend(src);
    }
    if let Some(own) = method.own_export(dir, &info) {
        return own;
    }
    export_encoder(method.var_store(), method.encoder_prefix(), dir, &info)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::preset;
    use crate::methods::{ColorizationConfig, RotationConfig};
    use crate::models::EncoderConfig;
    use serde_json::json;

    fn run_config(method: MethodConfig) -> VisionRunConfig {
        VisionRunConfig {
            model: EncoderConfig::SmallCnn {
                channels: vec![8, 16],
            },
            method,
            ..Default::default()
        }
    }

    fn exported(cfg: &VisionRunConfig, data_channels: i64) -> serde_json::Value {
        let method = build_method(cfg, tch::Device::Cpu, data_channels).unwrap();
        let dir = tempfile::tempdir().unwrap();
        export(cfg, method.as_ref(), data_channels, dir.path(), json!({})).unwrap();
        let text = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn colorization_exports_a_lightness_encoder() {
        let cfg = run_config(MethodConfig::Colorization(ColorizationConfig::default()));
        let info = exported(&cfg, 3);
        assert_eq!(info["method"], "colorization");
        assert_eq!(info["in_channels"], 1);
        assert_eq!(info["normalize"]["mean"], json!([0.5]));
        assert!(info["preprocess"].as_str().unwrap().contains("L*"));
        let err = build_method(&cfg, tch::Device::Cpu, 1)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("Fashion-MNIST"), "{err}");
    }

    #[test]
    fn other_methods_export_the_data_channels() {
        let cfg = run_config(MethodConfig::Rotation(RotationConfig::default()));
        let info = exported(&cfg, 3);
        assert_eq!(info["method"], "rotation");
        assert_eq!(info["in_channels"], 3);
        assert_eq!(info["normalize"]["mean"].as_array().unwrap().len(), 3);
        assert!(info.get("preprocess").is_none());
    }

    /// The ViT presets build their method, train on their own augmentations'
    /// image size, and export a timm ViT.
    #[test]
    fn vit_presets_build_step_and_export() {
        for (name, method) in [
            ("mae-cpu.toml", "mae"),
            ("ijepa-cpu.toml", "ijepa"),
            ("dinov2-cpu.toml", "dinov2"),
        ] {
            let cfg = preset(name);
            assert!(cfg.model.is_vit(), "{name}");
            let mut m = build_method(&cfg, tch::Device::Cpu, 1).unwrap();
            assert_eq!(m.name(), method);
            let xs = crate::methods::test_util::structured_images(4, 1, 28, 0);
            let batch = selfsup_core::method::Batch {
                views: vec![xs.shallow_clone(), xs.shallow_clone()],
            };
            let ctx = selfsup_core::method::StepCtx {
                step: 0,
                total_steps: 10,
                epoch: 0,
                steps_per_epoch: 1,
                comm: &selfsup_core::distributed::SingleProcess,
            };
            let out = m.step(&batch, &ctx).unwrap();
            assert!(out.loss.double_value(&[]).is_finite());
            assert_eq!(m.embed(&xs).size(), vec![4, cfg.model.out_dim()]);
            let dir = tempfile::tempdir().unwrap();
            export(&cfg, m.as_ref(), 1, dir.path(), serde_json::json!({})).unwrap();
            let written: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(dir.path().join("config.json")).unwrap(),
            )
            .unwrap();
            assert_eq!(written["arch"], "vit_tiny");
            assert_eq!(written["heads"], 4);
            assert_eq!(written["method"], method);
            assert_eq!(
                written["normalize"],
                serde_json::to_value(Normalize::for_channels(1)).unwrap()
            );
        }
    }

    #[test]
    fn masked_methods_refuse_cnn_encoders() {
        for name in ["mae-cpu.toml", "ijepa-cpu.toml"] {
            let mut cfg = preset(name);
            cfg.model = EncoderConfig::Resnet18 {
                stem: crate::models::Stem::Cifar,
            };
            let err = build_method(&cfg, tch::Device::Cpu, 1).err().unwrap();
            assert!(err.to_string().contains("needs a ViT encoder"), "{err}");
        }
    }
}
