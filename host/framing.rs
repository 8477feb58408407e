//! Request framing checks on HTTP/1 client connections, ahead of hyper's parser: the defence
//! against request smuggling.
//!
//! Every byte a client sends passes through [`Checked`] before hyper reads it. It follows the
//! connection message by message (head, then the body by its Content-Length or its chunks) and
//! holds each request head back until the whole head is in and judged. A head whose framing is
//! ambiguous (Content-Length with Transfer-Encoding, differing Content-Lengths, a coding other
//! than `chunked`, obs-fold, an invalid header name or value, a bare CR or LF) never reaches
//! hyper: it is replaced by a request line hyper refuses, so the client gets hyper's 400 and
//! the connection is closed, after the requests before it on the connection were answered. A
//! chunked body whose framing breaks (a bad chunk size, data longer than its size, a bare LF)
//! ends the connection with a read error at that byte: hyper fails the request body, the
//! exchange with the member is abandoned before the request completes, and nothing after the
//! bad byte is ever read as a request.
//!
//! hyper itself refuses much of this, but resolves Content-Length with Transfer-Encoding by
//! dropping the length; RFC 9112 §6.1 allows that, and allows refusing. farmgate refuses,
//! because a proxy in front of it may have read the same bytes the other way.
//!
//! What this module must not do: buffer bodies (body bytes stream through as they come), or
//! decide anything but framing. After an HTTP/2 preface or a protocol switch (a 101 answer to
//! an `Upgrade` request, reported by the proxy through [`Shared`]) the bytes are not HTTP/1
//! and pass through untouched.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What hyper reads in place of a refused head: a request line whose method is not a token, so
/// hyper answers 400 and closes the connection.
const REFUSED_HEAD: &[u8] = b"\x00 / HTTP/1.1\r\n\r\n";

/// The first line and blank line of the HTTP/2 connection preface.
const H2_PREFACE_HEAD: &[u8] = b"PRI * HTTP/2.0\r\n\r\n";

/// The longest chunk size line farmgate reads (hex digits and extensions); hyper's own limit on
/// extensions is of the same order.
const MAX_CHUNK_LINE: usize = 4096;

/// Why a request was refused.
pub type Reason = &'static str;

/// The framing state machine of one connection: pure, no I/O.
#[derive(Debug)]
pub struct Framing {
    state: State,
    /// Bytes of the head being received that were already searched for its end.
    head_scanned: usize,
    /// A head longer than this is left to hyper, which refuses it with 431.
    max_head: usize,
    /// Request heads passed so far.
    messages: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between messages: a head is expected.
    Head,
    /// A body of known length: bytes still to come.
    Fixed { left: u64, upgrade: bool },
    /// A chunked body.
    Chunked { chunk: Chunk, upgrade: bool },
    /// An upgrade request has been passed whole; what follows depends on the proxy's answer.
    Verdict { message: u64 },
    /// Not HTTP/1 any more (HTTP/2, a switched protocol, or a head left to hyper to refuse).
    Through,
    /// A refusal was reported; nothing more is judged.
    Refused,
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Chunk {
    at: ChunkAt,
    size: u64,
    /// Bytes of the current size or trailer line so far.
    line: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkAt {
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    TrailerLf,
    EndLf,
}

/// What [`Framing::judge`] decided about the bytes it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The first `n` bytes may go to hyper; the rest (a head still arriving) needs more bytes.
    More(usize),
    /// The first `n` bytes may go; the rest waits for the proxy's answer to request `message`.
    Await(usize, u64),
    /// The first `n` bytes may go; then the request head that follows is refused.
    RefuseHead(usize, Reason),
    /// The first `n` bytes may go; then the body breaks its framing.
    RefuseBody(usize, Reason),
}

/// What a complete, valid head says comes next.
struct Head {
    body: State,
    through: bool,
}

impl Framing {
    pub fn new(max_head: usize) -> Framing {
        Framing {
            state: State::Head,
            head_scanned: 0,
            max_head,
            messages: 0,
        }
    }

