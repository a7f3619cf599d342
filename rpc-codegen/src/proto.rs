//! The `.proto` front end: compiles protobuf files in a `build.rs`, with no `protoc` needed.
//!
//! Files are parsed by [protox](https://docs.rs/protox) (pure Rust; the well-known types such as
//! `google/protobuf/timestamp.proto` are built in), prost-build emits the messages, and each
//! service goes through the same generator as `#[service]`, so it has the same API: a trait,
//! a `{Name}Client` and a `{Name}Server<T>`.
//!
//! ```no_run
//! // build.rs
//! fn main() -> Result<(), rpc_codegen::proto::Error> {
//!     rpc_codegen::compile_protos(&["proto/helloworld.proto"], &["proto"])
//! }
//! ```
//!
//! and in the crate, `rpc_core::include_proto!("helloworld");` (one package) or
//! `rpc_core::include_protos!();` (every package, as nested modules).

use std::fmt;
use std::path::{Path, PathBuf};

use proc_macro2::{Ident, Span, TokenStream};
use quote::quote;

use crate::{Method, Service, generate};

/// The file, named in `OUT_DIR`, that declares every compiled package as nested modules.
pub const INCLUDE_FILE: &str = "_rpc_protos.rs";

/// How the file written beside the generated code, holding the encoded `FileDescriptorSet`
/// that generated servers hand to the reflection service, begins: the rest of its name is a
/// hash of its contents, so that several compilations into one directory keep their own.
pub const FILE_DESCRIPTOR_SET_PREFIX: &str = "_rpc_file_descriptor_set_";

/// Compiles `protos`, searching imports in `includes`, into `OUT_DIR`: messages, and a client
/// and server for every service. See [`Builder`] for options.
///
/// # Errors
/// A file that cannot be found, parsed or resolved, with its path, line and column.
pub fn compile_protos(protos: &[impl AsRef<Path>], includes: &[impl AsRef<Path>]) -> Result<(), Error> {
    Builder::new().compile(protos, includes)
}

/// A failure to compile `.proto` files. Its `Debug` form is the readable message, so
/// returning it from `build.rs`'s `main` prints `path:line:column: message` and nothing more.
pub struct Error {
    message: String,
}

impl Error {
    fn new(message: impl Into<String>) -> Error {
        Error { message: message.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Options for compiling `.proto` files.
///
/// ```no_run
/// // build.rs
/// fn main() -> Result<(), rpc_codegen::proto::Error> {
///     rpc_codegen::proto::Builder::new()
///         .build_client(false)                         // a server-only crate
///         .bytes(["."])                                // every `bytes` field as `bytes::Bytes`
///         .message_attribute(".", "#[derive(Eq)]")
///         .file_descriptor_set_path(std::env::var("OUT_DIR").unwrap() + "/descriptors.bin")
///         .compile(&["proto/acme/billing/v1/billing.proto"], &["proto"])
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    build_client: bool,
    build_server: bool,
    out_dir: Option<PathBuf>,
    file_descriptor_set_path: Option<PathBuf>,
    message_attributes: Vec<(String, String)>,
    enum_attributes: Vec<(String, String)>,
    field_attributes: Vec<(String, String)>,
    bytes: Vec<String>,
    runtime: String,
    emit_rerun_if_changed: bool,
    inline: Vec<String>,
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    /// Clients and servers for every service, written to `OUT_DIR`.
    pub fn new() -> Builder {
        Builder {
            build_client: true,
            build_server: true,
            out_dir: None,
            file_descriptor_set_path: None,
            message_attributes: Vec::new(),
            enum_attributes: Vec::new(),
            field_attributes: Vec::new(),
            bytes: Vec::new(),
            runtime: "::rpc_core".to_owned(),
            emit_rerun_if_changed: true,
            inline: Vec::new(),
        }
    }

    /// Answers these unary methods (full names, `/package.Service/Method`) on the
    /// connection's task when their handlers do not wait, as `#[rpc(inline)]` does for a
    /// trait: cheaper for handlers that answer at once, but one that computes for long holds
    /// up every call on its connection. Streaming methods are never inline.
    pub fn inline<I, S>(mut self, methods: I) -> Builder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.inline.extend(methods.into_iter().map(Into::into));
        self
    }

    /// Whether to generate clients (default `true`).
    pub fn build_client(mut self, enabled: bool) -> Builder {
        self.build_client = enabled;
        self
    }

    /// Whether to generate servers (default `true`). The service traits are always generated.
    pub fn build_server(mut self, enabled: bool) -> Builder {
        self.build_server = enabled;
        self
    }

    /// Where to write the generated files (default: `OUT_DIR`).
    pub fn out_dir(mut self, dir: impl Into<PathBuf>) -> Builder {
        self.out_dir = Some(dir.into());
        self
    }

    /// Also writes the compiled `FileDescriptorSet` (with source info) to `path`.
    pub fn file_descriptor_set_path(mut self, path: impl Into<PathBuf>) -> Builder {
        self.file_descriptor_set_path = Some(path.into());
        self
    }

    /// Adds an attribute to the messages matching `path` (`.` for all, `.pkg.Message` for one),
    /// as prost-build's `message_attribute`.
    pub fn message_attribute(mut self, path: impl Into<String>, attribute: impl Into<String>) -> Builder {
        self.message_attributes.push((path.into(), attribute.into()));
        self
    }

    /// Adds an attribute to the enums matching `path`.
    pub fn enum_attribute(mut self, path: impl Into<String>, attribute: impl Into<String>) -> Builder {
        self.enum_attributes.push((path.into(), attribute.into()));
        self
    }

    /// Adds an attribute to the fields matching `path` (`.pkg.Message.field`).
    pub fn field_attribute(mut self, path: impl Into<String>, attribute: impl Into<String>) -> Builder {
        self.field_attributes.push((path.into(), attribute.into()));
        self
    }

    /// Generates the `bytes` fields matching these paths as `bytes::Bytes` (zero-copy on
    /// decode) instead of `Vec<u8>`; `"."` for all.
    pub fn bytes<I, S>(mut self, paths: I) -> Builder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.bytes.extend(paths.into_iter().map(Into::into));
        self
    }

