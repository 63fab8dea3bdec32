//! The bytes of an [`ImageDataset`](super::ImageDataset): an owned buffer,
//! or a read-only memory map of an image cache file (so a dataset larger
//! than memory is paged in by the kernel, never copied).
use memmap2::Mmap;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// `N * H * W * C` image bytes; reads as a `&[u8]` (it dereferences to one).
#[derive(Clone)]
pub struct Pixels(Store);

#[derive(Clone)]
enum Store {
    Owned(Vec<u8>),
    /// `len` bytes of `map` from `offset` (the whole map, or a prefix of it
    /// after [`Pixels::prefix`]).
    Mapped {
        map: Arc<Mmap>,
        offset: usize,
        len: usize,
    },
}

impl Pixels {
    /// The bytes of a read-only memory map (all of them).
    pub fn mapped(map: Mmap) -> Self {
        let len = map.len();
        Self(Store::Mapped {
            map: Arc::new(map),
            offset: 0,
            len,
        })
    }

    /// The bytes as a slice.
    pub fn as_slice(&self) -> &[u8] {
        match &self.0 {
            Store::Owned(v) => v,
            Store::Mapped { map, offset, len } => {
                map.get(*offset..offset.saturating_add(*len)).unwrap_or(&[])
            }
        }
    }

    /// Whether the bytes are a memory map (not an owned buffer).
    pub fn is_mapped(&self) -> bool {
        matches!(self.0, Store::Mapped { .. })
    }

    /// The first `n` bytes (all when `n` is larger), without copying.
    pub fn prefix(self, n: usize) -> Self {
        match self.0 {
            Store::Owned(mut v) => {
                v.truncate(n);
                Self(Store::Owned(v))
            }
            Store::Mapped { map, offset, len } => Self(Store::Mapped {
                map,
                offset,
                len: len.min(n),
            }),
        }
    }
}

impl Default for Pixels {
    /// No bytes.
    fn default() -> Self {
        Self(Store::Owned(Vec::new()))
    }
}

impl From<Vec<u8>> for Pixels {
    fn from(v: Vec<u8>) -> Self {
        Self(Store::Owned(v))
    }
}

impl Deref for Pixels {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl PartialEq for Pixels {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl fmt::Debug for Pixels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Pixels({} bytes, {})",
            self.len(),
            if self.is_mapped() { "mapped" } else { "owned" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn owned_and_mapped_read_the_same_and_narrow() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&[1, 2, 3, 4, 5, 6]).unwrap();
        // SAFETY: the temporary file is not modified while mapped.
        let map = unsafe { Mmap::map(f.as_file()) }.unwrap();
        let m = Pixels::mapped(map);
        let o = Pixels::from(vec![1, 2, 3, 4, 5, 6]);
        assert!(m.is_mapped() && !o.is_mapped());
        assert_eq!(m, o);
        assert_eq!(&*m.clone().prefix(4), &[1, 2, 3, 4]);
        assert_eq!(&*o.prefix(2), &[1, 2]);
        assert_eq!(m.prefix(100).len(), 6);
    }
}
