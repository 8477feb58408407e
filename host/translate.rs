//! Host-side link translation: rewrites internal host names to public ones in response bodies
//! and header values, the way Microsoft TMG's "link translation" does.
//!
//! This module owns the byte-level work only: compiling a rule's `from -> to` pairs into one
//! searcher ([`Mappings`]), keeping the searchers built so far for reuse ([`MatcherCache`]: a
//! searcher is built once per mapping set, not per response), translating a body as it streams through in arbitrary chunks
//! ([`Translator`]), doing the same under a content coding by decoding, translating and
//! re-encoding ([`BodyTranslator`]), and rewriting header values ([`translate_header`],
//! [`weaken_etag`]).
//!
//! It must not do I/O and must not decide policy: it does not look at content types, status
//! codes or body sizes, does not pick which mappings apply, and does not touch
//! `Content-Length` (a translated body has a different length; the caller streams it). It
//! translates what it is told to translate.
//!
//! Matching is non-overlapping and leftmost-longest. A scheme and a host match in any case (a
//! path only in its own). A `from` that is a link's scheme and authority (`http://host`,
//! `//host`) matches only where the host ends (`http://host.example.org` and `http://hostname`
//! are other hosts), and takes in a port written after it (`http://host:80/x` becomes
//! `to` + `/x`, so a port in `to` is not doubled). Every `from` is also found JSON-escaped
//! (`http:\/\/host\/x`) and replaced escaped the same way. The streaming output is byte-identical
//! to [`Mappings::translate_all`] of the whole body, whatever the chunking.

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::mem;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use aho_corasick::{AhoCorasick, Anchored, Input, Match, MatchKind, Span, StartKind, packed};
use brotli::enc::StandardAlloc;
use brotli::{BrotliDecompressStream, BrotliResult, BrotliState, CompressorWriter};
use bytes::{Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// Deflate level for re-encoding gzip and zlib bodies. Level 1 is the only level fast enough
/// for the proxy's throughput target (level 2 encodes at half its speed); the price is output
/// about 1.5 times the size of a member's usual level-6 gzip of the same HTML.
const DEFLATE_LEVEL: u32 = 1;
/// Brotli quality for re-encoding. Measured on 1 MB of HTML flushed every 16 KiB, quality 3
/// comes within 4% of quality 4's size at 1.5 times its encoding speed; quality 2 is slightly
/// faster but 7% larger on real text, and 5 and up cost twice the CPU again.
const BROTLI_QUALITY: u32 = 3;
/// Brotli window (log2): 22 is the encoder's default and what browsers expect from servers.
const BROTLI_LGWIN: u32 = 22;
/// The base-2 logarithm of the deflate window, the largest zlib allows.
const DEFLATE_WINDOW_BITS: u8 = 15;
/// Size of the brotli encoder's internal output buffer.
const BROTLI_BUFFER: usize = 32 * 1024;
/// Room added to a decode buffer per round, so a small compressed chunk that expands a lot
/// still decodes in a few calls.
const DECODE_ROOM: usize = 32 * 1024;

/// How many mapping sets a [`MatcherCache`] keeps. A rule has one set per public name and scheme
/// the clients use, so a few suffice; the bound keeps clients that invent Host names (a rule
/// published under `*`) from growing it without end: when full, it starts over.
pub const MATCHER_CACHE_CAPACITY: usize = 256;

/// Searchers by their mapping set (`from`, `to` pairs, in the order the plugin gave them).
type MatcherSets = HashMap<Vec<(String, String)>, Arc<Mappings>>;

/// The searchers built so far, by mapping set, shared by every response and thread. Reads take
/// no lock (the map is copy-on-write behind arc-swap); building and inserting a new set is rare.
/// One cache lives as long as one config, so a reload starts a fresh one.
#[derive(Default)]
pub struct MatcherCache {
    sets: ArcSwap<MatcherSets>,
    /// Serialises inserts, so two builds of one set do not drop each other's entry.
    insert: Mutex<()>,
}

impl MatcherCache {
    /// The searcher for `pairs`, built on first use. `None`: nothing to translate (see
    /// [`Mappings::new`]).
    pub fn get(&self, pairs: &[(String, String)]) -> Option<Arc<Mappings>> {
        if let Some(m) = self.sets.load().get(pairs) {
            return Some(Arc::clone(m));
        }
        let built = Arc::new(Mappings::new(pairs)?);
        let _guard = self.insert.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.sets.load_full();
        if let Some(m) = current.get(pairs) {
            return Some(Arc::clone(m));
        }
        let mut next = if current.len() >= MATCHER_CACHE_CAPACITY {
            HashMap::new()
        } else {
            HashMap::clone(&current)
        };
        next.insert(pairs.to_vec(), Arc::clone(&built));
        self.sets.store(Arc::new(next));
        Some(built)
    }

    /// How many mapping sets are kept.
    pub fn len(&self) -> usize {
        self.sets.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The compiled mappings of one mapping set.
#[derive(Debug)]
pub struct Mappings {
    /// One automaton over every pattern, leftmost-longest, ASCII case-insensitive (what must
    /// match exactly is checked per match); pattern ids index `patterns`.
    searcher: AhoCorasick,
    /// A SIMD (Teddy) searcher over every spelling of the patterns' first bytes in either case,
    /// when the CPU and the count allow: it finds where a match may start, and the automaton,
    /// anchored there, says whether one does. The automaton's own prefilter keys on single
    /// bytes, which are common in prose; Teddy keys on three and is several times faster.
    packed: Option<packed::Searcher>,
    /// What each pattern id stands for.
    patterns: Vec<Pattern>,
    /// Every pattern in lower case, sorted, to answer "is this tail the start of some pattern?".
    sorted_from: Vec<Box<[u8]>>,
    /// Which bytes some pattern starts with (either case): a cheap first test before the
    /// sorted lookup.
    first_bytes: [bool; 256],
    /// Length of the longest pattern plus what a match may need to see after its end; a match
    /// is only final once this much text follows its start, or once nothing can extend it.
    longest: usize,
    /// Host part of each mapping (from-host, to-host) for Set-Cookie `Domain` attributes.
    cookie_hosts: Vec<(String, String)>,
}

/// One searched spelling of a mapping's `from`.
#[derive(Debug)]
struct Pattern {
    /// The replacement.
    to: Box<[u8]>,
    /// The pattern itself; bytes from `exact_from` on must match in their case (a path is
    /// case-sensitive; a scheme and a host are not).
    from: Box<[u8]>,
    exact_from: usize,
    /// The pattern is a link's scheme and authority with nothing after (`http://host`,
    /// `//host:8080`): a match must end where the host does, and an explicit port after a
    /// portless pattern is part of the match (the replacement names its own).
    authority: Option<Authority>,
}

#[derive(Debug, Clone, Copy)]
struct Authority {
    /// The pattern names no port, so one in the text is taken in with the host.
    takes_port: bool,
}

/// The longest port taken in after a host (`:65535`).
const MAX_PORT_DIGITS: usize = 5;
/// What a match may need to see after its end to be judged: a port and the two bytes that
/// tell whether the host goes on (`.x`).
const LOOKAHEAD: usize = 1 + MAX_PORT_DIGITS + 2;

/// A byte that continues a host name (letters, digits, `-`, and `_` as some intranets use it).
fn continues_host(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// What a match found by the searcher turned out to be.
enum Judged {
    /// A link: replace up to this end.
    Accept(usize),
    /// A look-alike (the host goes on, a path differs in case): not a match.
    Reject,
    /// The bytes that decide have not arrived yet.
    Undecided,
}

/// The end of the scheme and authority of a mapping side (`http://host:1` of
/// `http://host:1/x`), if it starts with `scheme://` or `//`.
fn authority_end(side: &str) -> Option<usize> {
    let start = match side.find("://") {
        Some(i)
            if i > 0
                && side[..i]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) =>
        {
            i + 3
        }
        _ if side.starts_with("//") => 2,
        _ => return None,
    };
    let len = side[start..]
        .find(['/', '?', '#'])
        .unwrap_or(side.len() - start);
    (len > 0).then_some(start + len)
}

impl Mappings {
    /// None when there is nothing to translate (no pairs, or only empty `from`s). Duplicate
    /// `from`s (in any case): first wins.
    ///
    /// Each `from` is searched as given and, when it holds a `/`, as JSON escapes it (`\/`),
    /// replaced by `to` escaped the same way.
    ///
    /// Also None if the automaton cannot be built, which only happens for pattern sets far
    /// beyond any real rule (the crate's state-id space overflows).
    pub fn new(pairs: &[(String, String)]) -> Option<Mappings> {
        let mut patterns: Vec<Pattern> = Vec::with_capacity(pairs.len() * 2);
        let mut cookie_hosts = Vec::new();
        let mut seen = HashSet::new();
        for (f, t) in pairs {
            // An empty pattern would match everywhere, and a later duplicate could never win.
            if f.is_empty() || !seen.insert(f.to_ascii_lowercase()) {
                continue;
            }
            let end = authority_end(f);
            let authority = end.filter(|&e| e == f.len()).map(|e| Authority {
                takes_port: !f[..e].rsplit_once("//").is_some_and(|(_, a)| {
                    a.rsplit_once(':').is_some_and(|(_, p)| {
                        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())
                    })
                }),
            });
            let exact_from = end.unwrap_or(0);
            patterns.push(Pattern {
                to: t.as_bytes().into(),
                from: f.as_bytes().into(),
                exact_from,
                authority,
            });
            if f.contains('/') {
                let escaped = f.replace('/', "\\/");
                if seen.insert(escaped.to_ascii_lowercase()) {
                    patterns.push(Pattern {
                        to: t.replace('/', "\\/").into_bytes().into(),
                        exact_from: f[..exact_from].replace('/', "\\/").len(),
                        from: escaped.into_bytes().into(),
                        authority,
                    });
                }
            }
            let (from_host, to_host) = (host_of(f), host_of(t));
            if !from_host.is_empty() && !to_host.is_empty() {
                cookie_hosts.push((from_host.to_owned(), to_host.to_owned()));
            }
        }
        if patterns.is_empty() {
            return None;
        }
        let from: Vec<&[u8]> = patterns.iter().map(|p| &p.from[..]).collect();
        let searcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .ascii_case_insensitive(true)
            .start_kind(StartKind::Both)
            .build(&from)
            .ok()?;
        let packed = Self::starts_searcher(&from);
        let longest = from.iter().map(|f| f.len()).max().unwrap_or(1) + LOOKAHEAD;
        let mut first_bytes = [false; 256];
        for f in &from {
            if let Some(&b) = f.first() {
                first_bytes[usize::from(b.to_ascii_lowercase())] = true;
                first_bytes[usize::from(b.to_ascii_uppercase())] = true;
            }
        }
        let mut sorted_from: Vec<Box<[u8]>> = from
            .iter()
            .map(|&f| f.to_ascii_lowercase().into())
            .collect();
        sorted_from.sort();
        Some(Mappings {
            searcher,
            packed,
            patterns,
            sorted_from,
            first_bytes,
            longest,
            cookie_hosts,
        })
    }

    /// The Teddy searcher over every case spelling of the patterns' first three bytes; none
    /// when there would be more spellings than it takes.
    fn starts_searcher(from: &[&[u8]]) -> Option<packed::Searcher> {
        let mut starts: HashSet<Vec<u8>> = HashSet::new();
        for f in from {
            let head = &f[..f.len().min(3)];
            let mut spellings = vec![Vec::with_capacity(head.len())];
            for &b in head {
                let (lower, upper) = (b.to_ascii_lowercase(), b.to_ascii_uppercase());
                let mut next = Vec::with_capacity(spellings.len() * 2);
                for s in &spellings {
                    let mut a = s.clone();
                    a.push(lower);
                    next.push(a);
                    if upper != lower {
                        let mut a = s.clone();
                        a.push(upper);
                        next.push(a);
                    }
                }
                spellings = next;
            }
            starts.extend(spellings);
            if starts.len() > 64 {
                return None;
            }
        }
        let mut starts: Vec<Vec<u8>> = starts.into_iter().collect();
        starts.sort();
        packed::Config::new()
            .match_kind(packed::MatchKind::LeftmostFirst)
            .builder()
            .extend(&starts)
            .build()
    }

    /// One-shot translation of a whole buffer (the reference the streaming one must equal; also used for header values).
    pub fn translate_all(&self, input: &[u8]) -> Vec<u8> {
        // Kept deliberately plain (no hold-back logic) so it can serve as the reference.
        let mut out = Vec::with_capacity(input.len() + input.len() / 8);
        let mut last = 0;
        let mut pos = 0;
        while let Some(m) = self.find_at(input, pos) {
            match self.judge(input, &m, true) {
                Judged::Accept(end) => {
                    out.extend_from_slice(&input[last..m.start()]);
                    out.extend_from_slice(&self.patterns[m.pattern().as_usize()].to);
                    last = end;
                    pos = end;
                }
                Judged::Reject | Judged::Undecided => pos = m.start() + 1,
            }
        }
        out.extend_from_slice(&input[last..]);
        out
    }

    /// The leftmost-longest match (ignoring case) starting at or after `pos`.
    fn find_at(&self, haystack: &[u8], pos: usize) -> Option<Match> {
        if pos >= haystack.len() {
            return None;
        }
        let Some(starts) = &self.packed else {
            return self.searcher.find(Input::new(haystack).range(pos..));
        };
        let mut at = pos;
        while at < haystack.len() {
            let start = starts.find_in(haystack, Span::from(at..haystack.len()))?;
            let anchored = Input::new(haystack)
                .range(start.start()..)
                .anchored(Anchored::Yes);
            if let Some(m) = self.searcher.find(anchored) {
                return Some(m);
            }
            at = start.start() + 1;
        }
        None
    }

    /// Whether the searcher's match `m` is a link to translate, and where it ends. With `eof`
    /// nothing follows `buf`.
    fn judge(&self, buf: &[u8], m: &Match, eof: bool) -> Judged {
        let p = &self.patterns[m.pattern().as_usize()];
        if buf[m.start() + p.exact_from..m.end()] != p.from[p.exact_from..] {
            return Judged::Reject;
        }
        let Some(authority) = p.authority else {
            return Judged::Accept(m.end());
        };
        let mut end = m.end();
        if authority.takes_port && buf.get(end) == Some(&b':') {
            let digits = buf[end + 1..]
                .iter()
                .take(MAX_PORT_DIGITS + 1)
                .take_while(|b| b.is_ascii_digit())
                .count();
            if digits > MAX_PORT_DIGITS {
                return Judged::Reject;
            }
            if end + 1 + digits == buf.len() && !eof {
                return Judged::Undecided;
            }
            if digits > 0 {
                end += 1 + digits;
            }
        }
        // The host must end here: not go on with a name byte, nor with a dot and a name byte
        // (a dot followed by anything else ends a sentence, not the host).
        match buf.get(end) {
            None if !eof => Judged::Undecided,
            Some(&b) if continues_host(b) => Judged::Reject,
            Some(b'.') => match buf.get(end + 1) {
                None if !eof => Judged::Undecided,
                Some(&b) if continues_host(b) => Judged::Reject,
                _ => Judged::Accept(end),
            },
            _ => Judged::Accept(end),
        }
    }

    /// Whether `tail` is a proper prefix (ignoring case) of some pattern, i.e. more input could
    /// still turn it into a match (or into a longer match than the one seen so far).
    fn could_extend(&self, tail: &[u8]) -> bool {
        // Patterns starting with `tail` are contiguous in sorted order, beginning at the
        // first pattern not less than it; after deduplication at most one of them equals
        // `tail`, so the first two candidates decide.
        let lower = |b: &u8| b.to_ascii_lowercase();
        let i = self
            .sorted_from
            .partition_point(|p| p.iter().copied().cmp(tail.iter().map(lower)).is_lt());
        self.sorted_from[i..].iter().take(2).any(|p| {
            p.len() > tail.len()
                && p.iter()
                    .zip(tail)
                    .all(|(a, b)| *a == b.to_ascii_lowercase())
        })
    }

    /// The first position at or after `from` from which the rest of `buf` could still grow
    /// into a match; `buf.len()` when there is none. Only the last `longest - 1` bytes can.
    fn hold_from(&self, buf: &[u8], from: usize) -> usize {
        let start = from.max(buf.len().saturating_sub(self.longest - 1));
        (start..buf.len())
            .find(|&q| self.first_bytes[usize::from(buf[q])] && self.could_extend(&buf[q..]))
            .unwrap_or(buf.len())
    }

    /// Translates the final part of `buf`, the unscanned text of a body.
    ///
    /// With `eof` all of `buf` is final. Otherwise a match is final when nothing after the
    /// buffer can change it: no earlier position and not its own start could still grow into
    /// a (longer) match, and the bytes after it that tell a link from a look-alike are here.
    /// When the scan rewrote something, the translation of the final part is appended to
    /// `out`; when it did not, `out` is untouched and the final part is `buf[..end]` verbatim,
    /// which lets the caller hand it on without copying.
    fn scan(&self, buf: &[u8], eof: bool, out: &mut BytesMut) -> Scan {
        let mut at = 0;
        let mut pos = 0;
        let mut rewrote = false;
        let mut undecided = None;
        while let Some(m) = self.find_at(buf, pos) {
            // A match with `longest` bytes of room is final: every pattern that could start
            // at or before it fits in the buffer, so the searcher has already seen it. Nearer
            // the end it is final only if no position from `at` up to its start could still
            // grow into a match (an earlier one, or a longer one at the same start).
            if !eof && m.start() + self.longest > buf.len() && m.start() >= self.hold_from(buf, at)
            {
                break;
            }
            let end = match self.judge(buf, &m, eof) {
                Judged::Accept(end) => end,
                Judged::Reject => {
                    pos = m.start() + 1;
                    continue;
                }
                Judged::Undecided => {
                    undecided = Some(m.start());
                    break;
                }
            };
            if !rewrote {
                out.reserve(buf.len() + buf.len() / 8);
                rewrote = true;
            }
            out.extend_from_slice(&buf[at..m.start()]);
            out.extend_from_slice(&self.patterns[m.pattern().as_usize()].to);
            at = end;
            pos = end;
        }
        let end = if eof {
            buf.len()
        } else {
            let hold = self.hold_from(buf, at);
            undecided.map_or(hold, |start| start.min(hold))
        };
        if rewrote {
            out.extend_from_slice(&buf[at..end]);
        }
        Scan { end, rewrote }
    }
}

/// What [`Mappings::scan`] decided about a buffer.
struct Scan {
    /// `buf[..end]` is final; `buf[end..]` must be held back.
    end: usize,
    /// Whether the final part was rewritten into `out` (otherwise it is `buf[..end]` as is).
    rewrote: bool,
}

/// Streaming translation of one body.
#[derive(Debug)]
pub struct Translator {
    mappings: Arc<Mappings>,
    /// Held-back text: the end of the previous chunk, which could be the start of a match.
    /// Always shorter than the longest pattern.
    pending: Vec<u8>,
    /// Scratch for `pending` followed by a new chunk, reused across chunks.
    joined: Vec<u8>,
    /// Output buffer, reused whenever the previous output has been dropped.
    out: BytesMut,
}

impl Translator {
    pub fn new(mappings: Arc<Mappings>) -> Translator {
        Translator {
            mappings,
            pending: Vec::new(),
            joined: Vec::new(),
            out: BytesMut::new(),
        }
    }

    /// Feeds one chunk; returns the bytes that are final now (possibly empty). Holds back at most (longest pattern - 1) bytes.
    pub fn push(&mut self, chunk: Bytes) -> Bytes {
        if self.pending.is_empty() {
            // The common case: nothing held back, so an unmatched chunk goes out as a slice
            // of itself and only a short tail that might start a pattern is copied.
            let scan = self.mappings.scan(&chunk, false, &mut self.out);
            self.pending.extend_from_slice(&chunk[scan.end..]);
            if scan.rewrote {
                self.out.split().freeze()
            } else {
                chunk.slice(..scan.end)
            }
        } else {
            let mut out = mem::take(&mut self.out);
            self.feed(&chunk, false, &mut out);
            let done = out.split().freeze();
            self.out = out;
            done
        }
    }

    /// The body ended: whatever is held back, translated.
    pub fn finish(&mut self) -> Bytes {
        let mut out = mem::take(&mut self.out);
        self.feed(&[], true, &mut out);
        let done = out.split().freeze();
        self.out = out;
        done
    }

    /// Appends the final translation of the held-back text followed by `input` to `out`, and
    /// keeps the new tail back (or, with `eof`, translates everything).
    fn feed(&mut self, input: &[u8], eof: bool, out: &mut BytesMut) {
        let buf: &[u8] = if self.pending.is_empty() {
            input
        } else {
            // Rare (the previous chunk ended in the first bytes of a pattern), so joining by
            // copy is cheaper than scanning across two buffers.
            self.joined.clear();
            self.joined.extend_from_slice(&self.pending);
            self.joined.extend_from_slice(input);
            self.pending.clear();
            &self.joined
        };
        let scan = self.mappings.scan(buf, eof, out);
        if !scan.rewrote {
            out.extend_from_slice(&buf[..scan.end]);
        }
        // `pending` was emptied before being joined, and `buf` borrows `joined` or `input`.
        let tail = &buf[scan.end..];
        self.pending.extend_from_slice(tail);
    }
}

/// Content codings the host can decode and re-encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Identity,
    Gzip,
    Deflate,
    Brotli,
}

impl Coding {
    /// From a Content-Encoding value: absent/"identity" -> Identity; gzip/x-gzip, deflate, br (case-insensitive, trimmed).
    /// None for anything else, including several codings ("gzip, br"): such bodies are passed through untranslated.
    ///
    /// An empty value counts as absent.
    pub fn from_content_encoding(value: Option<&str>) -> Option<Coding> {
        let Some(value) = value else {
            return Some(Coding::Identity);
        };
        let value = value.trim();
        let is = |name: &str| value.eq_ignore_ascii_case(name);
        if value.is_empty() || is("identity") {
            Some(Coding::Identity)
        } else if is("gzip") || is("x-gzip") {
            Some(Coding::Gzip)
        } else if is("deflate") {
            Some(Coding::Deflate)
        } else if is("br") {
            Some(Coding::Brotli)
        } else {
            None
        }
    }
}

/// Decode -> translate -> re-encode, streaming.
///
/// Each pushed chunk's output ends with a sync flush, so whatever the member has sent is
/// decodable by the client right away. A body that was empty on the wire stays empty (some
/// servers label empty bodies with a coding).
pub struct BodyTranslator {
    translator: Translator,
    decoder: Decoder,
    encoder: Encoder,
    /// Decoded text of the current chunk, reused.
    plain: Vec<u8>,
    /// Translated text of the current chunk, reused.
    translated: BytesMut,
    /// Encoded output of the current chunk, reused (the caller gets an exact-size copy).
    encoded: Vec<u8>,
    /// Whether any encoded byte arrived; an empty body is passed on empty.
    saw_input: bool,
    /// Set after an error or after `finish`: the streams are in no state to go on.
    done: bool,
}

impl std::fmt::Debug for BodyTranslator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyTranslator")
            .field("saw_input", &self.saw_input)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl BodyTranslator {
    pub fn new(coding: Coding, mappings: Arc<Mappings>) -> BodyTranslator {
        let (decoder, encoder) = match coding {
            Coding::Identity => (Decoder::Identity, Encoder::Identity),
            Coding::Gzip => (
                Decoder::Inflate(Inflater::new(InflateKind::Gzip)),
                Encoder::Deflate(Compress::new_gzip(
                    Compression::new(DEFLATE_LEVEL),
                    DEFLATE_WINDOW_BITS,
                )),
            ),
            Coding::Deflate => (
                Decoder::SniffDeflate(Vec::new()),
                Encoder::Deflate(Compress::new(Compression::new(DEFLATE_LEVEL), true)),
            ),
            Coding::Brotli => (
                Decoder::Brotli(Box::new(Unbrotli::new())),
                Encoder::Brotli(Some(Box::new(CompressorWriter::new(
                    Vec::new(),
                    BROTLI_BUFFER,
                    BROTLI_QUALITY,
                    BROTLI_LGWIN,
                )))),
            ),
        };
        BodyTranslator {
            translator: Translator::new(mappings),
            decoder,
            encoder,
            plain: Vec::new(),
            translated: BytesMut::new(),
            encoded: Vec::new(),
            saw_input: false,
            done: false,
        }
    }

    /// One encoded chunk in, encoded output out (possibly empty). Errors on corrupt input.
    pub fn push(&mut self, chunk: Bytes) -> io::Result<Bytes> {
        self.usable()?;
        if let Decoder::Identity = self.decoder {
            return Ok(self.translator.push(chunk));
        }
        if chunk.is_empty() {
            return Ok(Bytes::new());
        }
        self.saw_input = true;
        self.plain.clear();
        if let Err(e) = self.decoder.decode(&chunk, &mut self.plain) {
            self.done = true;
            return Err(e);
        }
        self.translated.clear();
        self.translator
            .feed(&self.plain, false, &mut self.translated);
        self.encoded.clear();
        // Nothing final yet (all held back): no empty flush block either.
        if !self.translated.is_empty() {
            let encoded = self
                .encoder
                .encode(&self.translated, Flush::Sync, &mut self.encoded);
            if let Err(e) = encoded {
                self.done = true;
                return Err(e);
            }
        }
        Ok(Bytes::copy_from_slice(&self.encoded))
    }

    /// End of body: the rest, with the encoder finished (gzip trailer etc.). Errors on a truncated encoded body.
    pub fn finish(&mut self) -> io::Result<Bytes> {
        self.usable()?;
        self.done = true;
        if let Decoder::Identity = self.decoder {
            return Ok(self.translator.finish());
        }
        if !self.saw_input {
            return Ok(Bytes::new());
        }
        self.decoder.finish()?;
        self.translated.clear();
        self.translator.feed(&[], true, &mut self.translated);
        self.encoded.clear();
        self.encoder
            .encode(&self.translated, Flush::Finish, &mut self.encoded)?;
        Ok(Bytes::copy_from_slice(&self.encoded))
    }

    fn usable(&self) -> io::Result<()> {
        if self.done {
            Err(io::Error::other(
                "body translation already finished or failed",
            ))
        } else {
            Ok(())
        }
    }
}

/// The decoding half of a [`BodyTranslator`].
enum Decoder {
    Identity,
    /// HTTP "deflate" before its first two bytes have arrived: they tell zlib from raw.
    SniffDeflate(Vec<u8>),
    Inflate(Inflater),
    Brotli(Box<Unbrotli>),
}

impl Decoder {
    /// Appends the text decoded from `input` to `out`.
    fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        match self {
            Decoder::Identity => {
                out.extend_from_slice(input);
                Ok(())
            }
            Decoder::SniffDeflate(head) => {
                if head.len() + input.len() < 2 {
                    head.extend_from_slice(input);
                    return Ok(());
                }
                let mut first = head.iter().chain(input).copied();
                let (cmf, flg) = (first.next().unwrap_or(0), first.next().unwrap_or(0));
                // RFC 1950: method 8 (deflate) and a header checksum that is a multiple of 31.
                // A raw stream passes this by chance only rarely, and servers that send raw
                // deflate are the exception.
                let zlib = cmf & 0x0f == 8 && (u16::from(cmf) * 256 + u16::from(flg)) % 31 == 0;
                let head = mem::take(head);
                let kind = if zlib {
                    InflateKind::Zlib
                } else {
                    InflateKind::Raw
                };
                *self = Decoder::Inflate(Inflater::new(kind));
                self.decode(&head, out)?;
                self.decode(input, out)
            }
            Decoder::Inflate(inflater) => inflater.decode(input, out),
            Decoder::Brotli(unbrotli) => unbrotli.decode(input, out),
        }
    }

    /// Checks that the encoded body was complete.
    fn finish(&mut self) -> io::Result<()> {
        let complete = match self {
            Decoder::Identity => true,
            Decoder::SniffDeflate(_) => false,
            Decoder::Inflate(inflater) => inflater.ended,
            Decoder::Brotli(unbrotli) => unbrotli.ended,
        };
        if complete {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "encoded body ended before its stream did",
            ))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InflateKind {
    Gzip,
    Zlib,
    Raw,
}

/// A gzip, zlib or raw deflate decoder that accepts its input split anywhere.
struct Inflater {
    kind: InflateKind,
    stream: Decompress,
    /// The stream (for gzip: the latest member) reached its end.
    ended: bool,
}

impl Inflater {
    fn new(kind: InflateKind) -> Inflater {
        let stream = match kind {
            InflateKind::Gzip => Decompress::new_gzip(DEFLATE_WINDOW_BITS),
            InflateKind::Zlib => Decompress::new(true),
            InflateKind::Raw => Decompress::new(false),
        };
        Inflater {
            kind,
            stream,
            ended: false,
        }
    }

    fn decode(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        while !input.is_empty() {
            if self.ended {
                // RFC 1952 allows several gzip members back to back; anything else after the
                // end of the stream is corrupt.
                if self.kind != InflateKind::Gzip {
                    return Err(corrupt("data after the end of the deflate stream"));
                }
                self.stream = Decompress::new_gzip(DEFLATE_WINDOW_BITS);
                self.ended = false;
            }
            if out.capacity() - out.len() < DECODE_ROOM / 4 {
                out.reserve(DECODE_ROOM.max(input.len() * 4));
            }
            let (in_before, out_before) = (self.stream.total_in(), out.len());
            let status = self
                .stream
                .decompress_vec(input, out, FlushDecompress::None)
                .map_err(|e| corrupt(&format!("invalid compressed data: {e}")))?;
            let used = usize::try_from(self.stream.total_in() - in_before).unwrap_or(usize::MAX);
            input = input.get(used..).unwrap_or_default();
            match status {
                Status::StreamEnd => self.ended = true,
                // No progress with input left and room to write means the decoder is stuck,
                // which a valid stream never causes.
                _ if used == 0 && out.len() == out_before && out.len() < out.capacity() => {
                    return Err(corrupt("deflate decoder made no progress"));
                }
                _ => {}
            }
        }
        // Input consumed; drain anything the decoder still holds (it stops early only when
        // the output was full).
        while !self.ended && out.len() == out.capacity() {
            out.reserve(DECODE_ROOM);
            let before = out.len();
            let status = self
                .stream
                .decompress_vec(&[], out, FlushDecompress::None)
                .map_err(|e| corrupt(&format!("invalid compressed data: {e}")))?;
            if status == Status::StreamEnd {
                self.ended = true;
            }
            if out.len() == before {
                break;
            }
        }
        Ok(())
    }
}

/// A brotli decoder that accepts its input split anywhere.
struct Unbrotli {
    state: BrotliState<StandardAlloc, StandardAlloc, StandardAlloc>,
    total_out: usize,
    ended: bool,
}

impl Unbrotli {
    fn new() -> Unbrotli {
        Unbrotli {
            state: BrotliState::new(
                StandardAlloc::default(),
                StandardAlloc::default(),
                StandardAlloc::default(),
            ),
            total_out: 0,
            ended: false,
        }
    }

    fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        if self.ended {
            return Err(corrupt("data after the end of the brotli stream"));
        }
        let mut avail_in = input.len();
        let mut in_offset = 0;
        loop {
            // The decoder writes into initialised memory, so the room is zeroed first.
            let start = out.len();
            let room = DECODE_ROOM.max(input.len() * 4);
            out.resize(start + room, 0);
            let mut avail_out = room;
            let mut out_offset = start;
            let result = BrotliDecompressStream(
                &mut avail_in,
                &mut in_offset,
                input,
                &mut avail_out,
                &mut out_offset,
                out,
                &mut self.total_out,
                &mut self.state,
            );
            out.truncate(out_offset);
            match result {
                // The decoder may report needing input while its window still holds text it
                // had no room to write out; a full output buffer means "call again".
                BrotliResult::NeedsMoreInput if avail_out > 0 => return Ok(()),
                BrotliResult::NeedsMoreInput | BrotliResult::NeedsMoreOutput => {}
                BrotliResult::ResultSuccess => {
                    self.ended = true;
                    return if avail_in == 0 {
                        Ok(())
                    } else {
                        Err(corrupt("data after the end of the brotli stream"))
                    };
                }
                BrotliResult::ResultFailure => return Err(corrupt("invalid brotli data")),
            }
        }
    }
}

