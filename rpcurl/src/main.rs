//! `rpcurl`: list, describe and call the services of a server from a shell, with JSON in and
//! out, as grpcurl does for gRPC.
//!
//! ```text
//! rpcurl list 127.0.0.1:50051                                  # the services (reflection)
//! rpcurl list 127.0.0.1:50051 routeguide.RouteGuide            # their methods
//! rpcurl describe 127.0.0.1:50051 routeguide.Point             # a schema, as .proto text
//! rpcurl call 127.0.0.1:50051 routeguide.RouteGuide/GetFeature -d '{"latitude": 407000000, "longitude": -744000000}'
//! rpcurl --proto proto/route_guide.proto call ...              # the schema from a file instead
//! rpcurl health 127.0.0.1:50051 routeguide.RouteGuide
//! rpcurl --cacert ca.pem --cert client.pem --key client.key list greeter.internal:50051   # mutual TLS
//! ```
//!
//! Exit status: 0 on success; 1 when something is wrong before or around the call (the
//! schema, the JSON given, a file); 2 for a usage error; 3 when `health` finds the service
//! not serving; 64 + the status code when the call fails with a status (the code's name and
//! the message on stderr: `rpcurl: NOT_FOUND: ...`, exit 69).

mod call;
mod describe;
mod input;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use rpc_core::health::{HealthCheckRequest, HealthClient, ServingStatus};
use rpc_core::metadata::MetadataKey;
use rpc_core::reflection::{ListServicesRequest, ReflectionClient, ServiceInfo};
use rpc_core::transport::tls::{Certificate, ClientTlsConfig, Identity, TlsConnector, TlsError};
use rpc_core::{Channel, Metadata, Status};
use rpc_dynamic::{ChannelOptions, JsonOptions, Schema, Target};

/// The service a registry target resolves to when no service is named: any instance that
/// serves reflection.
const REFLECTION_SERVICE: &str = "rpc.reflection.v1.Reflection";

/// Calls the services of a server from the command line, with JSON in and out.
///
/// A target (ADDR) is `host:port`, `unix:/path`, `static://host:port,host:port` or
/// `etcd://host:port` (the service's instances registered in etcd). The schema comes from
/// the server's reflection service, or from the `.proto` files given with --proto.
#[derive(Debug, Parser)]
#[command(name = "rpcurl", version, after_help = EXIT_STATUS)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    options: Options,
}

const EXIT_STATUS: &str = "Exit status: 0 success; 1 error before or around the call (schema, JSON, files); \
2 usage; 3 health: not serving; 64 + code when the call fails with a status (e.g. 69 NOT_FOUND, \
68 DEADLINE_EXCEEDED, 78 UNAVAILABLE), its name and message on stderr.";

#[derive(Debug, Subcommand)]
enum Command {
    /// Lists the services of a server, or the methods of one service.
    List {
        /// `[ADDR] [SERVICE]`; the address may be left out with --proto.
        #[arg(value_name = "ADDR|SERVICE", num_args = 0..=2)]
        args: Vec<String>,
    },
    /// Shows a service, method, message or enum (every service if none is named) as `.proto`
    /// text.
    Describe {
        /// `[ADDR] [SYMBOL]`; the address may be left out with --proto.
        #[arg(value_name = "ADDR|SYMBOL", num_args = 0..=2)]
        args: Vec<String>,
    },
    /// Calls a method: unary and server streaming take one request (from -d, or `{}`);
    /// client and bidirectional streaming take a stream of them (from -d, or from stdin).
    /// Responses are written one JSON object per line.
    Call {
        /// The target.
        addr: String,
        /// The method, `package.Service/Method`.
        method: String,
        /// The request(s) as JSON: one object, or several in a row for a client stream;
        /// `@` reads them from stdin, `@FILE` from a file.
        #[arg(short = 'd', long = "data", value_name = "JSON|@|@FILE")]
        data: Option<String>,
    },
    /// Asks a server's health service about a service (or the server, if none is named);
    /// prints the status, and exits 0 only if it is SERVING.
    Health {
        /// The target.
        addr: String,
        /// The service's full name.
        service: Option<String>,
    },
}

