//! A deterministic mutation engine: the same seed, corpus and dictionary give
//! the same inputs, on every machine.
//!
//! Mutations: bit flips, random bytes, "interesting" integers (0, -1, powers of
//! two, `i32::MAX`, sample rates ...) written as 8/16/32/64-bit little- or
//! big-endian numbers — half of the time within the first 64 bytes, where
//! headers keep sizes, counts, rates and dimensions —, small additions,
//! interesting ASCII numbers in place of the decimal numbers of text formats,
//! dictionary tokens, chunk deletion, insertion and duplication, truncation
//! and splicing two corpus entries. Several are stacked on each input.

/// SplitMix64: small, fast, good enough for choosing mutations.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// True with probability `1 / n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
}

const INTERESTING_8: [i8; 9] = [-128, -1, 0, 1, 16, 32, 64, 100, 127];
const INTERESTING_16: [i32; 11] = [
    -32768, -129, 128, 255, 256, 512, 1000, 1024, 4096, 32767, 65535,
];
const INTERESTING_32: [i64; 20] = [
    -2_147_483_648,
    -100_663_046,
    -32769,
    32768,
    65535,
    65536,
    100_663_045,
    2_147_483_647,
    4_294_967_295,
    2_147_483_648,
    1 << 30,
    16_000,
    44_100,
    48_000,
    8_000,
    22_050,
    96_000,
    192_000,
    3072,
    784,
];
const INTERESTING_64: [u64; 8] = [
    u64::MAX,
    i64::MAX as u64,
    1 << 63,
    1 << 32,
    1 << 40,
    1 << 53,
    1 << 62,
    (1 << 32) + 1,
];
/// Numbers written in place of decimal numbers of text formats.
const INTERESTING_ASCII: [&str; 30] = [
    "0",
    "-1",
    "1",
    "-0",
    "2",
    "255",
    "256",
    "65535",
    "65536",
    "4294967295",
    "4294967296",
    "2147483648",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775807",
    "-9223372036854775808",
    "99999999999999999999999999",
    "1e308",
    "1e999",
    "-1e999",
    "nan",
    "inf",
    "-inf",
    "0.0",
    "1e-320",
    "0.5",
    "-0.5",
    "1000000000",
    "1048576",
    "3",
];
/// Tokens of many text formats (CSV, TOML, JSON, SMILES ...).
const GENERIC_TOKENS: [&str; 24] = [
    "\n",
    "\r\n",
    ",",
    ";",
    "\t",
    " ",
    "\"",
    "'",
    "=",
    "[",
    "]",
    "{",
    "}",
    ":",
    "\\",
    "\0",
    "#",
    "\u{feff}",
    "\u{fffd}",
    "\u{1F600}",
    "\u{e9}",
    "\u{ff}",
    "[[",
    "\"\"\"",
];

/// Mutates corpus entries into new inputs.
#[derive(Debug, Clone)]
pub struct Mutator {
    /// Inputs never grow past this many bytes.
    pub max_len: usize,
    dict: Vec<Vec<u8>>,
}

impl Mutator {
    /// A mutator whose inputs stay within `max_len` bytes; `dict` adds
    /// format-specific tokens (keywords, magic numbers) to the generic ones.
    pub fn new(max_len: usize, dict: &[&[u8]]) -> Self {
        let mut all: Vec<Vec<u8>> = GENERIC_TOKENS
            .iter()
            .map(|t| t.as_bytes().to_vec())
            .collect();
        all.extend(dict.iter().map(|t| t.to_vec()));
        Self {
            max_len: max_len.max(1),
            dict: all,
        }
    }

    /// A new input from `corpus` (1 to 8 stacked mutations of a random
    /// entry; half of the time one of its first `seeds` entries, so the
    /// inputs the corpus gained never crowd out the seeds).
    pub fn mutate(&self, corpus: &[Vec<u8>], seeds: usize, rng: &mut Rng) -> Vec<u8> {
        let pool = if seeds > 0 && rng.one_in(2) {
            seeds.min(corpus.len())
        } else {
            corpus.len()
        };
        let mut data = match pool {
            0 => Vec::new(),
            n => corpus[rng.below(n)].clone(),
        };
        let rounds = 1usize << rng.below(4);
        for _ in 0..rounds {
            self.mutate_once(&mut data, corpus, rng);
        }
        data.truncate(self.max_len);
        data
    }

    /// An offset in `0..len`: half of the time within the first 64 bytes.
    fn offset(rng: &mut Rng, len: usize) -> usize {
        if rng.one_in(2) {
            rng.below(len.min(64))
        } else {
            rng.below(len)
        }
    }

    fn write_int(data: &mut [u8], rng: &mut Rng, value: u64, width: usize) {
        if data.len() < width {
            return;
        }
        let at = Self::offset(rng, data.len() - width + 1);
        let le = value.to_le_bytes();
        let bytes = &le[..width];
        if rng.one_in(2) {
            data[at..at + width].copy_from_slice(bytes);
        } else {
            for (i, b) in bytes.iter().rev().enumerate() {
                data[at + i] = *b;
            }
        }
    }

