//! Authentication: [`BearerToken`] puts a token on every call a client makes; `JwtAuth`
//! (feature `jwt`) checks it on the server, hands the caller's `Claims` to the handler and
//! decides, per method, which roles may call.
//!
//! The token travels in the `authorization` metadata as `Bearer <token>`, as in gRPC and
//! HTTP (RFC 6750).

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::interceptor::{ClientContext, ClientInterceptor, ClientNext};
use crate::status::Status;

/// The metadata key that carries the token.
const AUTHORIZATION: &str = "authorization";

/// The scheme in front of the token.
const BEARER: &str = "Bearer";

/// A client interceptor that sends `authorization: Bearer <token>` with every call.
///
/// The token is either fixed ([`BearerToken::new`]) or asked for on every call
/// ([`BearerToken::from_fn`]), for tokens that are refreshed while the channel lives. It
/// replaces any `authorization` value the call already had. Its `Debug` output never shows
/// the token.
///
/// ```
/// use rpc_core::Channel;
/// use rpc_core::middleware::BearerToken;
///
/// # async fn run() -> Result<(), rpc_core::Status> {
/// let channel = Channel::builder("127.0.0.1:50051")
///     .interceptor(BearerToken::new("eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl"))
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
///
/// On the server, the `JwtAuth` interceptor (feature `jwt`) validates the token.
#[derive(Clone)]
pub struct BearerToken {
    source: TokenSource,
}

/// Where a [`BearerToken`] gets its token.
#[derive(Clone)]
enum TokenSource {
    /// The whole metadata value, `Bearer <token>`, made once.
    Fixed(Option<Bytes>),
    /// A function giving the current token.
    Current(Arc<dyn Fn() -> String + Send + Sync>),
}

impl BearerToken {
    /// Sends `token` with every call. An empty token sends nothing.
    pub fn new(token: impl Into<String>) -> BearerToken {
        BearerToken { source: TokenSource::Fixed(header_value(&token.into())) }
    }

    /// Sends the token `current` returns, asking for it once per call.
    ///
    /// `current` runs on the calling task, so it must be quick and must not block: return a
    /// token kept up to date elsewhere (a refresh task writing to a lock or an atomic swap),
    /// not fetch a new one. When it returns an empty string, the call goes without a token.
    /// Registered inside a [`Retry`](crate::middleware::Retry), it is asked again for each
    /// attempt.
    ///
    /// ```
    /// use std::sync::{Arc, RwLock};
    /// use rpc_core::middleware::BearerToken;
    ///
    /// let token = Arc::new(RwLock::new(String::from("first")));
    /// let shared = Arc::clone(&token);
    /// let interceptor = BearerToken::from_fn(move || shared.read().map(|t| t.clone()).unwrap_or_default());
    /// // Later, a refresh task replaces it; the next call sends the new token.
    /// if let Ok(mut token) = token.write() {
    ///     *token = String::from("second");
    /// }
    /// # drop(interceptor);
    /// ```
    pub fn from_fn(current: impl Fn() -> String + Send + Sync + 'static) -> BearerToken {
        BearerToken { source: TokenSource::Current(Arc::new(current)) }
    }

    /// The metadata value to send now, if there is a token.
    fn value(&self) -> Option<Bytes> {
        match &self.source {
            TokenSource::Fixed(value) => value.clone(),
            TokenSource::Current(current) => header_value(&current()),
        }
    }
}

/// `Bearer <token>`, or nothing for an empty token.
fn header_value(token: &str) -> Option<Bytes> {
    (!token.is_empty()).then(|| Bytes::from(format!("{BEARER} {token}")))
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let token = match &self.source {
            TokenSource::Fixed(Some(_)) => "<redacted>",
            TokenSource::Fixed(None) => "<none>",
            TokenSource::Current(_) => "<from fn>",
        };
        f.debug_struct("BearerToken").field("token", &token).finish()
    }
}

impl ClientInterceptor for BearerToken {
    async fn intercept(&self, ctx: &mut ClientContext, mut next: ClientNext<'_>) -> Result<(), Status> {
        if let Some(value) = self.value() {
            ctx.metadata_mut().insert(AUTHORIZATION, value);
        }
        next.run(ctx).await
    }
}

#[cfg(feature = "jwt")]
pub use jwt::*;

