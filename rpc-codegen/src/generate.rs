//! The generator: one service model in, the service trait, client stub and server dispatch
//! out, as Rust tokens.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};

use crate::model::{Method, Service};

/// Names the generated client uses for itself; a method may not take them.
const RESERVED_CLIENT_NAMES: &[&str] = &["new", "channel"];

/// Generates the trait, the client (`{Name}Client`) and the server (`{Name}Server<T>`).
pub fn generate(service: &Service) -> TokenStream {
    let errors = check(service);
    if !errors.is_empty() {
        return errors;
    }
    let service_trait = generate_trait(service);
    let client = if service.emit_client { generate_client(service) } else { TokenStream::new() };
    let server = if service.emit_server { generate_server(service) } else { TokenStream::new() };
    quote! {
        #service_trait
        #client
        #server
    }
}

/// What the model allows but the generator cannot honour, as `compile_error!`s at the
/// offending method's span.
fn check(service: &Service) -> TokenStream {
    let mut errors = TokenStream::new();
    for method in &service.methods {
        let span = method.name.span();
        let name = method.name.to_string().trim_start_matches("r#").to_owned();
        if service.emit_client && RESERVED_CLIENT_NAMES.contains(&name.as_str()) {
            let message = format!("a method may not be named `{name}`: the generated client uses that name");
            errors.extend(quote_spanned!(span=> ::core::compile_error!(#message);));
        }
    }
    errors
}

fn docs(lines: &[String]) -> TokenStream {
    quote!(#(#[doc = #lines])*)
}

/// The service's own docs, after a blank line, for the client and server types.
fn service_docs(service: &Service) -> TokenStream {
    if service.docs.is_empty() {
        return TokenStream::new();
    }
    let blank = "";
    let lines = &service.docs;
    quote!(#[doc = #blank] #(#[doc = #lines])*)
}

/// A method's docs, or a line naming what it calls when it has none: generated items are
/// always documented.
fn method_docs(service: &Service, method: &Method) -> TokenStream {
    if method.docs.is_empty() {
        let line = format!(" The `{}` method.", service.method_path(method));
        quote!(#[doc = #line])
    } else {
        docs(&method.docs)
    }
}

fn generate_trait(service: &Service) -> TokenStream {
    let Service { name, vis, runtime, .. } = service;
    let trait_docs = docs(&service.docs);
    let methods = service.methods.iter().map(|method| {
        let Method { name, input, output, .. } = method;
        let method_docs = method_docs(service, method);
        let (args, ok) = match (method.client_streaming, method.server_streaming) {
            (false, false) => (quote!(request: #input), quote!(#output)),
            (false, true) => {
                (quote!(request: #input, responses: #runtime::StreamSender<#output>), quote!(()))
            }
            (true, false) => (quote!(requests: #runtime::Streaming<#input>), quote!(#output)),
            (true, true) => (
                quote!(requests: #runtime::Streaming<#input>, responses: #runtime::StreamSender<#output>),
                quote!(()),
            ),
        };
        quote! {
            #method_docs
            fn #name(
                &self,
                ctx: &mut #runtime::Context,
                #args,
            ) -> impl ::core::future::Future<
                Output = ::core::result::Result<#ok, #runtime::Status>,
            > + ::core::marker::Send;
        }
    });
    quote! {
        #trait_docs
        #vis trait #name: ::core::marker::Send + ::core::marker::Sync + 'static {
            #(#methods)*
        }
    }
}

fn generate_client(service: &Service) -> TokenStream {
    let Service { vis, runtime, codec, .. } = service;
    let client = format_ident!("{}Client", service.name, span = Span::call_site());
    let full_name = service.full_name();
    let doc = format!(" Client for the `{full_name}` service: one method per RPC.");
    let service_docs = service_docs(service);
    let methods = service.methods.iter().map(|method| {
        let Method { name, input, output, .. } = method;
        let method_docs = method_docs(service, method);
        let path = service.method_path(method);
        let client = quote!(#runtime::client);
        match (method.client_streaming, method.server_streaming) {
            (false, false) => quote! {
                #method_docs
                pub fn #name(&self, request: #input) -> #client::UnaryCall<'_, #input, #output, #codec> {
                    self.channel.unary(#path, request)
                }
            },
            (false, true) => quote! {
                #method_docs
                pub fn #name(
                    &self,
                    request: #input,
                ) -> #client::StreamingCall<'_, #input, #output, #codec, #client::ServerStreaming> {
                    self.channel.server_streaming(#path, request)
                }
            },
            (true, false) => quote! {
                #method_docs
                pub fn #name(&self) -> #client::StreamingCall<'_, #input, #output, #codec, #client::ClientStreaming> {
                    self.channel.client_streaming(#path)
                }
            },
            (true, true) => quote! {
                #method_docs
                pub fn #name(&self) -> #client::StreamingCall<'_, #input, #output, #codec, #client::BidiStreaming> {
                    self.channel.bidi_streaming(#path)
                }
            },
        }
    });
    quote! {
        #[doc = #doc]
        #service_docs
        #[derive(Debug, Clone)]
        #vis struct #client {
            channel: #runtime::client::Channel,
        }

        impl #client {
            /// The service's full name.
            pub const SERVICE_NAME: &'static str = #full_name;

            /// A client sending its calls over `channel`.
            pub fn new(channel: #runtime::client::Channel) -> Self {
                Self { channel }
            }

            /// The channel the calls go over.
            pub fn channel(&self) -> &#runtime::client::Channel {
                &self.channel
            }

            #(#methods)*
        }
    }
}

fn generate_server(service: &Service) -> TokenStream {
    let Service { name: service_trait, vis, runtime, codec, .. } = service;
    let server = format_ident!("{}Server", service.name, span = Span::call_site());
    let full_name = service.full_name();
    let doc = format!(" Serves the `{full_name}` service with an implementation of [`{service_trait}`].");
    let service_docs = service_docs(service);
    let file_descriptor_set = service.file_descriptor_set.as_ref().map(|set| {
        quote! {
            fn file_descriptor_set(&self) -> ::core::option::Option<&'static [u8]> {
                ::core::option::Option::Some(#set)
            }
        }
    });
    let descriptors = service.methods.iter().map(|method| {
        let wire_name = &method.wire_name;
        let path = service.method_path(method);
        let kind = match (method.client_streaming, method.server_streaming) {
            (false, false) => quote!(Unary),
            (false, true) => quote!(ServerStreaming),
            (true, false) => quote!(ClientStreaming),
            (true, true) => quote!(BidiStreaming),
        };
        quote! {
            #runtime::method::MethodDescriptor {
                name: #wire_name,
                path: #path,
                kind: #runtime::method::MethodKind::#kind,
            }
        }
    });
    let arms = service.methods.iter().enumerate().map(|(index, method)| {
        let Method { name, input, output, .. } = method;
        let (spawn, args) = match (method.client_streaming, method.server_streaming) {
            (false, false) if method.inline => (quote!(run_unary_inline), quote!(request)),
            (false, false) => (quote!(spawn_unary), quote!(request)),
            (false, true) => (quote!(spawn_server_streaming), quote!(request, responses)),
            (true, false) => (quote!(spawn_client_streaming), quote!(requests)),
            (true, true) => (quote!(spawn_bidi_streaming), quote!(requests, responses)),
        };
        quote! {
            #index => {
                let service = ::std::sync::Arc::clone(&self.inner);
                call.#spawn::<#input, #output, #codec, _, _>(move |mut ctx, #args| async move {
                    let result = <T as #service_trait>::#name(&*service, &mut ctx, #args).await;
                    (ctx, result)
                })
            }
        }
    });
    quote! {
        #[doc = #doc]
        #service_docs
        #vis struct #server<T> {
            inner: ::std::sync::Arc<T>,
        }

        impl<T: #service_trait> #server<T> {
            /// The service's full name.
            pub const SERVICE_NAME: &'static str = #full_name;

            /// Serves the service with `service`.
            pub fn new(service: T) -> Self {
                Self { inner: ::std::sync::Arc::new(service) }
            }

            /// Serves the service with a shared implementation.
            pub fn from_arc(service: ::std::sync::Arc<T>) -> Self {
                Self { inner: service }
            }
        }

        impl<T> ::core::clone::Clone for #server<T> {
            fn clone(&self) -> Self {
                Self { inner: ::std::sync::Arc::clone(&self.inner) }
            }
        }

        impl<T> ::core::fmt::Debug for #server<T> {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(::core::stringify!(#server)).finish_non_exhaustive()
            }
        }

        impl<T: #service_trait> #runtime::codegen::Service for #server<T> {
            fn descriptor(&self) -> &'static #runtime::method::ServiceDescriptor {
                static DESCRIPTOR: #runtime::method::ServiceDescriptor = #runtime::method::ServiceDescriptor {
                    name: #full_name,
                    methods: &[#(#descriptors),*],
                };
                &DESCRIPTOR
            }

            #file_descriptor_set

            #[allow(clippy::match_single_binding)]
            fn call(
                &self,
                method: usize,
                call: #runtime::codegen::ServerCall,
            ) -> #runtime::codegen::Spawned {
                match method {
                    #(#arms)*
                    _ => call.unimplemented(),
                }
            }
        }
    }
}
