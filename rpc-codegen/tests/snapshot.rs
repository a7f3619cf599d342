//! What the generator emits for a small service, pretty-printed and compared with the
//! reviewed copy in `tests/snapshots/`. A change to the generated API shows up as a diff
//! of that file; after reviewing it, regenerate with `UPDATE_SNAPSHOTS=1 cargo test`.

use std::path::Path;

use quote::{format_ident, quote};
use rpc_codegen::{Method, Service, generate};

fn greeter() -> Service {
    let mut service = Service::new(format_ident!("Greeter"), "helloworld");
    service.docs = vec![" The greeting service.".into()];
    service.methods.push(Method {
        name: format_ident!("say_hello"),
        wire_name: "SayHello".into(),
        input: quote!(HelloRequest),
        output: quote!(HelloReply),
        client_streaming: false,
        server_streaming: false,
        docs: vec![" Sends a greeting.".into()],
        inline: false,
    });
    service
}

#[test]
fn generated_code_for_a_small_service_matches_the_snapshot() {
    let tokens = generate(&greeter());
    let file: syn::File = syn::parse2(tokens).expect("the generator emits valid Rust");
    let pretty = prettyplease::unparse(&file);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/greeter.rs.snap");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &pretty).expect("write snapshot");
    }
    let expected = std::fs::read_to_string(&path).expect("snapshot exists (UPDATE_SNAPSHOTS=1 creates it)");
    assert_eq!(pretty, expected, "generated code changed; review, then UPDATE_SNAPSHOTS=1 cargo test");
}

#[test]
fn every_call_kind_generates_valid_rust() {
    let mut service = greeter();
    for (name, client_streaming, server_streaming) in
        [("lots_of_replies", false, true), ("lots_of_greetings", true, false), ("chat", true, true)]
    {
        service.methods.push(Method {
            name: format_ident!("{}", name),
            wire_name: rpc_codegen::naming::wire_method_name(name),
            input: quote!(HelloRequest),
            output: quote!(HelloReply),
            client_streaming,
            server_streaming,
            docs: Vec::new(),
            inline: false,
        });
    }
    let code = generate(&service);
    let file: syn::File = syn::parse2(code.clone()).expect("valid Rust");
    let text = prettyplease::unparse(&file);
    for needle in [
        "spawn_server_streaming",
        "spawn_client_streaming",
        "spawn_bidi_streaming",
        "MethodKind::BidiStreaming",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
}
