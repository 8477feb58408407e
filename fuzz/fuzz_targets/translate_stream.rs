//! Streaming link translation: whatever the mappings and however the body is cut into chunks,
//! `Translator` and `BodyTranslator` produce exactly what the one-shot `Mappings::translate_all`
//! produces for the whole body. Under gzip, deflate and br the output is decoded again to
//! compare, and every chunk's output must already be decodable up to a prefix of the expected
//! text (each push ends with a sync flush). Bytes that are not a valid encoded body give an
//! error, never a panic, and a failed translator stays failed.

#![no_main]

use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use farmgate::translate::{BodyTranslator, Coding, Mappings, Translator};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

/// Patterns and bodies over this alphabet overlap and share prefixes often, which is where a
/// streaming matcher can go wrong; raw bytes reach the rest of the input space.
const ALPHABET: &[u8] = b"htp:/.ab";

#[derive(Arbitrary, Debug)]
struct Input {
    small_alphabet: bool,
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
    /// Chunk lengths; the last chunk is whatever is left.
    cuts: Vec<u8>,
    coding: u8,
    /// When set, the encoded body is these bytes as they are (usually corrupt).
    raw_encoded: Option<Vec<u8>>,
}

fn text(bytes: &[u8], small: bool, max: usize) -> Vec<u8> {
    let bytes = &bytes[..bytes.len().min(max)];
    if small {
        bytes.iter().map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()]).collect()
    } else {
        bytes.to_vec()
    }
}

/// Splits `data` at the fuzzer's cut lengths (empty chunks included), the rest last.
fn chunks(data: &[u8], cuts: &[u8]) -> Vec<Bytes> {
    let data = Bytes::copy_from_slice(data);
    let mut out = Vec::new();
    let mut at = 0;
    for &c in cuts {
        let end = (at + usize::from(c) % 40).min(data.len());
        out.push(data.slice(at..end));
        at = end;
    }
    out.push(data.slice(at..));
    out
}

fuzz_target!(|input: Input| {
    let pairs: Vec<(String, String)> = input
        .pairs
        .iter()
        .take(8)
        .map(|(f, t)| {
            let f = text(f, input.small_alphabet, 24);
            let t = text(t, input.small_alphabet, 24);
            (
                String::from_utf8_lossy(&f).into_owned(),
                String::from_utf8_lossy(&t).into_owned(),
            )
        })
        .collect();
    let Some(mappings) = Mappings::new(&pairs) else {
        assert!(
            pairs.iter().all(|(f, _)| f.is_empty()),
            "Mappings::new refused non-empty patterns: {pairs:?}"
        );
        return;
    };
    let mappings = Arc::new(mappings);
    let body = text(&input.body, input.small_alphabet, 4096);
    let expected = mappings.translate_all(&body);

    // Plain streaming.
    let mut t = Translator::new(mappings.clone());
    let mut out = Vec::new();
    for chunk in chunks(&body, &input.cuts) {
        out.extend_from_slice(&t.push(chunk));
        // What is out is final: it never has to be taken back.
        assert!(
            expected.starts_with(&out),
            "streamed output is not a prefix of the one-shot translation"
        );
    }
    out.extend_from_slice(&t.finish());
    assert!(out == expected, "streamed translation differs from translate_all");

    let coding = match input.coding % 5 {
        0 => Coding::Identity,
        1 => Coding::Gzip,
        2 | 3 => Coding::Deflate,
        _ => Coding::Brotli,
    };
    match &input.raw_encoded {
        None => {
            let encoded = encode(coding, input.coding % 5 == 3, &body);
            let mut bt = BodyTranslator::new(coding, mappings.clone());
            let mut decoder = Decoder::new(coding);
            for chunk in chunks(&encoded, &input.cuts) {
                let piece = bt.push(chunk).expect("a valid encoded body must translate");
                decoder.write(&piece);
                assert!(
                    expected.starts_with(decoder.decoded()),
                    "{coding:?}: flushed output does not decode to a prefix of the translation"
                );
            }
            let last = bt.finish().expect("a complete encoded body must finish");
            decoder.write(&last);
            let decoded = decoder.finish();
            assert!(decoded == expected, "{coding:?}: decoded output differs from translate_all");
            // Finished is finished.
            assert!(bt.push(Bytes::from_static(b"x")).is_err());
            assert!(bt.finish().is_err());
        }
        Some(raw) => {
            let raw = &raw[..raw.len().min(4096)];
            let mut bt = BodyTranslator::new(coding, mappings.clone());
            let mut failed = false;
            for chunk in chunks(raw, &input.cuts) {
                let r = bt.push(chunk);
                if failed {
                    assert!(r.is_err(), "push succeeded after an error");
                }
                failed |= r.is_err();
            }
            let r = bt.finish();
            if failed {
                assert!(r.is_err(), "finish succeeded after an error");
            }
            assert!(bt.push(Bytes::from_static(b"x")).is_err());
        }
    }
});

