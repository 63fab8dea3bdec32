//! Text corpus readers: plain text, JSON Lines, Brown, Brown's genres, SpamAssassin.
use crate::engine::scratch_file;
use crate::engine::Target;
use crate::seeds;
use selfsup_text::corpus;
use selfsup_text::tokenizer::{read_bert_vocab_json, TextTokenizer};

const DICT: &[&[u8]] = &[
    b"{\"text\": \"",
    b"\"}",
    b"\"text\"",
    b"\\u0000",
    b"\\ud800",
    b"\\n",
    b"/nn",
    b"/at",
    b"/.",
    b"Subject: ",
    b"From: ",
    b"Content-Type: text/plain; charset=",
    b"\r\n\r\n",
    b"\n\n",
    b"\xff\xfe",
    b"\xc3",
    b"\xe2\x80",
];

pub const TARGETS: [Target; 7] = [
    Target {
        name: "text",
        about: "selfsup_text::corpus::parse_text (plain .txt, strict and lossy UTF-8)",
        run: run_text,
        seeds: seeds_text,
        dict: DICT,
        max_len: 64 << 10,
    },
    Target {
        name: "jsonl",
        about: "selfsup_text::corpus::parse_jsonl (JSON Lines corpus)",
        run: run_jsonl,
        seeds: seeds_jsonl,
        dict: DICT,
        max_len: 64 << 10,
    },
    Target {
        name: "brown",
        about: "selfsup_text::corpus::parse_brown (word/tag files)",
        run: run_brown,
        seeds: seeds_brown,
        dict: DICT,
        max_len: 64 << 10,
    },
    Target {
        name: "brown-genres",
        about: "selfsup_text::corpus::parse_brown_genres (cats.txt)",
        run: run_brown_genres,
        seeds: seeds_brown_genres,
        dict: DICT,
        max_len: 16 << 10,
    },
    Target {
        name: "tokenizer-json",
        about: "selfsup_text::tokenizer::TextTokenizer::from_file (tokenizer.json) + encode",
        run: run_tokenizer_json,
        seeds: seeds_tokenizer_json,
        dict: &[
            b"\"model\"",
            b"\"WordPiece\"",
            b"\"BPE\"",
            b"\"vocab\"",
            b"\"normalizer\"",
            b"\"pre_tokenizer\"",
            b"\"post_processor\"",
            b"\"decoder\"",
            b"\"added_tokens\"",
            b"\"truncation\"",
            b"\"padding\"",
            b"\"max_input_chars_per_word\"",
            b"null",
            b"true",
        ],
        max_len: 64 << 10,
    },
    Target {
        name: "bert-vocab-json",
        about: "selfsup_text::tokenizer::read_bert_vocab_json (npm bert vocab.json)",
        run: run_vocab_json,
        seeds: seeds_vocab_json,
        dict: &[
            b"\"[PAD]\"",
            b"\"\xe2\x96\x81\"",
            b"\"##",
            b"[",
            b"]",
            b"{",
            b"}",
            b":",
            b",",
        ],
        max_len: 64 << 10,
    },
    Target {
        name: "spam-assassin",
        about: "selfsup_text::corpus::parse_spam_assassin (raw e-mail)",
        run: run_spam,
        seeds: seeds_spam,
        dict: DICT,
        max_len: 64 << 10,
    },
];

fn docs_ok(docs: &[corpus::Document]) -> Result<(), String> {
    assert!(
        docs.iter().all(|d| !d.id.is_empty()),
        "a document without an id"
    );
    Ok(())
}

fn run_text(data: &[u8]) -> Result<(), String> {
    let (docs, _) = corpus::parse_text(data, "fuzz.txt", crate::targets::pick(data, 2) == 0)
        .map_err(|e| e.to_string())?;
    docs_ok(&docs)
}

fn seeds_text() -> Vec<Vec<u8>> {
    let mut out = vec![
        b"Call me Ishmael. Some years ago\xe2\x80\x94never mind how long.\n\nA second paragraph.\n"
            .to_vec(),
        b"   \n\t\n".to_vec(),
        b"caf\xc3\xa9 \xff broken\n".to_vec(),
    ];
    for name in ["moby-dick", "sotu", "shakespeare"] {
        out.extend(seeds::real(name, &["txt"]).into_iter().take(2));
    }
    out
}

fn run_jsonl(data: &[u8]) -> Result<(), String> {
    let (docs, _) = corpus::parse_jsonl(
        data,
        "fuzz.jsonl",
        "text",
        crate::targets::pick(data, 2) == 0,
    )
    .map_err(|e| e.to_string())?;
    docs_ok(&docs)
}

