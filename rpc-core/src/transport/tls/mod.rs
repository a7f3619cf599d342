//! TLS and mutual TLS (feature `tls`): rustls with the ring provider, no OpenSSL. TLS 1.3
//! only, unless [`ServerTlsConfig::tls12`] / [`ClientTlsConfig::tls12`] allow 1.2 too.
//!
//! A server gets a certificate and its key as an [`Identity`]; with
//! [`ServerTlsConfig::client_ca_root`] it also requires each client to present a certificate
//! signed by that CA (mutual TLS), and handlers see who it is in
//! [`Context::tls`](crate::ServerContext::tls). A client trusts the CAs it is given with
//! [`ClientTlsConfig::ca_certificate`], checks the server's name (the host of the address it
//! dials, or [`ClientTlsConfig::domain_name`]), and presents an identity of its own with
//! [`ClientTlsConfig::identity`].
//!
//! ```no_run
//! use rpc_core::{Channel, Server};
//! use rpc_core::transport::tls::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let ca = Certificate::from_pem(std::fs::read("ca.pem")?)?;
//!
//! // The server: its own certificate, and clients must have one signed by `ca`.
//! let server_identity = Identity::from_pem(std::fs::read("server.pem")?, std::fs::read("server.key")?)?;
//! let tls = ServerTlsConfig::new(server_identity).client_ca_root(ca.clone());
//! let server = Server::builder().tls_config(tls)?; // .add_service(...)
//! tokio::spawn(server.serve("0.0.0.0:50051"));
//!
//! // A client: trusts `ca`, checks the server's name, and presents its own certificate.
//! let client_identity = Identity::from_pem(std::fs::read("client.pem")?, std::fs::read("client.key")?)?;
//! let tls = ClientTlsConfig::new().ca_certificate(ca).identity(client_identity);
//! let channel = Channel::builder("greeter.internal:50051").tls_config(tls)?.connect().await?;
//! # Ok(()) }
//! ```
//!
//! Certificates rotate without a restart: keep a clone of the [`TlsAcceptor`] or
//! [`TlsConnector`] given to the server or channel, and [`reload`](TlsAcceptor::reload) it or
//! let it [`watch_files`](TlsAcceptor::watch_files); new handshakes use the new material,
//! connections already open keep theirs.
//!
//! Both sides offer the ALPN protocol [`ALPN_PROTOCOL`] (`rpc/1`), so a client of another
//! protocol (an HTTP/2 one, say) fails in the handshake rather than after it. Anything the
//! configurations here do not cover can be set on a `rustls` configuration of your own, with
//! [`TlsAcceptor::from`] and [`TlsConnector::from_rustls`].

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

pub use rustls;

use super::{Address, BoxIo, Connector, Io, TlsInfo};

mod reload;
mod subject;

use reload::Current;
pub use reload::{ReloadOutcome, TlsWatcher};

/// The ALPN protocol both sides offer: the protocol's name and major version.
pub const ALPN_PROTOCOL: &[u8] = b"rpc/1";

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The PEM text holds no certificate.
    #[error("no certificate found in the PEM input")]
    NoCertificate,
    /// The PEM text holds no private key (PKCS#8, PKCS#1 or SEC1).
    #[error("no private key found in the PEM input")]
    NoPrivateKey,
    /// The PEM text does not parse.
    #[error("invalid PEM: {0}")]
    Pem(String),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// A client configuration trusts no certificate authority, so it could verify no server.
    #[error("no trusted CA: add one with ClientTlsConfig::ca_certificate (or trust the system's store)")]
    NoTrustedRoots,
    /// The name to check the server's certificate against is not a DNS name or an IP address.
    #[error("invalid server name {0:?}")]
    InvalidServerName(String),
    /// rustls refused the configuration (a key that does not match its certificate, an
    /// unusable CA certificate...).
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
    /// rustls could not build the client-certificate verifier.
    #[error("cannot verify client certificates: {0}")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
}