fn encode(coding: Coding, raw_deflate: bool, body: &[u8]) -> Vec<u8> {
    use flate2::Compression;
    use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
    match coding {
        Coding::Identity => body.to_vec(),
        Coding::Gzip => {
            let mut e = GzEncoder::new(Vec::new(), Compression::new(6));
            e.write_all(body).unwrap();
            e.finish().unwrap()
        }
        Coding::Deflate if raw_deflate => {
            let mut e = DeflateEncoder::new(Vec::new(), Compression::new(6));
            e.write_all(body).unwrap();
            e.finish().unwrap()
        }
        Coding::Deflate => {
            let mut e = ZlibEncoder::new(Vec::new(), Compression::new(6));
            e.write_all(body).unwrap();
            e.finish().unwrap()
        }
        Coding::Brotli => {
            let mut e = brotli::CompressorWriter::new(Vec::new(), 4096, 5, 22);
            e.write_all(body).unwrap();
            e.into_inner()
        }
    }
}

/// A reference decoder for what the translator sends: gzip, zlib (the host re-encodes deflate
/// as zlib) or brotli, fed piece by piece.
enum Decoder {
    Identity(Vec<u8>),
    Gzip(flate2::write::GzDecoder<Vec<u8>>),
    Zlib(flate2::write::ZlibDecoder<Vec<u8>>),
    Brotli(Box<brotli::DecompressorWriter<Vec<u8>>>),
}

impl Decoder {
    fn new(coding: Coding) -> Decoder {
        match coding {
            Coding::Identity => Decoder::Identity(Vec::new()),
            Coding::Gzip => Decoder::Gzip(flate2::write::GzDecoder::new(Vec::new())),
            Coding::Deflate => Decoder::Zlib(flate2::write::ZlibDecoder::new(Vec::new())),
            Coding::Brotli => {
                Decoder::Brotli(Box::new(brotli::DecompressorWriter::new(Vec::new(), 4096)))
            }
        }
    }

    fn write(&mut self, data: &[u8]) {
        match self {
            Decoder::Identity(v) => v.extend_from_slice(data),
            Decoder::Gzip(d) => {
                d.write_all(data).expect("translator output is valid gzip");
                d.flush().expect("gzip flush");
            }
            Decoder::Zlib(d) => {
                d.write_all(data).expect("translator output is valid zlib");
                d.flush().expect("zlib flush");
            }
            Decoder::Brotli(d) => {
                d.write_all(data).expect("translator output is valid brotli");
                d.flush().expect("brotli flush");
            }
        }
    }

    fn decoded(&self) -> &[u8] {
        match self {
            Decoder::Identity(v) => v,
            Decoder::Gzip(d) => d.get_ref(),
            Decoder::Zlib(d) => d.get_ref(),
            Decoder::Brotli(d) => d.get_ref(),
        }
    }

    fn finish(self) -> Vec<u8> {
        match self {
            Decoder::Identity(v) => v,
            Decoder::Gzip(d) => d.finish().expect("translator output ends as a gzip stream"),
            Decoder::Zlib(d) => d.finish().expect("translator output ends as a zlib stream"),
            Decoder::Brotli(d) => d.into_inner().expect("translator output ends as a brotli stream"),
        }
    }
}