    /// Judges `input`, the bytes after those already judged (a head still arriving is given
    /// again, with what came after it).
    pub fn judge(&mut self, input: &[u8]) -> Step {
        let mut at = 0;
        loop {
            let rest = &input[at..];
            match self.state {
                State::Through => return Step::More(input.len()),
                State::Refused => return Step::More(at),
                State::Verdict { message } => return Step::Await(at, message),
                State::Head => match self.head(rest) {
                    Ok(None) => {
                        if rest.len() > self.max_head {
                            // Too long to be a head farmgate accepts; hyper answers 431.
                            self.state = State::Through;
                            return Step::More(input.len());
                        }
                        return Step::More(at);
                    }
                    Ok(Some((len, head))) => {
                        at += len;
                        self.head_scanned = 0;
                        self.messages += 1;
                        self.state = if head.through {
                            State::Through
                        } else {
                            head.body
                        };
                        self.end_empty_body();
                    }
                    Err(reason) => {
                        self.state = State::Refused;
                        return Step::RefuseHead(at, reason);
                    }
                },
                State::Fixed { left, upgrade } => {
                    if rest.is_empty() {
                        return Step::More(at);
                    }
                    let take = left.min(rest.len() as u64);
                    at += take as usize;
                    self.state = State::Fixed {
                        left: left - take,
                        upgrade,
                    };
                    self.end_empty_body();
                }
                State::Chunked { mut chunk, upgrade } => {
                    if rest.is_empty() {
                        return Step::More(at);
                    }
                    match chunk.scan(rest) {
                        Ok((n, done)) => {
                            at += n;
                            self.state = if done {
                                self.after_body(upgrade)
                            } else {
                                State::Chunked { chunk, upgrade }
                            };
                        }
                        Err((n, reason)) => {
                            self.state = State::Refused;
                            return Step::RefuseBody(at + n, reason);
                        }
                    }
                }
            }
        }
    }

    /// The proxy answered the upgrade request: with 101 the connection now carries another
    /// protocol; otherwise HTTP/1 requests follow.
    pub fn verdict(&mut self, switched: bool) {
        if let State::Verdict { .. } = self.state {
            self.state = if switched {
                State::Through
            } else {
                State::Head
            };
        }
    }

    fn end_empty_body(&mut self) {
        if let State::Fixed { left: 0, upgrade } = self.state {
            self.state = self.after_body(upgrade);
        }
    }

    fn after_body(&self, upgrade: bool) -> State {
        if upgrade {
            State::Verdict {
                message: self.messages,
            }
        } else {
            State::Head
        }
    }

