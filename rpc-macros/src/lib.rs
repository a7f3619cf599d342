//! `#[service]`: the trait front end of the generator. It reads an annotated trait into
//! `rpc_codegen`'s service model, checking its shape with errors at the offending span,
//! and emits whatever the generator makes of it.
//!
//! Use it through `rpc_core::service`, whose documentation describes the accepted shape.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use quote::ToTokens;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{
    Attribute, Expr, ExprLit, FnArg, GenericArgument, ItemTrait, Lit, LitStr, Meta, MetaNameValue,
    PathArguments, ReturnType, Token, TraitItem, TraitItemFn, Type,
};

/// Turns a trait into an RPC service; see `rpc_core::service`.
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item = TokenStream2::from(item);
    match expand(attr.into(), item.clone()) {
        Ok(tokens) => tokens.into(),
        Err(err) => {
            // The trait goes out as written too, so that its impls and uses do not add a
            // cascade of "trait not found" errors to the one that matters.
            let errors = err.to_compile_error();
            let original = syn::parse2::<ItemTrait>(item).map(strip_rpc_attrs).ok();
            quote::quote!(#errors #original).into()
        }
    }
}

/// The trait without our `#[rpc(...)]` method attributes, which mean nothing to rustc.
fn strip_rpc_attrs(mut item: ItemTrait) -> ItemTrait {
    for trait_item in &mut item.items {
        if let TraitItem::Fn(method) = trait_item {
            method.attrs.retain(|attr| !attr.path().is_ident("rpc"));
        }
    }
    item
}

fn expand(attr: TokenStream2, item: TokenStream2) -> syn::Result<TokenStream2> {
    let options = ServiceOptions::parse(attr)?;
    let item: ItemTrait = syn::parse2(item)?;
    let (model, spelled) = read_trait(&item, options)?;
    let generated = rpc_codegen::generate(&model);
    let checks = type_checks(&model, &spelled);
    Ok(quote::quote! {
        #generated
        #checks
    })
}

/// The runtime types as the user spelled them in one method, with their message types.
struct Spelled {
    context: Type,
    /// The return type, and the `Ok` type within it.
    returns: Type,
    ok: Type,
    requests: Option<(Type, TokenStream2)>,
    responses: Option<(Type, TokenStream2)>,
}

