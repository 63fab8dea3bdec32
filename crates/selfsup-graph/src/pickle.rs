//! A minimal Python pickle reader: enough of the virtual machine (protocols
//! 0-4, binary opcodes plus the text forms Planetoid's files use) to read
//! numpy arrays, scipy CSR matrices, dicts / defaultdicts and lists. No
//! code is ever run: a `GLOBAL` is only a name, and calling it (`REDUCE`,
//! `NEWOBJ`) builds an inert [`V::Obj`] that the caller interprets.
use std::collections::HashMap;

/// A value of the unpickled graph; containers hold ids into the arena.
#[derive(Debug, Clone)]
pub enum V {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<usize>),
    List(Vec<usize>),
    Dict(Vec<(usize, usize)>),
    Global(String, String),
    /// `class(*args)` with `BUILD` state and dict / list items set later.
    Obj {
        class: usize,
        args: usize,
        state: Option<usize>,
        items: Vec<(usize, usize)>,
        list: Vec<usize>,
    },
    Mark,
}

/// The unpickled arena and the id of the top value.
#[derive(Debug)]
pub struct Pickle {
    pub values: Vec<V>,
    pub root: usize,
}

impl Pickle {
    /// The value of `id`.
    pub fn get(&self, id: usize) -> &V {
        &self.values[id]
    }
}

