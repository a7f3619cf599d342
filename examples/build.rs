//! Compiles the examples' `.proto` files: messages, and a client and server per service.
//! `google/api/*.proto` (the HTTP annotations of the route guide) are the copies vendored in
//! rpc-core.

fn main() -> Result<(), rpc_codegen::proto::Error> {
    rpc_codegen::compile_protos(
        &["proto/helloworld.proto", "proto/route_guide.proto"],
        &["proto", "../rpc-core/proto"],
    )
}
