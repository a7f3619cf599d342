//! Build script of rpc-core: with the `etcd` feature, generates the etcd v3 client that the
//! etcd registry uses, from etcd's own `.proto` files (vendored in `proto/`).
//!
//! The files are parsed in pure Rust by protox into a `FileDescriptorSet`, which
//! tonic-prost-build turns into a gRPC client: no `protoc` is needed, or ever run. Without the
//! feature the script does nothing.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "etcd")]
    {
        println!("cargo:rerun-if-changed=proto");
        let descriptors = protox::compile(["etcd/api/etcdserverpb/rpc.proto"], ["proto"])?;
        tonic_prost_build::configure().build_server(false).build_transport(true).compile_fds(descriptors)?;
    }
    Ok(())
}
