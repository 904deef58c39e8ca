//! The cancel key a connection was given, read off the wire while it
//! starts: what tells a pooler from PostgreSQL itself (see `lock::path`).
//!
//! PostgreSQL sends each new session its backend's process id in
//! BackendKeyData, the same number `pg_backend_pid()` returns; PgBouncer
//! (every pool mode), pgcat, Odyssey and Supavisor send a key of their own.
//! rust-postgres keeps that key private to its cancel token, and the sync
//! client's token cannot be read at all, so the key is read where the
//! bytes pass: in the TLS connector, the one place rust-postgres hands its
//! socket to.
//!
//! rust-postgres calls the connector only when TLS is negotiated, so for
//! a TCP target [`prepare`] tells it `sslmode=require` with *direct*
//! negotiation (the socket comes to the connector untouched), and the
//! connector does what rust-postgres would have done for the mode asked
//! ([`Wire`]): nothing for `disable`; an SSLRequest, then TLS on `S`,
//! plain on anything else for `allow`/`prefer` and an error for `require`
//! and the `verify-*` modes; TLS at once for `sslnegotiation=direct`. The
//! TLS itself is the wrapped connector's, certificate checks and client
//! certificate included, untouched; channel binding passes through. The
//! stream is then watched until the start-up ends (ReadyForQuery), and
//! passed through as it is from then on.
//!
//! Not for Unix sockets, nor hosts given only by `hostaddr`: rust-postgres
//! refuses TLS without a host name before it calls the connector. There
//! the connector is called (if ever) for the handshake alone, as before,
//! and the key is not read.

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use postgres::config::{Host, SslMode, SslNegotiation};
use postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use postgres::Socket;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// What the connector does with the socket before the start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// rust-postgres negotiated (or refused) TLS itself, as without this
    /// module; the connector does the handshake when asked, and reads no key.
    Delegate,
    /// `sslmode=disable`: plain.
    Plain,
    /// `allow`, `prefer`: TLS if the server takes the SSLRequest.
    Prefer,
    /// `require`, `verify-ca`, `verify-full`: TLS, or no connection.
    Require,
    /// `sslnegotiation=direct`: TLS from the first byte.
    DirectTls,
}

/// Why a connection's key is not read.
pub const UNIX_SOCKET: &str = "unix_socket";
/// Same, for a host given by `hostaddr` alone.
pub const NO_HOST_NAME: &str = "no_host_name";
/// Same, for TLS settings rust-postgres handles (or refuses) itself.
pub const OTHER_TLS: &str = "tls_settings";

/// Makes `config` hand every TCP connection's socket to the connector,
/// once its `sslmode` is set as it would go to rust-postgres; the wire to
/// give the connector, or why the key cannot be read on this target
/// (`config` is then left alone, for [`Wire::Delegate`]).
pub fn prepare(config: &mut postgres::Config) -> Result<Wire, &'static str> {
    if config
        .get_hosts()
        .iter()
        .any(|h| matches!(h, Host::Unix(_)))
    {
        return Err(UNIX_SOCKET);
    }
    if config.get_hosts().is_empty() {
        return Err(NO_HOST_NAME);
    }
    let wire = match (config.get_ssl_mode(), config.get_ssl_negotiation()) {
        (SslMode::Disable, _) => Wire::Plain,
        (SslMode::Prefer, SslNegotiation::Postgres) => Wire::Prefer,
        (SslMode::Require, SslNegotiation::Postgres) => Wire::Require,
        (SslMode::Require, SslNegotiation::Direct) => Wire::DirectTls,
        // `prefer` with direct negotiation, which rust-postgres refuses
        // with its own message: left to it.
        _ => return Err(OTHER_TLS),
    };
    config.ssl_mode(SslMode::Require);
    config.ssl_negotiation(SslNegotiation::Direct);
    Ok(wire)
}

/// The cancel key a connection was given, as far as it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelKey {
    /// BackendKeyData's process id.
    Pid(i32),
    /// The start-up ended without a BackendKeyData, which PostgreSQL
    /// always sends: something else answered.
    Missing,
    /// Not read on this target (why: [`UNIX_SOCKET`], …).
    NotRead(&'static str),
}

/// The process id of the last BackendKeyData the connector's streams saw.
#[derive(Debug)]
pub struct KeySeen(AtomicI64);

const UNSEEN: i64 = i64::MIN;

impl KeySeen {
    pub fn pid(&self) -> Option<i32> {
        match self.0.load(Ordering::Acquire) {
            UNSEEN => None,
            pid => i32::try_from(pid).ok(),
        }
    }
}

/// The socket's own I/O failed before any TLS (the SSLRequest and its
/// answer): rust-postgres reports it as a TLS error, which this tells
/// apart from the handshake's own failures (a reset is worth another try,
/// a certificate is not).
#[derive(Debug)]
pub struct NegotiationIo(pub io::Error);

impl fmt::Display for NegotiationIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Error for NegotiationIo {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.0)
    }
}