#[cfg(feature = "jwt")]
mod jwt {
    use std::borrow::Cow;
    use std::collections::HashSet;
    use std::fmt;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use jsonwebtoken::errors::ErrorKind;
    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    use serde_json::{Map, Value};

    use super::{AUTHORIZATION, BEARER};
    use crate::interceptor::ServerContext;
    use crate::interceptor::{ServerInterceptor, ServerNext};
    use crate::metadata::Metadata;
    use crate::status::Status;

    /// The claims of a validated JWT, as the handler sees them.
    ///
    /// [`JwtAuth`] puts them in the call's extensions; a handler reads them with
    /// `ctx.extensions().get::<Claims>()`:
    ///
    /// ```
    /// use rpc_core::middleware::Claims;
    /// use rpc_core::{ServerContext, Status};
    /// # #[derive(Clone, PartialEq, prost::Message)] pub struct Req {}
    /// # #[derive(Clone, PartialEq, prost::Message)] pub struct Reply { #[prost(string, tag = "1")] pub owner: String }
    ///
    /// async fn get_order(ctx: &mut ServerContext, _req: Req) -> Result<Reply, Status> {
    ///     let claims = ctx.extensions().get::<Claims>().ok_or_else(|| Status::unauthenticated("no caller"))?;
    ///     if !claims.has_role("support") && claims.get_str("tenant") != Some("acme") {
    ///         return Err(Status::permission_denied("not your order"));
    ///     }
    ///     Ok(Reply { owner: claims.subject().unwrap_or_default().to_owned() })
    /// }
    /// ```
    ///
    /// The registered claims (`sub`, `iss`, `aud`, `exp`) and the roles have accessors; every
    /// claim, those included, is available by name through [`get`](Claims::get).
    #[derive(Debug, Clone, PartialEq, Default)]
    pub struct Claims {
        subject: Option<String>,
        issuer: Option<String>,
        audience: Vec<String>,
        expires_at: Option<u64>,
        roles: Vec<String>,
        all: Map<String, Value>,
    }

    impl Claims {
        /// Reads claims from a JWT's decoded payload, taking the roles from the claim named
        /// `roles_claim` (a list of strings, or one string).
        ///
        /// [`JwtAuth`] builds them this way; it is public so that handlers can be tested
        /// without tokens.
        ///
        /// ```
        /// use rpc_core::middleware::Claims;
        ///
        /// let payload = serde_json::json!({ "sub": "alice", "roles": ["admin"], "tenant": "acme" });
        /// let claims = Claims::from_map(payload.as_object().cloned().unwrap_or_default(), "roles");
        /// assert_eq!(claims.subject(), Some("alice"));
        /// assert!(claims.has_role("admin"));
        /// assert_eq!(claims.get_str("tenant"), Some("acme"));
        /// ```
        pub fn from_map(all: Map<String, Value>, roles_claim: &str) -> Claims {
            let string = |name: &str| all.get(name).and_then(Value::as_str).map(str::to_owned);
            Claims {
                subject: string("sub"),
                issuer: string("iss"),
                audience: strings(all.get("aud")),
                expires_at: all.get("exp").and_then(seconds),
                roles: strings(all.get(roles_claim)),
                all,
            }
        }

        /// The subject (`sub`): who the token is about.
        pub fn subject(&self) -> Option<&str> {
            self.subject.as_deref()
        }

        /// The issuer (`iss`): who made the token.
        pub fn issuer(&self) -> Option<&str> {
            self.issuer.as_deref()
        }

        /// The audiences (`aud`): whom the token is for. Empty when absent.
        pub fn audience(&self) -> &[String] {
            &self.audience
        }

        /// When the token expires (`exp`).
        pub fn expires_at(&self) -> Option<SystemTime> {
            self.expires_at.and_then(|secs| UNIX_EPOCH.checked_add(Duration::from_secs(secs)))
        }

        /// The caller's roles, from the roles claim. Empty when absent.
        pub fn roles(&self) -> &[String] {
            &self.roles
        }

        /// Whether the caller has `role`.
        pub fn has_role(&self, role: &str) -> bool {
            self.roles.iter().any(|r| r == role)
        }

        /// The claim called `name`, whatever its type.
        pub fn get(&self, name: &str) -> Option<&Value> {
            self.all.get(name)
        }

