//! The gateway's configuration file (TOML): where to listen, where the schema comes from,
//! where each service's instances are, and the edge's auth, rate limit and limits.
//!
//! ```toml
//! listen = "127.0.0.1:8080"
//! protos = ["route_guide.proto"]       # the schema; without it, asked of the upstreams (reflection)
//! import_paths = ["proto"]
//! timeout = "10s"                      # per call (default: none)
//! max_body_bytes = 1048576             # larger bodies are refused with 400 (default 1 MiB)
//!
//! [[upstream]]
//! service = "routeguide.RouteGuide"
//! target = "static://127.0.0.1:50051,127.0.0.1:50052"   # or host:port, or etcd://host:2379
//!
//! [upstream.tls]                       # TLS to this upstream's instances (default: plaintext)
//! ca = "ca.pem"                        # the CAs their certificates must chain to
//! cert = "gateway.pem"                 # mutual TLS: the gateway's certificate chain...
//! key = "gateway.key"                  # ...and its key
//! server_name = "guide.internal"       # default: the host of each instance's address
//! reload_every = "30s"                 # how often the files are checked for new ones (default 30 s)
//!
//! [auth]                               # JWT (HS256) at the edge; roles per method
//! hs256_secret = "change me"
//! public = ["/routeguide.RouteGuide/GetFeature"]
//! allow = [{ method = "/routeguide.RouteGuide/*", roles = ["guide"] }]
//!
//! [rate_limit]                         # token buckets per method (and per caller)
//! per_second = 100
//! burst = 20
//! per_caller = "x-api-key"
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::Error;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The address to serve HTTP on (default `127.0.0.1:8080`).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// `.proto` files that declare the services, named as under an import path (or by a
    /// path from the working directory); when empty, the schema is asked of the upstreams'
    /// reflection service (the first upstream answers for every service).
    #[serde(default)]
    pub protos: Vec<PathBuf>,
    /// Where the `.proto` files and their imports are found (default: the directory of the
    /// configuration file).
    #[serde(default)]
    pub import_paths: Vec<PathBuf>,
    /// The time each call is allowed, e.g. `"5s"` (default: none).
    #[serde(default, with = "duration")]
    pub timeout: Option<Duration>,
    /// The largest request body accepted, in bytes.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// The services and where their instances are.
    #[serde(default, rename = "upstream")]
    pub upstreams: Vec<Upstream>,
    /// JWT authentication at the edge.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// A rate limit at the edge.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_max_body() -> usize {
    crate::DEFAULT_MAX_BODY_BYTES
}

/// A service and where its instances are.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// The service's full name, `pkg.Service`.
    pub service: String,
    /// A target as [`rpc_dynamic::Target`] reads it: `host:port`, `static://a,b`,
    /// `etcd://host:port[/prefix]`.
    pub target: String,
    /// TLS (or mutual TLS) to the instances; plaintext without it.
    #[serde(default)]
    pub tls: Option<UpstreamTls>,
}

/// TLS to an upstream's instances (`[upstream.tls]`): the CAs that verify them and, for
/// mutual TLS, the gateway's own certificate. Relative paths are taken from the
/// configuration file's directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// A PEM file of the CA certificates the instances' certificates must chain to.
    pub ca: PathBuf,
    /// Mutual TLS: a PEM file of the certificate chain the gateway presents (with `key`).
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// The private key of `cert`, in a PEM file.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// The name the instances' certificates must be valid for (and the SNI sent); by default
    /// the host of each instance's address. Set it when instances are registered by IP
    /// address but share a service certificate.
    #[serde(default)]
    pub server_name: Option<String>,
    /// How often the files are checked for a change, e.g. `"1m"` (default 30 s). When one
    /// changes, the material is loaded again: new connections to the instances use it,
    /// open ones keep theirs; material that does not load is logged and not used.
    #[serde(default, with = "duration")]
    pub reload_every: Option<Duration>,
}

/// How often an upstream's TLS files are checked for a change, by default.
pub(crate) const DEFAULT_TLS_RELOAD_EVERY: Duration = Duration::from_secs(30);

impl UpstreamTls {
    /// The client configuration, its files read.
    ///
    /// # Errors
    /// [`Error::Config`] naming the file that cannot be read or holds no usable PEM, or
    /// `cert` without `key` (or the other way round).
    pub fn client_config(&self) -> Result<rpc_core::transport::tls::ClientTlsConfig, Error> {
        if self.cert.is_some() != self.key.is_some() {
            return Err(Error::Config("upstream.tls: cert and key go together".into()));
        }
        let mut config = self.read(|what, path, err| {
            Error::Config(format!("upstream.tls.{what} ({}): {err}", path.display()))
        })?;
        if let Some(name) = &self.server_name {
            config = config.domain_name(name);
        }
        Ok(config)
    }

