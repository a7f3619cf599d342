//! Where calls go, named by a string: one server's address, or a service's instances in a
//! registry (a fixed list, or etcd), behind a balanced channel.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rpc_core::Channel;
use rpc_core::discovery::StaticRegistry;
use rpc_core::middleware::Tracing;

use crate::error::Error;

/// A target, as written on a command line or in a configuration file:
///
/// | form | what it is |
/// |---|---|
/// | `host:port`, `unix:/path` | one server |
/// | `static://host:port,host:port` | these instances, balanced |
/// | `etcd://host:port[,host:port][/prefix]` | the service's instances registered in etcd (under `/rpc/services` unless a prefix is given), balanced and followed as they come and go (feature `etcd`) |
///
/// ```
/// use rpc_dynamic::Target;
///
/// let target: Target = "etcd://127.0.0.1:2379".parse().unwrap();
/// assert!(target.is_registry());
/// assert_eq!(target.to_string(), "etcd://127.0.0.1:2379");
/// assert!("static://".parse::<Target>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One server: `host:port` or `unix:/path`.
    Address(String),
    /// A fixed list of instances.
    Static(Vec<String>),
    /// A service's instances registered in etcd.
    Etcd {
        /// The etcd endpoints, `host:port`.
        endpoints: Vec<String>,
        /// The key prefix, if not the registry's default.
        prefix: Option<String>,
    },
}

impl FromStr for Target {
    type Err = Error;

    fn from_str(text: &str) -> Result<Target, Error> {
        let list = |rest: &str| -> Result<Vec<String>, Error> {
            let items: Vec<String> = rest.split(',').map(str::trim).map(str::to_owned).collect();
            if items.iter().any(String::is_empty) {
                return Err(Error::Target(format!(
                    "{text:?}: expected host:port[,host:port...] after the scheme"
                )));
            }
            Ok(items)
        };
        if let Some(rest) = text.strip_prefix("static://") {
            return Ok(Target::Static(list(rest)?));
        }
        if let Some(rest) = text.strip_prefix("etcd://") {
            let (endpoints, prefix) = match rest.split_once('/') {
                Some((endpoints, prefix)) => (endpoints, Some(format!("/{}", prefix.trim_end_matches('/')))),
                None => (rest, None),
            };
            return Ok(Target::Etcd { endpoints: list(endpoints)?, prefix });
        }
        if let Some((scheme, _)) = text.split_once("://") {
            return Err(Error::Target(format!(
                "{text:?}: unknown scheme {scheme}:// (expected host:port, unix:/path, static:// or etcd://)"
            )));
        }
        if text.is_empty() {
            return Err(Error::Target("an empty target: expected host:port".into()));
        }
        Ok(Target::Address(text.to_owned()))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Address(address) => f.write_str(address),
            Target::Static(instances) => write!(f, "static://{}", instances.join(",")),
            Target::Etcd { endpoints, prefix } => {
                write!(f, "etcd://{}{}", endpoints.join(","), prefix.as_deref().unwrap_or(""))
            }
        }
    }
}

/// How the channel to a target is made.
#[derive(Debug, Clone)]
pub struct ChannelOptions {
    /// The time allowed to connect, or for a registry to list an instance (default 10 s).
    pub connect_timeout: Duration,
    /// A timeout for calls that set none themselves (default: none).
    pub timeout: Option<Duration>,
    /// Carries the trace context of the task making a call (see
    /// [`Tracing`](rpc_core::middleware::Tracing)) in its `traceparent` (default off).
    pub tracing: bool,
    /// Speaks TLS (or mutual TLS, with an identity) to the server, or to every instance of a
    /// registry target, through this connector (feature `tls`; default: plaintext): one
    /// made with [`ClientTlsConfig::build`](rpc_core::transport::tls::ClientTlsConfig::build).
    /// Keep a clone of it to rotate the certificates without a restart
    /// ([`TlsConnector::reload`](rpc_core::transport::tls::TlsConnector::reload) or
    /// [`watch_files`](rpc_core::transport::tls::TlsConnector::watch_files)): new
    /// connections use the new material. The registry itself (etcd) is still reached in
    /// plaintext.
    #[cfg(feature = "tls")]
    pub tls: Option<rpc_core::transport::tls::TlsConnector>,
}