        /// The claim called `name`, if it is a string.
        pub fn get_str(&self, name: &str) -> Option<&str> {
            self.get(name).and_then(Value::as_str)
        }

        /// Every claim of the token, by name.
        pub fn as_map(&self) -> &Map<String, Value> {
            &self.all
        }
    }

    /// A list of strings, or one string as a list of one; other values are skipped.
    fn strings(value: Option<&Value>) -> Vec<String> {
        match value {
            Some(Value::String(one)) => vec![one.clone()],
            Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            _ => Vec::new(),
        }
    }

    /// A JWT NumericDate: whole seconds since the epoch, possibly written with a fraction.
    fn seconds(value: &Value) -> Option<u64> {
        value.as_u64().or_else(|| {
            value.as_f64().filter(|s| s.is_finite() && *s >= 0.0 && *s < u64::MAX as f64).map(|s| s as u64)
        })
    }

    /// The error of [`JwtAuth::rs256`] for a key it cannot use.
    ///
    /// Its message names what is wrong, never the key's contents.
    #[derive(Debug, thiserror::Error)]
    #[error("not a usable RSA public key in PEM form ({reason})")]
    pub struct InvalidJwtKey {
        reason: String,
    }

    /// A server interceptor that admits calls bearing a valid JWT, hands the handler its
    /// [`Claims`], and checks which roles may call which method.
    ///
    /// For every call that is not [public](JwtAuth::public), it reads the `authorization`
    /// metadata, which must be `Bearer <jwt>` (as [`BearerToken`](super::BearerToken) sends),
    /// and validates the JWT: its signature and algorithm (HS256 with a shared secret from
    /// [`hs256`](JwtAuth::hs256), or RS256 with a public key from [`rs256`](JwtAuth::rs256)),
    /// its expiry `exp` (required), `nbf` when present, and the
    /// [audience](JwtAuth::audience) and [issuer](JwtAuth::issuer) when configured. A call
    /// without a token, or with a malformed or invalid one, is answered `Unauthenticated`
    /// with a message that says what was wrong but never echoes the token or the key.
    ///
    /// The validated [`Claims`] go into the call's extensions for the handler:
    /// `ctx.extensions().get::<Claims>()`.
    ///
    /// Access rules ([`allow`](JwtAuth::allow)) name methods by their full name
    /// (`/pkg.Service/Method`), a whole service (`/pkg.Service/*`) or every method (`*`).
    /// Without rules, any caller with a valid token may call any method. With rules, a call
    /// goes through only if a rule matching its method admits one of the caller's roles, and
    /// is otherwise answered `PermissionDenied`. Roles come from the `roles` claim (a list of
    /// strings), or from the claim named with [`roles_claim`](JwtAuth::roles_claim).
    ///
    /// ```
    /// use std::time::Duration;
    /// use rpc_core::Server;
    /// use rpc_core::middleware::JwtAuth;
    ///
    /// let auth = JwtAuth::hs256(b"a secret shared with the token issuer")
    ///     .issuer("https://auth.example.com")
    ///     .audience("orders")
    ///     .leeway(Duration::from_secs(30))
    ///     .allow("/shop.Orders/*", ["admin"])
    ///     .allow("/shop.Orders/GetOrder", ["support", "customer"])
    ///     .public("/grpc.health.v1.Health/*");
    /// let server = Server::builder().interceptor(auth);
    /// # drop(server);
    /// ```
    ///
    /// With an RSA public key, for tokens signed by an identity provider:
    ///
    /// ```no_run
    /// use rpc_core::middleware::JwtAuth;
    ///
    /// # fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let pem = std::fs::read("idp-public.pem")?;
    /// let auth = JwtAuth::rs256(&pem)?.issuer("https://idp.example.com").roles_claim("groups");
    /// # drop(auth); Ok(()) }
    /// ```
    pub struct JwtAuth {
        key: DecodingKey,
        validation: Validation,
        roles_claim: String,
        public: Vec<MethodPattern>,
        rules: Vec<Rule>,
    }

    impl JwtAuth {
        /// The clock skew allowed by default when checking `exp` and `nbf`.
        pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);

        /// The largest leeway [`leeway`](JwtAuth::leeway) accepts; larger ones are capped to it.
        pub const MAX_LEEWAY: Duration = Duration::from_secs(24 * 60 * 60);