/// Asserts that the user's `ServerContext` and `Status` are the runtime's, with the error at the
/// user's type if not. It also keeps the user's imports of those names in use.
fn type_checks(model: &rpc_codegen::Service, spelled: &[Spelled]) -> TokenStream2 {
    let runtime = &model.runtime;
    // Each message type is a prost message, asked where it is written: a wrong type is
    // named there, with what to write instead.
    let messages = model.methods.iter().flat_map(|method| [&method.input, &method.output]).map(|ty| {
        let span = ty.clone().into_iter().next().map_or_else(proc_macro2::Span::call_site, |t| t.span());
        quote::quote_spanned! {span=> #runtime::codegen::assert_message::<#ty>(); }
    });
    let checks = spelled.iter().map(|Spelled { context, returns, ok, requests, responses }| {
        let context_check = quote::quote_spanned! {context.span()=>
            let _: fn(#context) -> &mut #runtime::ServerContext = |ctx| ctx;
        };
        let returns_check = quote::quote_spanned! {returns.span()=>
            let _: fn(#returns) -> ::core::result::Result<#ok, #runtime::Status> = |result| result;
        };
        let requests_check = requests.as_ref().map(|(ty, message)| {
            quote::quote_spanned! {ty.span()=>
                let _: fn(#ty) -> #runtime::Streaming<#message> = |requests| requests;
            }
        });
        let responses_check = responses.as_ref().map(|(ty, message)| {
            quote::quote_spanned! {ty.span()=>
                let _: fn(#ty) -> #runtime::StreamSender<#message> = |responses| responses;
            }
        });
        quote::quote!(#context_check #returns_check #requests_check #responses_check)
    });
    quote::quote! {
        const _: () = {
            #[allow(dead_code, clippy::all)]
            fn assert_runtime_types() {
                #(#messages)*
                #(#checks)*
            }
        };
    }
}

/// Collects every error found, so that one compile shows them all.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, span: impl ToTokens, message: impl std::fmt::Display) {
        let err = syn::Error::new_spanned(span, message);
        match &mut self.0 {
            Some(all) => all.combine(err),
            None => self.0 = Some(err),
        }
    }

    fn push_err(&mut self, err: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(err),
            None => self.0 = Some(err),
        }
    }

    fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

/// `#[service(package = "...", name = "...")]`.
#[derive(Default)]
struct ServiceOptions {
    package: Option<LitStr>,
    name: Option<LitStr>,
}

impl ServiceOptions {
    fn parse(attr: TokenStream2) -> syn::Result<ServiceOptions> {
        let mut options = ServiceOptions::default();
        if attr.is_empty() {
            return Ok(options);
        }
        let args =
            syn::parse::Parser::parse2(Punctuated::<MetaNameValue, Token![,]>::parse_terminated, attr)?;
        let mut errors = Errors::default();
        for arg in args {
            let value = match string_value(&arg.value) {
                Ok(value) => value,
                Err(err) => {
                    errors.push_err(err);
                    continue;
                }
            };
            if arg.path.is_ident("package") {
                if !is_dotted_identifier(&value.value()) {
                    errors
                        .push(&value, "`package` must be dot-separated identifiers, like `acme.billing.v1`");
                }
                options.package = Some(value);
            } else if arg.path.is_ident("name") {
                if !is_identifier(&value.value()) {
                    errors.push(&value, "`name` must be an identifier");
                }
                options.name = Some(value);
            } else {
                errors.push(&arg.path, "unknown option: expected `package = \"...\"` or `name = \"...\"`");
            }
        }
        errors.finish()?;
        Ok(options)
    }
}

fn string_value(expr: &Expr) -> syn::Result<LitStr> {
    match expr {
        Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => Ok(s.clone()),
        other => Err(syn::Error::new_spanned(other, "expected a string literal")),
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_dotted_identifier(s: &str) -> bool {
    s.split('.').all(is_identifier)
}

/// Reads the trait into the model, or explains everything wrong with it.
fn read_trait(
    item: &ItemTrait,
    options: ServiceOptions,
) -> syn::Result<(rpc_codegen::Service, Vec<Spelled>)> {
    let mut errors = Errors::default();
    if let Some(unsafety) = &item.unsafety {
        errors.push(unsafety, "a service trait cannot be `unsafe`");
    }
    if let Some(auto) = &item.auto_token {
        errors.push(auto, "a service trait cannot be an auto trait");
    }
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        errors
            .push(&item.generics, "a service trait cannot be generic: its messages are fixed by its schema");
    }
    if !item.supertraits.is_empty() {
        errors.push(
            &item.supertraits,
            "a service trait cannot declare supertraits: the generated trait is `Send + Sync + 'static`",
        );
    }
    let docs = read_attrs(&item.attrs, &mut errors, "service trait").docs;

    let package = options.package.map(|p| p.value()).unwrap_or_default();
    let mut service = rpc_codegen::Service::new(item.ident.clone(), package);
    if let Some(name) = options.name {
        service.wire_name = name.value();
    }
    service.docs = docs;
    service.vis = item.vis.to_token_stream();

    let mut spelled = Vec::new();
    for trait_item in &item.items {
        match trait_item {
            TraitItem::Fn(method) => {
                if let Some((method, types)) = read_method(method, &mut errors) {
                    spelled.push(types);
                    if let Some(clash) = service.methods.iter().find(|m| m.wire_name == method.wire_name) {
                        let message = format!(
                            "two methods share the wire name `{}` (`{}` and `{}`)",
                            method.wire_name, clash.name, method.name
                        );
                        errors.push(&method.name, message);
                    }
                    service.methods.push(method);
                }
            }
            other => errors.push(other, "a service trait may contain only `async fn` methods"),
        }
    }
    errors.finish()?;
    Ok((service, spelled))
}

/// What a trait or method's attributes say.
struct Attrs {
    docs: Vec<String>,
    wire_name: Option<LitStr>,
    /// `#[rpc(inline)]`, where it was written.
    inline: Option<proc_macro2::Span>,
}

fn read_attrs(attrs: &[Attribute], errors: &mut Errors, what: &str) -> Attrs {
    let mut out = Attrs { docs: Vec::new(), wire_name: None, inline: None };
    for attr in attrs {
        if attr.path().is_ident("doc") {
            if let Meta::NameValue(nv) = &attr.meta
                && let Ok(doc) = string_value(&nv.value)
            {
                out.docs.push(doc.value());
            }
        } else if attr.path().is_ident("rpc") && what == "method" {
            let parsed = attr.parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated);
            match parsed {
                Ok(args) => {
                    for arg in args {
                        match arg {
                            Meta::Path(path) if path.is_ident("inline") => {
                                out.inline = Some(path.span());
                            }
                            Meta::NameValue(arg) if arg.path.is_ident("name") => {
                                match string_value(&arg.value) {
                                    Ok(name) if is_identifier(&name.value()) => out.wire_name = Some(name),
                                    Ok(name) => errors.push(&name, "`name` must be an identifier"),
                                    Err(err) => errors.push_err(err),
                                }
                            }
                            other => {
                                errors.push(&other, "unknown option: expected `name = \"...\"` or `inline`")
                            }
                        }
                    }
                }
                Err(err) => errors.push_err(err),
            }
        } else {
            let allowed = if what == "method" {
                "doc comments and `#[rpc(name = \"...\", inline)]`"
            } else {
                "doc comments"
            };
            errors.push(attr, format!("unsupported attribute on a {what}: only {allowed} are allowed"));
        }
    }
    out
}

const SHAPE: &str = "expected one of:
    async fn name(&self, ctx: &mut ServerContext, request: Req) -> Result<Resp, Status>
    async fn name(&self, ctx: &mut ServerContext, request: Req, responses: StreamSender<Resp>) -> Result<(), Status>
    async fn name(&self, ctx: &mut ServerContext, requests: Streaming<Req>) -> Result<Resp, Status>
    async fn name(&self, ctx: &mut ServerContext, requests: Streaming<Req>, responses: StreamSender<Resp>) -> Result<(), Status>";

/// Reads one method; `None` (with its errors recorded) when it does not have the shape.
fn read_method(method: &TraitItemFn, all_errors: &mut Errors) -> Option<(rpc_codegen::Method, Spelled)> {
    let sig = &method.sig;
    let mut errors = Errors::default();
    let attrs = read_attrs(&method.attrs, &mut errors, "method");

    if let Some(constness) = &sig.constness {
        errors.push(constness, "service methods cannot be `const`");
    }
    if let Some(unsafety) = &sig.unsafety {
        errors.push(unsafety, "service methods cannot be `unsafe`");
    }
    if let Some(abi) = &sig.abi {
        errors.push(abi, "service methods cannot declare an ABI");
    }
    if sig.asyncness.is_none() {
        errors.push(sig.fn_token, format!("service methods must be `async fn`; {SHAPE}"));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors
            .push(&sig.generics, "service methods cannot be generic: their messages are fixed by the schema");
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(variadic, "service methods cannot be variadic");
    }
    if let Some(body) = &method.default {
        errors.push(body, "service methods cannot have a default body: implement them on your type");
    }

    let inputs = read_inputs(sig, &mut errors);
    let server_streaming = inputs.as_ref().is_some_and(|i| i.responses.is_some());
    let output = match &sig.output {
        ReturnType::Default => {
            let span = sig.paren_token.span.close();
            let expected = if server_streaming { "Result<(), Status>" } else { "Result<Response, Status>" };
            errors.push_err(syn::Error::new(
                span,
                format!("service methods must return `{expected}`: add a return type"),
            ));
            None
        }
        ReturnType::Type(_, ty) => match result_types(ty) {
            // With arguments already wrong, the shape they meant is unknown: no second error.
            Ok((ok, returns)) if inputs.is_none() => Some((ok, returns)),
            Ok((ok, returns)) => check_ok_type(&ok, server_streaming, &mut errors).map(|ok| (ok, returns)),
            Err(err) => {
                errors.push_err(err);
                None
            }
        },
    };

    if let Err(err) = errors.finish() {
        all_errors.push_err(err);
        return None;
    }
    let inputs = inputs?;
    let (ok, returns) = output?;
    let name = sig.ident.clone();
    let wire_name = match attrs.wire_name {
        Some(name) => name.value(),
        None => rpc_codegen::naming::wire_method_name(&name.to_string()),
    };
    let output = match &inputs.responses {
        Some((_, response)) => response.clone(),
        None => ok.to_token_stream(),
    };
    let method = rpc_codegen::Method {
        name,
        wire_name,
        input: inputs.request.clone(),
        output: output.clone(),
        client_streaming: inputs.requests_spelled.is_some(),
        server_streaming,
        docs: attrs.docs,
        inline: attrs.inline.is_some(),
    };
    if let Some(span) = attrs.inline
        && method.is_streaming()
    {
        all_errors.push_err(syn::Error::new(
            span,
            "`inline` applies to unary methods only: a streaming handler always runs in a task of its own",
        ));
    }
    let spelled = Spelled {
        context: inputs.context,
        returns,
        ok,
        requests: inputs.requests_spelled.map(|ty| (ty, inputs.request)),
        responses: inputs.responses.map(|(ty, _)| (ty, output)),
    };
    Some((method, spelled))
}

/// What a method's arguments say.
struct Inputs {
    /// The context type as spelled.
    context: Type,
    /// The request message type.
    request: TokenStream2,
    /// `Streaming<Req>` as spelled, for a stream of requests.
    requests_spelled: Option<Type>,
    /// `StreamSender<Resp>` as spelled, and `Resp`, for a stream of responses.
    responses: Option<(Type, TokenStream2)>,
}

/// Checks `(&self, ctx: &mut ServerContext, request: Req | requests: Streaming<Req>
/// [, responses: StreamSender<Resp>])`.
fn read_inputs(sig: &syn::Signature, errors: &mut Errors) -> Option<Inputs> {
    let count = sig.inputs.len();
    if count != 3 && count != 4 {
        let span: &dyn ToTokens = if count == 0 { &sig.ident } else { &sig.inputs };
        errors.push(span, format!("wrong number of arguments: found {count}, {SHAPE}"));
    }
    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(receiver))
            if receiver.reference.is_some()
                && receiver.mutability.is_none()
                && receiver.colon_token.is_none() => {}
        Some(other) => errors.push(other, "the first argument must be `&self`"),
        None => {}
    }
    let context = match inputs.next() {
        Some(FnArg::Typed(ctx)) if matches!(&*ctx.ty, Type::Reference(r) if r.mutability.is_some()) => {
            Some((*ctx.ty).clone())
        }
        Some(other) => {
            errors.push(other, "the second argument must be the call context, `ctx: &mut ServerContext`");
            None
        }
        None => None,
    };
    let request = match inputs.next() {
        Some(FnArg::Typed(arg)) => match &*arg.ty {
            Type::Reference(_) => {
                errors
                    .push(&arg.ty, "the request must be taken by value: a message type like `HelloRequest`");
                None
            }
            Type::ImplTrait(_) => {
                errors.push(&arg.ty, "the request must be a concrete message type");
                None
            }
            ty => match wrapped(ty, "Streaming", errors) {
                Some(Some(inner)) => Some((inner.to_token_stream(), Some(ty.clone()))),
                Some(None) => None,
                None => Some((ty.to_token_stream(), None)),
            },
        },
        Some(other) => {
            errors.push(
                other,
                "the third argument must be the request: `request: Req` or `requests: Streaming<Req>`",
            );
            None
        }
        None => None,
    };
    let responses = match inputs.next() {
        None => Some(None),
        Some(FnArg::Typed(arg)) => {
            match wrapped(&arg.ty, "StreamSender", errors) {
                Some(Some(inner)) => Some(Some(((*arg.ty).clone(), inner.to_token_stream()))),
                Some(None) => None,
                None => {
                    errors.push(&arg.ty, "the fourth argument, if any, is the response stream: `responses: StreamSender<Resp>`");
                    None
                }
            }
        }
        Some(other) => {
            errors.push(
                other,
                "the fourth argument, if any, is the response stream: `responses: StreamSender<Resp>`",
            );
            None
        }
    };
    let (request, requests_spelled) = request?;
    Some(Inputs { context: context?, request, requests_spelled, responses: responses? })
}

/// For a type spelled `...::Wrapper<T>`: `Some(Some(T))`; `Some(None)` if it names the
/// wrapper wrongly (error recorded); `None` if it is another type.
fn wrapped<'t>(ty: &'t Type, wrapper: &str, errors: &mut Errors) -> Option<Option<&'t Type>> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident != wrapper {
        return None;
    }
    let inner = match &last.arguments {
        PathArguments::AngleBracketed(args) if args.args.len() == 1 => match args.args.first() {
            Some(GenericArgument::Type(inner)) => Some(inner),
            _ => None,
        },
        _ => None,
    };
    if inner.is_none() {
        errors.push(ty, format!("`{wrapper}` takes the message type: `{wrapper}<Message>`"));
    }
    Some(inner)
}

