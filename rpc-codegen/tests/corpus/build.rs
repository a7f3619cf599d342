//! Compiles the corpus with the `.proto` front end, as a user's build.rs would.

fn main() -> Result<(), rpc_codegen::proto::Error> {
    rpc_codegen::compile_protos(
        &[
            "proto/helloworld.proto",
            "proto/acme/billing/v1/billing.proto",
            "proto/legacy/v2.proto",
            "proto/grpc/health/v1/health.proto",
            "proto/routeguide/route_guide.proto",
            "proto/kitchen_sink.proto",
            "proto/hostile_names.proto",
        ],
        &["proto"],
    )
}
