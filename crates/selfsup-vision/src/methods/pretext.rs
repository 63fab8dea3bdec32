//! What the hand-designed pretext tasks (rotation, jigsaw, context prediction,
//! colorization) share: one augmented view per image, a classifier head on
//! encoder features, cross-entropy with its accuracy, and square tiles cut
//! from a 3x3 grid over the image with a random jitter inside each cell.
//!
//! Every label is made on tensors inside the method's `step` with torch's
//! random generator, which the trainer reseeds every step, so runs are
//! reproducible.
use crate::models::EncoderConfig;
use selfsup_core::head::{HeadConfig, MlpHead};
use selfsup_core::method::Batch;
use selfsup_core::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

/// The one view of a single-view batch, or an error that says how to get one.
pub fn single_view<'a>(method: &str, batch: &'a Batch) -> Result<&'a Tensor> {
    match batch.views.as_slice() {
        [x] => Ok(x),
        views => Err(Error::Config(format!(
            "{method} trains on one augmented view per image (set `[augment] views = 1`), got {} views",
            views.len()
        ))),
    }
}

/// The square side of `[B, C, S, S]` images, or an error naming `method`.
pub fn square_side(method: &str, x: &Tensor) -> Result<i64> {
    match x.size().as_slice() {
        [_, _, h, w] if h == w => Ok(*h),
        other => Err(Error::Config(format!(
            "{method} needs square [batch, channels, S, S] images, got shape {other:?}"
        ))),
    }
}

/// The MLP that classifies the pretext label (`[method] head = {...}`); its
/// output width is the number of pretext classes, fixed by the task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassifierConfig {
    /// Width of the hidden layers.
    pub hidden_dim: i64,
    /// Linear layers (1 = a linear classifier).
    pub layers: usize,
    /// Batch norm after each hidden layer.
    pub batch_norm: bool,
}

impl Default for ClassifierConfig {
    fn default() -> Self {
        Self {
            hidden_dim: 512,
            layers: 2,
            batch_norm: true,
        }
    }
}

impl ClassifierConfig {
    /// Checks the sizes; errors name `method`.
    pub fn validate(&self, method: &str) -> Result<()> {
        if self.layers == 0 || self.hidden_dim < 1 {
            return Err(Error::Config(format!(
                "{method}: head needs at least one layer and a positive hidden_dim, got layers = {}, hidden_dim = {}",
                self.layers, self.hidden_dim
            )));
        }
        Ok(())
    }

    /// The head under `p`, from `in_dim` features to `classes` logits.
    pub fn build(&self, p: &nn::Path, in_dim: i64, classes: i64) -> MlpHead {
        MlpHead::new(
            p,
            in_dim,
            &HeadConfig {
                hidden_dim: self.hidden_dim,
                out_dim: classes,
                layers: self.layers,
                batch_norm: self.batch_norm,
                last_batch_norm: false,
            },
        )
    }
}

/// Mean cross-entropy of `logits` `[N, K]` against class indices `labels`
/// `[N]`, and the (detached) top-1 accuracy.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> (Tensor, f64) {
    let loss = logits.cross_entropy_for_logits(labels);
    let accuracy = tch::no_grad(|| {
        logits
            .argmax(1, false)
            .eq_tensor(labels)
            .to_kind(Kind::Float)
            .mean(Kind::Float)
            .double_value(&[])
    });
    (loss, accuracy)
}

/// Where the tiles of a 3x3 grid sit in a square image of side `S`: cells of
/// `cell = S / 3` pixels (the last `S mod 3` rows and columns are unused), a
/// `tile`-pixel tile in each, centred and shifted by up to `max_shift` pixels
/// each way (uniformly, independently per image, tile and axis).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileGrid {
    /// Side of a grid cell.
    pub cell: i64,
    /// Side of a tile.
    pub tile: i64,
    /// Largest shift of a tile from the centre of its cell, each way.
    pub max_shift: i64,
}