fn corrupt(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flush {
    /// Everything so far becomes decodable by the client.
    Sync,
    /// The stream ends (trailer written).
    Finish,
}

/// The encoding half of a [`BodyTranslator`].
enum Encoder {
    Identity,
    /// gzip or zlib, depending on how the stream was created.
    Deflate(Compress),
    /// `None` once finished (finishing consumes the writer).
    Brotli(Option<Box<CompressorWriter<Vec<u8>>>>),
}

impl Encoder {
    /// Appends the encoding of `input` to `out`, flushed as asked. Encoding into memory fails
    /// only on an encoder bug, which is still reported rather than sent as a broken stream.
    fn encode(&mut self, input: &[u8], flush: Flush, out: &mut Vec<u8>) -> io::Result<()> {
        match self {
            Encoder::Identity => out.extend_from_slice(input),
            Encoder::Deflate(stream) => {
                let flush = match flush {
                    Flush::Sync => FlushCompress::Sync,
                    Flush::Finish => FlushCompress::Finish,
                };
                deflate_into(stream, input, flush, out)?;
            }
            Encoder::Brotli(writer) => {
                let Some(w) = writer else {
                    return Err(io::Error::other("brotli stream already finished"));
                };
                w.write_all(input)?;
                match flush {
                    Flush::Sync => {
                        w.flush()?;
                        out.append(w.get_mut());
                    }
                    Flush::Finish => {
                        if let Some(w) = writer.take() {
                            out.extend_from_slice(&w.into_inner());
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Runs the deflate stream over all of `input` with the given flush, growing `out` as needed.
fn deflate_into(
    stream: &mut Compress,
    mut input: &[u8],
    flush: FlushCompress,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(4096 + input.len() / 2);
        }
        let before = stream.total_in();
        let status = stream
            .compress_vec(input, out, flush)
            .map_err(io::Error::other)?;
        let used = usize::try_from(stream.total_in() - before).unwrap_or(usize::MAX);
        input = input.get(used..).unwrap_or_default();
        match status {
            Status::StreamEnd => return Ok(()),
            // A flush is complete when the encoder stopped with room to spare.
            _ if input.is_empty()
                && out.len() < out.capacity()
                && flush != FlushCompress::Finish =>
            {
                return Ok(());
            }
            _ => {}
        }
    }
}

/// A header value translated by name: location, content-location and refresh get the mappings applied as
/// substrings; set-cookie gets only its Domain attribute rewritten (the host part of each mapping's
/// from -> to, i.e. the text after "scheme://" or "//" up to the first '/' and without ':port';
/// "Domain=intranet.local" and "Domain=.intranet.local" both; attribute name case-insensitive); any other
/// name: mappings as substrings. None when nothing changed.
pub fn translate_header(mappings: &Mappings, name: &str, value: &str) -> Option<String> {
    if name.trim().eq_ignore_ascii_case("set-cookie") {
        return rewrite_cookie_domain(mappings, value);
    }
    if !mappings.searcher.is_match(value) {
        return None;
    }
    // Patterns and replacements are whole UTF-8 strings, so the result is UTF-8 as well.
    let translated = String::from_utf8(mappings.translate_all(value.as_bytes())).ok()?;
    (translated != value).then_some(translated)
}

/// Rewrites the `Domain` attributes of a Set-Cookie value, leaving every other byte alone.
fn rewrite_cookie_domain(mappings: &Mappings, value: &str) -> Option<String> {
    let mut out = String::new();
    let mut copied = 0;
    // Attributes follow the first ';'; the name=value pair before it is the application's.
    let mut start = value.find(';')? + 1;
    while start <= value.len() {
        let end = value[start..].find(';').map_or(value.len(), |i| start + i);
        let attribute = &value[start..end];
        if let Some((key, raw)) = attribute.split_once('=')
            && key.trim().eq_ignore_ascii_case("domain")
        {
            let domain = raw.trim();
            let (dot, host) = match domain.strip_prefix('.') {
                Some(host) => (".", host),
                None => ("", domain),
            };
            let replacement = mappings
                .cookie_hosts
                .iter()
                .find(|(from, _)| from.eq_ignore_ascii_case(host))
                .map(|(_, to)| to.as_str());
            if let Some(to) = replacement {
                let domain_start = start + key.len() + 1 + (raw.len() - raw.trim_start().len());
                out.push_str(&value[copied..domain_start]);
                out.push_str(dot);
                out.push_str(to);
                copied = domain_start + domain.len();
            }
        }
        start = end + 1;
    }
    if copied == 0 {
        return None;
    }
    out.push_str(&value[copied..]);
    (out != value).then_some(out)
}

/// The host of a mapping side: after "scheme://" or "//", up to the first '/', '?' or '#',
/// without userinfo or ":port". A side with neither prefix is taken as starting with its host.
fn host_of(side: &str) -> &str {
    let rest = match side.find("://") {
        Some(i)
            if i > 0
                && side[..i]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) =>
        {
            &side[i + 3..]
        }
        _ => side.strip_prefix("//").unwrap_or(side),
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_port.starts_with('[') {
        // An IPv6 literal keeps its brackets; its colons are not a port separator.
        return host_port.find(']').map_or(host_port, |i| &host_port[..=i]);
    }
    host_port
        .split_once(':')
        .map_or(host_port, |(host, _)| host)
}

/// W/"x" for a strong ETag "x"; weak ones unchanged (a translated body is no longer byte-identical).
pub fn weaken_etag(value: &str) -> String {
    let value = value.trim();
    if value.starts_with("W/") || value.starts_with("w/") {
        value.to_owned()
    } else {
        format!("W/{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// The mappings with the automaton as their only searcher (the fallback path).
    fn automaton_only(pairs: &[(&str, &str)]) -> Arc<Mappings> {
        let mut m = Arc::into_inner(mappings(pairs)).expect("sole owner");
        m.packed = None;
        Arc::new(m)
    }

    fn mappings(pairs: &[(&str, &str)]) -> Arc<Mappings> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(f, t)| (f.to_string(), t.to_string()))
            .collect();
        Arc::new(Mappings::new(&pairs).expect("mappings"))
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(f, t)| (f.to_string(), t.to_string()))
            .collect()
    }

    #[test]
    fn the_cache_builds_a_set_once_and_shares_it() {
        let cache = MatcherCache::default();
        let a = pairs(&[("http://in", "https://out"), ("//in", "//out")]);
        let b = pairs(&[("http://in", "http://out:8080")]);
        let first = cache.get(&a).expect("a set with patterns");
        let again = cache.get(&a).expect("cached");
        assert!(
            Arc::ptr_eq(&first, &again),
            "the same searcher is handed out"
        );
        let other = cache.get(&b).expect("another set");
        assert!(!Arc::ptr_eq(&first, &other));
        assert_eq!(cache.len(), 2);
        assert_eq!(
            other.translate_all(b"x http://in/y"),
            b"x http://out:8080/y"
        );
        // Nothing to translate is not cached.
        assert!(cache.get(&pairs(&[("", "x")])).is_none());
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn the_cache_starts_over_when_full() {
        let cache = MatcherCache::default();
        for i in 0..MATCHER_CACHE_CAPACITY {
            cache.get(&pairs(&[(&format!("http://in{i}"), "http://out")]));
        }
        assert_eq!(cache.len(), MATCHER_CACHE_CAPACITY);
        let m = cache
            .get(&pairs(&[("http://new", "http://out")]))
            .expect("a set");
        assert_eq!(cache.len(), 1);
        assert_eq!(m.translate_all(b"http://new"), b"http://out");
    }

    /// The documented rules by brute force: leftmost-longest (ignoring case), non-overlapping,
    /// first duplicate wins; each `from` also JSON-escaped; a scheme-and-host `from` only where
    /// the host ends, taking in a port after it; a path in its own case.
    fn naive(pairs: &[(&str, &str)], input: &[u8]) -> Vec<u8> {
        let mut spellings: Vec<(String, String, usize, bool)> = Vec::new();
        for (f, t) in pairs {
            if f.is_empty() {
                continue;
            }
            // (from, to, bytes matched ignoring case, whether it is scheme + host only)
            let after_scheme = f
                .find("://")
                .map(|i| i + 3)
                .or(f.starts_with("//").then_some(2));
            let host_end = after_scheme
                .map(|s| s + f[s..].find(['/', '?', '#']).unwrap_or(f.len() - s))
                .unwrap_or(0);
            let authority = after_scheme.is_some() && host_end == f.len();
            for (f, t, n) in [
                (f.to_string(), t.to_string(), host_end),
                (
                    f.replace('/', "\\/"),
                    t.replace('/', "\\/"),
                    f[..host_end].replace('/', "\\/").len(),
                ),
            ] {
                if !spellings.iter().any(|s| s.0.eq_ignore_ascii_case(&f)) {
                    spellings.push((f, t, n, authority));
                }
            }
        }
        let mut out = Vec::new();
        let mut i = 0;
        while i < input.len() {
            let matches = |(f, _, n, _): &&(String, String, usize, bool)| {
                let f = f.as_bytes();
                input.len() - i >= f.len()
                    && input[i..i + *n].eq_ignore_ascii_case(&f[..*n])
                    && input[i + *n..i + f.len()] == f[*n..]
            };
            let best = spellings.iter().filter(matches).fold(
                None::<&(String, String, usize, bool)>,
                |best, p| match best {
                    Some(b) if b.0.len() >= p.0.len() => Some(b),
                    _ => Some(p),
                },
            );
            let Some((f, t, _, authority)) = best else {
                out.push(input[i]);
                i += 1;
                continue;
            };
            let mut end = i + f.len();
            let name = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
            if *authority {
                let has_port = f.rsplit("//").next().is_some_and(|a| a.contains(':'));
                if !has_port && input.get(end) == Some(&b':') {
                    let digits = input[end + 1..]
                        .iter()
                        .take_while(|b| b.is_ascii_digit())
                        .count();
                    if digits > 5 {
                        out.push(input[i]);
                        i += 1;
                        continue;
                    }
                    if digits > 0 {
                        end += 1 + digits;
                    }
                }
                let goes_on = match input.get(end) {
                    Some(&b) if name(b) => true,
                    Some(b'.') => input.get(end + 1).is_some_and(|&b| name(b)),
                    _ => false,
                };
                if goes_on {
                    out.push(input[i]);
                    i += 1;
                    continue;
                }
            }
            out.extend_from_slice(t.as_bytes());
            i = end;
        }
        out
    }

    fn stream(m: &Arc<Mappings>, chunks: &[&[u8]]) -> Vec<u8> {
        let mut t = Translator::new(m.clone());
        let mut out = Vec::new();
        for c in chunks {
            out.extend_from_slice(&t.push(Bytes::copy_from_slice(c)));
            assert!(t.pending.len() < m.longest, "held back too much");
        }
        out.extend_from_slice(&t.finish());
        assert!(t.pending.is_empty());
        out
    }

    /// A small deterministic PRNG (xorshift64*), so failures reproduce.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    const INTRANET: &[(&str, &str)] = &[
        ("http://intranet", "https://www.example.com"),
        ("//intranet", "//www.example.com"),
    ];

    #[test]
    fn straddling_pattern_at_every_split_two_and_three_chunks() {
        let m = mappings(INTRANET);
        let body = b"<a href=\"http://intranet/x\">and //intranet too</a>";
        let expected = m.translate_all(body);
        assert_eq!(
            expected,
            b"<a href=\"https://www.example.com/x\">and //www.example.com too</a>"
        );
        for i in 0..=body.len() {
            assert_eq!(stream(&m, &[&body[..i], &body[i..]]), expected, "split {i}");
            for j in i..=body.len() {
                assert_eq!(
                    stream(&m, &[&body[..i], &body[i..j], &body[j..]]),
                    expected,
                    "splits {i} {j}"
                );
            }
        }
    }

    #[test]
    fn random_chunkings_equal_translate_all() {
        let pairs: &[(&str, &str)] = &[
            ("http://a", "<A>"),
            ("http://a.b", "<AB>"),
            ("//a", "<SA>"),
            ("a.b.c", ""),
            ("//a.b/c", "<LONG>"),
            ("b/", "<B/>"),
        ];
        let pieces: &[&[u8]] = &[
            b"http://a",
            b"http://a.b",
            b"//a",
            b"h",
            b"ht",
            b"http:/",
            b"a",
            b".",
            b"b",
            b"/",
            b"c",
            b" ",
            b"x",
            "\u{e9}".as_bytes(),
            b"HTTP://A",
            b"\\/",
            b":",
            b"80",
            b"123456",
            b"B",
        ];
        // Both searchers: the SIMD one (when this CPU has it) and the automaton fallback.
        #[cfg(target_arch = "x86_64")]
        assert!(mappings(pairs).packed.is_some(), "Teddy builds on x86_64");
        for m in [mappings(pairs), automaton_only(pairs)] {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
            for case in 0..500 {
                let mut text = Vec::new();
                for _ in 0..rng.below(if case % 5 == 0 { 400 } else { 40 }) {
                    text.extend_from_slice(pieces[rng.below(pieces.len())]);
                }
                let expected = m.translate_all(&text);
                assert_eq!(expected, naive(pairs, &text), "reference, case {case}");
                // Mostly tiny chunks (boundaries everywhere), some long enough for SIMD.
                let most = if case % 2 == 0 { 12 } else { 150 };
                let mut chunks = Vec::new();
                let mut rest = &text[..];
                while !rest.is_empty() {
                    let n = rng.below(most).min(rest.len());
                    chunks.push(&rest[..n]);
                    rest = &rest[n..];
                }
                assert_eq!(stream(&m, &chunks), expected, "case {case}: {chunks:?}");
            }
        }
    }

    #[test]
    fn leftmost_longest_and_duplicates() {
        let m = mappings(&[("ab", "X"), ("abc", "Y"), ("bcd", "Z")]);
        assert_eq!(m.translate_all(b"abcd"), b"Yd");
        assert_eq!(stream(&m, &[b"a", b"b", b"c", b"d"]), b"Yd");
        // Leftmost beats longer: "bcde" starts later than "abc".
        let m = mappings(&[("bcde", "L"), ("abc", "S")]);
        assert_eq!(m.translate_all(b"abcde"), b"Sde");
        let m = mappings(&[("a", "1"), ("a", "2"), ("", "never")]);
        assert_eq!(m.translate_all(b"banana"), b"b1n1n1");
        assert!(Mappings::new(&[]).is_none());
        assert!(Mappings::new(&[(String::new(), "x".into())]).is_none());
        // A scheme and a host in any case.
        let m = mappings(INTRANET);
        assert_eq!(
            m.translate_all(b"HTTP://INTRANET"),
            b"https://www.example.com"
        );
    }

    #[test]
    fn hosts_end_where_the_name_ends_in_any_case_with_ports_and_json_escapes() {
        let m = mappings(&[
            (
                "http://intranet.contoso.local",
                "https://www.contoso.com:8443",
            ),
            (
                "https://intranet.contoso.local",
                "https://www.contoso.com:8443",
            ),
            ("//intranet.contoso.local", "//www.contoso.com:8443"),
        ]);
        for (input, want) in [
            (
                "HTTP://INTRANET.CONTOSO.LOCAL/x",
                "https://www.contoso.com:8443/x",
            ),
            (
                "url(http://Intranet.Contoso.Local/a.png)",
                "url(https://www.contoso.com:8443/a.png)",
            ),
            (
                "http://intranet.contoso.local.example.org/",
                "http://intranet.contoso.local.example.org/",
            ),
            (
                "http://intranet.contoso.localhost/",
                "http://intranet.contoso.localhost/",
            ),
            (
                "http://intranet.contoso.local-2/",
                "http://intranet.contoso.local-2/",
            ),
            (
                "http://intranet.contoso.local:80/x",
                "https://www.contoso.com:8443/x",
            ),
            ("//intranet.contoso.local:8080", "//www.contoso.com:8443"),
            (
                "http://intranet.contoso.local:123456/",
                "http://intranet.contoso.local:123456/",
            ),
            (
                "see http://intranet.contoso.local.",
                "see https://www.contoso.com:8443.",
            ),
            (
                "see http://intranet.contoso.local. Then",
                "see https://www.contoso.com:8443. Then",
            ),
            (
                "'http://intranet.contoso.local'",
                "'https://www.contoso.com:8443'",
            ),
            (
                "\"http://intranet.contoso.local\"",
                "\"https://www.contoso.com:8443\"",
            ),
            (
                "http://intranet.contoso.local?q",
                "https://www.contoso.com:8443?q",
            ),
            (
                "http://intranet.contoso.local#f",
                "https://www.contoso.com:8443#f",
            ),
            (
                "http://intranet.contoso.local:",
                "https://www.contoso.com:8443:",
            ),
            (
                "{\"u\":\"http:\\/\\/intranet.contoso.local\\/api\"}",
                "{\"u\":\"https:\\/\\/www.contoso.com:8443\\/api\"}",
            ),
            (
                "\\/\\/intranet.contoso.local:80\\/",
                "\\/\\/www.contoso.com:8443\\/",
            ),
            (
                "http:\\/\\/intranet.contoso.localhost\\/",
                "http:\\/\\/intranet.contoso.localhost\\/",
            ),
        ] {
            let got = m.translate_all(input.as_bytes());
            assert_eq!(String::from_utf8_lossy(&got), want, "{input}");
            let bytes = input.as_bytes();
            for i in 0..=bytes.len() {
                assert_eq!(
                    stream(&m, &[&bytes[..i], &bytes[i..]]),
                    want.as_bytes(),
                    "{input} split {i}"
                );
            }
        }
        // A path is matched in its own case.
        let m = mappings(&[("http://intranet/App", "http://public/app")]);
        assert_eq!(
            m.translate_all(b"HTTP://Intranet/App/x"),
            b"http://public/app/x"
        );
        assert_eq!(
            m.translate_all(b"http://intranet/APP/x"),
            b"http://intranet/APP/x"
        );
    }

    #[test]
    fn unmatched_chunks_pass_through_without_copying() {
        let m = mappings(INTRANET);
        let mut t = Translator::new(m.clone());
        let chunk = Bytes::from_static(b"plain text with no links at all.");
        let out = t.push(chunk.clone());
        assert_eq!(out, chunk);
        assert_eq!(out.as_ptr(), chunk.as_ptr());
        // A chunk ending in the start of a pattern: all but that tail, still uncopied.
        let chunk = Bytes::from_static(b"more text, then http://intr");
        let out = t.push(chunk.clone());
        assert_eq!(&out[..], b"more text, then ");
        assert_eq!(out.as_ptr(), chunk.as_ptr());
        assert_eq!(&t.push(Bytes::from_static(b"a"))[..], b"");
        assert_eq!(&t.finish()[..], b"http://intra");
        // A match waits for the byte that says whether the host ends there.
        let mut t = Translator::new(m);
        let out = t.push(Bytes::from_static(b"xx http://intranet"));
        assert_eq!(&out[..], b"xx ");
        let out = t.push(Bytes::from_static(b"?"));
        assert_eq!(&out[..], b"https://www.example.com?");
        assert!(t.pending.is_empty());
    }

    #[test]
    fn bodies_without_matches_pass_through_byte_identical() {
        // Plenty of near misses: pattern starts at chunk ends, other schemes, other hosts.
        let m = mappings(INTRANET);
        let piece = b"see http://intra net, HTTP://INTRANETS, http:/intranet2 and //intr ";
        let text: Vec<u8> = piece.iter().cycle().take(10_000).copied().collect();
        assert_eq!(m.translate_all(&text), text.as_slice());
        let mut rng = Rng(7);
        for _ in 0..50 {
            let mut t = Translator::new(m.clone());
            let mut out = Vec::new();
            let mut rest = &text[..];
            while !rest.is_empty() {
                let n = (1 + rng.below(300)).min(rest.len());
                out.extend_from_slice(&t.push(Bytes::copy_from_slice(&rest[..n])));
                rest = &rest[n..];
            }
            out.extend_from_slice(&t.finish());
            assert_eq!(out, text);
        }
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn raw_deflate(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn brotli(data: &[u8]) -> Vec<u8> {
        let mut w = CompressorWriter::new(Vec::new(), 4096, 9, 22);
        w.write_all(data).unwrap();
        w.into_inner()
    }

    /// Decodes a whole re-encoded body with independent decoders (single gzip member only).
    fn decode(coding: Coding, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match coding {
            Coding::Identity => out.extend_from_slice(data),
            Coding::Gzip => {
                let mut d = flate2::read::GzDecoder::new(data);
                d.read_to_end(&mut out).unwrap();
                assert_eq!(d.into_inner().len(), 0, "one gzip member, nothing after it");
            }
            Coding::Deflate => {
                flate2::read::ZlibDecoder::new(data)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Coding::Brotli => {
                brotli::Decompressor::new(data, 4096)
                    .read_to_end(&mut out)
                    .unwrap();
            }
        }
        out
    }

    /// Decodes a stream prefix that ends at a sync flush.
    fn decode_prefix(coding: Coding, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match coding {
            Coding::Identity => out.extend_from_slice(data),
            Coding::Gzip | Coding::Deflate => {
                let mut d = if coding == Coding::Gzip {
                    Decompress::new_gzip(15)
                } else {
                    Decompress::new(true)
                };
                out.reserve(4 << 20);
                d.decompress_vec(data, &mut out, FlushDecompress::Sync)
                    .unwrap();
            }
            Coding::Brotli => {
                let mut u = Unbrotli::new();
                u.decode(data, &mut out).unwrap();
            }
        }
        out
    }

    fn sample_text(len: usize) -> Vec<u8> {
        let mut rng = Rng(42);
        let mut text = Vec::new();
        while text.len() < len {
            match rng.below(4) {
                0 => text.extend_from_slice(b"<a href=\"http://intranet/page"),
                1 => text.extend_from_slice(b"\">//intranet</a> "),
                2 => text.extend_from_slice(b"lorem ipsum dolor sit amet "),
                _ => text.extend_from_slice(format!("{} ", rng.next()).as_bytes()),
            }
        }
        text
    }

    fn run_body(coding: Coding, encoded: &[u8], chunk: usize) -> io::Result<Vec<u8>> {
        let mut b = BodyTranslator::new(coding, mappings(INTRANET));
        let mut out = Vec::new();
        for c in encoded.chunks(chunk) {
            out.extend_from_slice(&b.push(Bytes::copy_from_slice(c))?);
        }
        out.extend_from_slice(&b.finish()?);
        Ok(out)
    }

    #[test]
    fn codings_round_trip_with_tiny_and_large_chunks() {
        let m = mappings(INTRANET);
        for len in [0, 10, 5_000, 300_000] {
            let plain = sample_text(len);
            let expected = m.translate_all(&plain);
            let inputs = [
                (Coding::Identity, Coding::Identity, plain.clone()),
                (Coding::Gzip, Coding::Gzip, gzip(&plain)),
                (Coding::Deflate, Coding::Deflate, zlib(&plain)),
                (Coding::Deflate, Coding::Deflate, raw_deflate(&plain)),
                (Coding::Brotli, Coding::Brotli, brotli(&plain)),
            ];
            for (coding, out_coding, encoded) in &inputs {
                let sizes: &[usize] = if len > 10_000 {
                    &[997, 16384, usize::MAX]
                } else {
                    &[1, 2, 3, 7, 64, usize::MAX]
                };
                for &chunk in sizes {
                    let chunk = chunk.min(encoded.len()).max(1);
                    let out = run_body(*coding, encoded, chunk).unwrap();
                    assert_eq!(
                        decode(*out_coding, &out),
                        expected,
                        "{coding:?} len {len} chunk {chunk}"
                    );
                    if *out_coding == Coding::Deflate && !out.is_empty() {
                        assert_eq!(out[0] & 0x0f, 8, "re-encoded as zlib");
                    }
                }
            }
        }
    }

    #[test]
    fn output_streams_as_input_arrives() {
        // Everything pushed so far, less a possible held-back pattern start, must decode
        // from the output so far: each push ends with a sync flush.
        let m = mappings(INTRANET);
        let plain = sample_text(100_000);
        let expected = m.translate_all(&plain);
        for (coding, encoded) in [
            (Coding::Gzip, gzip(&plain)),
            (Coding::Deflate, raw_deflate(&plain)),
            (Coding::Brotli, brotli(&plain)),
        ] {
            let mut b = BodyTranslator::new(coding, m.clone());
            let mut out = Vec::new();
            for c in encoded.chunks(4096) {
                out.extend_from_slice(&b.push(Bytes::copy_from_slice(c)).unwrap());
            }
            let so_far = decode_prefix(coding, &out);
            assert!(expected.starts_with(&so_far), "{coding:?}");
            assert!(
                so_far.len() + m.longest > expected.len(),
                "{coding:?}: only {} of {} decodable before finish",
                so_far.len(),
                expected.len()
            );
            out.extend_from_slice(&b.finish().unwrap());
            assert_eq!(decode(coding, &out), expected);
        }
    }

    #[test]
    fn multi_member_gzip_is_decoded_whole() {
        let m = mappings(INTRANET);
        let (a, b) = (b"first http://intranet/a ", b"second //intranet/b");
        let mut encoded = gzip(a);
        encoded.extend_from_slice(&gzip(b));
        let out = run_body(Coding::Gzip, &encoded, 5).unwrap();
        assert_eq!(
            decode(Coding::Gzip, &out),
            m.translate_all(&[&a[..], &b[..]].concat())
        );
    }

    #[test]
    fn truncated_or_corrupt_bodies_are_errors() {
        let plain = sample_text(20_000);
        let encoded = gzip(&plain);
        // Truncated anywhere, including inside the header and the trailer.
        for cut in [
            1,
            5,
            10,
            encoded.len() / 2,
            encoded.len() - 4,
            encoded.len() - 1,
        ] {
            assert!(
                run_body(Coding::Gzip, &encoded[..cut], 1000).is_err(),
                "cut at {cut}"
            );
        }
        // A damaged checksum, a damaged header, and garbage.
        let mut bad_crc = encoded.clone();
        let n = bad_crc.len();
        bad_crc[n - 6] ^= 0xff;
        assert!(run_body(Coding::Gzip, &bad_crc, 1000).is_err());
        let mut bad_magic = encoded.clone();
        bad_magic[0] = b'x';
        assert!(run_body(Coding::Gzip, &bad_magic, 1000).is_err());
        assert!(run_body(Coding::Gzip, b"this is not gzip at all", 3).is_err());
        // Other codings: truncation, and bytes after the end of the stream.
        let z = zlib(&plain);
        assert!(run_body(Coding::Deflate, &z[..z.len() / 2], 100).is_err());
        assert!(run_body(Coding::Deflate, &[0x78], 1).is_err());
        assert!(
            run_body(
                Coding::Deflate,
                &[z.clone(), b"junk".to_vec()].concat(),
                100
            )
            .is_err()
        );
        let br = brotli(&plain);
        assert!(run_body(Coding::Brotli, &br[..br.len() / 2], 100).is_err());
        assert!(
            run_body(
                Coding::Brotli,
                &[br.clone(), b"junk".to_vec()].concat(),
                100
            )
            .is_err()
        );
        // After an error the translator stays failed.
        let mut b = BodyTranslator::new(Coding::Gzip, mappings(INTRANET));
        assert!(b.push(Bytes::from_static(b"garbage!garbage!")).is_err());
        assert!(b.push(Bytes::copy_from_slice(&encoded)).is_err());
        assert!(b.finish().is_err());
    }

    #[test]
    fn empty_bodies_stay_empty() {
        for coding in [
            Coding::Identity,
            Coding::Gzip,
            Coding::Deflate,
            Coding::Brotli,
        ] {
            let mut b = BodyTranslator::new(coding, mappings(INTRANET));
            assert!(b.push(Bytes::new()).unwrap().is_empty());
            assert!(b.finish().unwrap().is_empty(), "{coding:?}");
        }
    }

    #[test]
    fn identity_body_translator_does_not_copy_unmatched_chunks() {
        let mut b = BodyTranslator::new(Coding::Identity, mappings(INTRANET));
        let chunk = Bytes::from_static(b"nothing to see here");
        assert_eq!(b.push(chunk.clone()).unwrap().as_ptr(), chunk.as_ptr());
        assert!(b.finish().unwrap().is_empty());
    }

    #[test]
    fn headers() {
        let m = mappings(&[
            ("http://intranet.local:8080", "https://www.example.com"),
            ("http://intranet", "https://portal.example.com"),
        ]);
        assert_eq!(
            translate_header(&m, "Location", "http://intranet.local:8080/a?b=1").as_deref(),
            Some("https://www.example.com/a?b=1")
        );
        assert_eq!(
            translate_header(&m, "content-location", "http://intranet/x").as_deref(),
            Some("https://portal.example.com/x")
        );
        assert_eq!(
            translate_header(&m, "Refresh", "5; url=http://intranet/x").as_deref(),
            Some("5; url=https://portal.example.com/x")
        );
        assert_eq!(translate_header(&m, "Location", "https://elsewhere/"), None);
        assert_eq!(
            translate_header(&m, "Link", "<http://intranet/s.css>; rel=preload").as_deref(),
            Some("<https://portal.example.com/s.css>; rel=preload")
        );
        // Set-Cookie: only the Domain attribute, with or without a leading dot.
        assert_eq!(
            translate_header(
                &m,
                "Set-Cookie",
                "id=http://intranet.local; Path=/; Domain=intranet.local; HttpOnly"
            )
            .as_deref(),
            Some("id=http://intranet.local; Path=/; Domain=www.example.com; HttpOnly")
        );
        assert_eq!(
            translate_header(&m, "set-cookie", "a=b; domain = .Intranet.Local ;Secure").as_deref(),
            Some("a=b; domain = .www.example.com ;Secure")
        );
        assert_eq!(
            translate_header(&m, "SET-COOKIE", "a=b;DOMAIN=intranet").as_deref(),
            Some("a=b;DOMAIN=portal.example.com")
        );
        assert_eq!(
            translate_header(&m, "Set-Cookie", "a=b; Domain=other.local; Path=/"),
            None
        );
        assert_eq!(
            translate_header(&m, "Set-Cookie", "Domain=intranet.local"),
            None
        );
        assert_eq!(
            translate_header(&m, "Set-Cookie", "a=b; Path=/intranet"),
            None
        );
    }

    #[test]
    fn hosts_of_mapping_sides() {
        assert_eq!(host_of("http://intranet.local:8080/x"), "intranet.local");
        assert_eq!(host_of("//intranet.local/x"), "intranet.local");
        assert_eq!(host_of("intranet.local"), "intranet.local");
        assert_eq!(host_of("https://user@h.example:1/"), "h.example");
        assert_eq!(host_of("http://[::1]:8080/"), "[::1]");
        assert_eq!(host_of("/only/a/path"), "");
    }

    #[test]
    fn etags() {
        assert_eq!(weaken_etag("\"abc\""), "W/\"abc\"");
        assert_eq!(weaken_etag("W/\"abc\""), "W/\"abc\"");
        assert_eq!(weaken_etag(" \"abc\" "), "W/\"abc\"");
    }

    #[test]
    fn content_encodings() {
        let c = Coding::from_content_encoding;
        assert_eq!(c(None), Some(Coding::Identity));
        assert_eq!(c(Some("identity")), Some(Coding::Identity));
        assert_eq!(c(Some("")), Some(Coding::Identity));
        assert_eq!(c(Some(" GZIP ")), Some(Coding::Gzip));
        assert_eq!(c(Some("x-gzip")), Some(Coding::Gzip));
        assert_eq!(c(Some("Deflate")), Some(Coding::Deflate));
        assert_eq!(c(Some("br")), Some(Coding::Brotli));
        assert_eq!(c(Some("gzip, br")), None);
        assert_eq!(c(Some("zstd")), None);
        assert_eq!(c(Some("compress")), None);
    }
}
