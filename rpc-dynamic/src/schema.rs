//! A schema: the protobuf descriptors of some services and their messages, from a server's
//! reflection service or from `.proto` files, and the methods looked up in it.

use std::path::Path;

use bytes::Bytes;
use prost::Message as _;
use prost_reflect::{DescriptorPool, MessageDescriptor, MethodDescriptor, ServiceDescriptor};
use rpc_core::codec::BytesCodec;
use rpc_core::method::{MethodKind, MethodName};
use rpc_core::reflection::FileDescriptorsRequest;
use rpc_core::{Channel, Code, Metadata};

use crate::builtin::BuiltinFiles;
use crate::error::Error;
use crate::json::{self, JsonError, JsonOptions};

/// The reflection method that serves files.
const FILE_DESCRIPTORS: &str = "/rpc.reflection.v1.Reflection/FileDescriptors";

/// The descriptors of some services and of the messages they use.
#[derive(Debug, Clone)]
pub struct Schema {
    pool: DescriptorPool,
}

impl Schema {
    /// Parses `files` (and what they import), searching `includes` for them and their imports
    /// (the well-known types, `google/api/annotations.proto` and `google/api/http.proto` need
    /// no include path). A file is named by its path, or by its name under an include path.
    ///
    /// # Errors
    /// [`Error::Proto`] naming the file, line and column of the first problem.
    pub fn from_protos(files: &[impl AsRef<Path>], includes: &[impl AsRef<Path>]) -> Result<Schema, Error> {
        let mut resolver = protox::file::ChainFileResolver::new();
        for include in includes {
            resolver.add(protox::file::IncludeFileResolver::new(include.as_ref().to_owned()));
        }
        resolver.add(protox::file::GoogleFileResolver::new());
        resolver.add(BuiltinFiles);
        let mut compiler = protox::Compiler::with_file_resolver(resolver);
        compiler.include_source_info(true).include_imports(true);
        compiler
            .open_files(files.iter().map(AsRef::as_ref))
            .map_err(|err| Error::Proto(format!("{err:?}")))?;
        Ok(Schema { pool: compiler.descriptor_pool() })
    }

    /// Asks the reflection service behind `channel` for the files that define `symbols`
    /// (service names, usually), sending `metadata` with the call.
    ///
    /// # Errors
    /// [`Error::Schema`] saying what to do when the server serves no reflection, or has no
    /// schema for a symbol (a service declared as a Rust trait); [`Error::Status`] when the
    /// call fails otherwise.
    pub async fn from_reflection(
        channel: &Channel,
        symbols: &[&str],
        metadata: &Metadata,
    ) -> Result<Schema, Error> {
        let request = FileDescriptorsRequest { symbols: symbols.iter().map(|s| (*s).to_owned()).collect() };
        let body = Bytes::from(request.encode_to_vec());
        let answer = channel
            .unary::<Bytes, Bytes, BytesCodec>(FILE_DESCRIPTORS, body)
            .with_metadata(metadata.clone())
            .await
            .map_err(|status| match status.code() {
                Code::Unimplemented => Error::Schema(format!(
                    "{} does not serve reflection (a server mounts it with `Server::builder().reflection()`): \
                     give the schema as .proto files instead",
                    channel.target()
                )),
                Code::NotFound => Error::Schema(format!(
                    "{}; a service declared as a Rust trait has no protobuf schema on the server: give its \
                     .proto file instead",
                    status.message()
                )),
                _ => Error::Status(status),
            })?;
        Schema::from_file_descriptor_set(&answer)
    }

    /// The schema in an encoded `google.protobuf.FileDescriptorSet`.
    ///
    /// # Errors
    /// [`Error::Schema`] if the files do not decode or do not hold together.
    pub fn from_file_descriptor_set(bytes: &[u8]) -> Result<Schema, Error> {
        let pool = DescriptorPool::decode(bytes)
            .map_err(|err| Error::Schema(format!("the schema does not hold together: {err}")))?;
        Ok(Schema { pool })
    }

    /// The descriptors themselves.
    pub fn pool(&self) -> &DescriptorPool {
        &self.pool
    }