        /// The claim roles are read from by default.
        pub const DEFAULT_ROLES_CLAIM: &'static str = "roles";

        /// Validates tokens signed with HS256 (HMAC-SHA256) and `secret`. Tokens signed with
        /// any other algorithm are refused.
        pub fn hs256(secret: impl AsRef<[u8]>) -> JwtAuth {
            JwtAuth::new(DecodingKey::from_secret(secret.as_ref()), Algorithm::HS256)
        }

        /// Validates tokens signed with RS256 (RSASSA-PKCS1-v1_5, SHA-256) by the private half
        /// of `public_key_pem`: a `PUBLIC KEY` (SPKI) or `RSA PUBLIC KEY` (PKCS#1) PEM block.
        /// Tokens signed with any other algorithm are refused.
        ///
        /// # Errors
        /// If the PEM does not hold an RSA public key (a private key is refused too).
        pub fn rs256(public_key_pem: impl AsRef<[u8]>) -> Result<JwtAuth, InvalidJwtKey> {
            let invalid = |e: jsonwebtoken::errors::Error| InvalidJwtKey { reason: key_error(e.kind()) };
            let key = DecodingKey::from_rsa_pem(public_key_pem.as_ref()).map_err(invalid)?;
            // The key's DER is only parsed when a token is checked; parse it now, so that a bad
            // key fails here rather than make every token look forged.
            Jwk::from_decoding_key(&key, Some(Algorithm::RS256)).map_err(invalid)?;
            Ok(JwtAuth::new(key, Algorithm::RS256))
        }

        fn new(key: DecodingKey, algorithm: Algorithm) -> JwtAuth {
            let mut validation = Validation::new(algorithm);
            validation.leeway = JwtAuth::DEFAULT_LEEWAY.as_secs();
            validation.validate_nbf = true;
            // Checked only once an audience is configured (jsonwebtoken would otherwise refuse
            // every token that names one).
            validation.validate_aud = false;
            JwtAuth {
                key,
                validation,
                roles_claim: JwtAuth::DEFAULT_ROLES_CLAIM.to_owned(),
                public: Vec::new(),
                rules: Vec::new(),
            }
        }

        /// The clock skew to allow when checking `exp` and `nbf`, in whole seconds (default
        /// [`DEFAULT_LEEWAY`](JwtAuth::DEFAULT_LEEWAY), at most
        /// [`MAX_LEEWAY`](JwtAuth::MAX_LEEWAY)): a token is accepted until `leeway` after it
        /// expired.
        pub fn leeway(mut self, leeway: Duration) -> JwtAuth {
            // Capped: jsonwebtoken subtracts it from the current time.
            self.validation.leeway = leeway.min(JwtAuth::MAX_LEEWAY).as_secs();
            self
        }

        /// Requires the token's `aud` to name `audience`. Called more than once, any of the
        /// audiences is accepted. A token without `aud` is then refused.
        pub fn audience(mut self, audience: impl Into<String>) -> JwtAuth {
            self.validation.aud.get_or_insert_with(HashSet::new).insert(audience.into());
            self.validation.validate_aud = true;
            self.validation.required_spec_claims.insert("aud".to_owned());
            self
        }

        /// Requires the token's `iss` to be `issuer`. Called more than once, any of the
        /// issuers is accepted. A token without `iss` is then refused.
        pub fn issuer(mut self, issuer: impl Into<String>) -> JwtAuth {
            self.validation.iss.get_or_insert_with(HashSet::new).insert(issuer.into());
            self.validation.required_spec_claims.insert("iss".to_owned());
            self
        }

        /// Reads the caller's roles from the claim `name` instead of `roles`. The claim holds
        /// a list of strings (or a single string).
        pub fn roles_claim(mut self, name: impl Into<String>) -> JwtAuth {
            self.roles_claim = name.into();
            self
        }

