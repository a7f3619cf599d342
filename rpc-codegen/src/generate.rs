//! The generator: one service model in, the service trait, client stub and server dispatch
//! out, as Rust tokens.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};

use crate::model::{Method, Service};
use crate::naming::client_method_ident;

/// Generates the trait, the client (`{Name}Client`) and the server (`{Name}Server<T>`).
pub fn generate(service: &Service) -> TokenStream {
    let service_trait = generate_trait(service);
    let client = if service.emit_client { generate_client(service) } else { TokenStream::new() };
    let server = if service.emit_server { generate_server(service) } else { TokenStream::new() };
    quote! {
        #service_trait
        #client
        #server
    }
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
                ctx: &mut #runtime::ServerContext,
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
        let Method { input, output, .. } = method;
        let name = client_method_ident(&method.name);
        let method_docs = method_docs(service, method);
        let path = service.method_path(method);
        let client = quote!(#runtime::client);
        // A message type the codec cannot carry is reported at the type, where it is written.
        let span = first_span(input);
        let unary = quote_spanned!(span=> self.channel.unary(#path, request));
        let server_streaming = quote_spanned!(span=> self.channel.server_streaming(#path, request));
        let client_streaming = quote_spanned!(span=> self.channel.client_streaming(#path));
        let bidi_streaming = quote_spanned!(span=> self.channel.bidi_streaming(#path));
        match (method.client_streaming, method.server_streaming) {
            (false, false) => quote! {
                #method_docs
                pub fn #name(&self, request: #input) -> #client::UnaryCall<'_, #input, #output, #codec> {
                    #unary
                }
            },
            (false, true) => quote! {
                #method_docs
                pub fn #name(
                    &self,
                    request: #input,
                ) -> #client::StreamingCall<'_, #input, #output, #codec, #client::ServerStreaming> {
                    #server_streaming
                }
            },
            (true, false) => quote! {
                #method_docs
                pub fn #name(&self) -> #client::StreamingCall<'_, #input, #output, #codec, #client::ClientStreaming> {
                    #client_streaming
                }
            },
            (true, true) => quote! {
                #method_docs
                pub fn #name(&self) -> #client::StreamingCall<'_, #input, #output, #codec, #client::BidiStreaming> {
                    #bidi_streaming
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
    let imp = implementation_param(service);
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
        // A message type the codec cannot carry is reported at the type, where it is written.
        let span = first_span(input);
        let spawn = proc_macro2::Ident::new(&spawn.to_string(), span);
        let spawn = quote_spanned!(span=> call.#spawn::<#input, #output, #codec, _, _>);
        quote! {
            #index => {
                let service = ::std::sync::Arc::clone(&self.inner);
                #spawn(move |mut ctx, #args| async move {
                    let result = <#imp as #service_trait>::#name(&*service, &mut ctx, #args).await;
                    (ctx, result)
                })
            }
        }
    });
    quote! {
        #[doc = #doc]
        #service_docs
        #vis struct #server<#imp> {
            inner: ::std::sync::Arc<#imp>,
        }

        impl<#imp: #service_trait> #server<#imp> {
            /// The service's full name.
            pub const SERVICE_NAME: &'static str = #full_name;

            /// Serves the service with `service`.
            pub fn new(service: #imp) -> Self {
                Self { inner: ::std::sync::Arc::new(service) }
            }

            /// Serves the service with a shared implementation.
            pub fn from_arc(service: ::std::sync::Arc<#imp>) -> Self {
                Self { inner: service }
            }
        }

        impl<#imp> ::core::clone::Clone for #server<#imp> {
            fn clone(&self) -> Self {
                Self { inner: ::std::sync::Arc::clone(&self.inner) }
            }
        }

        impl<#imp> ::core::fmt::Debug for #server<#imp> {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(::core::stringify!(#server)).finish_non_exhaustive()
            }
        }

        impl<#imp: #service_trait> #runtime::codegen::Service for #server<#imp> {
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

/// The name of the server's type parameter, the implementation: `T`, unless the service or
/// one of its message types is named so (a service `T` is legal), then `T1`, `T2`...
fn implementation_param(service: &Service) -> proc_macro2::Ident {
    let mut taken = std::collections::HashSet::new();
    taken.insert(service.name.to_string());
    for method in &service.methods {
        collect_idents(method.input.clone(), &mut taken);
        collect_idents(method.output.clone(), &mut taken);
    }
    let name = std::iter::once("T".to_owned())
        .chain((1..).map(|n| format!("T{n}")))
        .find(|name| !taken.contains(name))
        .unwrap_or_else(|| "T".to_owned());
    proc_macro2::Ident::new(&name, Span::call_site())
}

fn collect_idents(tokens: TokenStream, into: &mut std::collections::HashSet<String>) {
    for token in tokens {
        match token {
            proc_macro2::TokenTree::Ident(ident) => {
                into.insert(ident.to_string());
            }
            proc_macro2::TokenTree::Group(group) => collect_idents(group.stream(), into),
            _ => {}
        }
    }
}

/// The span of a type's first token: where a user wrote it (the call site for `.proto` input).
fn first_span(tokens: &TokenStream) -> Span {
    tokens.clone().into_iter().next().map_or_else(Span::call_site, |token| token.span())
}