fn seeds_jsonl() -> Vec<Vec<u8>> {
    vec![
        b"{\"text\": \"hello world\"}\n{\"text\": \"second\", \"id\": 3}\n".to_vec(),
        b"{\"text\": \"esc \\u00e9 \\n\"}\n\n{\"other\": 1}\n".to_vec(),
        b"[1, 2]\n{\"text\": null}\n".to_vec(),
    ]
}

fn run_brown(data: &[u8]) -> Result<(), String> {
    let genre = (crate::targets::pick(data, 2) == 0).then_some("news");
    let (docs, _) = corpus::parse_brown(data, "ca01", genre).map_err(|e| e.to_string())?;
    docs_ok(&docs)
}

fn seeds_brown() -> Vec<Vec<u8>> {
    let mut out = vec![
        b"\n\n\tThe/at Fulton/np-tl County/nn-tl Grand/jj-tl Jury/nn-tl said/vbd ./.\n\n\tIt/pps was/bedz ./.\n"
            .to_vec(),
    ];
    out.extend(seeds::real_named("brown", |n| {
        n.len() == 4 && n.starts_with('c') && n[2..].bytes().all(|b| b.is_ascii_digit())
    }));
    out
}

fn run_brown_genres(data: &[u8]) -> Result<(), String> {
    corpus::parse_brown_genres(data, "cats.txt")
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn seeds_brown_genres() -> Vec<Vec<u8>> {
    let mut out = vec![b"ca01 news\nca02 news\ncb01 editorial\n".to_vec()];
    out.extend(seeds::real_named("brown", |n| n == "cats.txt"));
    out
}

fn run_spam(data: &[u8]) -> Result<(), String> {
    let (docs, _) =
        corpus::parse_spam_assassin(data, "00001.fuzz", crate::targets::pick(data, 2) == 0)
            .map_err(|e| e.to_string())?;
    docs_ok(&docs)
}

fn seeds_spam() -> Vec<Vec<u8>> {
    let mut out = vec![
        b"From: a@example.com\nSubject: hello\nContent-Type: text/plain\n\nBody text here.\nMore.\n"
            .to_vec(),
        b"Subject: no body\n".to_vec(),
        b"X: y\r\n\r\nCRLF body \xe9\r\n".to_vec(),
    ];
    out.extend(seeds::real("spam-assassin", &["txt"]));
    out
}

fn run_tokenizer_json(data: &[u8]) -> Result<(), String> {
    let p = scratch_file("tokenizer.json", data)?;
    let tok = TextTokenizer::from_file(&p).map_err(|e| e.to_string())?;
    let ids = tok
        .encode("Call me Ishmael, caf\u{e9} \u{1F600}!")
        .map_err(|e| e.to_string())?;
    let _ = tok.decode(&ids);
    Ok(())
}

fn seeds_tokenizer_json() -> Vec<Vec<u8>> {
    let docs: Vec<corpus::Document> = [
        "Call me Ishmael. Some years ago, never mind how long precisely.",
        "It is a way I have of driving off the spleen and regulating the circulation.",
    ]
    .iter()
    .enumerate()
    .map(|(i, t)| corpus::Document {
        id: format!("seed:{i}"),
        text: t.to_string(),
        label: None,
    })
    .collect();
    let mut out = Vec::new();
    for lowercase in [true, false] {
        let dir = crate::engine::scratch_dir().join(format!("tok-seed-{lowercase}"));
        let saved = TextTokenizer::train(&docs, 120, 1, lowercase).and_then(|t| t.save(&dir));
        if saved.is_ok() {
            if let Some(v) = seeds::head(&dir.join("tokenizer.json"), seeds::SEED_CAP) {
                out.push(v);
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    out
}

fn run_vocab_json(data: &[u8]) -> Result<(), String> {
    let p = scratch_file("vocab.json", data)?;
    read_bert_vocab_json(&p)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn seeds_vocab_json() -> Vec<Vec<u8>> {
    let mut out = vec![
        "{\"[PAD]\": 0, \"\u{2581}\": 1, \"[UNK]\": 2, \"\u{2581}the\": 3, \"ing\": 4}"
            .as_bytes()
            .to_vec(),
        b"[\"[PAD]\", \"[UNK]\", \"a\", \"b\"]".to_vec(),
        b"[[\"[PAD]\", 0.0], [\"x\", -1.5]]".to_vec(),
    ];
    out.extend(seeds::real("bert-uncased-vocab", &["json"]));
    out
}
