//! The route guide behind the HTTP/JSON gateway, with JWT auth and a rate limit, called over
//! HTTP as `curl` would call it.
//!
//! Run with `cargo run --example gateway`. It serves the route guide and, in front of it,
//! the gateway configured by `rpc-gateway/examples/gateway.toml`, both on free local ports;
//! sends the HTTP requests below, printing each as a `curl` command with the answer; and
//! exits 0. With `-- --serve 127.0.0.1:8080` it only serves (the gateway on that address)
//! until Ctrl-C, and prints the commands to try.

use std::net::SocketAddr;

use bytes::Bytes;
use examples::route_guide::Guide;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rpc_core::Server;
use rpc_gateway::{Config, Gateway};
use tokio::net::TcpListener;

/// The configuration, beside this file.
const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/gateway.toml");

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let serve = examples::serve_flag("gateway")?;

    // The route guide, on a free port.
    let upstream = TcpListener::bind("127.0.0.1:0").await?;
    let upstream_addr = upstream.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server =
        tokio::spawn(Server::builder().add_service(Guide::server()).serve_with_listener(upstream, async {
            let _ = stopped.await;
        }));

    // The gateway in front of it, as the file says, but with this upstream.
    let mut config = Config::from_file(CONFIG)?;
    config.upstreams[0].target = upstream_addr.to_string();
    let secret = config.auth.as_ref().map(|auth| auth.hs256_secret.clone()).unwrap_or_default();
    let gateway = Gateway::from_config(&config).await?;
    let listener = TcpListener::bind(serve.as_deref().unwrap_or("127.0.0.1:0")).await?;
    let addr = listener.local_addr()?;
    let token = token(&secret, "guide")?;

    if serve.is_some() {
        println!("route guide on {upstream_addr}, the gateway on http://{addr}; Ctrl-C to stop. Try:");
        for (method, path, body, auth) in requests() {
            println!("  {}", curl(addr, method, path, body, auth.then_some(token.as_str())));
        }
        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        gateway.serve(listener, ctrl_c).await?;
        let _ = stop.send(());
        server.await??;
        return Ok(());
    }

    let (stop_gateway, gateway_stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(gateway.serve(listener, async {
        let _ = gateway_stopped.await;
    }));
    println!("route guide on {upstream_addr}, the gateway on http://{addr}\n");
    for (method, path, body, auth) in requests() {
        let bearer = auth.then_some(token.as_str());
        println!("$ {}", curl(addr, method, path, body, bearer));
        let (status, answer) = send(addr, method, path, body, bearer).await?;
        println!("{status}\n{}\n", answer.trim_end());
    }
    // Without a token, recording a route is refused at the edge.
    let (method, path, body, _) = requests()[4];
    println!("$ {}", curl(addr, method, path, body, None));
    let (status, answer) = send(addr, method, path, body, None).await?;
    println!("{status}\n{answer}\n");
    if status != 401 {
        return Err(format!("expected 401 without a token, got {status}").into());
    }

    let _ = stop_gateway.send(());
    serving.await??;
    let _ = stop.send(());
    server.await??;
    Ok(())
}

/// The requests shown: method, path, body, and whether they need the token.
fn requests() -> [(&'static str, &'static str, &'static str, bool); 6] {
    [
        ("GET", "/v1/features/407000000/-744000000", "", false),
        (
            "POST",
            "/routeguide.RouteGuide/GetFeature",
            r#"{"latitude": 407010000, "longitude": -744000000}"#,
            false,
        ),
        (
            "GET",
            "/v1/features?lo.latitude=407000000&lo.longitude=-744000000&hi.latitude=407010000&hi.longitude=-743990000",
            "",
            false,
        ),
        ("GET", "/v1/features/north/1", "", false),
        (
            "POST",
            "/v1/routes",
            r#"[{"latitude": 407000000, "longitude": -744000000}, {"latitude": 407010000, "longitude": -744000000}]"#,
            true,
        ),
        (
            "POST",
            "/v1/notes",
            "{\"location\": {\"latitude\": 1, \"longitude\": 1}, \"message\": \"hi\"}\n{\"location\": {\"latitude\": 1, \"longitude\": 1}, \"message\": \"again\"}",
            true,
        ),
    ]
}

/// The request as a `curl` command line.
fn curl(addr: SocketAddr, method: &str, path: &str, body: &str, token: Option<&str>) -> String {
    let mut line = format!("curl -s -X {method} 'http://{addr}{path}'");
    if let Some(token) = token {
        line.push_str(&format!(" -H 'authorization: Bearer {token}'"));
    }
    if !body.is_empty() {
        // --data-binary keeps the newlines between the requests of a stream.
        line.push_str(&format!(" --data-binary '{body}'"));
    }
    line
}

/// Sends one request, on a connection of its own; the status and the body.
async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> Result<(u16, String), Box<dyn std::error::Error>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut request = hyper::Request::builder().method(method).uri(path).header("host", addr.to_string());
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = sender.send_request(request.body(Full::new(Bytes::from(body.to_owned())))?).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A token with `role`, valid for an hour, signed with `secret`.
fn token(secret: &str, role: &str) -> Result<String, jsonwebtoken::errors::Error> {
    let exp =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs()
            + 3600;
    let claims = serde_json::json!({ "sub": "example", "exp": exp, "roles": [role] });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
}
