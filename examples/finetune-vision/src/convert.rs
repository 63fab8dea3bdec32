//! Bringing images of another size or channel count to what the encoder
//! takes (Fashion-MNIST's 28 px grey images for an RGB encoder trained on
//! 64 px images, say): bilinear resize of the whole image, grey to RGB by
//! repetition, RGB to grey with ITU-R 601 weights.
use selfsup_vision::tch::{Kind, Tensor};

/// Float bytes of one chunk of converted images at most (256 MiB).
const CHUNK_BYTES: usize = 256 << 20;

/// `images` (`h x w x c` HWC bytes each) as `side x side x c_out` bytes.
/// Images that already have that shape are copied as they are.
pub fn convert_images(
    images: &[&[u8]],
    (h, w, c): (usize, usize, usize),
    side: usize,
    c_out: usize,
) -> Vec<Vec<u8>> {
    if (h, w, c) == (side, side, c_out) {
        return images.iter().map(|i| i.to_vec()).collect();
    }
    let mut out = Vec::with_capacity(images.len());
    let per_image = 4 * side.max(h).max(w).pow(2) * c.max(c_out);
    for chunk in images.chunks((CHUNK_BYTES / per_image.max(1)).max(1)) {
        let n = chunk.len() as i64;
        let x = Tensor::from_slice(&chunk.concat())
            .view([n, h as i64, w as i64, c as i64])
            .permute([0, 3, 1, 2])
            .to_kind(Kind::Float);
        let x = match (c, c_out) {
            (1, 3) => x.repeat([1, 3, 1, 1]),
            (3, 1) => {
                let weights = Tensor::from_slice(&[0.299f32, 0.587, 0.114]).view([1, 3, 1, 1]);
                (x * weights).sum_dim_intlist(1, true, Kind::Float)
            }
            _ => x,
        };
        let x = x
            .upsample_bilinear2d([side as i64, side as i64], false, None, None)
            .round()
            .clamp(0.0, 255.0)
            .to_kind(Kind::Uint8)
            .permute([0, 2, 3, 1])
            .contiguous();
        let per = side * side * c_out;
        let flat = Vec::<u8>::try_from(x.view([-1])).unwrap_or_default();
        out.extend(flat.chunks(per).map(<[u8]>::to_vec));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_shape_is_copied_and_grey_becomes_rgb_of_the_new_size() {
        let a: Vec<u8> = (0..16).map(|i| i * 10).collect();
        let same = convert_images(&[&a], (4, 4, 1), 4, 1);
        assert_eq!(same, vec![a.clone()]);
        // A constant image stays constant at any size, in every channel.
        let flat = vec![77u8; 16];
        let out = convert_images(&[&flat, &a], (4, 4, 1), 8, 3);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], vec![77u8; 8 * 8 * 3]);
        assert_eq!(out[1].len(), 8 * 8 * 3);
        // Grey repeated: the three channels of a pixel agree.
        assert!(out[1].chunks(3).all(|p| p[0] == p[1] && p[1] == p[2]));
    }

    #[test]
    fn rgb_becomes_grey_with_luma_weights() {
        let red = [255u8, 0, 0].repeat(4);
        let out = convert_images(&[&red], (2, 2, 3), 2, 1);
        assert_eq!(out, vec![vec![76u8; 4]]);
    }
}