    /// The path the generated code uses for the runtime crate (default `::rpc_core`), for a
    /// crate that renamed its dependency.
    pub fn runtime_path(mut self, path: impl Into<String>) -> Builder {
        self.runtime = path.into();
        self
    }

    /// Whether to print `cargo:rerun-if-changed` for every `.proto` file read (default `true`).
    pub fn emit_rerun_if_changed(mut self, enabled: bool) -> Builder {
        self.emit_rerun_if_changed = enabled;
        self
    }

    /// Compiles `protos`, searching imports in `includes`.
    ///
    /// # Errors
    /// A file that cannot be found, parsed or resolved, with its path, line and column; or
    /// a failure to write the output.
    pub fn compile(self, protos: &[impl AsRef<Path>], includes: &[impl AsRef<Path>]) -> Result<(), Error> {
        let includes: Vec<&Path> = includes.iter().map(AsRef::as_ref).collect();
        let runtime: TokenStream = self
            .runtime
            .parse()
            .map_err(|err| Error::new(format!("runtime path {:?} is not a path: {err}", self.runtime)))?;

        let mut compiler = protox::Compiler::new(&includes).map_err(|err| located(&err, &includes))?;
        compiler.include_source_info(true).include_imports(true);
        compiler.open_files(protos.iter().map(AsRef::as_ref)).map_err(|err| located(&err, &includes))?;
        if self.emit_rerun_if_changed {
            for file in compiler.files() {
                if let Some(path) = file.path() {
                    println!("cargo:rerun-if-changed={}", path.display());
                }
            }
        }
        let descriptors = compiler.file_descriptor_set();
        check_names(&descriptors)?;
        // Encoded by protox itself, which keeps custom options (`google.api.http`) that the
        // `prost_types` form drops.
        let encoded = compiler.encode_file_descriptor_set();
        if let Some(path) = &self.file_descriptor_set_path {
            write(path, &encoded)?;
        }
        // Generated servers embed the set (for reflection) from a file beside their code.
        let out_dir = match &self.out_dir {
            Some(dir) => dir.clone(),
            None => std::env::var_os("OUT_DIR")
                .map(PathBuf::from)
                .ok_or_else(|| Error::new("OUT_DIR is not set: run from a build script, or set out_dir"))?,
        };
        let set_file = format!("{FILE_DESCRIPTOR_SET_PREFIX}{:016x}.bin", fnv1a(&encoded));
        write(&out_dir.join(&set_file), &encoded)?;

        let mut config = prost_build::Config::new();
        // The messages derive with the runtime's own prost: they and the generated services
        // cannot disagree on its version, and the user's crate needs no `prost` of its own.
        config.prost_path(format!("{}::prost", self.runtime));
        if let Some(dir) = &self.out_dir {
            config.out_dir(dir);
        }
        for (path, attribute) in &self.message_attributes {
            config.message_attribute(path, attribute);
        }
        for (path, attribute) in &self.enum_attributes {
            config.enum_attribute(path, attribute);
        }
        for (path, attribute) in &self.field_attributes {
            config.field_attribute(path, attribute);
        }
        if !self.bytes.is_empty() {
            config.bytes(&self.bytes);
        }
        config.include_file(INCLUDE_FILE);
        config.service_generator(Box::new(ServiceGenerator {
            build_client: self.build_client,
            build_server: self.build_server,
            runtime,
            inline: self.inline.clone(),
            set_file,
        }));
        config.compile_fds(descriptors).map_err(|err| Error::new(format!("generating code failed: {err}")))
    }
}