impl TileGrid {
    /// The grid for images of side `image`: tiles of `tile_ratio` of a cell,
    /// free to move by `jitter` (in `[0, 1]`) of the room left in the cell
    /// each way (1: anywhere inside the cell).
    pub fn new(method: &str, image: i64, tile_ratio: f64, jitter: f64) -> Result<Self> {
        let cell = image / 3;
        let tile = (tile_ratio * cell as f64).floor() as i64;
        if tile < 1 {
            return Err(Error::Config(format!(
                "{method}: {image}x{image} images leave {cell}-pixel cells and tiles of {tile} pixels \
                 (tile_ratio {tile_ratio}); use larger images or a larger tile_ratio"
            )));
        }
        let max_shift = (jitter * ((cell - tile) / 2) as f64).round() as i64;
        Ok(Self {
            cell,
            tile,
            max_shift,
        })
    }

    /// The tile of cell `cells[b]` (row-major, 0..9; `Int64` `[B]`) of every
    /// image `b` of `x` `[B, C, S, S]`, with a fresh random shift per image:
    /// `[B, C, tile, tile]`.
    pub fn tile(&self, x: &Tensor, cells: &Tensor) -> Tensor {
        let n = x.size()[0];
        let centred = (self.cell - self.tile) / 2;
        let shift = || {
            Tensor::randint_low(
                -self.max_shift,
                self.max_shift + 1,
                [n],
                (Kind::Int64, x.device()),
            )
        };
        let top = shift() + cells.divide_scalar_mode(3, "floor") * self.cell + centred;
        let left = shift() + cells.remainder(3) * self.cell + centred;
        crop(x, &top, &left, self.tile)
    }

    /// [`TileGrid::tile`] of the same cell `k` in every image.
    pub fn tile_of_cell(&self, x: &Tensor, k: i64) -> Tensor {
        let n = x.size()[0];
        self.tile(x, &Tensor::full([n], k, (Kind::Int64, x.device())))
    }
}

/// The `size x size` crop of every image of `x` `[B, C, H, W]` whose top-left
/// corner is (`top[b]`, `left[b]`) (`Int64` `[B]`, in range): `[B, C, size, size]`.
pub fn crop(x: &Tensor, top: &Tensor, left: &Tensor, size: i64) -> Tensor {
    let (b, c, w) = (x.size()[0], x.size()[1], x.size()[3]);
    let steps = Tensor::arange(size, (Kind::Int64, x.device()));
    let rows = (top.unsqueeze(1) + &steps)
        .view([b, 1, size, 1])
        .expand([b, c, size, w], false);
    let x = x.gather(2, &rows, false);
    let cols = (left.unsqueeze(1) + &steps)
        .view([b, 1, 1, size])
        .expand([b, c, size, size], false);
    x.gather(3, &cols, false)
}

/// Brings tiles `[N, C, t, t]` to what the encoder gets: bilinearly resized
/// to `size` when given, and checked against the smallest input `encoder`
/// can take.
pub fn prepare_tiles(
    method: &str,
    tiles: Tensor,
    size: Option<i64>,
    encoder: &EncoderConfig,
) -> Result<Tensor> {
    let tiles = match size {
        Some(s) if s != tiles.size()[2] => tiles.upsample_bilinear2d([s, s], false, None, None),
        _ => tiles,
    };
    let side = tiles.size()[2];
    let min = encoder.min_input_size();
    if side < min {
        return Err(Error::Config(format!(
            "{method}: {side}-pixel tiles are too small for {} (it needs at least {min} pixels); \
             set `tile_size` in [method] to resize the tiles",
            encoder.arch()
        )));
    }
    Ok(tiles)
}