    /// The files this configuration is read from.
    pub(crate) fn files(&self) -> Vec<PathBuf> {
        [Some(&self.ca), self.cert.as_ref(), self.key.as_ref()].into_iter().flatten().cloned().collect()
    }

    /// Reads the files into a client configuration (without the server name); `failed` makes
    /// the error for the file named by its key that could not be used.
    pub(crate) fn read<E>(
        &self,
        failed: impl Fn(&str, &std::path::Path, rpc_core::transport::tls::TlsError) -> E,
    ) -> Result<rpc_core::transport::tls::ClientTlsConfig, E> {
        use rpc_core::transport::tls::{Certificate, ClientTlsConfig, Identity};

        let ca = Certificate::from_pem_file(&self.ca).map_err(|err| failed("ca", &self.ca, err))?;
        let mut config = ClientTlsConfig::new().ca_certificate(ca);
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            let identity =
                Identity::from_pem_files(cert, key).map_err(|err| failed("cert/key", cert, err))?;
            config = config.identity(identity);
        }
        Ok(config)
    }
}

/// JWT authentication (HS256) and access rules: [`JwtAuth`](rpc_core::middleware::JwtAuth)
/// at the edge.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The shared secret tokens are signed with.
    pub hs256_secret: String,
    /// The audience tokens must name, if any.
    #[serde(default)]
    pub audience: Option<String>,
    /// The issuer tokens must name, if any.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Methods anyone may call without a token (`/pkg.Service/Method`, `/pkg.Service/*`).
    #[serde(default)]
    pub public: Vec<String>,
    /// Which roles may call which methods; without rules, any valid token may call anything.
    #[serde(default)]
    pub allow: Vec<AllowRule>,
}

/// Roles that may call the methods a pattern names.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowRule {
    /// `/pkg.Service/Method`, `/pkg.Service/*` or `*`.
    pub method: String,
    /// The roles admitted.
    pub roles: Vec<String>,
}

/// A token-bucket rate limit: [`RateLimit`](rpc_core::middleware::RateLimit) at the edge.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Calls a second per method, on average (this or `per_minute`).
    #[serde(default)]
    pub per_second: Option<u32>,
    /// Calls a minute per method, on average (this or `per_second`).
    #[serde(default)]
    pub per_minute: Option<u32>,
    /// Calls at once over the average (default: the rate's own figure).
    #[serde(default)]
    pub burst: Option<u32>,
    /// A header whose values each get their own buckets (an API key).
    #[serde(default)]
    pub per_caller: Option<String>,
}

impl Config {
    /// Reads a configuration from TOML text.
    ///
    /// ```
    /// let config = rpc_gateway::Config::from_toml(r#"
    ///     listen = "127.0.0.1:0"
    ///     timeout = "2s"
    ///     [[upstream]]
    ///     service = "routeguide.RouteGuide"
    ///     target = "127.0.0.1:50051"
    /// "#).unwrap();
    /// assert_eq!(config.upstreams[0].service, "routeguide.RouteGuide");
    /// assert_eq!(config.timeout, Some(std::time::Duration::from_secs(2)));
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] naming the line and what is wrong.
    pub fn from_toml(text: &str) -> Result<Config, Error> {
        toml::from_str(text).map_err(|err| Error::Config(err.to_string()))
    }

    /// Reads a configuration file; relative import paths (and upstreams' TLS files) are
    /// taken from the file's directory, which is the import path when none is given.
    ///
    /// # Errors
    /// [`Error::Config`] when the file cannot be read or does not parse.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Config, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|err| Error::Config(format!("cannot read {}: {err}", path.display())))?;
        let mut config =
            Config::from_toml(&text).map_err(|err| Error::Config(format!("{}: {err}", path.display())))?;
        let base = path.parent().unwrap_or(std::path::Path::new("."));
        for dir in &mut config.import_paths {
            *dir = base.join(&*dir);
        }
        if config.import_paths.is_empty() {
            config.import_paths.push(base.to_path_buf());
        }
        for tls in config.upstreams.iter_mut().filter_map(|upstream| upstream.tls.as_mut()) {
            for file in [Some(&mut tls.ca), tls.cert.as_mut(), tls.key.as_mut()].into_iter().flatten() {
                *file = base.join(&*file);
            }
        }
        Ok(config)
    }
}

/// Durations written as `"500ms"`, `"5s"`.
mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text: Option<String> = Option::deserialize(deserializer)?;
        text.map(|text| humantime::parse_duration(&text).map_err(serde::de::Error::custom)).transpose()
    }
}