/// Wraps a connector (the rustls one). Give each connection its own, so
/// that its [`KeySeen`] is that connection's.
#[derive(Clone)]
pub struct SniffingConnect<M> {
    inner: M,
    wire: Wire,
    seen: Arc<KeySeen>,
}

impl<M> SniffingConnect<M> {
    pub fn new(inner: M, wire: Wire) -> SniffingConnect<M> {
        SniffingConnect {
            inner,
            wire,
            seen: Arc::new(KeySeen(AtomicI64::new(UNSEEN))),
        }
    }

    /// What this connector's connections were given, so far.
    pub fn seen(&self) -> Arc<KeySeen> {
        self.seen.clone()
    }
}

impl<M> MakeTlsConnect<Socket> for SniffingConnect<M>
where
    M: MakeTlsConnect<Socket>,
    M::TlsConnect: Send + 'static,
    <M::TlsConnect as TlsConnect<Socket>>::Future: Send,
    M::Stream: Send,
{
    type Stream = Sniffed<M::Stream>;
    type TlsConnect = SniffingTlsConnect<M::TlsConnect>;
    type Error = M::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Self::TlsConnect, M::Error> {
        Ok(SniffingTlsConnect {
            inner: self.inner.make_tls_connect(domain)?,
            wire: self.wire,
            seen: self.seen.clone(),
        })
    }
}

pub struct SniffingTlsConnect<T> {
    inner: T,
    wire: Wire,
    seen: Arc<KeySeen>,
}

type BoxError = Box<dyn Error + Send + Sync>;

/// SSLRequest: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

impl<T> TlsConnect<Socket> for SniffingTlsConnect<T>
where
    T: TlsConnect<Socket> + Send + 'static,
    T::Future: Send,
    T::Stream: Send,
{
    type Stream = Sniffed<T::Stream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Sniffed<T::Stream>, BoxError>> + Send>>;

    fn connect(self, mut socket: Socket) -> Self::Future {
        Box::pin(async move {
            let SniffingTlsConnect { inner, wire, seen } = self;
            let tls = match wire {
                Wire::Plain => false,
                Wire::Delegate | Wire::DirectTls => true,
                Wire::Prefer | Wire::Require => {
                    let io = |e| Box::new(NegotiationIo(e)) as BoxError;
                    socket.write_all(&SSL_REQUEST).await.map_err(io)?;
                    socket.flush().await.map_err(io)?;
                    // Exactly one byte: anything after it is the TLS
                    // handshake's, never plain text to trust.
                    let answer = socket.read_u8().await.map_err(io)?;
                    match answer {
                        b'S' => true,
                        _ if wire == Wire::Require => {
                            return Err("server does not support TLS".into())
                        }
                        _ => false,
                    }
                }
            };
            let inner = if tls {
                Inner::Tls(inner.connect(socket).await.map_err(Into::into)?)
            } else {
                Inner::Plain(socket)
            };
            let watch = (wire != Wire::Delegate).then(Watch::default);
            Ok(Sniffed { inner, watch, seen })
        })
    }
}

enum Inner<S> {
    Plain(Socket),
    Tls(S),
}

/// The connection's stream, its start-up watched for the key.
pub struct Sniffed<S> {
    inner: Inner<S>,
    watch: Option<Watch>,
    seen: Arc<KeySeen>,
}

/// Reads backend messages as they pass (Byte1 type, Int32 length counting
/// itself, body) and keeps the first four body bytes of BackendKeyData.
#[derive(Default)]
struct Watch {
    header: [u8; 5],
    header_len: usize,
    body_left: usize,
    key: [u8; 4],
    key_len: usize,
    found: Option<i32>,
}

enum Step {
    More,
    /// The start-up ended (ReadyForQuery, or an error), with the key if
    /// one came.
    Done(Option<i32>),
}

