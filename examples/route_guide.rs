//! The classic route-guide service (declared in `proto/route_guide.proto`): one method of
//! each kind.
//!
//! - `GetFeature` (unary): the feature at a point;
//! - `ListFeatures` (server streaming): every feature inside a rectangle;
//! - `RecordRoute` (client streaming): a route of points in, a summary out;
//! - `RouteChat` (bidirectional): notes in; each note sent back with the earlier notes left
//!   at the same place.
//!
//! Run with `cargo run --example route_guide`. It serves on a free local port, exercises all
//! four methods over one connection, prints what it got and exits 0. With
//! `-- --serve 127.0.0.1:50051` it only serves, with reflection, until Ctrl-C: for `rpcurl`
//! and the gateway to talk to.

use std::sync::Arc;

use examples::route_guide::{Guide, features};
use examples::routeguide::{Point, Rectangle, RouteGuideClient, RouteGuideServer, RouteNote};
use rpc_core::{Channel, Server};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Some(addr) = examples::serve_flag("route_guide")? {
        let server = Server::builder().add_service(Guide::server());
        return Ok(examples::serve_until_ctrl_c(server, &addr, "route guide").await?);
    }
    let features = Arc::new(features());
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let guide = Guide::new(Arc::clone(&features));
    let server = tokio::spawn(
        Server::builder().add_service(RouteGuideServer::new(guide)).serve_with_listener(listener, async {
            let _ = stopped.await;
        }),
    );
    let client = RouteGuideClient::new(Channel::connect(addr).await?);
    println!("route guide serving on {addr}");

    // Unary.
    let known = features[42].location.unwrap_or_default();
    let feature = client.get_feature(known).await?;
    println!("GetFeature({}, {})        -> {:?}", known.latitude, known.longitude, feature.name);
    let nowhere = client.get_feature(Point { latitude: 0, longitude: 0 }).await?;
    println!("GetFeature(0, 0)                  -> {:?} (nothing there)", nowhere.name);

    // Server streaming.
    let rectangle = Rectangle {
        lo: Some(Point { latitude: 407_000_000, longitude: -744_000_000 }),
        hi: Some(Point { latitude: 407_020_000, longitude: -743_980_000 }),
    };
    let mut found = client.list_features(rectangle).await?;
    let mut names = Vec::new();
    while let Some(feature) = found.message().await? {
        names.push(feature.name);
    }
    println!("ListFeatures(3 × 3 corner)        -> {} features: {}", names.len(), names.join(", "));

    // Client streaming.
    let (mut route, summary) = client.record_route().await?;
    for (i, feature) in features.iter().step_by(11).enumerate() {
        route.send(feature.location.unwrap_or_default()).await?;
        if i == 0 {
            route.send(Point { latitude: 408_000_000, longitude: -745_000_000 }).await?;
        }
    }
    route.close();
    let summary = summary.await?;
    println!(
        "RecordRoute({} points)            -> {} features passed, {} m",
        summary.point_count, summary.feature_count, summary.distance
    );

    // Bidirectional streaming.
    let (mut notes, mut replies) = client.route_chat().await?;
    let here = Point { latitude: 1, longitude: 1 };
    let there = Point { latitude: 2, longitude: 2 };
    for (location, text) in
        [(here, "first here"), (there, "first there"), (here, "second here"), (here, "third here")]
    {
        notes.send(RouteNote { location: Some(location), message: text.into() }).await?;
    }
    notes.close();
    let mut echoed = Vec::new();
    while let Some(note) = replies.message().await? {
        echoed.push(note.message);
    }
    println!("RouteChat(4 notes)                -> earlier notes sent back: {echoed:?}");

    let _ = stop.send(());
    server.await??;
    println!("server shut down cleanly");
    if names.len() != 9 || summary.point_count != 11 || echoed != ["first here", "first here", "second here"]
    {
        return Err("unexpected results".into());
    }
    Ok(())
}