/// The 64-bit FNV-1a hash: a name for a file's contents that stays the same from build to
/// build and compiler to compiler (std's hasher promises neither).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |hash, &byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    std::fs::write(path, bytes).map_err(|err| Error::new(format!("cannot write {}: {err}", path.display())))
}

/// Refuses, with a clear message, a service whose generated client or server would clash with
/// a message or enum of the same package (say `service Foo` beside `message FooClient`), which
/// would otherwise surface as confusing errors in generated code.
fn check_names(descriptors: &prost_types::FileDescriptorSet) -> Result<(), Error> {
    for file in &descriptors.file {
        let package = file.package();
        let types: Vec<&str> = descriptors
            .file
            .iter()
            .filter(|other| other.package() == package)
            .flat_map(|other| {
                let messages = other.message_type.iter().map(|m| m.name());
                let enums = other.enum_type.iter().map(|e| e.name());
                messages.chain(enums)
            })
            .collect();
        for service in &file.service {
            let rust_name = heck::ToUpperCamelCase::to_upper_camel_case(service.name());
            for generated in [format!("{rust_name}Client"), format!("{rust_name}Server")] {
                if types.contains(&generated.as_str()) {
                    return Err(Error::new(format!(
                        "{}: service `{}` generates `{generated}`, which clashes with the type of that name in \
                         package `{package}`; rename one of them",
                        file.name(),
                        service.name()
                    )));
                }
            }
        }
    }
    Ok(())
}

/// A protox error as `path:line:column: message`, with the path as found in the includes.
fn located(err: &protox::Error, includes: &[&Path]) -> Error {
    // protox's `Debug` is `name:line:column: message` (or just the message); name the file
    // by its path on disk so that editors can jump to it.
    let text = format!("{err:?}");
    let Some(name) = err.file() else { return Error::new(text) };
    let on_disk = includes.iter().map(|dir| dir.join(name)).find(|path| path.exists());
    match (on_disk, text.strip_prefix(name)) {
        (Some(path), Some(rest)) => Error::new(format!("{}{rest}", path.display())),
        _ => Error::new(text),
    }
}

/// Turns each service prost-build meets into the shared model, and appends what the shared
/// generator makes of it to the package's file.
struct ServiceGenerator {
    build_client: bool,
    build_server: bool,
    runtime: TokenStream,
    /// The full names of the methods answered inline.
    inline: Vec<String>,
    /// The name of the file holding the encoded descriptors, beside the generated code.
    set_file: String,
}

impl prost_build::ServiceGenerator for ServiceGenerator {
    fn generate(&mut self, service: prost_build::Service, buf: &mut String) {
        let model = self.model(&service);
        let tokens = generate(&model);
        let code = match syn::parse2::<syn::File>(tokens.clone()) {
            Ok(file) => prettyplease::unparse(&file),
            // Left unformatted, the compiler will point at whatever is wrong.
            Err(_) => tokens.to_string(),
        };
        buf.push('\n');
        buf.push_str(&code);
    }
}