#[derive(Debug, Args)]
struct Options {
    /// A `.proto` file to take the schema from instead of asking the server (repeatable).
    #[arg(long, global = true, value_name = "FILE")]
    proto: Vec<PathBuf>,
    /// A directory to search for --proto files and their imports (repeatable; default: the
    /// current directory).
    #[arg(short = 'I', long = "import-path", global = true, value_name = "DIR")]
    import_path: Vec<PathBuf>,
    /// Metadata sent with every call, reflection's included (repeatable).
    #[arg(short = 'H', long = "header", global = true, value_name = "KEY:VALUE")]
    headers: Vec<String>,
    /// The time allowed for the call (or the whole stream): `500ms`, `5s`, `1m`.
    #[arg(long, global = true, value_parser = humantime::parse_duration, value_name = "DURATION")]
    timeout: Option<Duration>,
    /// The time allowed to connect, or for a registry to list an instance.
    #[arg(long, global = true, value_parser = humantime::parse_duration, default_value = "10s", value_name = "DURATION")]
    connect_timeout: Duration,
    /// Writes fields that hold their default value too (the canonical mapping leaves them out).
    #[arg(long, global = true)]
    emit_defaults: bool,
    /// Names fields as the .proto file does (`point_count`), not in lowerCamelCase.
    #[arg(long, global = true)]
    proto_names: bool,
    /// Also writes the response metadata (and a stream's trailers) to stderr.
    #[arg(short, long, global = true)]
    verbose: bool,
    /// Speaks TLS to the server, trusting the operating system's CAs (or those of --cacert).
    /// Implied by --cacert, --cert and --server-name.
    #[arg(long, global = true)]
    tls: bool,
    /// Trusts the CA certificates in this PEM file (instead of the system's) to verify the
    /// server's certificate; implies --tls.
    #[arg(long, global = true, value_name = "FILE")]
    cacert: Option<PathBuf>,
    /// Mutual TLS: presents the certificate chain in this PEM file (with --key); implies --tls.
    #[arg(long, global = true, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// The private key of --cert, in a PEM file.
    #[arg(long, global = true, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// The name the server's certificate must be valid for (and the SNI sent), instead of the
    /// host of the target; implies --tls.
    #[arg(long, global = true, value_name = "NAME")]
    server_name: Option<String>,
}

impl Options {
    /// The TLS configuration the flags ask for, its files read: `None` for plaintext.
    fn tls_config(&self) -> Result<Option<ClientTlsConfig>, Failure> {
        let wanted = self.tls || self.cacert.is_some() || self.cert.is_some() || self.server_name.is_some();
        if !wanted {
            return Ok(None);
        }
        let mut config = ClientTlsConfig::new();
        match &self.cacert {
            Some(path) => {
                let ca =
                    Certificate::from_pem_file(path).map_err(|err| tls_failure("--cacert", path, err))?;
                config = config.ca_certificate(ca);
            }
            None => config = system_roots(config)?,
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            let identity = Identity::from_pem_files(cert, key).map_err(|err| {
                let which = match &err {
                    TlsError::NoPrivateKey => ("--key", key),
                    TlsError::File { path, .. } if std::path::Path::new(path) == key.as_path() => {
                        ("--key", key)
                    }
                    _ => ("--cert", cert),
                };
                tls_failure(which.0, which.1, err)
            })?;
            config = config.identity(identity);
        }
        if let Some(name) = &self.server_name {
            config = config.domain_name(name);
        }
        Ok(Some(config))
    }
}

/// `--tls` without `--cacert`: the operating system's CAs.
#[cfg(feature = "native-roots")]
fn system_roots(config: ClientTlsConfig) -> Result<ClientTlsConfig, Failure> {
    Ok(config.with_system_roots())
}

/// `--tls` without `--cacert`, in a build that cannot read the system's CAs.
#[cfg(not(feature = "native-roots"))]
fn system_roots(_config: ClientTlsConfig) -> Result<ClientTlsConfig, Failure> {
    Err(Failure::Local(
        "TLS needs --cacert FILE: this build does not read the system's CA store (feature native-roots)"
            .into(),
    ))
}

/// A TLS file that could not be used, named with its flag.
fn tls_failure(flag: &str, path: &std::path::Path, err: TlsError) -> Failure {
    match err {
        TlsError::File { source, .. } => {
            Failure::Local(format!("{flag} {}: cannot read it: {source}", path.display()))
        }
        err => Failure::Local(format!("{flag} {}: {err}", path.display())),
    }
}

/// Why the program stops short of success; each has its exit status.
#[derive(Debug)]
enum Failure {
    /// Something is wrong before or around the call: exit 1.
    Local(String),
    /// The call failed with a status: exit 64 + its code.
    Status(Status),
    /// `health`: the service is not serving: exit 3.
    NotServing,
}

