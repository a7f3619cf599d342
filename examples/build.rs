//! Compiles the examples' `.proto` files: messages, and a client and server per service.

fn main() -> Result<(), rpc_codegen::proto::Error> {
    rpc_codegen::compile_protos(&["proto/helloworld.proto"], &["proto"])
}