        /// Lets callers with any of `roles` call the methods `pattern` names:
        /// `/pkg.Service/Method`, `/pkg.Service/*` or `*`.
        ///
        /// Once any rule is added, a method no rule admits the caller to is denied: calls get
        /// `PermissionDenied`. Rules add up; the order does not matter.
        ///
        /// # Panics
        /// If `pattern` is not one of the three forms above.
        pub fn allow<R: Into<String>>(
            mut self,
            pattern: &str,
            roles: impl IntoIterator<Item = R>,
        ) -> JwtAuth {
            let roles = roles.into_iter().map(Into::into).collect();
            self.rules
                .push(Rule { pattern: MethodPattern::parse_or_panic(pattern), access: Access::Roles(roles) });
            self
        }

        /// Lets every caller with a valid token, whatever its roles, call the methods
        /// `pattern` names (see [`allow`](JwtAuth::allow)).
        ///
        /// # Panics
        /// If `pattern` is not `/pkg.Service/Method`, `/pkg.Service/*` or `*`.
        pub fn allow_authenticated(mut self, pattern: &str) -> JwtAuth {
            self.rules.push(Rule { pattern: MethodPattern::parse_or_panic(pattern), access: Access::Anyone });
            self
        }

        /// Lets anyone call the methods `pattern` names, without a token: health checks,
        /// sign-in. The token, if one is sent, is not checked, and the handler gets no
        /// [`Claims`].
        ///
        /// # Panics
        /// If `pattern` is not `/pkg.Service/Method`, `/pkg.Service/*` or `*`.
        pub fn public(mut self, pattern: &str) -> JwtAuth {
            self.public.push(MethodPattern::parse_or_panic(pattern));
            self
        }

        /// The claims of the call's token, or why the call is refused.
        fn authenticate(&self, metadata: &Metadata) -> Result<Claims, Rejection> {
            let token = bearer_token(metadata)?;
            let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
                .map_err(|e| Rejection::Invalid(token_error(e.kind())))?;
            Ok(Claims::from_map(data.claims, &self.roles_claim))
        }