    /// Looks for the end of the head at the start of `rest`: `Ok(None)` while it is incomplete,
    /// its length and meaning once it is complete and valid. Empty lines before a request line
    /// are allowed (RFC 9112 §2.2) and belong to the head.
    fn head(&mut self, rest: &[u8]) -> Result<Option<(usize, Head)>, Reason> {
        let start = rest.chunks(2).take_while(|p| *p == b"\r\n").count() * 2;
        // Only the first max_head bytes can hold a head farmgate judges; past them the
        // connection is hyper's to refuse, wherever the client's writes were split.
        let window = &rest[..rest.len().min(self.max_head)];
        let mut from = self.head_scanned.max(start).min(window.len());
        while let Some(i) = memchr::memchr(b'\n', &window[from..]).map(|i| from + i) {
            if i == 0 || rest[i - 1] != b'\r' {
                return Err("a bare LF in the request head");
            }
            from = i + 1;
            if i >= start + 3 && &rest[i - 3..=i] == b"\r\n\r\n" {
                self.head_scanned = 0;
                return validate(&rest[start..=i], self.messages == 0).map(|h| Some((i + 1, h)));
            }
        }
        self.head_scanned = from;
        Ok(None)
    }
}

/// Judges a complete head (from its request line to its blank line).
fn validate(head: &[u8], first: bool) -> Result<Head, Reason> {
    if first && head == H2_PREFACE_HEAD {
        return Ok(Head {
            body: State::Through,
            through: true,
        });
    }
    // Every LF was checked to follow a CR; the lines are what lies between CRLFs.
    let mut rest = Some(&head[..head.len() - 4]);
    let mut lines = std::iter::from_fn(|| {
        let text = rest?;
        Some(match memchr::memchr(b'\n', text) {
            Some(i) => {
                rest = Some(&text[i + 1..]);
                text[..i].strip_suffix(b"\r").unwrap_or(&text[..i])
            }
            None => {
                rest = None;
                text
            }
        })
    });
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("a malformed request line");
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err("an invalid method");
    }
    if target.is_empty() || target.iter().any(|&b| b <= b' ' || b == 0x7f) {
        return Err("an invalid request target");
    }
    let http11 = match version {
        b"HTTP/1.1" => true,
        b"HTTP/1.0" => false,
        _ => return Err("an unsupported HTTP version"),
    };
    let mut length: Option<u64> = None;
    let mut codings = 0;
    let mut chunked = false;
    let mut upgrade = method == b"CONNECT";
    for line in lines {
        if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            return Err("a folded header line (obs-fold)");
        }
        let colon = memchr::memchr(b':', line).ok_or("a header line without a colon")?;
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err("an invalid header name");
        }
        let value = trim_ows(&line[colon + 1..]);
        if !value.iter().all(|&b| is_field(b)) {
            return Err("a control character in a header value");
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_length(value).ok_or("an invalid Content-Length")?;
            if length.is_some_and(|l| l != n) {
                return Err("differing Content-Length headers");
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            codings += 1;
            chunked = value.eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade |= http11;
        }
    }
    let body = match (codings, length) {
        (0, length) => State::Fixed {
            left: length.unwrap_or(0),
            upgrade,
        },
        (_, Some(_)) => return Err("Content-Length with Transfer-Encoding"),
        _ if !http11 => return Err("Transfer-Encoding in an HTTP/1.0 request"),
        (1, None) if chunked => State::Chunked {
            chunk: Chunk {
                at: ChunkAt::Size,
                size: 0,
                line: 0,
            },
            upgrade,
        },
        (1, None) => return Err("a transfer coding other than chunked"),
        _ => return Err("more than one Transfer-Encoding header"),
    };
    Ok(Head {
        body,
        through: false,
    })
}