/// Unpickles `data`; the error names the opcode and byte offset.
pub fn unpickle(data: &[u8]) -> Result<Pickle, String> {
    let mut vals: Vec<V> = Vec::new();
    let mut stack: Vec<usize> = Vec::new();
    let mut memo: HashMap<u64, usize> = HashMap::new();
    let mut pos = 0usize;
    macro_rules! take {
        ($n:expr) => {{
            let n = usize::try_from($n).unwrap_or(usize::MAX);
            if n > data.len() - pos {
                return Err(format!("truncated at byte {pos}"));
            }
            let s = &data[pos..pos + n];
            pos += n;
            s
        }};
    }
    macro_rules! le {
        ($t:ty, $n:expr) => {{
            let mut b = [0u8; std::mem::size_of::<$t>()];
            b.copy_from_slice(take!(std::mem::size_of::<$t>()));
            <$t>::from_le_bytes(b)
        }};
    }
    let line = |pos: &mut usize| -> Result<String, String> {
        let end = data[*pos..]
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("unterminated line")?;
        let s = String::from_utf8_lossy(&data[*pos..*pos + end]).into_owned();
        *pos += end + 1;
        Ok(s)
    };
    let push = |vals: &mut Vec<V>, stack: &mut Vec<usize>, v: V| {
        vals.push(v);
        stack.push(vals.len() - 1);
    };
    fn pop_mark(stack: &mut Vec<usize>, vals: &[V]) -> Result<Vec<usize>, String> {
        let m = stack
            .iter()
            .rposition(|&i| matches!(vals[i], V::Mark))
            .ok_or("no MARK on the stack")?;
        let items = stack.split_off(m + 1);
        stack.pop();
        Ok(items)
    }
    loop {
        let at = pos;
        let &[op] = take!(1) else {
            return Err(format!("truncated at byte {at}"));
        };
        let err = |m: &str| format!("opcode {op:#04x} at byte {at}: {m}");
        match op {
            0x80 => {
                take!(1);
            }
            0x95 => {
                take!(8);
            }
            b'.' => break,
            b'(' => push(&mut vals, &mut stack, V::Mark),
            b')' => push(&mut vals, &mut stack, V::Tuple(vec![])),
            b't' => {
                let items = pop_mark(&mut stack, &vals).map_err(|e| err(&e))?;
                push(&mut vals, &mut stack, V::Tuple(items));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return Err(err("stack underflow"));
                }
                let items = stack.split_off(stack.len() - n);
                push(&mut vals, &mut stack, V::Tuple(items));
            }
            b']' => push(&mut vals, &mut stack, V::List(vec![])),
            b'l' => {
                let items = pop_mark(&mut stack, &vals).map_err(|e| err(&e))?;
                push(&mut vals, &mut stack, V::List(items));
            }
            b'}' => push(&mut vals, &mut stack, V::Dict(vec![])),
            b'd' => {
                let items = pop_mark(&mut stack, &vals).map_err(|e| err(&e))?;
                let pairs = items
                    .chunks(2)
                    .filter(|c| c.len() == 2)
                    .map(|c| (c[0], c[1]))
                    .collect();
                push(&mut vals, &mut stack, V::Dict(pairs));
            }
            b'a' | b'e' => {
                let items = if op == b'a' {
                    vec![stack.pop().ok_or_else(|| err("stack underflow"))?]
                } else {
                    pop_mark(&mut stack, &vals).map_err(|e| err(&e))?
                };
                let target = *stack.last().ok_or_else(|| err("stack underflow"))?;
                match &mut vals[target] {
                    V::List(l) | V::Obj { list: l, .. } => l.extend(items),
                    _ => return Err(err("append to a non-list")),
                }
            }
            b's' | b'u' => {
                let items = if op == b's' {
                    if stack.len() < 2 {
                        return Err(err("stack underflow"));
                    }
                    stack.split_off(stack.len() - 2)
                } else {
                    pop_mark(&mut stack, &vals).map_err(|e| err(&e))?
                };
                let target = *stack.last().ok_or_else(|| err("stack underflow"))?;
                let pairs = items
                    .chunks(2)
                    .filter(|c| c.len() == 2)
                    .map(|c| (c[0], c[1]));
                match &mut vals[target] {
                    V::Dict(d) | V::Obj { items: d, .. } => d.extend(pairs),
                    _ => return Err(err("set item on a non-dict")),
                }
            }
            b'J' => push(&mut vals, &mut stack, V::Int(le!(i32, 4) as i64)),
            b'K' => push(&mut vals, &mut stack, V::Int(le!(u8, 1) as i64)),
            b'M' => push(&mut vals, &mut stack, V::Int(le!(u16, 2) as i64)),
            0x8a => {
                let n = le!(u8, 1) as usize;
                if n > 8 {
                    return Err(err("integer wider than 64 bits"));
                }
                let bytes = take!(n);
                let mut v: i64 = 0;
                for (i, b) in bytes.iter().enumerate().take(8) {
                    v |= (*b as i64) << (8 * i);
                }
                if n > 0 && n < 8 && bytes[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                push(&mut vals, &mut stack, V::Int(v));
            }
            b'I' | b'L' => {
                let s = line(&mut pos).map_err(|e| err(&e))?;
                let s = s.trim_end_matches('L');
                let v = match s {
                    "00" => V::Bool(false),
                    "01" => V::Bool(true),
                    _ => V::Int(s.parse().map_err(|_| err("bad integer"))?),
                };
                push(&mut vals, &mut stack, v);
            }
            b'G' => {
                let mut b = [0u8; 8];
                b.copy_from_slice(take!(8));
                push(&mut vals, &mut stack, V::Float(f64::from_be_bytes(b)));
            }
            b'F' => {
                let s = line(&mut pos).map_err(|e| err(&e))?;
                push(
                    &mut vals,
                    &mut stack,
                    V::Float(s.parse().map_err(|_| err("bad float"))?),
                );
            }
            b'N' => push(&mut vals, &mut stack, V::None),
            0x88 => push(&mut vals, &mut stack, V::Bool(true)),
            0x89 => push(&mut vals, &mut stack, V::Bool(false)),
            // Python 2 `str`: raw bytes.
            b'U' => {
                let n = le!(u8, 1);
                push(&mut vals, &mut stack, V::Bytes(take!(n).to_vec()));
            }
            b'T' => {
                let n = le!(u32, 4);
                push(&mut vals, &mut stack, V::Bytes(take!(n).to_vec()));
            }
            b'C' => {
                let n = le!(u8, 1);
                push(&mut vals, &mut stack, V::Bytes(take!(n).to_vec()));
            }
            b'B' => {
                let n = le!(u32, 4);
                push(&mut vals, &mut stack, V::Bytes(take!(n).to_vec()));
            }
            0x8e | 0x96 => {
                let n = le!(u64, 8);
                push(&mut vals, &mut stack, V::Bytes(take!(n).to_vec()));
            }
            b'X' | 0x8c | 0x8d => {
                let n = match op {
                    b'X' => le!(u32, 4) as u64,
                    0x8c => le!(u8, 1) as u64,
                    _ => le!(u64, 8),
                };
                let s = String::from_utf8(take!(n).to_vec()).map_err(|_| err("invalid UTF-8"))?;
                push(&mut vals, &mut stack, V::Str(s));
            }
            b'c' => {
                let module = line(&mut pos).map_err(|e| err(&e))?;
                let name = line(&mut pos).map_err(|e| err(&e))?;
                push(&mut vals, &mut stack, V::Global(module, name));
            }
            0x93 => {
                let name = stack.pop().ok_or_else(|| err("stack underflow"))?;
                let module = stack.pop().ok_or_else(|| err("stack underflow"))?;
                match (&vals[module], &vals[name]) {
                    (V::Str(m), V::Str(n)) => {
                        let g = V::Global(m.clone(), n.clone());
                        push(&mut vals, &mut stack, g);
                    }
                    _ => return Err(err("STACK_GLOBAL needs two strings")),
                }
            }
            b'R' | 0x81 => {
                let args = stack.pop().ok_or_else(|| err("stack underflow"))?;
                let class = stack.pop().ok_or_else(|| err("stack underflow"))?;
                // Python 3 pickles Python 2 byte strings as
                // `_codecs.encode(text, 'latin1')`: decode that to bytes here.
                let is_encode =
                    matches!(&vals[class], V::Global(m, n) if m == "_codecs" && n == "encode");
                let v = match (&vals[args], is_encode) {
                    (V::Tuple(a), true) if !a.is_empty() => match &vals[a[0]] {
                        V::Str(s) => V::Bytes(s.chars().map(|c| c as u32 as u8).collect()),
                        _ => return Err(err("_codecs.encode of a non-string")),
                    },
                    _ => V::Obj {
                        class,
                        args,
                        state: None,
                        items: vec![],
                        list: vec![],
                    },
                };
                push(&mut vals, &mut stack, v);
            }
            b'b' => {
                let state = stack.pop().ok_or_else(|| err("stack underflow"))?;
                let target = *stack.last().ok_or_else(|| err("stack underflow"))?;
                match &mut vals[target] {
                    V::Obj { state: s, .. } => *s = Some(state),
                    _ => return Err(err("BUILD on a non-object")),
                }
            }
            b'q' => {
                let k = le!(u8, 1) as u64;
                memo.insert(k, *stack.last().ok_or_else(|| err("stack underflow"))?);
            }
            b'r' => {
                let k = le!(u32, 4) as u64;
                memo.insert(k, *stack.last().ok_or_else(|| err("stack underflow"))?);
            }
            b'p' => {
                let k: u64 = line(&mut pos)
                    .map_err(|e| err(&e))?
                    .parse()
                    .map_err(|_| err("bad memo key"))?;
                memo.insert(k, *stack.last().ok_or_else(|| err("stack underflow"))?);
            }
            0x94 => {
                let k = memo.len() as u64;
                memo.insert(k, *stack.last().ok_or_else(|| err("stack underflow"))?);
            }
            b'h' | b'j' | b'g' => {
                let k = match op {
                    b'h' => le!(u8, 1) as u64,
                    b'j' => le!(u32, 4) as u64,
                    _ => line(&mut pos)
                        .map_err(|e| err(&e))?
                        .parse()
                        .map_err(|_| err("bad memo key"))?,
                };
                stack.push(*memo.get(&k).ok_or_else(|| err("unknown memo key"))?);
            }
            b'0' => {
                stack.pop();
            }
            _ => return Err(err("unsupported opcode")),
        }
    }
    let root = *stack.last().ok_or("empty pickle")?;
    Ok(Pickle { values: vals, root })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_lengths_and_truncation_are_errors() {
        // BINBYTES8 with a length near u64::MAX (used to overflow `pos + n`).
        let e = unpickle(b"\x80\x02\x8e\xff\xff\xff\xff\xff\xff\xff\xff").unwrap_err();
        assert!(e.contains("truncated"), "{e}");
        assert!(unpickle(b"").unwrap_err().contains("truncated"));
        assert!(unpickle(b"\x80\x02G\x00")
            .unwrap_err()
            .contains("truncated"));
        assert!(
            unpickle(b"\x80\x02\x8a\x09\x01\x02\x03\x04\x05\x06\x07\x08\x09.")
                .unwrap_err()
                .contains("64 bits")
        );
        let p = unpickle(b"\x80\x02]q\x00(K\x01K\x02e.").unwrap();
        assert!(matches!(p.get(p.root), V::List(l) if l.len() == 2));
    }
}
