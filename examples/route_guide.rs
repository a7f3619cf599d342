//! The classic route-guide service: one method of each kind.
//!
//! - `GetFeature` (unary): the feature at a point;
//! - `ListFeatures` (server streaming): every feature inside a rectangle;
//! - `RecordRoute` (client streaming): a route of points in, a summary out;
//! - `RouteChat` (bidirectional): notes in; each note sent back with the earlier notes left
//!   at the same place.
//!
//! Run with `cargo run --example route_guide`. It serves on a free local port, exercises all
//! four methods over one connection, prints what it got and exits 0.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rpc_core::{Channel, Server, ServerContext, Status, StreamSender, Streaming};
use tokio::net::TcpListener;

/// A point, in degrees multiplied by 10^7.
#[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
pub struct Point {
    /// Latitude × 10^7.
    #[prost(int32, tag = "1")]
    pub latitude: i32,
    /// Longitude × 10^7.
    #[prost(int32, tag = "2")]
    pub longitude: i32,
}

/// A latitude-longitude rectangle given by two opposite corners.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Rectangle {
    /// One corner.
    #[prost(message, optional, tag = "1")]
    pub lo: Option<Point>,
    /// The opposite corner.
    #[prost(message, optional, tag = "2")]
    pub hi: Option<Point>,
}

/// Something named at a point; an empty name means nothing is there.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Feature {
    /// The feature's name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Where it is.
    #[prost(message, optional, tag = "2")]
    pub location: Option<Point>,
}

/// A message left at a point.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RouteNote {
    /// Where.
    #[prost(message, optional, tag = "1")]
    pub location: Option<Point>,
    /// What.
    #[prost(string, tag = "2")]
    pub message: String,
}

/// What `RecordRoute` learned about a route.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RouteSummary {
    /// Points received.
    #[prost(int32, tag = "1")]
    pub point_count: i32,
    /// Known features passed.
    #[prost(int32, tag = "2")]
    pub feature_count: i32,
    /// Distance covered, in metres.
    #[prost(int32, tag = "3")]
    pub distance: i32,
    /// Time taken, in seconds.
    #[prost(int32, tag = "4")]
    pub elapsed_time: i32,
}

/// Route guidance: features, routes and notes.
#[rpc_core::service(package = "routeguide")]
pub trait RouteGuide {
    /// The feature at a point (an unnamed feature if there is none).
    async fn get_feature(&self, ctx: &mut ServerContext, request: Point) -> Result<Feature, Status>;

    /// Every feature inside the rectangle, streamed as they are found.
    async fn list_features(
        &self,
        ctx: &mut ServerContext,
        request: Rectangle,
        responses: StreamSender<Feature>,
    ) -> Result<(), Status>;

    /// Records a route; answers with its summary once the client has sent every point.
    async fn record_route(
        &self,
        ctx: &mut ServerContext,
        requests: Streaming<Point>,
    ) -> Result<RouteSummary, Status>;

    /// Sends back, for each note received, the notes left earlier at the same place.
    async fn route_chat(
        &self,
        ctx: &mut ServerContext,
        requests: Streaming<RouteNote>,
        responses: StreamSender<RouteNote>,
    ) -> Result<(), Status>;
}

/// The server: a fixed set of features and the notes left so far.
struct Guide {
    features: Arc<Vec<Feature>>,
    notes: Mutex<HashMap<Point, Vec<RouteNote>>>,
}

impl Guide {
    fn feature_at(&self, point: Point) -> Option<&Feature> {
        self.features.iter().find(|f| f.location == Some(point))
    }
}

impl RouteGuide for Guide {
    async fn get_feature(&self, _ctx: &mut ServerContext, request: Point) -> Result<Feature, Status> {
        Ok(self
            .feature_at(request)
            .cloned()
            .unwrap_or(Feature { name: String::new(), location: Some(request) }))
    }

    async fn list_features(
        &self,
        _ctx: &mut ServerContext,
        request: Rectangle,
        mut responses: StreamSender<Feature>,
    ) -> Result<(), Status> {
        let (Some(lo), Some(hi)) = (request.lo, request.hi) else {
            return Err(Status::invalid_argument("a rectangle needs both corners"));
        };
        for feature in self.features.iter().filter(|f| f.location.is_some_and(|p| inside(p, lo, hi))) {
            // Waits here if the client reads more slowly than we find features.
            responses.send(feature.clone()).await?;
        }
        Ok(())
    }

    async fn record_route(
        &self,
        _ctx: &mut ServerContext,
        mut requests: Streaming<Point>,
    ) -> Result<RouteSummary, Status> {
        let started = Instant::now();
        let mut summary = RouteSummary::default();
        let mut last: Option<Point> = None;
        while let Some(point) = requests.message().await? {
            summary.point_count += 1;
            if self.feature_at(point).is_some() {
                summary.feature_count += 1;
            }
            if let Some(previous) = last {
                summary.distance += distance(previous, point);
            }
            last = Some(point);
        }
        summary.elapsed_time = started.elapsed().as_secs() as i32;
        Ok(summary)
    }

    async fn route_chat(
        &self,
        _ctx: &mut ServerContext,
        mut requests: Streaming<RouteNote>,
        mut responses: StreamSender<RouteNote>,
    ) -> Result<(), Status> {
        while let Some(note) = requests.message().await? {
            let location = note.location.unwrap_or_default();
            let earlier = {
                let mut notes = self.notes.lock().map_err(|_| Status::internal("notes lock poisoned"))?;
                let here = notes.entry(location).or_default();
                let earlier = here.clone();
                here.push(note);
                earlier
            };
            for note in earlier {
                responses.send(note).await?;
            }
        }
        Ok(())
    }
}

fn inside(point: Point, lo: Point, hi: Point) -> bool {
    let (left, right) = (lo.longitude.min(hi.longitude), lo.longitude.max(hi.longitude));
    let (bottom, top) = (lo.latitude.min(hi.latitude), lo.latitude.max(hi.latitude));
    (left..=right).contains(&point.longitude) && (bottom..=top).contains(&point.latitude)
}

/// Great-circle distance in metres (haversine formula).
fn distance(a: Point, b: Point) -> i32 {
    const COORD_FACTOR: f64 = 1e7;
    const EARTH_RADIUS_M: f64 = 6_371_000.0;
    let (lat1, lat2) =
        ((a.latitude as f64 / COORD_FACTOR).to_radians(), (b.latitude as f64 / COORD_FACTOR).to_radians());
    let (lon1, lon2) =
        ((a.longitude as f64 / COORD_FACTOR).to_radians(), (b.longitude as f64 / COORD_FACTOR).to_radians());
    let h =
        ((lat2 - lat1) / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * ((lon2 - lon1) / 2.0).sin().powi(2);
    (2.0 * EARTH_RADIUS_M * h.sqrt().atan2((1.0 - h).sqrt())) as i32
}

/// A hundred features on a 10 × 10 grid near Mountain View.
fn features() -> Vec<Feature> {
    let mut features = Vec::new();
    for i in 0..10 {
        for j in 0..10 {
            let location = Point { latitude: 407_000_000 + i * 10_000, longitude: -744_000_000 + j * 10_000 };
            features.push(Feature { name: format!("Landmark {i}-{j}"), location: Some(location) });
        }
    }
    features
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let features = Arc::new(features());
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let guide = Guide { features: Arc::clone(&features), notes: Mutex::new(HashMap::new()) };
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
