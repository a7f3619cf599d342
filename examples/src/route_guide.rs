//! The route guide's server: a fixed set of features, and the notes left so far.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rpc_core::{ServerContext, Status, StreamSender, Streaming};

use crate::routeguide::{Feature, Point, Rectangle, RouteGuide, RouteGuideServer, RouteNote, RouteSummary};

/// The server: answers from a fixed list of features, and keeps the notes left at each place.
#[derive(Debug)]
pub struct Guide {
    features: Arc<Vec<Feature>>,
    notes: Mutex<HashMap<(i32, i32), Vec<RouteNote>>>,
}

impl Guide {
    /// A guide to `features`.
    pub fn new(features: Arc<Vec<Feature>>) -> Guide {
        Guide { features, notes: Mutex::new(HashMap::new()) }
    }

    /// The service to mount: a guide to [`features`].
    pub fn server() -> RouteGuideServer<Guide> {
        RouteGuideServer::new(Guide::new(Arc::new(features())))
    }

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
                let here = notes.entry((location.latitude, location.longitude)).or_default();
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

/// A hundred features on a 10 × 10 grid near Mountain View: `Landmark i-j` at latitude
/// `407000000 + i × 10000`, longitude `-744000000 + j × 10000`.
pub fn features() -> Vec<Feature> {
    let mut features = Vec::new();
    for i in 0..10 {
        for j in 0..10 {
            let location = Point { latitude: 407_000_000 + i * 10_000, longitude: -744_000_000 + j * 10_000 };
            features.push(Feature { name: format!("Landmark {i}-{j}"), location: Some(location) });
        }
    }
    features
}
