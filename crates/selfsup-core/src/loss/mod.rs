//! Losses shared by several methods and modalities: one loss, one type.
pub mod barlow_twins;
pub mod dino;
pub mod ibot;
pub mod info_nce;
pub mod koleo;
pub mod negative_cosine;
pub mod pair;
pub mod scores;
pub mod swav;
#[cfg(test)]
pub(crate) mod test_fixture;
pub mod vicreg;

pub use barlow_twins::{BarlowTwins, BarlowTwinsConfig, BarlowTwinsOut};
pub use dino::{Centering, DinoLoss, DinoLossConfig};
pub use ibot::IbotPatchLoss;
pub use info_nce::{InfoNce, InfoNceConfig};
pub use koleo::koleo;
pub use negative_cosine::NegativeCosine;
pub use pair::PairLoss;
pub use scores::{cosine_f32, scores_f32};
pub use swav::{sinkhorn_knopp, SwavLoss, SwavLossConfig};
pub use vicreg::{VicReg, VicRegConfig, VicRegOut};