impl Chunk {
    /// Reads as much of `rest` as belongs to the body: the bytes taken and whether the body
    /// ended, or where and why its framing broke.
    fn scan(&mut self, rest: &[u8]) -> Result<(usize, bool), (usize, Reason)> {
        let mut i = 0;
        while i < rest.len() {
            if self.at == ChunkAt::Data {
                let take = self.size.min((rest.len() - i) as u64);
                self.size -= take;
                i += take as usize;
                if self.size == 0 {
                    self.at = ChunkAt::DataCr;
                }
                continue;
            }
            let b = rest[i];
            let bad = |why| Err((i, why));
            self.at = match (self.at, b) {
                (ChunkAt::Size, b) if b.is_ascii_hexdigit() => {
                    if self.line >= 15 {
                        return bad("a chunk size too large");
                    }
                    let digit = (b as char).to_digit(16).unwrap_or(0);
                    self.size = self.size * 16 + u64::from(digit);
                    ChunkAt::Size
                }
                (ChunkAt::Size, b';' | b' ' | b'\t') if self.line > 0 => ChunkAt::Extension,
                (ChunkAt::Size, b'\r') if self.line > 0 => ChunkAt::SizeLf,
                (ChunkAt::Size, _) => return bad("an invalid chunk size"),
                (ChunkAt::Extension, b'\r') => ChunkAt::SizeLf,
                (ChunkAt::Extension, b) if is_field(b) => ChunkAt::Extension,
                (ChunkAt::Extension, _) => return bad("an invalid chunk extension"),
                (ChunkAt::SizeLf, b'\n') if self.size == 0 => ChunkAt::TrailerStart,
                (ChunkAt::SizeLf, b'\n') => ChunkAt::Data,
                (ChunkAt::DataCr, b'\r') => ChunkAt::DataLf,
                (ChunkAt::DataCr, b'\n') => return bad("a bare LF in the chunked framing"),
                (ChunkAt::DataCr, _) => return bad("chunk data longer than its size"),
                (ChunkAt::DataLf | ChunkAt::TrailerLf, b'\n') => {
                    self.line = 0;
                    if self.at == ChunkAt::DataLf {
                        ChunkAt::Size
                    } else {
                        ChunkAt::TrailerStart
                    }
                }
                (ChunkAt::TrailerStart, b'\r') => ChunkAt::EndLf,
                (ChunkAt::TrailerStart, b) if is_tchar(b) => ChunkAt::Trailer,
                (ChunkAt::TrailerStart, _) => return bad("an invalid trailer line"),
                (ChunkAt::Trailer, b'\r') => ChunkAt::TrailerLf,
                (ChunkAt::Trailer, b) if is_field(b) => ChunkAt::Trailer,
                (ChunkAt::Trailer, _) => return bad("an invalid trailer line"),
                (ChunkAt::EndLf, b'\n') => return Ok((i + 1, true)),
                (_, b'\n') => return bad("a bare LF in the chunked framing"),
                _ => return bad("a bare CR in the chunked framing"),
            };
            i += 1;
            if matches!(
                self.at,
                ChunkAt::Size | ChunkAt::Extension | ChunkAt::Trailer
            ) {
                self.line += 1;
                if self.line > MAX_CHUNK_LINE {
                    return Err((i, "a chunk size or trailer line too long"));
                }
            }
        }
        Ok((i, false))
    }
}

/// Bytes of a token (RFC 9110 §5.6.2): header names and methods.
const TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    t
};

/// Bytes a field value may hold: visible ASCII, space, tab and obs-text; no other controls.
const FIELD: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = b == 0x09 || (b >= 0x20 && b != 0x7f);
        b += 1;
    }
    t
};

fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

fn is_field(b: u8) -> bool {
    FIELD[usize::from(b)]
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// A Content-Length value: digits only (no sign, no list), within u64.
fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// What the proxy tells a connection's framing checks: how each request was answered (after an
/// upgrade request, that decides whether the bytes that follow are HTTP/1 again or another
/// protocol), and whether a response is still going out (the connection is not idle); and what
/// the checks tell the proxy: a request they refused (for its access log).
#[derive(Debug, Default)]
pub struct Shared {
    /// Told of every refused request, with the reason.
    on_refusal: std::sync::OnceLock<Report>,
    /// Responses started and not yet ended or dropped.
    busy: AtomicU64,
    /// The connection's reader, waiting for its last response to end so that its idle time
    /// can start.
    reader: Mutex<Option<Waker>>,
    /// Requests the proxy has answered on this connection (hyper serves them in order).
    answered: AtomicU64,
    /// The number of the upgrade request [`Checked`] waits on, or 0.
    awaiting: AtomicU64,
    slot: Mutex<Slot>,
}

/// Where refusals are reported.
struct Report(Box<dyn Fn(Reason) + Send + Sync>);

impl std::fmt::Debug for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Report")
    }
}

#[derive(Debug, Default)]
struct Slot {
    verdict: Option<(u64, bool)>,
    waker: Option<Waker>,
}

impl Shared {
    /// Has every request the checks refuse on this connection reported to `report` (the first
    /// call wins).
    pub fn on_refusal(&self, report: impl Fn(Reason) + Send + Sync + 'static) {
        let _ = self.on_refusal.set(Report(Box::new(report)));
    }