impl Default for ChannelOptions {
    fn default() -> ChannelOptions {
        ChannelOptions {
            connect_timeout: rpc_core::client::DEFAULT_CONNECT_TIMEOUT,
            timeout: None,
            tracing: false,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

/// Applies [`ChannelOptions`] to a direct or a balanced channel's builder (they have the
/// same option methods, but no common trait).
macro_rules! with_options {
    ($builder:expr, $options:expr) => {{
        let options: &ChannelOptions = $options;
        let mut builder = $builder.connect_timeout(options.connect_timeout);
        if let Some(timeout) = options.timeout {
            builder = builder.timeout(timeout);
        }
        if options.tracing {
            builder = builder.interceptor(Tracing::new());
        }
        #[cfg(feature = "tls")]
        if let Some(tls) = &options.tls {
            builder = builder.tls(tls.clone());
        }
        builder
    }};
}

impl Target {
    /// Whether calls go to the instances a registry lists rather than to one address.
    pub fn is_registry(&self) -> bool {
        !matches!(self, Target::Address(_))
    }

    /// A channel for calls to `service` (a full name): to the address, or balanced over the
    /// service's instances. Connects (or resolves the service) before returning.
    ///
    /// # Errors
    /// [`Error::Status`] (`UNAVAILABLE`, saying why) when the server or the registry cannot
    /// be reached, the TLS handshake fails, or the registry lists no instance in time;
    /// [`Error::Target`] for an etcd target in a build without the `etcd` feature.
    pub async fn connect(&self, service: &str, options: &ChannelOptions) -> Result<Channel, Error> {
        let channel = match self {
            Target::Address(address) => with_options!(Channel::builder(address), options).connect().await?,
            Target::Static(instances) => {
                let registry = instances
                    .iter()
                    .fold(StaticRegistry::new(), |registry, address| registry.with(service, address));
                with_options!(Channel::balanced(registry, service), options).connect().await?
            }
            Target::Etcd { endpoints, prefix } => {
                let registry = etcd_registry(endpoints, prefix.as_deref(), options.connect_timeout).await?;
                with_options!(Channel::balanced(registry, service), options).connect().await?
            }
        };
        Ok(channel)
    }
}

#[cfg(feature = "etcd")]
async fn etcd_registry(
    endpoints: &[String],
    prefix: Option<&str>,
    connect_timeout: Duration,
) -> Result<rpc_core::discovery::EtcdRegistry, Error> {
    use rpc_core::discovery::{EtcdOptions, EtcdRegistry};

    let endpoints = endpoints.iter().map(|e| format!("http://{e}"));
    let mut options = EtcdOptions::new().connect_timeout(connect_timeout);
    if let Some(prefix) = prefix {
        options = options.prefix(prefix);
    }
    EtcdRegistry::connect(endpoints, options)
        .await
        .map_err(|err| Error::Status(rpc_core::Status::unavailable(format!("cannot reach etcd: {err}"))))
}

#[cfg(not(feature = "etcd"))]
async fn etcd_registry(
    _endpoints: &[String],
    _prefix: Option<&str>,
    _connect_timeout: Duration,
) -> Result<StaticRegistry, Error> {
    Err(Error::Target("etcd:// targets need the `etcd` feature of rpc-dynamic".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_print_back() {
        for text in
            ["127.0.0.1:50051", "unix:/run/x.sock", "static://a:1,b:2", "etcd://e1:2379,e2:2379/my/prefix"]
        {
            let target: Target = text.parse().expect(text);
            assert_eq!(target.to_string(), text);
        }
        assert_eq!(
            "static://a:1, b:2".parse::<Target>().ok(),
            Some(Target::Static(vec!["a:1".into(), "b:2".into()]))
        );
        let etcd: Target = "etcd://e:2379/p/".parse().expect("etcd");
        assert_eq!(etcd, Target::Etcd { endpoints: vec!["e:2379".into()], prefix: Some("/p".into()) });
        for bad in ["", "http://x:1", "static://a:1,,b:2", "etcd://"] {
            assert!(bad.parse::<Target>().is_err(), "{bad:?}");
        }
    }
}