impl From<rpc_dynamic::Error> for Failure {
    fn from(err: rpc_dynamic::Error) -> Failure {
        match err {
            rpc_dynamic::Error::Status(status) => Failure::Status(status),
            other => Failure::Local(other.to_string()),
        }
    }
}

impl From<Status> for Failure {
    fn from(status: Status) -> Failure {
        Failure::Status(status)
    }
}

impl From<std::io::Error> for Failure {
    fn from(err: std::io::Error) -> Failure {
        Failure::Local(err.to_string())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("rpcurl: cannot start: {err}");
            return ExitCode::from(1);
        }
    };
    let outcome = runtime.block_on(run(cli));
    // A thread reading stdin may still be blocked in a read: do not wait for it.
    runtime.shutdown_background();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Local(message)) => {
            eprintln!("rpcurl: error: {message}");
            ExitCode::from(1)
        }
        Err(Failure::NotServing) => ExitCode::from(3),
        Err(Failure::Status(status)) => {
            eprintln!("rpcurl: {}: {}", status.code(), status.message());
            ExitCode::from(exit_status(&status))
        }
    }
}

/// 64 + the code: 64 to 80.
fn exit_status(status: &Status) -> u8 {
    64 + status.code().as_u32().min(16) as u8
}

/// What every command needs: the options, and the metadata to send.
struct Session {
    options: Options,
    metadata: Metadata,
    /// TLS to the target, if asked for.
    tls: Option<TlsConnector>,
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let session = Session::new(cli.options)?;
    match cli.command {
        Command::List { args } => session.list(&args).await,
        Command::Describe { args } => session.describe(&args).await,
        Command::Call { addr, method, data } => session.call(&addr, &method, data.as_deref()).await,
        Command::Health { addr, service } => session.health(&addr, service.as_deref().unwrap_or("")).await,
    }
}

/// Splits `[ADDR] [NAME]`: an address always holds a `:` (`host:port`, `unix:`, `scheme://`),
/// a service or symbol name never does.
fn address_and_name(args: &[String]) -> (Option<&str>, Option<&str>) {
    match args {
        [] => (None, None),
        [one] if one.contains(':') => (Some(one), None),
        [one] => (None, Some(one)),
        [addr, name, ..] => (Some(addr), Some(name)),
    }
}

impl Session {
    fn new(options: Options) -> Result<Session, Failure> {
        let mut metadata = Metadata::new();
        for header in &options.headers {
            let Some((key, value)) = header.split_once(':') else {
                return Err(Failure::Local(format!("header {header:?}: expected KEY:VALUE")));
            };
            let key = MetadataKey::try_from(key.trim().to_ascii_lowercase())
                .map_err(|err| Failure::Local(format!("header {header:?}: {err}")))?;
            metadata.append(key, value.trim().to_owned());
        }
        // Built here, so that a configuration that cannot work (no trusted CA, a key that
        // does not match its certificate) is said before anything is dialed.
        let tls = options
            .tls_config()?
            .map(|config| config.build().map_err(|err| Failure::Local(format!("TLS: {err}"))))
            .transpose()?;
        Ok(Session { options, metadata, tls })
    }

    fn json_options(&self) -> JsonOptions {
        JsonOptions { emit_defaults: self.options.emit_defaults, proto_field_names: self.options.proto_names }
    }

    /// A channel to `addr` for calls to `service`.
    async fn connect(&self, addr: &str, service: &str) -> Result<Channel, Failure> {
        let target: Target = addr.parse()?;
        let options = ChannelOptions {
            connect_timeout: self.options.connect_timeout,
            timeout: self.options.timeout,
            tls: self.tls.clone(),
            ..ChannelOptions::default()
        };
        Ok(target.connect(service, &options).await?)
    }

    /// The schema: from the --proto files, or from the reflection service behind `channel`.
    async fn schema(&self, channel: Option<&Channel>, symbols: &[&str]) -> Result<Schema, Failure> {
        if !self.options.proto.is_empty() {
            let includes = if self.options.import_path.is_empty() {
                vec![PathBuf::from(".")]
            } else {
                self.options.import_path.clone()
            };
            return Ok(Schema::from_protos(&self.options.proto, &includes)?);
        }
        let Some(channel) = channel else {
            return Err(Failure::Local(
                "name a server to ask (ADDR), or give the schema with --proto".into(),
            ));
        };
        Schema::from_reflection(channel, symbols, &self.metadata).await.map_err(|err| match err {
            rpc_dynamic::Error::Schema(message) => Failure::Local(format!("{message} (with --proto)")),
            other => other.into(),
        })
    }

