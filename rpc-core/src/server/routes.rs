//! The route table: full method name on the wire to the service and method that serve it.

use std::collections::HashMap;
use std::sync::Arc;

use crate::codegen::Service;
use crate::interceptor::{DynServerInterceptor, ServerChain};
use crate::method::MethodKind;

/// How much of an unknown method name an error message repeats.
const MAX_ECHOED_NAME: usize = 256;

/// Where one method name leads.
pub(crate) struct Route {
    pub(crate) service: Arc<dyn Service>,
    pub(crate) index: usize,
    pub(crate) path: &'static str,
    pub(crate) kind: MethodKind,
    /// The interceptors its calls run through, server-wide first; `None` for none.
    pub(crate) interceptors: Option<Arc<[Arc<dyn DynServerInterceptor>]>>,
    /// The service's own interceptors, until the server-wide ones are put in front.
    service_chain: ServerChain,
    /// Whether the server-wide interceptors pass this route by (the built-in health service).
    bypass_server_chain: bool,
}

/// Every method of every mounted service, by its full name.
#[derive(Default)]
pub(crate) struct Routes {
    by_path: HashMap<Box<[u8]>, Route>,
    services: Vec<&'static str>,
    mounted: Vec<Arc<dyn Service>>,
}

impl Routes {
    /// Mounts `service`.
    ///
    /// # Panics
    /// If a service of the same name is already mounted: that is a programming error,
    /// caught when the server is built rather than by a surprised caller.
    pub(crate) fn add(&mut self, service: Arc<dyn Service>, chain: ServerChain) {
        self.mount(service, chain, false);
    }

    /// Mounts `service` where the server-wide interceptors do not apply.
    pub(crate) fn add_bypassing_server_chain(&mut self, service: Arc<dyn Service>) {
        self.mount(service, ServerChain::new(), true);
    }

    fn mount(&mut self, service: Arc<dyn Service>, chain: ServerChain, bypass_server_chain: bool) {
        let descriptor = service.descriptor();
        assert!(
            !self.services.contains(&descriptor.name),
            "service {} is mounted twice on one server",
            descriptor.name
        );
        self.services.push(descriptor.name);
        self.mounted.push(Arc::clone(&service));
        for (index, method) in descriptor.methods.iter().enumerate() {
            let route = Route {
                service: Arc::clone(&service),
                index,
                path: method.path,
                kind: method.kind,
                interceptors: None,
                service_chain: chain.clone(),
                bypass_server_chain,
            };
            self.by_path.insert(method.path.as_bytes().into(), route);
        }
    }

    /// Puts the server-wide interceptors in front of every service's own.
    pub(crate) fn set_server_chain(&mut self, server: &ServerChain) {
        let none = ServerChain::new();
        for route in self.by_path.values_mut() {
            let server = if route.bypass_server_chain { &none } else { server };
            route.interceptors = route.service_chain.behind(server);
        }
    }

    /// The route for a method name as received on the wire.
    #[inline]
    pub(crate) fn get(&self, path: &[u8]) -> Option<&Route> {
        self.by_path.get(path)
    }

    /// Why a method name from the wire has no route, for the `UNIMPLEMENTED` message.
    pub(crate) fn describe_unknown(&self, path: &[u8]) -> String {
        // The name is the peer's: echo a bounded prefix of it.
        let path = String::from_utf8_lossy(&path[..path.len().min(MAX_ECHOED_NAME)]);
        let service = path.strip_prefix('/').and_then(|p| p.split_once('/')).map(|(service, _)| service);
        match service {
            Some(service) if self.services.contains(&service) => {
                format!("service {service} has no method {path}")
            }
            Some(service) => format!("unknown service {service} (method {path})"),
            None => format!("malformed method name {path:?}: expected /package.Service/Method"),
        }
    }

    /// The names of the mounted services.
    pub(crate) fn service_names(&self) -> &[&'static str] {
        &self.services
    }

    /// The mounted services, in the order they were mounted.
    pub(crate) fn services(&self) -> &[Arc<dyn Service>] {
        &self.mounted
    }

    /// Whether a service of this name is mounted.
    pub(crate) fn contains(&self, service: &str) -> bool {
        self.services.contains(&service)
    }
}

/// A server's route table (full method name to handler), exposed for the dispatch
/// micro-benchmark only: not part of the API, and may change at any time.
#[doc(hidden)]
pub struct DispatchTable(Routes);

impl DispatchTable {
    /// The table of a server with `services` mounted.
    pub fn new(services: impl IntoIterator<Item = Arc<dyn Service>>) -> DispatchTable {
        let mut routes = Routes::default();
        for service in services {
            routes.add(service, ServerChain::new());
        }
        DispatchTable(routes)
    }

    /// Whether a call to `path` (as read from the wire) has a handler: the lookup every call
    /// starts with.
    pub fn routes(&self, path: &[u8]) -> bool {
        self.0.get(path).is_some()
    }
}

impl std::fmt::Debug for DispatchTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DispatchTable").field("services", &self.0.service_names()).finish()
    }
}