/// Checks a `[0, 1]` fraction; errors name `method` and `key`.
pub fn check_fraction(method: &str, key: &str, v: f64, open_at_zero: bool) -> Result<()> {
    let ok = v <= 1.0 && if open_at_zero { v > 0.0 } else { v >= 0.0 };
    if ok {
        Ok(())
    } else {
        let range = if open_at_zero { "(0, 1]" } else { "[0, 1]" };
        Err(Error::Config(format!(
            "{method}: {key} must be in {range}, got {v}"
        )))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tch::Device;

    /// `[1, 1, S, S]` image whose pixel (r, c) holds `r * 100 + c`.
    pub(crate) fn coordinates(s: i64) -> Tensor {
        let r = Tensor::arange(s, (Kind::Float, Device::Cpu)).view([s, 1]) * 100.0;
        let c = Tensor::arange(s, (Kind::Float, Device::Cpu)).view([1, s]);
        (r + c).view([1, 1, s, s])
    }

    #[test]
    fn crop_takes_the_asked_window_per_image() {
        let x = Tensor::cat(&[coordinates(10), coordinates(10) + 10000.0], 0);
        let top = Tensor::from_slice(&[1i64, 4]);
        let left = Tensor::from_slice(&[2i64, 0]);
        let t = crop(&x, &top, &left, 3);
        assert_eq!(t.size(), vec![2, 1, 3, 3]);
        assert_eq!(t.double_value(&[0, 0, 0, 0]), 102.0);
        assert_eq!(t.double_value(&[0, 0, 2, 1]), 303.0);
        assert_eq!(t.double_value(&[1, 0, 0, 0]), 10400.0);
        assert_eq!(t.double_value(&[1, 0, 2, 2]), 10602.0);
    }

    #[test]
    fn tiles_stay_inside_their_cells() {
        let g = TileGrid::new("t", 28, 0.7, 1.0).unwrap();
        assert_eq!((g.cell, g.tile, g.max_shift), (9, 6, 1));
        let x = coordinates(28).repeat([64, 1, 1, 1]);
        for k in 0..9 {
            let t = g.tile_of_cell(&x, k);
            let (r0, c0) = ((k / 3) * 9, (k % 3) * 9);
            let top = (t.select(3, 0).select(2, 0).select(1, 0) / 100.0).floor();
            let left = t.select(3, 0).select(2, 0).select(1, 0).fmod(100.0);
            for (v, lo) in [(top, r0), (left, c0)] {
                let (min, max) = (v.min().double_value(&[]), v.max().double_value(&[]));
                assert!(
                    min >= lo as f64 && max + 6.0 <= (lo + 9) as f64,
                    "{k}: {min} {max}"
                );
                // 64 images: every shift in -1..=1 shows up.
                assert_eq!(max - min, 2.0, "tile {k}");
            }
        }
        let fixed = TileGrid::new("t", 28, 0.7, 0.0).unwrap();
        assert_eq!(fixed.max_shift, 0);
        assert!(TileGrid::new("t", 5, 0.5, 0.0).is_err());
    }

    #[test]
    fn cross_entropy_is_the_textbook_one() {
        let logits = Tensor::from_slice(&[2.0f32, 0.5, -1.0, 0.0, 0.3, 0.1]).view([2, 3]);
        let labels = Tensor::from_slice(&[0i64, 2]);
        let (loss, acc) = cross_entropy(&logits, &labels);
        let lse = |v: &[f64]| v.iter().map(|x| x.exp()).sum::<f64>().ln();
        let want = ((lse(&[2.0, 0.5, -1.0]) - 2.0) + (lse(&[0.0, 0.3, 0.1]) - 0.1)) / 2.0;
        assert!((loss.double_value(&[]) - want).abs() < 1e-6);
        assert_eq!(acc, 0.5);
    }

    #[test]
    fn small_tiles_are_refused_for_the_small_cnn() {
        let enc = EncoderConfig::default();
        let tiles = Tensor::zeros([2, 1, 7, 7], (Kind::Float, Device::Cpu));
        let err = prepare_tiles("jigsaw", tiles.shallow_clone(), None, &enc)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tile_size") && err.contains("8 pixels"),
            "{err}"
        );
        let ok = prepare_tiles("jigsaw", tiles, Some(12), &enc).unwrap();
        assert_eq!(ok.size(), vec![2, 1, 12, 12]);
    }

    #[test]
    fn one_view_only() {
        let x = Tensor::zeros([2, 1, 4, 4], (Kind::Float, Device::Cpu));
        let two = Batch {
            views: vec![x.shallow_clone(), x.shallow_clone()],
        };
        let err = single_view("rotation", &two).unwrap_err().to_string();
        assert!(err.contains("views = 1") && err.contains("got 2"), "{err}");
        assert!(single_view("rotation", &Batch { views: vec![x] }).is_ok());
    }
}