    /// The services the reflection service behind `channel` lists.
    async fn listed(&self, channel: &Channel) -> Result<Vec<ServiceInfo>, Failure> {
        let reflection = ReflectionClient::new(channel.clone());
        match reflection.list_services(ListServicesRequest {}).with_metadata(self.metadata.clone()).await {
            Ok(listed) => Ok(listed.services),
            Err(status) if status.code() == rpc_core::Code::Unimplemented => Err(Failure::Local(format!(
                "{} does not serve reflection: give the schema with --proto",
                channel.target()
            ))),
            Err(status) => Err(Failure::Status(status)),
        }
    }

    async fn list(&self, args: &[String]) -> Result<(), Failure> {
        let (addr, service) = address_and_name(args);
        let lines: Vec<String> = match addr {
            Some(addr) if self.options.proto.is_empty() => {
                let channel = self.connect(addr, service.unwrap_or(REFLECTION_SERVICE)).await?;
                let listed = self.listed(&channel).await?;
                match service {
                    None => listed.into_iter().map(|s| s.name).collect(),
                    Some(name) => {
                        let Some(found) = listed.into_iter().find(|s| s.name == name) else {
                            return Err(Failure::Local(format!("{addr} does not serve {name}")));
                        };
                        found.methods.iter().map(|m| format!("{name}/{}", m.name)).collect()
                    }
                }
            }
            _ => {
                let schema = self.schema(None, &[]).await?;
                match service {
                    None => schema.services().map(|s| s.full_name().to_owned()).collect(),
                    Some(name) => {
                        let service = schema.service(name)?;
                        service.methods().map(|m| format!("{}/{}", service.full_name(), m.name())).collect()
                    }
                }
            }
        };
        print_lines(&lines)
    }

    async fn describe(&self, args: &[String]) -> Result<(), Failure> {
        let (addr, symbol) = address_and_name(args);
        let schema = match addr {
            Some(addr) if self.options.proto.is_empty() => {
                // A symbol's service (or, for a message, any instance) answers for it.
                let service = symbol.map(describe::service_part).unwrap_or(REFLECTION_SERVICE);
                let channel = self.connect(addr, service).await?;
                let symbols: Vec<&str> = symbol.map(describe::service_part).into_iter().collect();
                self.schema(Some(&channel), &symbols).await?
            }
            _ => self.schema(None, &[]).await?,
        };
        let text = match symbol {
            Some(symbol) => describe::symbol(&schema, symbol)?,
            None => describe::all_services(&schema),
        };
        print_lines(&[text])
    }

    async fn call(&self, addr: &str, method: &str, data: Option<&str>) -> Result<(), Failure> {
        let service = method.trim_start_matches('/').split('/').next().unwrap_or_default();
        let channel = self.connect(addr, service).await?;
        let schema = self.schema(Some(&channel), &[service]).await?;
        let method = schema.method(method)?;
        call::run(self, &channel, &method, data).await
    }

    async fn health(&self, addr: &str, service: &str) -> Result<(), Failure> {
        let resolve = if service.is_empty() { "grpc.health.v1.Health" } else { service };
        let channel = self.connect(addr, resolve).await?;
        let health = HealthClient::new(channel);
        let request = HealthCheckRequest { service: service.to_owned() };
        let response = health.check(request).with_metadata(self.metadata.clone()).await?;
        let status = response.status();
        let name = match status {
            ServingStatus::Serving => "SERVING",
            ServingStatus::NotServing => "NOT_SERVING",
            ServingStatus::ServiceUnknown => "SERVICE_UNKNOWN",
            ServingStatus::Unknown => "UNKNOWN",
        };
        print_lines(&[name.to_owned()])?;
        if status == ServingStatus::Serving { Ok(()) } else { Err(Failure::NotServing) }
    }
}

/// Writes lines to stdout.
fn print_lines(lines: &[String]) -> Result<(), Failure> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for line in lines {
        if let Err(err) = writeln!(out, "{line}") {
            return Err(io_failure(err));
        }
    }
    out.flush().map_err(io_failure)
}

fn io_failure(err: std::io::Error) -> Failure {
    Failure::Local(format!("cannot write the output: {err}"))
}