/// Checks the `Ok` type against the method's shape: `()` with a response stream, a message
/// otherwise.
fn check_ok_type(ok: &Type, server_streaming: bool, errors: &mut Errors) -> Option<Type> {
    let unit = matches!(ok, Type::Tuple(tuple) if tuple.elems.is_empty());
    if server_streaming && !unit {
        errors.push(ok, "a method that sends a response stream returns `Result<(), Status>`: the stream ends with that status");
        return None;
    }
    if !server_streaming && names_a_stream(ok) {
        errors.push(ok, "server streaming takes a `StreamSender<Item>` argument and returns `Result<(), Status>`: write `async fn name(&self, ctx: &mut ServerContext, request: Req, responses: StreamSender<Item>) -> Result<(), Status>` and send with `responses.send(item).await?`");
        return None;
    }
    if !server_streaming && unit {
        errors.push(ok, "the response must be a message type; to send a stream of responses, take `responses: StreamSender<Resp>`");
        return None;
    }
    Some(ok.clone())
}

/// Whether a response type is a stream written the way other frameworks return one
/// (`Streaming<T>`, `impl Stream`, `BoxStream<T>`, `Pin<Box<dyn Stream>>`, `ReceiverStream<T>`).
fn names_a_stream(ty: &Type) -> bool {
    let Type::Path(path) = ty else { return false };
    let Some(last) = path.path.segments.last() else { return false };
    let name = last.ident.to_string();
    match name.as_str() {
        "Streaming" | "Stream" | "BoxStream" | "ReceiverStream" | "UnboundedReceiverStream" => true,
        "Pin" | "Box" => last.arguments.to_token_stream().to_string().contains("Stream"),
        _ => false,
    }
}