/// One or more X.509 certificates (a CA bundle, or a certificate chain), DER-encoded.
#[derive(Clone, PartialEq, Eq)]
pub struct Certificate {
    ders: Vec<CertificateDer<'static>>,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate").field("certificates", &self.ders.len()).finish()
    }
}

impl Certificate {
    /// Every certificate in PEM text (`-----BEGIN CERTIFICATE-----` blocks); other blocks are
    /// skipped. Fails if there is none.
    pub fn from_pem(pem: impl AsRef<[u8]>) -> Result<Certificate, TlsError> {
        let ders = CertificateDer::pem_slice_iter(pem.as_ref())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| TlsError::Pem(err.to_string()))?;
        if ders.is_empty() {
            return Err(TlsError::NoCertificate);
        }
        Ok(Certificate { ders })
    }

    /// The certificates in a PEM file.
    pub fn from_pem_file(path: impl AsRef<Path>) -> Result<Certificate, TlsError> {
        Certificate::from_pem(read(path.as_ref())?)
    }

    /// One DER-encoded certificate.
    pub fn from_der(der: impl Into<Vec<u8>>) -> Certificate {
        Certificate { ders: vec![CertificateDer::from(der.into())] }
    }

    /// The certificates, DER-encoded, in the order given.
    pub fn ders(&self) -> impl Iterator<Item = &[u8]> {
        self.ders.iter().map(|der| der.as_ref())
    }

    fn roots(certificates: &[Certificate]) -> Result<RootCertStore, TlsError> {
        let mut roots = RootCertStore::empty();
        for der in certificates.iter().flat_map(|c| c.ders.iter()) {
            roots.add(der.clone())?;
        }
        Ok(roots)
    }
}

/// A certificate chain (leaf first) and its private key: who a server, or a client in mutual
/// TLS, says it is.
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity { chain: self.chain.clone(), key: self.key.clone_key() }
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity").field("certificates", &self.chain.len()).finish_non_exhaustive()
    }
}

impl Identity {
    /// An identity from PEM text: the certificate chain (leaf first, then any
    /// intermediates) and the private key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem(chain: impl AsRef<[u8]>, key: impl AsRef<[u8]>) -> Result<Identity, TlsError> {
        let chain = Certificate::from_pem(chain)?.ders;
        let key = PrivateKeyDer::from_pem_slice(key.as_ref()).map_err(|err| match err {
            rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoPrivateKey,
            err => TlsError::Pem(err.to_string()),
        })?;
        Ok(Identity { chain, key })
    }

    /// An identity from two PEM files: the certificate chain and the private key.
    pub fn from_pem_files(chain: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Identity, TlsError> {
        Identity::from_pem(read(chain.as_ref())?, read(key.as_ref())?)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::File { path: path.display().to_string(), source })
}

/// The crypto provider every configuration here uses: ring's.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The TLS versions a configuration allows: 1.3, and 1.2 if asked for.
fn versions(tls12: bool) -> &'static [&'static rustls::SupportedProtocolVersion] {
    static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    if tls12 { rustls::ALL_VERSIONS } else { &TLS13_ONLY }
}

/// A server's TLS settings: its identity, and whether (and by which CAs) clients must prove
/// theirs. Build it into a server with
/// [`ServerBuilder::tls_config`](crate::server::ServerBuilder::tls_config).
#[derive(Debug, Clone)]
pub struct ServerTlsConfig {
    identity: Identity,
    client_cas: Vec<Certificate>,
    client_auth_optional: bool,
    tls12: bool,
}

impl ServerTlsConfig {
    /// TLS with `identity` as the server's certificate and key; clients are not asked for
    /// certificates.
    pub fn new(identity: Identity) -> ServerTlsConfig {
        ServerTlsConfig { identity, client_cas: Vec::new(), client_auth_optional: false, tls12: false }
    }

