//! Recognises a connection pooler or proxy between pgskein and PostgreSQL,
//! without a round trip of its own.
//!
//! When a connection starts, PostgreSQL names the backend that serves it in
//! its cancel key (`BackendKeyData`): the same process id that
//! `pg_backend_pid()` returns afterwards. A pooler cannot pass that key on,
//! since a client's queries may run on any of its server connections, so it
//! hands the client a key of its own (PgBouncer does in both pooling modes, and
//! any pooler that shares server connections must, to route cancel requests).
//! A connection whose key does not name the backend that answers goes through
//! such a pooler; a direct connection, or a TCP-level proxy that passes the
//! startup through, always has them equal.
//!
//! The key is private to tokio-postgres's `CancelToken`, so it is read the
//! only public way: the token writes the cancel request it would send into an
//! in-memory stream here, and nothing leaves the process.
//!
//! Invariant: this module only reads; it sends nothing to any server.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::Client;
use tokio_postgres::tls::{ChannelBinding, TlsConnect, TlsStream};

/// The protocol codes of an `SSLRequest` and a `CancelRequest`.
const SSL_REQUEST: u32 = 80_877_103;
const CANCEL_REQUEST: u32 = 80_877_102;

/// The backend process id the connection was given when it started: what
/// `pg_backend_pid()` returns on a direct connection. `None` only if the
/// token wrote something this module does not understand.
pub(crate) async fn startup_pid(client: &Client) -> Option<i32> {
    let mut capture = Capture::default();
    client.cancel_token().cancel_query_raw(&mut capture, Passthrough).await.ok()?;
    capture.cancel_pid()
}

/// An in-memory stream that accepts what is written and answers an
/// `SSLRequest` with "go ahead", so that the request is written whatever the
/// connection's `sslmode`.
#[derive(Default)]
struct Capture {
    written: Vec<u8>,
    answered: bool,
}

impl Capture {
    /// The pid of the `CancelRequest` written last: length 16, the code, the pid, the secret.
    fn cancel_pid(&self) -> Option<i32> {
        let start = self.written.len().checked_sub(16)?;
        let request = &self.written[start..];
        let word = |i: usize| u32::from_be_bytes(request[i..i + 4].try_into().expect("4 bytes"));
        (word(0) == 16 && word(4) == CANCEL_REQUEST).then(|| word(8) as i32)
    }

    fn asked_for_tls(&self) -> bool {
        self.written.len() >= 8 && self.written[4..8] == SSL_REQUEST.to_be_bytes()
    }
}

impl AsyncRead for Capture {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.asked_for_tls() && !self.answered {
            self.answered = true;
            buf.put_slice(b"S");
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Capture {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        self.written.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A "TLS" connector that wraps nothing: the request is only captured.
struct Passthrough;

impl<S: AsyncRead + AsyncWrite + Unpin> TlsConnect<S> for Passthrough {
    type Stream = Plain<S>;
    type Error = io::Error;
    type Future = std::future::Ready<io::Result<Plain<S>>>;

    fn connect(self, stream: S) -> Self::Future {
        std::future::ready(Ok(Plain(stream)))
    }
}

struct Plain<S>(S);

impl<S: AsyncRead + Unpin> AsyncRead for Plain<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Plain<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for Plain<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancel_request_after_an_ssl_request_gives_its_pid() {
        let mut c = Capture::default();
        c.written.extend_from_slice(&8u32.to_be_bytes());
        c.written.extend_from_slice(&SSL_REQUEST.to_be_bytes());
        assert!(c.asked_for_tls());
        for word in [16, CANCEL_REQUEST, (-7i32) as u32, 99] {
            c.written.extend_from_slice(&word.to_be_bytes());
        }
        assert_eq!(c.cancel_pid(), Some(-7));
    }

    #[test]
    fn anything_else_gives_no_pid() {
        let mut c = Capture::default();
        assert_eq!(c.cancel_pid(), None);
        c.written.extend_from_slice(&[0; 16]);
        assert_eq!(c.cancel_pid(), None);
    }
}
