//! [`ClientCertAuth`]: authorization by the names in a client's certificate, under mutual TLS.

use crate::interceptor::{Context, Next, ServerInterceptor};
use crate::method::MethodPatterns;
use crate::status::Status;

/// A server interceptor for mutual TLS: every call must come with a verified client
/// certificate, and, once rules are added, one whose names may call the method.
///
/// The TLS handshake has already checked the certificate against the CAs of
/// [`ServerTlsConfig::client_ca_root`](crate::transport::tls::ServerTlsConfig::client_ca_root);
/// this decides what each client may call, by the DNS names and URIs (a SPIFFE ID, say) of
/// its certificate's subject alternative names, compared as written.
///
/// ```
/// use rpc_core::Server;
/// use rpc_core::interceptors::ClientCertAuth;
///
/// let auth = ClientCertAuth::new()
///     .allow("/shop.v1.Orders/*", ["orders.clients.internal", "spiffe://acme.internal/billing"])
///     .allow("/shop.v1.Orders/GetOrder", ["support.clients.internal"])
///     .public("/grpc.health.v1.Health/*");
/// let server = Server::builder().interceptor(auth); // with .tls_config(...client_ca_root(ca))
/// # drop(server);
/// ```
///
/// A call without a client certificate (a plaintext connection, or a server that lets
/// clients without one in) gets `Unauthenticated`; one whose certificate no rule admits to the
/// method gets `PermissionDenied`.
#[derive(Debug, Clone, Default)]
pub struct ClientCertAuth {
    public: MethodPatterns,
    rules: Vec<(MethodPatterns, Vec<String>)>,
}

impl ClientCertAuth {
    /// Admits every call with a verified client certificate, until rules are added.
    pub fn new() -> ClientCertAuth {
        ClientCertAuth::default()
    }

    /// Lets clients whose certificate has any of `names` (a DNS name or a URI of its subject
    /// alternative names) call the methods `pattern` names: `/pkg.Service/Method`,
    /// `/pkg.Service/*` or `*`. A name ending in `/*` admits every name under it: with
    /// SPIFFE IDs, `spiffe://acme.internal/ns/shop/*` is every workload of the `shop`
    /// namespace (and not those of `shopping`). Once any rule is added, a method no rule
    /// admits the client to is denied. Rules add up; the order does not matter.
    pub fn allow<N: Into<String>>(
        mut self,
        pattern: &str,
        names: impl IntoIterator<Item = N>,
    ) -> ClientCertAuth {
        self.rules.push((patterns(pattern), names.into_iter().map(Into::into).collect()));
        self
    }

    /// Lets anyone call the methods `pattern` names, with or without a certificate: health
    /// checks.
    pub fn public(mut self, pattern: &str) -> ClientCertAuth {
        add(&mut self.public, pattern);
        self
    }

    /// Whether a client with `names` may call `method`.
    fn admits<'a>(&self, method: &str, names: impl Iterator<Item = &'a String> + Clone) -> bool {
        self.rules.is_empty()
            || self.rules.iter().filter(|(pattern, _)| pattern.matches(method)).any(|(_, allowed)| {
                names.clone().any(|name| allowed.iter().any(|rule| name_matches(rule, name)))
            })
    }
}

/// Whether `name` is the one `rule` names, or under it for a rule ending in `/*`.
fn name_matches(rule: &str, name: &str) -> bool {
    match rule.strip_suffix('*') {
        Some(prefix) if prefix.ends_with('/') => name.len() > prefix.len() && name.starts_with(prefix),
        _ => rule == name,
    }
}

fn add(set: &mut MethodPatterns, pattern: &str) {
    if pattern == "*" {
        set.all = true;
    } else {
        set.add(pattern.to_owned());
    }
}

fn patterns(pattern: &str) -> MethodPatterns {
    let mut set = MethodPatterns::default();
    add(&mut set, pattern);
    set
}

impl ServerInterceptor for ClientCertAuth {
    async fn intercept(&self, ctx: &mut Context, next: Next<'_>) -> Result<(), Status> {
        let method = ctx.method();
        if self.public.matches(method) {
            return next.run(ctx).await;
        }
        let Some(tls) = ctx.tls().filter(|tls| !tls.peer_certificates().is_empty()) else {
            return Err(Status::unauthenticated(format!("{method} requires a TLS client certificate")));
        };
        let names = tls.peer_dns_names().iter().chain(tls.peer_uri_names());
        if !self.admits(method, names) {
            tracing::debug!(method, names = ?tls.peer_dns_names(), uris = ?tls.peer_uri_names(), "call denied to the client certificate");
            let who = tls.peer_uri_names().first().or(tls.peer_dns_names().first());
            let who = who.map_or_else(String::new, |name| format!(" ({name})"));
            return Err(Status::permission_denied(format!(
                "the client certificate{who} may not call {method}"
            )));
        }
        next.run(ctx).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_ending_in_a_slash_star_admits_the_names_under_it_only() {
        let rule = "spiffe://acme.internal/ns/shop/*";
        assert!(name_matches(rule, "spiffe://acme.internal/ns/shop/sa/orders"));
        assert!(!name_matches(rule, "spiffe://acme.internal/ns/shopping/sa/x"));
        assert!(!name_matches(rule, "spiffe://acme.internal/ns/shop/"));
        assert!(name_matches("orders.internal", "orders.internal"));
        assert!(!name_matches("*.internal", "orders.internal"), "only a trailing /* is a pattern");
    }
}