impl ServiceGenerator {
    fn model(&self, service: &prost_build::Service) -> Service {
        let mut model = Service::new(ident(&service.name), service.package.clone());
        model.wire_name = service.proto_name.clone();
        model.docs = docs(&service.comments);
        model.runtime = self.runtime.clone();
        model.codec = {
            let runtime = &self.runtime;
            quote!(#runtime::codec::ProstCodec)
        };
        model.emit_client = self.build_client;
        model.emit_server = self.build_server;
        // Relative to the generated file, which is written beside it.
        let set_file = &self.set_file;
        model.file_descriptor_set = Some(quote!(::core::include_bytes!(#set_file)));
        model.methods = service
            .methods
            .iter()
            .map(|method| Method {
                name: ident(&method.name),
                wire_name: method.proto_name.clone(),
                input: rust_type(&method.input_type),
                output: rust_type(&method.output_type),
                client_streaming: method.client_streaming,
                server_streaming: method.server_streaming,
                docs: docs(&method.comments),
                inline: !method.client_streaming
                    && !method.server_streaming
                    && self.inline.iter().any(|path| {
                        *path == format!("/{}.{}/{}", service.package, service.proto_name, method.proto_name)
                            || (service.package.is_empty()
                                && *path == format!("/{}/{}", service.proto_name, method.proto_name))
                    }),
            })
            .collect();
        model
    }
}

/// An identifier from prost-build's spelling, which uses `r#` for keywords.
fn ident(name: &str) -> Ident {
    match name.strip_prefix("r#") {
        Some(raw) => Ident::new_raw(raw, Span::call_site()),
        None => Ident::new(name, Span::call_site()),
    }
}

/// A message type as prost-build names it relative to the package module (`Msg`,
/// `super::other::Msg`, `::prost_types::Timestamp`, `()` for `google.protobuf.Empty`).
fn rust_type(path: &str) -> TokenStream {
    path.parse().unwrap_or_else(|_| {
        let message = format!("cannot use {path:?} as a type");
        quote!(::core::compile_error!(#message))
    })
}

/// Doc lines from proto comments, cleaned up as prost-build cleans message comments (code
/// blocks become `text` blocks, never doctests; stray brackets are escaped), and with `<`
/// outside code escaped too, so that `<tag>`-like text is not read as HTML.
fn docs(comments: &prost_build::Comments) -> Vec<String> {
    let mut rendered = String::new();
    comments.append_with_indent(0, &mut rendered);
    let mut in_code = false;
    rendered
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("///"))
        .map(|line| {
            if line.trim_start().starts_with("```") {
                in_code = !in_code;
                return line.to_owned();
            }
            if in_code { line.to_owned() } else { escape_angle_brackets(line) }
        })
        .collect()
}

/// `<` becomes `&lt;`, except inside inline code (`` `Vec<u8>` ``) and where it opens an
/// autolink (`<https://...>`).
fn escape_angle_brackets(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut in_code = false;
    for (at, c) in line.char_indices() {
        match c {
            '`' => {
                in_code = !in_code;
                out.push(c);
            }
            '<' if !in_code => {
                let tail = &line[at..];
                if tail.starts_with("<http://") || tail.starts_with("<https://") {
                    out.push('<');
                } else {
                    out.push_str("&lt;");
                }
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::naming;

    #[test]
    fn keywords_stay_raw() {
        assert_eq!(ident("r#type").to_string(), "r#type");
        assert_eq!(naming::wire_method_name("r#type"), "Type");
    }

    #[test]
    fn angle_brackets_are_escaped_except_autolinks() {
        assert_eq!(escape_angle_brackets("a <b> c"), "a &lt;b> c");
        assert_eq!(escape_angle_brackets("see <https://x.y/z>"), "see <https://x.y/z>");
        assert_eq!(escape_angle_brackets("a `Vec<u8>` b <c>"), "a `Vec<u8>` b &lt;c>");
    }

    #[test]
    fn message_paths_become_types() {
        assert_eq!(rust_type("super::other::Msg").to_string(), "super :: other :: Msg");
        assert_eq!(rust_type("()").to_string(), "()");
    }
}
