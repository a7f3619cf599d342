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
fn streaming_methods_are_a_compile_error_for_now() {
    let mut service = greeter();
    service.methods[0].server_streaming = true;
    let code = generate(&service).to_string();
    assert!(code.contains("compile_error"), "{code}");
}