/// For a return type spelled `...Result<Out, E>` (or a `...Result<Out>` alias, any name
/// ending in `Result`, so that a message may be named `Result`), `Out` and
/// the whole type as spelled. That the whole type really is `Result<Out, rpc_core::Status>`
/// is left to the type check the expansion emits, so renamed imports and aliases work.
fn result_types(ty: &Type) -> syn::Result<(Type, Type)> {
    let wrong = || syn::Error::new(ty.span(), "service methods must return `Result<Response, Status>`");
    let Type::Path(path) = ty else {
        return Err(wrong());
    };
    let Some(last) = path.path.segments.last() else {
        return Err(wrong());
    };
    if !last.ident.to_string().ends_with("Result") {
        return Err(wrong());
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return Err(wrong());
    };
    let mut types = args.args.iter().filter_map(|arg| match arg {
        GenericArgument::Type(ty) => Some(ty),
        _ => None,
    });
    let Some(ok) = types.next() else {
        return Err(wrong());
    };
    if let Type::ImplTrait(_) = ok
        && ok.to_token_stream().to_string().contains("Stream")
    {
        return Err(syn::Error::new(
            ok.span(),
            "server streaming takes a `StreamSender<Item>` argument and returns `Result<(), Status>`: write `async fn name(&self, ctx: &mut ServerContext, request: Req, responses: StreamSender<Item>) -> Result<(), Status>`",
        ));
    }
    if let Type::Reference(_) | Type::ImplTrait(_) = ok {
        return Err(syn::Error::new(ok.span(), "the response must be a concrete message type"));
    }
    Ok((ok.clone(), ty.clone()))
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::*;

    #[test]
    fn packages_are_dotted_identifiers() {
        assert!(is_dotted_identifier("acme.billing.v1"));
        assert!(!is_dotted_identifier("acme..v1"));
        assert!(!is_dotted_identifier("1acme"));
        assert!(!is_dotted_identifier(""));
    }

    #[test]
    fn a_valid_trait_expands() {
        let item = quote! {
            pub trait Greeter {
                async fn say_hello(&self, ctx: &mut ServerContext, req: HelloRequest) -> Result<HelloReply, Status>;
            }
        };
        let out = expand(quote!(package = "helloworld"), item).expect("expands").to_string();
        assert!(out.contains("\"/helloworld.Greeter/SayHello\""), "{out}");
    }
}