        /// Whether the rules let a caller with `claims` call `method`.
        fn admits(&self, method: &str, claims: &Claims) -> bool {
            self.rules.is_empty()
                || self.rules.iter().filter(|rule| rule.pattern.matches(method)).any(|rule| {
                    match &rule.access {
                        Access::Anyone => true,
                        Access::Roles(roles) => roles.iter().any(|role| claims.has_role(role)),
                    }
                })
        }
    }

    impl fmt::Debug for JwtAuth {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            // The key stays out, whatever its own `Debug` shows.
            f.debug_struct("JwtAuth")
                .field("algorithms", &self.validation.algorithms)
                .field("issuer", &self.validation.iss)
                .field("audience", &self.validation.aud)
                .field("leeway_secs", &self.validation.leeway)
                .field("roles_claim", &self.roles_claim)
                .field("public", &self.public)
                .field("rules", &self.rules)
                .finish_non_exhaustive()
        }
    }

    impl ServerInterceptor for JwtAuth {
        async fn intercept(&self, ctx: &mut ServerContext, mut next: ServerNext<'_>) -> Result<(), Status> {
            let method = ctx.method();
            if self.public.iter().any(|p| p.matches(method)) {
                return next.run(ctx).await;
            }
            let claims = self.authenticate(ctx.metadata()).map_err(|rejection| {
                tracing::debug!(method, %rejection, "call refused");
                Status::unauthenticated(rejection.to_string())
            })?;
            if !self.admits(method, &claims) {
                tracing::debug!(method, subject = claims.subject(), "call denied to the caller's roles");
                return Err(Status::permission_denied(format!("the caller's roles may not call {method}")));
            }
            ctx.extensions_mut().insert(claims);
            next.run(ctx).await
        }
    }

    /// Why a call is refused as `Unauthenticated`. The messages are the caller's to read: they
    /// never contain the token or the key.
    #[derive(Debug, thiserror::Error)]
    enum Rejection {
        #[error("missing `authorization` metadata: send `authorization: Bearer <token>`")]
        Missing,
        #[error("the `authorization` metadata must be one value, `Bearer <token>`")]
        Malformed,
        #[error("invalid token: {0}")]
        Invalid(Cow<'static, str>),
    }

    /// The token of the call's `Bearer` authorization.
    fn bearer_token(metadata: &Metadata) -> Result<&str, Rejection> {
        let mut values = metadata.get_all(AUTHORIZATION);
        let value = values.next().ok_or(Rejection::Missing)?;
        if values.next().is_some() {
            return Err(Rejection::Malformed);
        }
        let value = std::str::from_utf8(value).map_err(|_| Rejection::Malformed)?;
        // The scheme is case-insensitive (RFC 7235).
        let (scheme, token) = value.split_once(' ').ok_or(Rejection::Malformed)?;
        let token = token.trim_matches(' ');
        if !scheme.eq_ignore_ascii_case(BEARER) || token.is_empty() {
            return Err(Rejection::Malformed);
        }
        Ok(token)
    }

    /// What was wrong with a token, in words safe to send to the caller.
    fn token_error(kind: &ErrorKind) -> Cow<'static, str> {
        match kind {
            ErrorKind::ExpiredSignature => "it has expired".into(),
            ErrorKind::ImmatureSignature => "it is not valid yet (nbf)".into(),
            ErrorKind::InvalidSignature => "bad signature".into(),
            ErrorKind::InvalidAlgorithm => "signing algorithm not accepted".into(),
            ErrorKind::InvalidAudience => "audience not accepted".into(),
            ErrorKind::InvalidIssuer => "issuer not accepted".into(),
            // Claim names come from the validation, not from the token.
            ErrorKind::MissingRequiredClaim(claim) => format!("the `{claim}` claim is missing").into(),
            ErrorKind::InvalidClaimFormat(claim) => format!("the `{claim}` claim is malformed").into(),
            _ => "not a well-formed JWT".into(),
        }
    }

    /// What was wrong with a key, in words that do not quote it.
    fn key_error(kind: &ErrorKind) -> String {
        match kind {
            ErrorKind::InvalidRsaKey(reason) => reason.clone(),
            ErrorKind::InvalidKeyFormat => "not an RSA public key".to_owned(),
            _ => "unreadable PEM".to_owned(),
        }
    }

    /// Which methods a rule or a public entry covers.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum MethodPattern {
        /// `*`: every method.
        Any,
        /// `/pkg.Service/*`: every method of a service; holds `/pkg.Service/`.
        Service(String),
        /// `/pkg.Service/Method`: one method.
        Method(String),
    }

    impl MethodPattern {
        fn parse(pattern: &str) -> Option<MethodPattern> {
            if pattern == "*" {
                return Some(MethodPattern::Any);
            }
            let (service, method) = pattern.strip_prefix('/')?.split_once('/')?;
            let plain = |part: &str| !part.is_empty() && !part.contains(['/', '*']);
            if !plain(service) {
                return None;
            }
            match method {
                "*" => Some(MethodPattern::Service(format!("/{service}/"))),
                method if plain(method) => Some(MethodPattern::Method(pattern.to_owned())),
                _ => None,
            }
        }

        #[allow(clippy::panic)] // A pattern is the programmer's, written once in the server's setup.
        fn parse_or_panic(pattern: &str) -> MethodPattern {
            match MethodPattern::parse(pattern) {
                Some(parsed) => parsed,
                None => panic!(
                    "invalid method pattern {pattern:?}: expected `/pkg.Service/Method`, `/pkg.Service/*` or `*`"
                ),
            }
        }

        fn matches(&self, method: &str) -> bool {
            match self {
                MethodPattern::Any => true,
                MethodPattern::Service(prefix) => method.starts_with(prefix.as_str()),
                MethodPattern::Method(full) => method == full,
            }
        }
    }

    /// Who a rule lets call.
    #[derive(Debug, Clone)]
    enum Access {
        /// Callers with any of these roles.
        Roles(Vec<String>),
        /// Every authenticated caller.
        Anyone,
    }

    /// An access rule: who may call the methods of a pattern.
    #[derive(Debug, Clone)]
    struct Rule {
        pattern: MethodPattern,
        access: Access,
    }

    #[cfg(test)]
    mod tests {
        use serde_json::json;

        use super::*;

        fn md(values: &[&'static str]) -> Metadata {
            values.iter().map(|v| (AUTHORIZATION, *v)).collect()
        }

        #[test]
        fn an_oversized_leeway_is_capped_rather_than_overflowing() {
            let auth = JwtAuth::hs256("k").leeway(Duration::MAX);
            assert_eq!(auth.validation.leeway, JwtAuth::MAX_LEEWAY.as_secs());
            let exp = jsonwebtoken::get_current_timestamp() - 60;
            let token = jsonwebtoken::encode(
                &jsonwebtoken::Header::default(),
                &json!({ "sub": "a", "exp": exp }),
                &jsonwebtoken::EncodingKey::from_secret(b"k"),
            )
            .expect("sign");
            let metadata: Metadata = [(AUTHORIZATION, format!("Bearer {token}"))].into_iter().collect();
            assert_eq!(auth.authenticate(&metadata).expect("within the leeway").subject(), Some("a"));
        }

        #[test]
        fn method_patterns_accept_the_three_forms_and_nothing_else() {
            assert_eq!(MethodPattern::parse("*"), Some(MethodPattern::Any));
            assert_eq!(MethodPattern::parse("/a.B/*"), Some(MethodPattern::Service("/a.B/".into())));
            assert_eq!(MethodPattern::parse("/a.B/C"), Some(MethodPattern::Method("/a.B/C".into())));
            for bad in ["", "a.B/C", "/a.B", "/a.B/", "//C", "/a.B/C/D", "/a.*/C", "/a.B/C*", "/*"] {
                assert_eq!(MethodPattern::parse(bad), None, "{bad:?}");
            }
        }

        #[test]
        fn a_service_pattern_matches_only_that_service() {
            let p = MethodPattern::Service("/a.B/".into());
            assert!(p.matches("/a.B/C"));
            assert!(!p.matches("/a.Bc/C"), "a service whose name merely starts the same");
            assert!(!p.matches("/x.Y/C"));
        }

        #[test]
        #[should_panic(expected = "invalid method pattern")]
        fn an_invalid_rule_pattern_panics_at_setup() {
            let _ = JwtAuth::hs256("k").allow("a.B/C", ["x"]);
        }

        #[test]
        fn the_bearer_scheme_is_required_and_case_insensitive() {
            assert_eq!(bearer_token(&md(&["Bearer abc"])).ok(), Some("abc"));
            assert_eq!(bearer_token(&md(&["bearer  abc "])).ok(), Some("abc"));
            assert!(matches!(bearer_token(&md(&[])), Err(Rejection::Missing)));
            for bad in ["Basic abc", "Bearer", "Bearer ", "abc", "Bearerabc"] {
                assert!(matches!(bearer_token(&md(&[bad])), Err(Rejection::Malformed)), "{bad:?}");
            }
            assert!(matches!(bearer_token(&md(&["Bearer a", "Bearer b"])), Err(Rejection::Malformed)));
        }

        #[test]
        fn claims_read_registered_claims_roles_and_the_rest() {
            let Value::Object(map) = json!({
                "sub": "alice", "iss": "idp", "aud": "orders", "exp": 2_000_000_000u64,
                "groups": ["a", 7, "b"], "tenant": "acme",
            }) else {
                panic!("an object")
            };
            let claims = Claims::from_map(map, "groups");
            assert_eq!(claims.subject(), Some("alice"));
            assert_eq!(claims.issuer(), Some("idp"));
            assert_eq!(claims.audience(), ["orders"]);
            assert_eq!(claims.expires_at(), UNIX_EPOCH.checked_add(Duration::from_secs(2_000_000_000)));
            assert_eq!(claims.roles(), ["a", "b"], "non-strings skipped");
            assert!(claims.has_role("b") && !claims.has_role("7"));
            assert_eq!(claims.get_str("tenant"), Some("acme"));
            assert_eq!(claims.get("sub"), Some(&json!("alice")));
        }

        #[test]
        fn without_rules_every_caller_is_admitted_and_with_rules_only_matching_roles() {
            let claims = |roles: &[&str]| Claims {
                roles: roles.iter().map(|r| r.to_string()).collect(),
                ..Claims::default()
            };
            let open = JwtAuth::hs256("k");
            assert!(open.admits("/a.B/C", &claims(&[])));
            let ruled = JwtAuth::hs256("k").allow("/a.B/*", ["admin"]).allow_authenticated("/a.B/Ping");
            assert!(ruled.admits("/a.B/C", &claims(&["admin"])));
            assert!(!ruled.admits("/a.B/C", &claims(&["user"])));
            assert!(ruled.admits("/a.B/Ping", &claims(&[])));
            assert!(!ruled.admits("/x.Y/C", &claims(&["admin"])), "no rule covers it");
        }
    }
}