impl Watch {
    fn feed(&mut self, mut bytes: &[u8]) -> Step {
        loop {
            if self.header_len < 5 {
                if bytes.is_empty() {
                    return Step::More;
                }
                let n = (5 - self.header_len).min(bytes.len());
                self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
                self.header_len += n;
                bytes = &bytes[n..];
                if self.header_len < 5 {
                    return Step::More;
                }
                let len = u32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]);
                self.body_left = (len as usize).saturating_sub(4);
                self.key_len = 0;
            }
            let n = self.body_left.min(bytes.len());
            if self.header[0] == b'K' && self.key_len < 4 {
                let k = n.min(4 - self.key_len);
                self.key[self.key_len..self.key_len + k].copy_from_slice(&bytes[..k]);
                self.key_len += k;
                if self.key_len == 4 {
                    self.found = Some(i32::from_be_bytes(self.key));
                }
            }
            self.body_left -= n;
            bytes = &bytes[n..];
            if self.body_left > 0 {
                return Step::More;
            }
            if matches!(self.header[0], b'Z' | b'E') {
                return Step::Done(self.found);
            }
            self.header_len = 0;
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Sniffed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = match &mut this.inner {
            Inner::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Inner::Tls(s) => Pin::new(s).poll_read(cx, buf),
        };
        if let (Poll::Ready(Ok(())), Some(watch)) = (&result, this.watch.as_mut()) {
            if let Step::Done(key) = watch.feed(&buf.filled()[before..]) {
                if let Some(pid) = key {
                    this.seen.0.store(i64::from(pid), Ordering::Release);
                }
                this.watch = None;
            }
        }
        result
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Sniffed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().inner {
            Inner::Plain(s) => Pin::new(s).poll_write(cx, data),
            Inner::Tls(s) => Pin::new(s).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Plain(s) => Pin::new(s).poll_flush(cx),
            Inner::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Inner::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

impl<S: TlsStream + Unpin> TlsStream for Sniffed<S> {
    /// A plain stream binds nothing, as rust-postgres's own plain stream.
    fn channel_binding(&self) -> ChannelBinding {
        match &self.inner {
            Inner::Plain(_) => ChannelBinding::none(),
            Inner::Tls(s) => s.channel_binding(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn startup(pid: i32) -> Vec<u8> {
        let mut b = vec![b'R', 0, 0, 0, 8, 0, 0, 0, 0];
        b.extend_from_slice(&[b'S', 0, 0, 0, 25]);
        b.extend_from_slice(b"server_version\x0015.18\x00");
        b.extend_from_slice(&[b'K', 0, 0, 0, 12]);
        b.extend_from_slice(&pid.to_be_bytes());
        b.extend_from_slice(&[1, 2, 3, 4]);
        b.extend_from_slice(&[b'Z', 0, 0, 0, 5, b'I']);
        b
    }

    fn watched(bytes: &[u8], chunk: usize) -> Option<Option<i32>> {
        let mut watch = Watch::default();
        for piece in bytes.chunks(chunk) {
            if let Step::Done(key) = watch.feed(piece) {
                return Some(key);
            }
        }
        None
    }

    #[test]
    fn the_key_is_found_however_the_reads_split_the_start_up() {
        for pid in [1, 23_929, i32::MAX, -123_456] {
            let bytes = startup(pid);
            for chunk in 1..=bytes.len() {
                assert_eq!(watched(&bytes, chunk), Some(Some(pid)), "chunk {chunk}");
            }
        }
    }

    #[test]
    fn the_watch_ends_at_ready_for_query_or_an_error_without_a_key() {
        let bytes = [b'R', 0, 0, 0, 8, 0, 0, 0, 0, b'Z', 0, 0, 0, 5, b'I'];
        for chunk in 1..=bytes.len() {
            assert_eq!(watched(&bytes, chunk), Some(None));
        }
        let mut error = vec![b'E', 0, 0, 0, 9];
        error.extend_from_slice(b"SFATA");
        assert_eq!(watched(&error, 3), Some(None));
        // Cut short: still watching.
        assert_eq!(watched(&startup(7)[..20], 4), None);
    }

    #[test]
    fn tcp_hosts_go_to_the_connector_and_the_rest_stay_as_they_were() {
        let prepared = |url: &str, mode: SslMode| {
            let mut config: postgres::Config = url.parse().unwrap();
            config.ssl_mode(mode);
            let wire = prepare(&mut config);
            (wire, config.get_ssl_mode(), config.get_ssl_negotiation())
        };
        use SslMode::{Disable, Prefer, Require};
        use SslNegotiation::{Direct, Postgres};
        let tcp = "postgres://u@db.example/app";
        assert_eq!(prepared(tcp, Disable), (Ok(Wire::Plain), Require, Direct));
        assert_eq!(prepared(tcp, Prefer), (Ok(Wire::Prefer), Require, Direct));
        assert_eq!(prepared(tcp, Require), (Ok(Wire::Require), Require, Direct));
        let direct = "postgres://u@db.example/app?sslnegotiation=direct";
        assert_eq!(
            prepared(direct, Require),
            (Ok(Wire::DirectTls), Require, Direct)
        );
        assert_eq!(
            prepared(direct, Prefer),
            (Err(OTHER_TLS), Prefer, Direct),
            "rust-postgres refuses it with its own words"
        );
        let two = "postgres://u@a.example,b.example/app";
        assert_eq!(prepared(two, Prefer), (Ok(Wire::Prefer), Require, Direct));
        let unix = "host=/run/postgresql,db.example user=u";
        assert_eq!(prepared(unix, Prefer), (Err(UNIX_SOCKET), Prefer, Postgres));
        let addr = "hostaddr=127.0.0.1 user=u";
        assert_eq!(
            prepared(addr, Prefer),
            (Err(NO_HOST_NAME), Prefer, Postgres)
        );
        let both = "host=db.example hostaddr=127.0.0.1 user=u";
        assert_eq!(prepared(both, Prefer), (Ok(Wire::Prefer), Require, Direct));
    }
}