    /// Mutual TLS: clients must present a certificate that chains to `ca` (call again to
    /// trust several CAs). A client without one, or with one from another CA or expired,
    /// fails the handshake and never reaches a handler.
    pub fn client_ca_root(mut self, ca: Certificate) -> ServerTlsConfig {
        self.client_cas.push(ca);
        self
    }

    /// With [`client_ca_root`](Self::client_ca_root): lets clients without a certificate in
    /// too (those with one must still present a valid one). Handlers tell them apart by
    /// [`TlsInfo::peer_certificates`] being empty.
    pub fn client_auth_optional(mut self, optional: bool) -> ServerTlsConfig {
        self.client_auth_optional = optional;
        self
    }

    /// Also accepts TLS 1.2 clients (off by default: TLS 1.3 only).
    pub fn tls12(mut self, allow: bool) -> ServerTlsConfig {
        self.tls12 = allow;
        self
    }

    /// The acceptor: fails if the key does not match the certificate, or a CA certificate
    /// is unusable.
    pub fn build(&self) -> Result<TlsAcceptor, TlsError> {
        let provider = provider();
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(versions(self.tls12))?;
        let builder = if self.client_cas.is_empty() {
            builder.with_no_client_auth()
        } else {
            let roots = Arc::new(Certificate::roots(&self.client_cas)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider);
            let verifier =
                if self.client_auth_optional { verifier.allow_unauthenticated() } else { verifier };
            builder.with_client_cert_verifier(verifier.build()?)
        };
        let mut config =
            builder.with_single_cert(self.identity.chain.clone(), self.identity.key.clone_key())?;
        config.alpn_protocols = vec![ALPN_PROTOCOL.to_vec()];
        Ok(TlsAcceptor { config: Current::new(Arc::new(config)) })
    }
}

/// Runs the server's side of TLS handshakes. Made by [`ServerTlsConfig::build`], or from a
/// `rustls` configuration of your own with `TlsAcceptor::from(Arc<rustls::ServerConfig>)`.
///
/// Clones share one configuration: keep a clone, give another to
/// [`ServerBuilder::tls`](crate::server::ServerBuilder::tls), and the kept one rotates the
/// server's certificates ([`reload`](Self::reload), [`watch_files`](Self::watch_files)).
#[derive(Clone)]
pub struct TlsAcceptor {
    config: Current<rustls::ServerConfig>,
}

impl fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsAcceptor").field("alpn", &self.config.get().alpn_protocols).finish_non_exhaustive()
    }
}

impl From<Arc<rustls::ServerConfig>> for TlsAcceptor {
    fn from(config: Arc<rustls::ServerConfig>) -> TlsAcceptor {
        TlsAcceptor { config: Current::new(config) }
    }
}

impl TlsAcceptor {
    /// Rotates the server's certificate, key and client CAs without a restart: handshakes
    /// that start afterwards use `config`, connections already open keep the session they
    /// have. If `config` does not build (a key that does not match its certificate, an
    /// unusable CA certificate), nothing changes and the error is returned (and logged).
    ///
    /// A CA taken out of the client CAs turns away new connections from the clients it
    /// signed; their open connections stay until they close (drain or restart the server to
    /// end them at once).
    pub fn reload(&self, config: &ServerTlsConfig) -> Result<(), TlsError> {
        let outcome = self.apply(config);
        log_reload("server", &outcome);
        outcome
    }

    fn apply(&self, config: &ServerTlsConfig) -> Result<(), TlsError> {
        self.config.set(config.build()?.config.get());
        Ok(())
    }

