//! Runnable example programs; each is a `[[example]]` of this package, run with
//! `cargo run --example <name>` from the repository root. What several of them (and the
//! tests of the command-line client and the gateway) share lives here: the route guide,
//! generated from `proto/route_guide.proto`, and its server.

/// The code generated from `proto/route_guide.proto`: messages, the `RouteGuide` trait,
/// `RouteGuideClient` and `RouteGuideServer`.
#[allow(missing_docs)]
pub mod routeguide {
    rpc_core::include_proto!("routeguide");
}

/// The code generated from `proto/helloworld.proto`.
#[allow(missing_docs)]
pub mod helloworld {
    rpc_core::include_proto!("helloworld");
}

pub mod route_guide;

/// The address an example was asked to serve on with `--serve ADDR`: `Ok(None)` when it was
/// started with no arguments (run the demonstration), an error naming the usage otherwise.
pub fn serve_flag(program: &str) -> Result<Option<String>, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match &args[..] {
        [] => Ok(None),
        [flag, addr] if flag == "--serve" => Ok(Some(addr.clone())),
        _ => Err(format!("usage: {program} [--serve ADDR]")),
    }
}

/// Serves `server`, with the reflection service, on `addr` until Ctrl-C, saying where.
pub async fn serve_until_ctrl_c(
    server: rpc_core::server::ServerBuilder,
    addr: &str,
    what: &str,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("{what} serving on {}, with reflection; Ctrl-C to stop", listener.local_addr()?);
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    server.reflection().serve_with_listener(listener, ctrl_c).await
}