    /// Every service in the schema.
    pub fn services(&self) -> impl ExactSizeIterator<Item = ServiceDescriptor> + '_ {
        self.pool.services()
    }

    /// The service of this full name.
    ///
    /// # Errors
    /// [`Error::Schema`] listing the services there are.
    pub fn service(&self, name: &str) -> Result<ServiceDescriptor, Error> {
        let name = name.trim_start_matches('.');
        self.pool.get_service_by_name(name).ok_or_else(|| {
            let known: Vec<String> = self.services().map(|s| s.full_name().to_owned()).collect();
            Error::Schema(format!("no service {name} in the schema (it has: {})", list(&known)))
        })
    }

    /// The method named `pkg.Service/Method` (or `/pkg.Service/Method`, or
    /// `pkg.Service.Method`).
    ///
    /// # Errors
    /// [`Error::Schema`] naming what is missing and what there is.
    pub fn method(&self, name: &str) -> Result<Method, Error> {
        let name = name.trim_start_matches('/');
        let (service, method) = name.split_once('/').or_else(|| name.rsplit_once('.')).ok_or_else(|| {
            Error::Schema(format!("{name:?} is not a method name: expected pkg.Service/Method"))
        })?;
        let service = self.service(service)?;
        match service.methods().find(|m| m.name() == method) {
            Some(descriptor) => Ok(Method::new(descriptor)),
            None => {
                let known: Vec<String> = service.methods().map(|m| m.name().to_owned()).collect();
                Err(Error::Schema(format!(
                    "service {} has no method {method} (it has: {})",
                    service.full_name(),
                    list(&known)
                )))
            }
        }
    }

    /// Every method of every service.
    pub fn methods(&self) -> Vec<Method> {
        self.services().flat_map(|service| service.methods().map(Method::new).collect::<Vec<_>>()).collect()
    }
}

fn list(names: &[String]) -> String {
    if names.is_empty() { "nothing".to_owned() } else { names.join(", ") }
}

/// A method found in a [`Schema`]: its wire name and shape, and its messages.
#[derive(Debug, Clone)]
pub struct Method {
    descriptor: MethodDescriptor,
    path: MethodName,
}

impl Method {
    fn new(descriptor: MethodDescriptor) -> Method {
        let path =
            MethodName::from(format!("/{}/{}", descriptor.parent_service().full_name(), descriptor.name()));
        Method { descriptor, path }
    }

    /// The method's descriptor.
    pub fn descriptor(&self) -> &MethodDescriptor {
        &self.descriptor
    }

    /// The full name calls are made with, `/pkg.Service/Method` (made once, shared by the
    /// calls).
    pub fn path(&self) -> &MethodName {
        &self.path
    }

    /// The call's shape.
    pub fn kind(&self) -> MethodKind {
        match (self.descriptor.is_client_streaming(), self.descriptor.is_server_streaming()) {
            (false, false) => MethodKind::Unary,
            (false, true) => MethodKind::ServerStreaming,
            (true, false) => MethodKind::ClientStreaming,
            (true, true) => MethodKind::BidiStreaming,
        }
    }

    /// The request message's type.
    pub fn input(&self) -> MessageDescriptor {
        self.descriptor.input()
    }

    /// The response message's type.
    pub fn output(&self) -> MessageDescriptor {
        self.descriptor.output()
    }

    /// A request read from JSON, encoded.
    ///
    /// # Errors
    /// A [`JsonError`] saying at which field the JSON does not fit the request's type.
    pub fn request_from_json(&self, json: &str) -> Result<Bytes, JsonError> {
        json::encode_json(&self.input(), json)
    }

    /// A response body as one line of JSON.
    ///
    /// # Errors
    /// A [`JsonError`] if the body does not decode as the response's type.
    pub fn response_to_json(&self, body: Bytes, options: &JsonOptions) -> Result<String, JsonError> {
        let mut out = Vec::new();
        json::decode_to_json(&self.output(), body, options, &mut out)?;
        // serde_json writes UTF-8.
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}