    /// Reloads the configuration that `load` makes whenever one of `files` changes (checked
    /// every `interval`); see [`TlsWatcher`] for how changes are found and failures reported.
    /// `load` reads the files:
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use rpc_core::transport::tls::{Certificate, Identity, ServerTlsConfig, TlsError};
    /// # fn run() -> Result<(), TlsError> {
    /// let load = || -> Result<ServerTlsConfig, TlsError> {
    ///     let identity = Identity::from_pem_files("server.pem", "server.key")?;
    ///     Ok(ServerTlsConfig::new(identity).client_ca_root(Certificate::from_pem_file("ca.pem")?))
    /// };
    /// let acceptor = load()?.build()?;
    /// let watcher = acceptor.watch_files(["server.pem", "server.key", "ca.pem"], Duration::from_secs(10), load);
    /// // Server::builder().tls(acceptor)... ; keep `watcher` for as long as it should watch.
    /// # Ok(()) }
    /// ```
    pub fn watch_files<P, F>(
        &self,
        files: impl IntoIterator<Item = P>,
        interval: Duration,
        load: F,
    ) -> TlsWatcher
    where
        P: Into<PathBuf>,
        F: Fn() -> Result<ServerTlsConfig, TlsError> + Send + 'static,
    {
        let acceptor = self.clone();
        let files = files.into_iter().map(Into::into).collect();
        TlsWatcher::spawn(files, interval, "server", move || acceptor.apply(&load()?))
    }

    /// The server's side of the handshake over `io`: the encrypted stream, and what the
    /// handshake established about the client.
    pub async fn accept<T: Io>(&self, io: T) -> io::Result<(tokio_rustls::server::TlsStream<T>, TlsInfo)> {
        let stream = tokio_rustls::TlsAcceptor::from(self.config.get()).accept(io).await?;
        let (_, session) = stream.get_ref();
        let chain = session.peer_certificates().unwrap_or_default();
        // The leaf has been verified already, so it parses; its names are who the client is.
        let leaf = chain.first().and_then(|der| webpki::EndEntityCert::try_from(der).ok());
        let names =
            |pick: fn(&webpki::EndEntityCert<'_>) -> Vec<String>| leaf.as_ref().map(pick).unwrap_or_default();
        let info = TlsInfo {
            peer_certificates: chain.iter().map(|der| Bytes::copy_from_slice(der)).collect(),
            peer_dns_names: names(|cert| cert.valid_dns_names().map(str::to_owned).collect()),
            peer_uri_names: names(|cert| cert.valid_uri_names().map(str::to_owned).collect()),
            peer_subject: leaf.as_ref().and_then(|cert| subject::subject_text(cert.subject())),
            server_name: session.server_name().map(str::to_owned),
            alpn_protocol: session.alpn_protocol().map(Bytes::copy_from_slice),
            protocol_version: session.protocol_version().and_then(|v| v.as_str()),
        };
        Ok((stream, info))
    }
}

/// A client's TLS settings: which CAs it trusts, the name it expects the server's
/// certificate to have, and (for mutual TLS) its own identity. Build it into a channel with
/// [`ChannelBuilder::tls_config`](crate::client::ChannelBuilder::tls_config).
#[derive(Debug, Clone, Default)]
pub struct ClientTlsConfig {
    cas: Vec<Certificate>,
    #[cfg(feature = "tls-native-roots")]
    system_roots: bool,
    domain_name: Option<String>,
    identity: Option<Identity>,
    tls12: bool,
}

impl ClientTlsConfig {
    /// No trusted CA yet: add at least one with [`ca_certificate`](Self::ca_certificate) (or
    /// trust the system's, with `with_system_roots`).
    pub fn new() -> ClientTlsConfig {
        ClientTlsConfig::default()
    }

    /// Trusts server certificates that chain to `ca` (call again to trust several).
    pub fn ca_certificate(mut self, ca: Certificate) -> ClientTlsConfig {
        self.cas.push(ca);
        self
    }

    /// Also trusts the CAs of the operating system's store (feature `tls-native-roots`): the
    /// files of the distribution's CA bundle on Linux (or those `SSL_CERT_FILE` and
    /// `SSL_CERT_DIR` name), the keychain on macOS, the certificate store on Windows. They are
    /// read when the configuration is built (or reloaded); certificates in the store that do
    /// not parse are skipped. For servers with certificates from a public CA; services of
    /// one organisation usually trust its own CA alone, with
    /// [`ca_certificate`](Self::ca_certificate).
    #[cfg(feature = "tls-native-roots")]
    pub fn with_system_roots(mut self) -> ClientTlsConfig {
        self.system_roots = true;
        self
    }