    /// Called by the proxy once for every request it answers on the connection, in order:
    /// whether the answer switched protocols.
    pub fn answered(&self, switched: bool) {
        let n = self.answered.fetch_add(1, Ordering::AcqRel) + 1;
        if self.awaiting.load(Ordering::Acquire) == n {
            let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
            slot.verdict = Some((n, switched));
            if let Some(w) = slot.waker.take() {
                w.wake();
            }
        }
    }

    /// Held by a response while it goes out: the connection is not idle.
    pub fn busy(self: &std::sync::Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::AcqRel);
        Busy(std::sync::Arc::clone(self))
    }

    /// Set before the upgrade request `message` goes to hyper, so its answer cannot come
    /// first.
    fn expect(&self, message: u64) {
        self.awaiting.store(message, Ordering::Release);
    }

    fn poll(&self, message: u64, cx: &mut Context<'_>) -> Poll<bool> {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        match slot.verdict {
            Some((n, switched)) if n == message => Poll::Ready(switched),
            _ => {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// A response going out on a connection; dropped when it has ended or was abandoned.
#[derive(Debug)]
pub struct Busy(std::sync::Arc<Shared>);

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            let reader = self
                .0
                .reader
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(w) = reader {
                w.wake();
            }
        }
    }
}

/// What a quiet client connection is waiting for, each with its own time limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// The rest of a request head (or, on a new connection, the first one).
    Head,
    /// The next request on a keep-alive connection.
    Idle,
}

/// What happens once the judged bytes have gone to hyper.
#[derive(Debug)]
enum After {
    /// Read more from the client.
    Read,
    /// Wait for the proxy's answer to this upgrade request.
    Await(u64),
    /// Hand hyper the refused head (from this offset of [`REFUSED_HEAD`]), then end.
    RefusedHead(usize),
    /// Fail the read: the body broke its framing.
    RefusedBody(Reason),
    /// The client's end of the stream.
    Eof,
}

