//! The HTTP/2 connection preface, read ahead of hyper so that a client connection is served the
//! protocol its listener agreed to: on TLS, exactly what ALPN chose (`h2`: HTTP/2 only, and a
//! client that does not open with the preface gets GOAWAY with PROTOCOL_ERROR, RFC 9113 §3.4;
//! `http/1.1` or nothing: HTTP/1.1 only); on a plain listener with HTTP/2 on, HTTP/2 with prior
//! knowledge when the preface comes, HTTP/1.1 otherwise.
//!
//! What this module must not do: look past the preface, or decide which protocol a listener
//! offers (that is the config's and `tls`'s ALPN list).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// The client connection preface of RFC 9113 §3.4.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the server sends a client on `h2` whose preface is wrong: its own (empty) SETTINGS, then
/// GOAWAY with last stream 0 and PROTOCOL_ERROR (0x1).
const GOAWAY_PROTOCOL_ERROR: &[u8] = &[
    0, 0, 0, 0x4, 0, 0, 0, 0, 0, // SETTINGS, empty
    0, 0, 8, 0x7, 0, 0, 0, 0, 0, // GOAWAY, 8 bytes, stream 0
    0, 0, 0, 0, // last stream id
    0, 0, 0, 1, // PROTOCOL_ERROR
];

/// What the first bytes of a connection were.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// The HTTP/2 preface, whole.
    H2,
    /// Something else (or the client closed first): not HTTP/2 with prior knowledge.
    Other,
}

/// Reads up to the length of the HTTP/2 preface, stopping at the first byte that differs, within
/// `timeout`. The bytes read are handed back in front of the stream.
pub async fn read<IO: AsyncRead + Unpin>(
    mut io: IO,
    timeout: Duration,
) -> io::Result<(Opening, Rewind<IO>)> {
    let mut buf = [0u8; H2_PREFACE.len()];
    let mut filled = 0;
    let opening = tokio::time::timeout(timeout, async {
        while filled < H2_PREFACE.len() {
            let n = io.read(&mut buf[filled..]).await?;
            if n == 0 || buf[filled..filled + n] != H2_PREFACE[filled..filled + n] {
                filled += n;
                return Ok::<_, io::Error>(Opening::Other);
            }
            filled += n;
        }
        Ok(Opening::H2)
    })
    .await
    .map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            "no connection preface within header_read_timeout",
        )
    })??;
    let read = Bytes::copy_from_slice(&buf[..filled]);
    Ok((opening, Rewind { read, io }))
}

/// Ends an `h2` connection that did not open with the preface: GOAWAY(PROTOCOL_ERROR), then close.
pub async fn refuse<IO: AsyncWrite + Unpin>(io: &mut IO) {
    let _ = io.write_all(GOAWAY_PROTOCOL_ERROR).await;
    let _ = io.flush().await;
    let _ = io.shutdown().await;
}

/// A stream with bytes already read from it put back in front.
#[derive(Debug)]
pub struct Rewind<IO> {
    read: Bytes,
    io: IO,
}

impl<IO> Rewind<IO> {
    /// `io` with nothing put back.
    pub fn new(io: IO) -> Rewind<IO> {
        Rewind {
            read: Bytes::new(),
            io,
        }
    }

    pub fn get_mut(&mut self) -> &mut IO {
        &mut self.io
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Rewind<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.read.is_empty() {
            let n = this.read.len().min(buf.remaining());
            buf.put_slice(&this.read[..n]);
            this.read.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Rewind<IO> {
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

    #[tokio::test]
    async fn the_preface_is_recognised_and_every_byte_read_is_handed_back() {
        for (input, want) in [
            (
                &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04"[..],
                Opening::H2,
            ),
            (b"GET / HTTP/1.1\r\n\r\n", Opening::Other),
            (b"PRI * HTTP/2.0\r\n\r\nXX", Opening::Other),
            (b"PR", Opening::Other),
        ] {
            let (mut client, server) = tokio::io::duplex(64);
            client.write_all(input).await.unwrap();
            client.shutdown().await.unwrap();
            let (opening, mut rest) = read(server, Duration::from_secs(5)).await.unwrap();
            assert_eq!(opening, want, "{input:?}");
            let mut all = Vec::new();
            rest.read_to_end(&mut all).await.unwrap();
            assert_eq!(all, input);
        }
    }
}