    /// The name the server's certificate must be valid for, also sent as SNI. By default it
    /// is the host of the address dialed (a DNS name or an IP address); set it for Unix
    /// sockets, and for balanced channels whose instances share a service certificate
    /// (`greeter.internal`) but are registered by IP address.
    pub fn domain_name(mut self, name: impl Into<String>) -> ClientTlsConfig {
        self.domain_name = Some(name.into());
        self
    }

    /// Mutual TLS: presents `identity` when the server asks for a client certificate.
    pub fn identity(mut self, identity: Identity) -> ClientTlsConfig {
        self.identity = Some(identity);
        self
    }

    /// `roots`, with the system's CAs if asked for.
    #[cfg(feature = "tls-native-roots")]
    fn add_system_roots(&self, mut roots: RootCertStore) -> RootCertStore {
        if self.system_roots {
            let found = rustls_native_certs::load_native_certs();
            for err in &found.errors {
                tracing::debug!(%err, "skipping part of the system's CA store");
            }
            roots.add_parsable_certificates(found.certs);
        }
        roots
    }

    /// Also speaks TLS 1.2 to servers that have nothing newer (off by default: TLS 1.3
    /// only).
    pub fn tls12(mut self, allow: bool) -> ClientTlsConfig {
        self.tls12 = allow;
        self
    }

    /// The connector, over TCP and Unix sockets: fails if no CA is trusted, the domain name
    /// is not a name, or the identity's key does not match its certificate.
    pub fn build(&self) -> Result<TlsConnector, TlsError> {
        let roots = Certificate::roots(&self.cas)?;
        #[cfg(feature = "tls-native-roots")]
        let roots = self.add_system_roots(roots);
        if roots.is_empty() {
            return Err(TlsError::NoTrustedRoots);
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions(self.tls12))?
            .with_root_certificates(roots);
        let mut config = match &self.identity {
            Some(identity) => {
                builder.with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![ALPN_PROTOCOL.to_vec()];
        let connector = TlsConnector::from_rustls(Arc::new(config));
        match &self.domain_name {
            Some(name) => connector.domain_name(name),
            None => Ok(connector),
        }
    }
}

/// A [`Connector`] that runs TLS over the byte streams of another one (by default
/// [`DefaultConnector`](super::DefaultConnector): TCP and Unix sockets). Made by
/// [`ClientTlsConfig::build`], or from a `rustls` configuration with
/// [`from_rustls`](Self::from_rustls).
#[derive(Clone)]
pub struct TlsConnector {
    config: Current<rustls::ClientConfig>,
    domain_name: Option<ServerName<'static>>,
    inner: Arc<dyn Connector>,
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector").field("domain_name", &self.domain_name).finish_non_exhaustive()
    }
}

impl TlsConnector {
    /// A connector with a `rustls` configuration of your own (its ALPN protocols as they
    /// are: add [`ALPN_PROTOCOL`] to offer it).
    pub fn from_rustls(config: Arc<rustls::ClientConfig>) -> TlsConnector {
        TlsConnector {
            config: Current::new(config),
            domain_name: None,
            inner: Arc::new(super::DefaultConnector::new()),
        }
    }

    /// Rotates the client's identity and trusted CAs without a restart: handshakes that
    /// start afterwards (new channels made with this connector or a clone of it, and
    /// reconnections of existing ones) use `config`; connections already open keep theirs.
    /// The domain name stays the connector's. If `config` does not build, nothing changes
    /// and the error is returned (and logged).
    ///
    /// Clones share one configuration: give a clone to
    /// [`ChannelBuilder::tls`](crate::client::ChannelBuilder::tls) and keep this one.
    pub fn reload(&self, config: &ClientTlsConfig) -> Result<(), TlsError> {
        let outcome = self.apply(config);
        log_reload("client", &outcome);
        outcome
    }