/// A client connection whose request framing is checked before hyper reads it.
pub struct Checked<IO> {
    io: IO,
    framing: Framing,
    shared: std::sync::Arc<Shared>,
    /// Read from the client, not yet given to hyper; the first `ready` bytes are judged.
    held: BytesMut,
    ready: usize,
    after: After,
    /// For the log line of a refusal.
    client: std::net::SocketAddr,
    /// The limits on a quiet connection: for a head, and between requests. (These are
    /// farmgate's, not hyper's: hyper's header read timeout runs from when it starts waiting,
    /// so it cannot tell idle time from a slow head, and before the first head the HTTP
    /// version detection of a listener that also speaks h2c has none at all.)
    head_timeout: Duration,
    idle_timeout: Duration,
    /// What the running time limit is for (and for which message), if one runs.
    armed: Option<(Wait, u64)>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<IO> Checked<IO> {
    /// `io` checked with heads of up to `max_head` bytes, each complete within `head_timeout`
    /// of its first byte, and at most `idle_timeout` between a response and the next request.
    pub fn new(
        io: IO,
        max_head: usize,
        (head_timeout, idle_timeout): (Duration, Duration),
        shared: std::sync::Arc<Shared>,
        client: std::net::SocketAddr,
    ) -> Checked<IO> {
        Checked {
            io,
            framing: Framing::new(max_head),
            shared,
            held: BytesMut::new(),
            ready: 0,
            after: After::Read,
            client,
            head_timeout,
            idle_timeout,
            armed: None,
            sleep: None,
        }
    }

    /// What the connection waits for while the client sends nothing, once no response is
    /// going out: a head (part of one is here, or none yet on a new connection), or the next
    /// request. A body being received, an upgrade's answer and other protocols have no limit
    /// here.
    fn waiting_for(&self, cx: &mut Context<'_>) -> Option<(Wait, Duration)> {
        if self.framing.state != State::Head {
            return None;
        }
        if self.shared.busy.load(Ordering::Acquire) > 0 {
            // Be woken when the response ends, then look again (it may have just ended).
            *self.shared.reader.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(cx.waker().clone());
            if self.shared.busy.load(Ordering::Acquire) > 0 {
                return None;
            }
        }
        if !self.held.is_empty() || self.framing.messages == 0 {
            Some((Wait::Head, self.head_timeout))
        } else {
            Some((Wait::Idle, self.idle_timeout))
        }
    }

    /// The client has sent nothing more for now: fine, unless what the connection waits for is
    /// overdue. A limit starts when the wait starts and is not restarted by bytes that arrive
    /// within the same wait (a head sent a byte at a time still has its one limit).
    fn idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some((wait, limit)) = self.waiting_for(cx) else {
            self.armed = None;
            return Poll::Pending;
        };
        let this_wait = Some((wait, self.framing.messages));
        if self.armed != this_wait {
            self.armed = this_wait;
            let at = tokio::time::Instant::now() + limit;
            match &mut self.sleep {
                Some(sleep) => sleep.as_mut().reset(at),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
            }
        }
        let overdue = self
            .sleep
            .as_mut()
            .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready());
        if !overdue {
            return Poll::Pending;
        }
        let what = match wait {
            Wait::Head => "no complete request head within header_read_timeout",
            Wait::Idle => "no new request within client_idle_timeout",
        };
        tracing::debug!(client = %self.client, "{what}; closing the connection");
        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)))
    }

    /// Records what `step` decided about the held bytes.
    fn decided(&mut self, step: Step) {
        let (ready, after) = match step {
            Step::More(n) => (n, After::Read),
            Step::Await(n, message) => {
                self.shared.expect(message);
                (n, After::Await(message))
            }
            Step::RefuseHead(n, reason) => {
                self.refused(reason);
                (n, After::RefusedHead(0))
            }
            Step::RefuseBody(n, reason) => {
                self.refused(reason);
                (n, After::RefusedBody(reason))
            }
        };
        self.ready = ready;
        self.after = after;
    }

    fn refused(&self, reason: Reason) {
        tracing::info!(
            client = %self.client,
            reason,
            "request refused before forwarding: ambiguous or invalid HTTP/1 framing; closing the connection"
        );
        if let Some(report) = self.shared.on_refusal.get() {
            (report.0)(reason);
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Checked<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.ready > 0 {
                let n = this.ready.min(buf.remaining());
                buf.put_slice(&this.held[..n]);
                this.held.advance(n);
                this.ready -= n;
                return Poll::Ready(Ok(()));
            }
            match this.after {
                After::Read => {}
                After::Await(message) => {
                    let switched = std::task::ready!(this.shared.poll(message, cx));
                    this.framing.verdict(switched);
                    let step = this.framing.judge(&this.held);
                    this.decided(step);
                    continue;
                }
                After::RefusedHead(from) => {
                    let n = (REFUSED_HEAD.len() - from).min(buf.remaining());
                    buf.put_slice(&REFUSED_HEAD[from..from + n]);
                    this.after = if from + n == REFUSED_HEAD.len() {
                        After::Eof
                    } else {
                        After::RefusedHead(from + n)
                    };
                    return Poll::Ready(Ok(()));
                }
                After::RefusedBody(reason) => {
                    this.after = After::Eof;
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, reason)));
                }
                After::Eof => return Poll::Ready(Ok(())),
            }
            if this.held.is_empty() && buf.remaining() > 0 {
                // The usual case: read straight into hyper's buffer and judge what arrived;
                // what may not go yet moves to `held`.
                let before = buf.filled().len();
                if Pin::new(&mut this.io).poll_read(cx, buf)?.is_pending() {
                    return this.idle(cx);
                }
                let fresh = &buf.filled()[before..];
                if fresh.is_empty() {
                    this.after = After::Eof;
                    return Poll::Ready(Ok(()));
                }
                let step = this.framing.judge(fresh);
                let keep = match step {
                    Step::More(n)
                    | Step::Await(n, _)
                    | Step::RefuseHead(n, _)
                    | Step::RefuseBody(n, _) => n,
                };
                this.held.extend_from_slice(&fresh[keep..]);
                buf.set_filled(before + keep);
                this.decided(step);
                this.ready = 0;
                if keep > 0 {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            // A head is arriving in pieces: gather it in `held`.
            let len = this.held.len();
            this.held.resize(len + 8192, 0);
            let mut rb = ReadBuf::new(&mut this.held[len..]);
            let polled = Pin::new(&mut this.io).poll_read(cx, &mut rb);
            let got = rb.filled().len();
            this.held.truncate(len + got);
            if polled?.is_pending() {
                return this.idle(cx);
            }
            if got == 0 {
                // The client ended mid-head: hyper gets what there is and sees the end.
                this.ready = this.held.len();
                this.after = After::Eof;
                continue;
            }
            let step = this.framing.judge(&this.held);
            this.decided(step);
            if this.ready == 0 && matches!(this.after, After::Read) {
                continue;
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Checked<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judge_all(input: &[u8]) -> Step {
        Framing::new(65536).judge(input)
    }

    /// Feeds `input` one byte at a time, as a slow client would, re-presenting undecided bytes.
    fn judge_bytewise(input: &[u8]) -> (usize, Option<Step>) {
        let mut f = Framing::new(65536);
        let (mut passed, mut pending) = (0, Vec::new());
        for &b in input {
            pending.push(b);
            match f.judge(&pending) {
                Step::More(n) => {
                    passed += n;
                    pending.drain(..n);
                }
                other => return (passed, Some(other)),
            }
        }
        (passed, None)
    }

    #[test]
    fn well_framed_requests_pass_whole() {
        let cases: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
            b"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\nhello",
            b"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
            b"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n0\r\n\r\n",
            b"GET /a HTTP/1.0\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\nX:\t v \r\n\r\n",
        ];
        for case in cases {
            assert_eq!(
                judge_all(case),
                Step::More(case.len()),
                "{:?}",
                String::from_utf8_lossy(case)
            );
            assert_eq!(
                judge_bytewise(case),
                (case.len(), None),
                "{:?}",
                String::from_utf8_lossy(case)
            );
        }
    }

    #[test]
    fn ambiguous_heads_are_refused_before_any_byte_of_them_passes() {
        let good = b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n";
        let cases: &[(&[u8], &str)] = &[
            (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", "Content-Length with"),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", "Content-Length with"),
            (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", "differing"),
            (b"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n", "invalid Content-Length"),
            (b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n", "invalid Content-Length"),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "other than chunked"),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", "more than one"),
            (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", "HTTP/1.0"),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n", "obs-fold"),
            (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 3\r\n\r\n", "header name"),
            (b"GET / HTTP/1.1\r\nHo(st: a\r\n\r\n", "header name"),
            (b"GET / HTTP/1.1\r\nHost: a\nX: 1\r\n\r\n", "bare LF"),
            (b"GET / HTTP/1.1\nHost: a\n\n", "bare LF"),
            (b"GET / HTTP/1.1\r\nHost: a\rX: 1\r\n\r\n", "control character"),
            (b"GET / HTTP/1.1\r\nHost: a\x00\r\n\r\n", "control character"),
            (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", "request line"),
            (b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", "version"),
            (b"GET / HTTP/1.1\r\nHost a\r\n\r\n", "colon"),
        ];
        for (case, why) in cases {
            let mut input = good.to_vec();
            input.extend_from_slice(case);
            input.extend_from_slice(b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n");
            match judge_all(&input) {
                Step::RefuseHead(n, reason) => {
                    assert_eq!(n, good.len(), "{:?}", String::from_utf8_lossy(case));
                    assert!(
                        reason.contains(why),
                        "{reason:?} for {:?}",
                        String::from_utf8_lossy(case)
                    );
                }
                other => panic!("{other:?} for {:?}", String::from_utf8_lossy(case)),
            }
            let (passed, step) = judge_bytewise(&input);
            assert_eq!(passed, good.len(), "{:?}", String::from_utf8_lossy(case));
            assert!(matches!(step, Some(Step::RefuseHead(..))), "{step:?}");
        }
    }

    #[test]
    fn broken_chunked_bodies_stop_at_the_bad_byte() {
        let head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        let cases: &[(&[u8], usize, &str)] = &[
            (b"zz\r\nhello\r\n0\r\n\r\n", 0, "chunk size"),
            (b"\r\n", 0, "chunk size"),
            (b"-5\r\nhello\r\n0\r\n\r\n", 0, "chunk size"),
            (b"10000000000000000\r\n", 15, "too large"),
            (b"5\nhello\r\n0\r\n\r\n", 1, "chunk size"),
            (b"5\r\nhelloX\r\n0\r\n\r\n", 8, "longer than its size"),
            (b"3\r\nhello\r\n0\r\n\r\n", 6, "longer than its size"),
            (b"5\r\nhello\n0\r\n\r\n", 8, "bare LF"),
            (b"5\r\nhello\r\n0\r\nX: 1\n\r\n", 17, "trailer"),
            (b"5\r\nhello\r\n0\r\n\n", 13, "trailer"),
        ];
        for (body, bad_at, why) in cases {
            let mut input = head.to_vec();
            input.extend_from_slice(body);
            input.extend_from_slice(b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n");
            match judge_all(&input) {
                Step::RefuseBody(n, reason) => {
                    assert_eq!(
                        n,
                        head.len() + bad_at,
                        "{:?}",
                        String::from_utf8_lossy(body)
                    );
                    assert!(
                        reason.contains(why),
                        "{reason:?} for {:?}",
                        String::from_utf8_lossy(body)
                    );
                }
                other => panic!("{other:?} for {:?}", String::from_utf8_lossy(body)),
            }
        }
    }

    #[test]
    fn an_upgrade_request_waits_for_its_answer() {
        let req =
            b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n";
        let mut input = req.to_vec();
        input.extend_from_slice(b"\x81\x05hello");
        let mut f = Framing::new(65536);
        assert_eq!(f.judge(&input), Step::Await(req.len(), 1));
        f.verdict(true);
        assert_eq!(f.judge(b"\x81\x05hello"), Step::More(7));

        // Refused upgrade: HTTP/1 again, and checked again.
        let mut f = Framing::new(65536);
        let next = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut input = req.to_vec();
        input.extend_from_slice(next);
        assert_eq!(f.judge(&input), Step::Await(req.len(), 1));
        f.verdict(false);
        assert!(matches!(f.judge(next), Step::RefuseHead(0, _)));
    }

    #[test]
    fn the_h2_preface_and_oversized_heads_pass_through() {
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04";
        assert_eq!(judge_all(preface), Step::More(preface.len()));
        // Only as the first bytes of a connection.
        let mut input = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
        let first = input.len();
        input.extend_from_slice(preface);
        assert!(matches!(judge_all(&input), Step::RefuseHead(n, _) if n == first));
        // A head over the limit goes to hyper, which answers 431.
        let mut f = Framing::new(64);
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(100));
        assert_eq!(f.judge(long.as_bytes()), Step::More(long.len()));
    }

    #[test]
    fn a_head_in_pieces_is_held_until_complete() {
        let mut f = Framing::new(65536);
        assert_eq!(f.judge(b"GET / HTTP/1.1\r\nHo"), Step::More(0));
        assert_eq!(f.judge(b"GET / HTTP/1.1\r\nHost: a\r\n\r"), Step::More(0));
        assert_eq!(
            f.judge(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET"),
            Step::More(27)
        );
    }
}