    fn mutate_once(&self, data: &mut Vec<u8>, corpus: &[Vec<u8>], rng: &mut Rng) {
        let len = data.len();
        match rng.below(16) {
            0 if len > 0 => {
                let at = Self::offset(rng, len);
                data[at] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let at = Self::offset(rng, len);
                data[at] = rng.next_u64() as u8;
            }
            2 if len > 0 => {
                let v = INTERESTING_8[rng.below(INTERESTING_8.len())];
                Self::write_int(data, rng, v as u8 as u64, 1);
            }
            3 => {
                let v = INTERESTING_16[rng.below(INTERESTING_16.len())];
                Self::write_int(data, rng, v as u16 as u64, 2);
            }
            4 => {
                let v = INTERESTING_32[rng.below(INTERESTING_32.len())];
                Self::write_int(data, rng, v as u32 as u64, 4);
            }
            5 => {
                let v = INTERESTING_64[rng.below(INTERESTING_64.len())];
                Self::write_int(data, rng, v, 8);
            }
            6 if len > 0 => {
                // Small addition to an 8/16/32-bit number.
                let width = 1usize << rng.below(3);
                if len >= width {
                    let at = Self::offset(rng, len - width + 1);
                    let be = rng.one_in(2);
                    let mut v = 0u64;
                    for i in 0..width {
                        let b = data[if be { at + i } else { at + width - 1 - i }] as u64;
                        v = (v << 8) | b;
                    }
                    let delta = 1 + rng.below(35) as u64;
                    v = if rng.one_in(2) {
                        v.wrapping_add(delta)
                    } else {
                        v.wrapping_sub(delta)
                    };
                    for i in 0..width {
                        let b = (v >> (8 * (width - 1 - i))) as u8;
                        data[if be { at + i } else { at + width - 1 - i }] = b;
                    }
                }
            }
            7 if len > 1 => {
                // Delete a chunk.
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(256));
                data.drain(at..at + n);
            }
            8 => {
                // Insert random bytes or one byte repeated.
                let at = rng.below(len + 1);
                let most = if rng.one_in(8) { 4096 } else { 32 };
                let n = 1 + rng.below(most);
                let chunk: Vec<u8> = if rng.one_in(2) {
                    vec![rng.next_u64() as u8; n]
                } else {
                    (0..n).map(|_| rng.next_u64() as u8).collect()
                };
                data.splice(at..at, chunk);
            }
            9 if len > 0 => {
                // Duplicate a chunk of the input elsewhere in it.
                let from = rng.below(len);
                let n = 1 + rng.below((len - from).min(1024));
                let chunk = data[from..from + n].to_vec();
                let at = rng.below(len + 1);
                data.splice(at..at, chunk);
            }
            10 if len > 0 => {
                // Overwrite a chunk with another chunk of the input.
                let from = rng.below(len);
                let to = rng.below(len);
                let n = 1 + rng.below((len - from).min(len - to).min(256));
                let chunk = data[from..from + n].to_vec();
                data[to..to + n].copy_from_slice(&chunk);
            }
            11 if len > 0 => {
                data.truncate(rng.below(len));
            }
            12 if !corpus.is_empty() => {
                // Splice: a prefix of this input, a suffix of another entry.
                let other = &corpus[rng.below(corpus.len())];
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            13 => {
                // Replace a decimal number (or insert one) with an interesting one.
                let repl = INTERESTING_ASCII[rng.below(INTERESTING_ASCII.len())].as_bytes();
                // Within a window of at most 4 KiB, so big inputs stay fast.
                let w0 = if len > 4096 { rng.below(len - 4096) } else { 0 };
                let starts: Vec<usize> = (w0..len.min(w0 + 4096))
                    .filter(|&i| {
                        data[i].is_ascii_digit() && (i == 0 || !data[i - 1].is_ascii_digit())
                    })
                    .collect();
                if starts.is_empty() {
                    let at = rng.below(len + 1);
                    data.splice(at..at, repl.iter().copied());
                } else {
                    let s = starts[rng.below(starts.len())];
                    let mut e = s;
                    while e < len && (data[e].is_ascii_digit() || data[e] == b'.') {
                        e += 1;
                    }
                    data.splice(s..e, repl.iter().copied());
                }
            }
            14 => {
                // Insert or overwrite with a dictionary token.
                let tok = &self.dict[rng.below(self.dict.len())];
                let at = rng.below(len + 1);
                if rng.one_in(2) || at + tok.len() > len {
                    data.splice(at..at, tok.iter().copied());
                } else {
                    data[at..at + tok.len()].copy_from_slice(tok);
                }
            }
            15 if len > 0 => {
                // Duplicate a line (text formats: more records, longer files).
                let at = rng.below(len);
                let s = data[..at]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |p| p + 1);
                let e = data[at..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(len, |p| at + p + 1);
                let line = data[s..e].to_vec();
                let most = if rng.one_in(4) { 64 } else { 2 };
                let times = 1 + rng.below(most);
                for _ in 0..times {
                    if data.len() + line.len() > self.max_len {
                        break;
                    }
                    data.splice(e..e, line.iter().copied());
                }
            }
            _ => {
                // The mutation did not apply to this input: flip a bit or add one.
                if len > 0 {
                    let at = rng.below(len);
                    data[at] ^= 1 << rng.below(8);
                } else {
                    data.push(rng.next_u64() as u8);
                }
            }
        }
        data.truncate(self.max_len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_inputs_and_max_len_holds() {
        let corpus = vec![b"hello 123 world\nsecond line 42\n".to_vec(), vec![0u8; 40]];
        let m = Mutator::new(64, &[b"magic"]);
        let run = |seed| {
            let mut rng = Rng::new(seed);
            (0..2000)
                .map(|_| m.mutate(&corpus, 1, &mut rng))
                .collect::<Vec<_>>()
        };
        let a = run(7);
        assert_eq!(a, run(7));
        assert_ne!(a, run(8));
        assert!(a.iter().all(|x| x.len() <= 64));
        // The engine does change inputs, in many ways.
        let distinct: std::collections::HashSet<_> = a.iter().collect();
        assert!(distinct.len() > 1500, "{}", distinct.len());
    }
}