    fn apply(&self, config: &ClientTlsConfig) -> Result<(), TlsError> {
        self.config.set(config.build()?.config.get());
        Ok(())
    }

    /// Reloads the configuration that `load` makes whenever one of `files` changes (checked
    /// every `interval`); see [`TlsWatcher`] and [`TlsAcceptor::watch_files`].
    pub fn watch_files<P, F>(
        &self,
        files: impl IntoIterator<Item = P>,
        interval: Duration,
        load: F,
    ) -> TlsWatcher
    where
        P: Into<PathBuf>,
        F: Fn() -> Result<ClientTlsConfig, TlsError> + Send + 'static,
    {
        let connector = self.clone();
        let files = files.into_iter().map(Into::into).collect();
        TlsWatcher::spawn(files, interval, "client", move || connector.apply(&load()?))
    }

    /// Checks the server's certificate against `name` (and sends it as SNI) instead of the
    /// host of the address dialed.
    pub fn domain_name(mut self, name: &str) -> Result<TlsConnector, TlsError> {
        self.domain_name = Some(server_name(name)?);
        Ok(self)
    }

    /// Runs TLS over the streams `inner` makes, instead of plain TCP and Unix sockets.
    pub fn over(mut self, inner: impl Connector) -> TlsConnector {
        self.inner = Arc::new(inner);
        self
    }

    pub(crate) fn over_arc(mut self, inner: Arc<dyn Connector>) -> TlsConnector {
        self.inner = inner;
        self
    }

    /// The name to check the server's certificate against when dialing `address`.
    fn name_for(&self, address: &Address) -> io::Result<ServerName<'static>> {
        if let Some(name) = &self.domain_name {
            return Ok(name.clone());
        }
        let invalid = |message: String| io::Error::new(io::ErrorKind::InvalidInput, message);
        match address {
            Address::Tcp(target) => {
                let host = target.rsplit_once(':').map_or(target.as_str(), |(host, _)| host);
                let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
                server_name(host).map_err(|err| invalid(err.to_string()))
            }
            Address::Unix(path) => Err(invalid(format!(
                "TLS to unix:{} needs a domain name to check the server's certificate against \
                 (ClientTlsConfig::domain_name)",
                path.display()
            ))),
        }
    }
}

fn server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(name.to_owned()).map_err(|_| TlsError::InvalidServerName(name.to_owned()))
}

impl Connector for TlsConnector {
    fn connect<'a>(&'a self, address: &'a Address) -> BoxFuture<'a, io::Result<BoxIo>> {
        Box::pin(async move {
            let name = self.name_for(address)?;
            let io = self.inner.connect(address).await?;
            let connector = tokio_rustls::TlsConnector::from(self.config.get());
            let stream = connector.connect(name, io).await.map_err(|err| {
                let err = explain_client_handshake_error(err);
                tracing::warn!(%address, %err, "TLS handshake failed");
                err
            })?;
            Ok(Box::new(stream) as BoxIo)
        })
    }
}

/// Logs a reload's outcome: the cause when it failed.
fn log_reload(what: &str, outcome: &Result<(), TlsError>) {
    match outcome {
        Ok(()) => tracing::info!(what, "TLS material reloaded: new handshakes use it"),
        Err(err) => tracing::warn!(what, %err, "TLS reload failed: keeping the previous certificates"),
    }
}

/// A client's handshake error, with a hint where the cause is likely a plaintext server.
fn explain_client_handshake_error(err: io::Error) -> io::Error {
    let plaintext = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|err| matches!(err, rustls::Error::InvalidMessage(_)));
    if plaintext {
        return io::Error::new(
            err.kind(),
            format!("TLS handshake failed ({err}): is the server serving plaintext rather than TLS?"),
        );
    }
    io::Error::new(err.kind(), format!("TLS handshake failed: {err}"))
}
