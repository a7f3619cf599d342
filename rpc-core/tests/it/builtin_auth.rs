//! The auth interceptors over real sockets: `JwtAuth` validating HS256 and RS256 tokens
//! (signature, expiry, audience, issuer), handing the claims to the handler, role rules and
//! public methods; `BearerToken` sending the token from the client.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header, get_current_timestamp};
use rpc_core::middleware::{BearerToken, Claims, JwtAuth};
use rpc_core::{Channel, Code, Server, ServerContext, Status, StreamSender};
use serde_json::{Value, json};

// TEST KEYS ONLY. Two RSA key pairs made once with
// `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048` and `openssl pkey -pubout`,
// for these tests and nothing else. They are public: never trust them anywhere.

/// Test-only key A, private half: signs the tokens the RS256 server accepts.
const TEST_KEY_A_PRIVATE: &str = "\
-----BEGIN PRIVATE KEY-----
MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQCsT1Jao23r6r1y
grqQMcxvVM2F9p0awvOhIBix+unjrT3MDpylGEMBryttGdTGltJMVZ+YhcZ9zKrZ
WHY1or6GmAl1TmAZuW/o2CnCZjLTIxr7FhqN/To5OBLNQ2mCPnVMa//4OUhk61Bz
/Fcdx4v9n29S9JBYBRuYvA8Fd3rUadLBrIvSU7JJLwqyaoR2LYwwW3S9e/grYB7N
hnHNqZuaZs3f4GvBFBYzO0blGf0SqdP+pZr4jOwMTWj0Ztwc63VzXSdM5kdLVyoH
+p3NMo8WGAp+WBLXlUPy5Rj3Dk7KxY+MsP9P6S5fbnfc1AehORq+PG300tg5sZCj
AKc7Xgn5AgMBAAECggEAAhwBMy4C7NnAKZX6puILIff7C0APxPB/cUI/4bVjjlsJ
7EJkdPaIs1wT6RupXxsaNExIGBQFhyilbZvnkBkrqsbJUTbeCiDwS0GZRKiF9iuA
/XnhPrNO5HuVcRWDTHFUgRL8hZXGPq70k/a2QlvZxTIc6odvSMek3mtzJ5NF1Oot
aBhkfCtDemDZPWrfbg2CyvhKlcUmPt1d4oNfNnwdo2M3xyu2VjcVOfgQxoPnFylE
EiBOkQlGbIpvhkBA9gY3vUoisYqTYZVOas2D26SCiIPqVt0GQh/ur05H7ujwIDOW
zNszDtb403qUCiQOXBiB4Y7gF7g9zFA3nCZ6eqasGwKBgQDpdttYiBdlm3DZLNm/
igVNiRrkNBKJnibGd32EG3pGYpQMdM5/GLuYtP+VMCfavPZpfBaSgyRm3uhODsJz
Ve1UJOL5wJyXK8lPFtZlK1qJvCym7D5BNUBs3VSBebA20Mv3YlTulhbyu7aSwC0T
C3SUB5kMg+Pi2YFc8FNwh5KK6wKBgQC88UaYAthKAtzrM465Moe5kHfShc6Ax6y8
vi3ZiYHXq2C5WY9uyiIF6OcIwBCs3NJe96YNT7JFJi6+66+EjR2p+pPTGs3c5ERr
rnyWz182MRnpR89TtBkw8wAC00mUO1bYI5GnaEC35dYRL6b0iV2kHi1VIl1fWxHi
fgUXrVP9qwKBgQCzArK/WGJwQ1as/0nbJu5X/FfFQPQx1zUuGnMAd70y+OVCA9JN
+93kAmyyrODyRM/AJCh+oNWplyOSrpiErQ8z5LCxBfJLq4RJA17S5gIe+E1YlG5L
u5QxpSfluzPVZBXxEtHCuwzPhAVC0t3861yxIH5G7V4wE8ywQYoJD7rajwKBgEXD
9WQV0NVrPzWdwPqDPPh47rWOcNS+Zfr/YiCsFISVJE7sUfj/rBZwjDZ/7OhXVVp5
qRfLMLE1yxb2IcYY8TYdb04I3LDOnLECKcDp62cwNDgeKuDmZFLdt0hTyhxw2L1Q
TOz6osMEm8mWxdgPjMMX3XdNDBs0nmL6U1kNyDCnAoGBALsyzoHRTF5VmxK1mtpc
88beSoirKZjVSoNpKRUmGeGMzi9n2ozzAZ8zH5eeqsx988h8mkjH2zqLvnSqyM9F
+XdKOUwqzoPU9486+HVQxnrX1NM9IkN4kYFov8v8b/8Dj38B254NIe/C/WFX0VzM
nCmJmBVhYBP4BRPloN7i89Jl
-----END PRIVATE KEY-----
";

/// Test-only key A, public half: what the RS256 server verifies with.
const TEST_KEY_A_PUBLIC: &str = "\
-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEArE9SWqNt6+q9coK6kDHM
b1TNhfadGsLzoSAYsfrp4609zA6cpRhDAa8rbRnUxpbSTFWfmIXGfcyq2Vh2NaK+
hpgJdU5gGblv6NgpwmYy0yMa+xYajf06OTgSzUNpgj51TGv/+DlIZOtQc/xXHceL
/Z9vUvSQWAUbmLwPBXd61GnSwayL0lOySS8KsmqEdi2MMFt0vXv4K2AezYZxzamb
mmbN3+BrwRQWMztG5Rn9EqnT/qWa+IzsDE1o9GbcHOt1c10nTOZHS1cqB/qdzTKP
FhgKflgS15VD8uUY9w5OysWPjLD/T+kuX2533NQHoTkavjxt9NLYObGQowCnO14J
+QIDAQAB
-----END PUBLIC KEY-----
";

/// Test-only key B, private half: signs tokens the RS256 server must refuse.
const TEST_KEY_B_PRIVATE: &str = "\
-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC1pxAWLVIEWtLB
bDVwXawsm466Y/LnApPGFJzRc9bdmiGu88ppz9aqs4GZYNXyjx6YBvo3paOfQ1Ri
uns3Dv9CJLGjsBAZuc9wlU58JSaILRz2bEfregoTs6lJxoNZ5nzX4Fk4dAPFdBCK
LdbmBpGngoefdvC+3vTnBFuwvw1P6r322xVC5F5we9ZpShAkfJuMo5PzGhTATt+J
ZPiO5aCOOVZxeZ1SRxhLNb946QPjvMdVDvJ3g4fCmkaTjKwxnsQ5aIo4LFWTs86K
RzOkW5IBGffOAXzPRSfGpsT1aS/j6dNuSY3aw9GyJ1sgxbvRLsWNYoyiZEG+Bkwg
gLWZm3fPAgMBAAECggEAF/gAy+RT/6YaTBJipL5/cu1dsmNw0CGLbSYYIR0HW3s0
eZjKexbFDQYdkibwZA6Va1r0VjZhdijUsChKDNRKQyiDVgVrwnE9mW3iCsh+IpbN
TQixnrUeMkZRDp6Gg2zByVxdeXD5dGrhqdHtmrGAM5mqGpT/pDfYGcl97b7v2zz1
ae07tpClRuzvXr940ckyk/lJmKilZ36Fzng4ZCzfT1H87hD7vgSVFnWw3+veh/BR
0uKSq3p2Hn4UvjdWmbf0dKf4Db4UPzLMGp4dpYGjYsgNBxQ8h0EMg+UxpAhe7DHl
LyHV1iVZCodfMYsHSjTmM/Pwp6HAs4/9YOiBCSsinQKBgQDxUWbxaoJz9fGYUe/J
NzNx/CWh/rxKKJWb6XUND8Etw0W/sAj2y7HgHP0Ni6P0WsybihaSfyf+lHcGd3/u
RU1PuFLy48JslGa4vrfKWQE3tBUrGO2yfktyoINVP/i0UldVkfDLs1x1OmlPgOUQ
bk+11XexLUkX9z+JeZLd/wnJZQKBgQDAtFrap85+Nwlpi1w+ZLFXtj2wDsumUt36
m1zSdG7IyVgWOoIE1DlxsyKGzi2sy/N6m3V+iOFMYAd5l3OMBiVeo3EilJOImUFL
N8zrowgHAzfQF9fPPuKYAWxhH0Ifzy7ztpJPM9EwkZqeIwvK5IQitrbXB486947a
5pS8bBnDIwKBgQDWW2+tDOZ6aULFAiuUulMZclhfcK8C1NAooZUXGCKKKwY/AvjD
eSc1I6rpKFxoR2uu0lfAo/D75BdiiC38klTddqdAGG7xElW4z7jkpnE9cNrI4Kjs
P+F3HfvrcxrR2r63RR73YwjDHTLEq4NOOB7YL5nVqZtfDYLD9Fkwl0azPQKBgE08
PCnlFfs6Xdhilb8gJoAsN79HvtHT5spZ2LM1HW32XQrTumbrFHcAwDbdjiryt4yN
oGLtw7cTygsu643UrMeopGCiwhr+qc/W9pf/COmenZEW7VVQNAuOjnzCxYLwTDY8
F5oM/6wCv8Df9QsF2fv71X6LthmBPU15G2YFwbGXAoGAS59kM2PkoZ+21/1UcEw0
FhnDGOMW3l+e6PNdi2pvvvmfzGWE1YMYnvLATcsIP0oJcDYMc1PFxsW7H6nHS+TK
mTu8mWyXkt90fQ+wlOyzySQ/6D+sAU98wEmBWuRMdlOw8zEnxJpFZ3waJfLx/4h1
eijs2zBmTdAZbpp+6SqZdfw=
-----END PRIVATE KEY-----
";

/// The shared secret of the HS256 tests.
const SECRET: &str = "test-only shared secret 8c1f0e";

#[derive(Clone, PartialEq, prost::Message)]
pub struct Empty {}

/// What a handler saw of its caller.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Seen {
    #[prost(bool, tag = "1")]
    pub has_claims: bool,
    #[prost(string, tag = "2")]
    pub subject: String,
    #[prost(string, repeated, tag = "3")]
    pub roles: Vec<String>,
    #[prost(string, tag = "4")]
    pub issuer: String,
    #[prost(string, repeated, tag = "5")]
    pub audience: Vec<String>,
    /// A claim that is not a registered one.
    #[prost(string, tag = "6")]
    pub tenant: String,
}

/// The protected service.
#[rpc_core::service(package = "auth.v1")]
pub trait Vault {
    /// Reports the claims the handler sees.
    async fn whoami(&self, ctx: &mut ServerContext, request: Empty) -> Result<Seen, Status>;
    /// Another method, for the role rules; reports the claims too.
    async fn rotate(&self, ctx: &mut ServerContext, request: Empty) -> Result<Seen, Status>;
    /// Sends the claims as one stream message.
    async fn watch(
        &self,
        ctx: &mut ServerContext,
        request: Empty,
        out: StreamSender<Seen>,
    ) -> Result<(), Status>;
}

/// A second service, to be made public.
#[rpc_core::service(package = "auth.v1")]
pub trait Health {
    /// Reports the claims the handler sees (none, when the method is public).
    async fn check(&self, ctx: &mut ServerContext, request: Empty) -> Result<Seen, Status>;
}

struct Handlers;

/// What the handler of `ctx` sees of the caller.
fn seen(ctx: &ServerContext) -> Seen {
    match ctx.extensions().get::<Claims>() {
        None => Seen::default(),
        Some(claims) => Seen {
            has_claims: true,
            subject: claims.subject().unwrap_or_default().to_owned(),
            roles: claims.roles().to_vec(),
            issuer: claims.issuer().unwrap_or_default().to_owned(),
            audience: claims.audience().to_vec(),
            tenant: claims.get_str("tenant").unwrap_or_default().to_owned(),
        },
    }
}

impl Vault for Handlers {
    async fn whoami(&self, ctx: &mut ServerContext, _request: Empty) -> Result<Seen, Status> {
        Ok(seen(ctx))
    }

    async fn rotate(&self, ctx: &mut ServerContext, _request: Empty) -> Result<Seen, Status> {
        Ok(seen(ctx))
    }

    async fn watch(
        &self,
        ctx: &mut ServerContext,
        _request: Empty,
        mut out: StreamSender<Seen>,
    ) -> Result<(), Status> {
        out.send(seen(ctx)).await
    }
}

impl Health for Handlers {
    async fn check(&self, ctx: &mut ServerContext, _request: Empty) -> Result<Seen, Status> {
        Ok(seen(ctx))
    }
}

/// Serves both services behind `auth` on a fresh loopback port.
async fn serve(auth: JwtAuth) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = Server::builder()
        .interceptor(auth)
        .add_service(VaultServer::new(Handlers))
        .add_service(HealthServer::new(Handlers));
    tokio::spawn(server.serve_with_listener(listener, std::future::pending()));
    addr
}

async fn vault(addr: SocketAddr) -> VaultClient {
    VaultClient::new(Channel::connect(addr).await.expect("connect"))
}

/// Calls `whoami` with `authorization` set to `authorization`, if given.
async fn whoami(client: &VaultClient, authorization: Option<String>) -> Result<Seen, Status> {
    let call = client.whoami(Empty {});
    match authorization {
        Some(value) => call.metadata("authorization", value).await,
        None => call.await,
    }
}

fn bearer(token: &str) -> Option<String> {
    Some(format!("Bearer {token}"))
}

/// A token's claims: subject alice, role reader, tenant acme, valid for an hour; then `extra`
/// on top (a `null` removes a claim).
fn claims(extra: Value) -> Value {
    let mut claims = json!({
        "sub": "alice",
        "roles": ["reader"],
        "tenant": "acme",
        "exp": get_current_timestamp() + 3600,
    });
    if let (Some(base), Value::Object(extra)) = (claims.as_object_mut(), extra) {
        for (name, value) in extra {
            match value {
                Value::Null => base.remove(&name),
                value => base.insert(name, value),
            };
        }
    }
    claims
}

fn hs256_token(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret.as_bytes()))
        .expect("sign")
}

fn rs256_token(private_pem: &str, claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(private_pem.as_bytes()).expect("test key");
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), claims, &key).expect("sign")
}

/// Asserts that `result` failed with `code`; its message.
fn failed_with(result: Result<Seen, Status>, code: Code) -> String {
    match result {
        Ok(seen) => panic!("expected {code}, the handler answered {seen:?}"),
        Err(status) => {
            assert_eq!(status.code(), code, "{status}");
            status.message().to_owned()
        }
    }
}

#[tokio::test]
async fn a_valid_hs256_token_reaches_the_handler_with_its_claims() {
    let addr = serve(JwtAuth::hs256(SECRET).issuer("https://idp.test").audience("vault")).await;
    let token = hs256_token(
        SECRET,
        &claims(json!({ "iss": "https://idp.test", "aud": ["vault", "other"], "roles": ["reader", "ops"] })),
    );
    let seen = whoami(&vault(addr).await, bearer(&token)).await.expect("admitted");
    assert_eq!(
        seen,
        Seen {
            has_claims: true,
            subject: "alice".into(),
            roles: vec!["reader".into(), "ops".into()],
            issuer: "https://idp.test".into(),
            audience: vec!["vault".into(), "other".into()],
            tenant: "acme".into(),
        }
    );
}

#[tokio::test]
async fn a_call_without_a_token_is_unauthenticated() {
    let addr = serve(JwtAuth::hs256(SECRET)).await;
    let message = failed_with(whoami(&vault(addr).await, None).await, Code::Unauthenticated);
    assert!(message.contains("authorization"), "{message}");
}

#[tokio::test]
async fn a_token_under_another_scheme_is_unauthenticated() {
    let addr = serve(JwtAuth::hs256(SECRET)).await;
    let client = vault(addr).await;
    let token = hs256_token(SECRET, &claims(json!({})));
    for value in [format!("Basic {token}"), token.clone(), "Bearer".to_owned()] {
        let message = failed_with(whoami(&client, Some(value.clone())).await, Code::Unauthenticated);
        assert!(message.contains("Bearer <token>"), "{value:?}: {message}");
    }
    // The same token under the right scheme passes: the scheme alone made the difference.
    whoami(&client, bearer(&token)).await.expect("admitted");
}

#[tokio::test]
async fn a_malformed_token_is_unauthenticated() {
    let addr = serve(JwtAuth::hs256(SECRET)).await;
    let client = vault(addr).await;
    for token in ["not-a-jwt", "a.b.c", "eyJhbGciOiJIUzI1NiJ9..."] {
        let message = failed_with(whoami(&client, bearer(token)).await, Code::Unauthenticated);
        assert!(message.starts_with("invalid token"), "{token:?}: {message}");
    }
}

#[tokio::test]
async fn a_token_signed_with_another_secret_is_unauthenticated_and_the_answer_leaks_nothing() {
    let addr = serve(JwtAuth::hs256(SECRET)).await;
    let forged = hs256_token("another secret", &claims(json!({})));
    let message = failed_with(whoami(&vault(addr).await, bearer(&forged)).await, Code::Unauthenticated);
    assert_eq!(message, "invalid token: bad signature");
    assert!(!message.contains(SECRET) && !message.contains(&forged));
}

#[tokio::test]
async fn an_expired_token_is_unauthenticated() {
    let addr = serve(JwtAuth::hs256(SECRET)).await;
    let expired = hs256_token(SECRET, &claims(json!({ "exp": get_current_timestamp() - 3600 })));
    let message = failed_with(whoami(&vault(addr).await, bearer(&expired)).await, Code::Unauthenticated);
    assert_eq!(message, "invalid token: it has expired");
}

#[tokio::test]
async fn a_token_without_an_expiry_is_unauthenticated() {
    let addr = serve(JwtAuth::hs256(SECRET)).await;
    let endless = hs256_token(SECRET, &claims(json!({ "exp": null })));
    let message = failed_with(whoami(&vault(addr).await, bearer(&endless)).await, Code::Unauthenticated);
    assert!(message.contains("`exp`"), "{message}");
}

#[tokio::test]
async fn a_token_expired_within_the_configured_leeway_is_still_accepted() {
    // Expired ten minutes ago: past the default leeway of a minute, within one of an hour.
    let token = hs256_token(SECRET, &claims(json!({ "exp": get_current_timestamp() - 600 })));
    let strict = serve(JwtAuth::hs256(SECRET)).await;
    failed_with(whoami(&vault(strict).await, bearer(&token)).await, Code::Unauthenticated);
    let lenient = serve(JwtAuth::hs256(SECRET).leeway(Duration::from_secs(3600))).await;
    whoami(&vault(lenient).await, bearer(&token)).await.expect("within the leeway");
}

#[tokio::test]
async fn a_token_for_another_audience_is_unauthenticated() {
    let addr = serve(JwtAuth::hs256(SECRET).audience("vault")).await;
    let client = vault(addr).await;
    let elsewhere = hs256_token(SECRET, &claims(json!({ "aud": "billing" })));
    assert_eq!(
        failed_with(whoami(&client, bearer(&elsewhere)).await, Code::Unauthenticated),
        "invalid token: audience not accepted"
    );
    let unaddressed = hs256_token(SECRET, &claims(json!({})));
    let message = failed_with(whoami(&client, bearer(&unaddressed)).await, Code::Unauthenticated);
    assert!(message.contains("`aud`"), "a token naming no audience is refused too: {message}");
}

#[tokio::test]
async fn a_token_from_another_issuer_is_unauthenticated() {
    let addr = serve(JwtAuth::hs256(SECRET).issuer("https://idp.test")).await;
    let client = vault(addr).await;
    let stranger = hs256_token(SECRET, &claims(json!({ "iss": "https://evil.test" })));
    assert_eq!(
        failed_with(whoami(&client, bearer(&stranger)).await, Code::Unauthenticated),
        "invalid token: issuer not accepted"
    );
    let anonymous = hs256_token(SECRET, &claims(json!({})));
    let message = failed_with(whoami(&client, bearer(&anonymous)).await, Code::Unauthenticated);
    assert!(message.contains("`iss`"), "a token naming no issuer is refused too: {message}");
}

#[tokio::test]
async fn a_valid_rs256_token_is_accepted() {
    let addr = serve(JwtAuth::rs256(TEST_KEY_A_PUBLIC).expect("public key")).await;
    let token = rs256_token(TEST_KEY_A_PRIVATE, &claims(json!({})));
    let seen = whoami(&vault(addr).await, bearer(&token)).await.expect("admitted");
    assert_eq!((seen.has_claims, seen.subject.as_str()), (true, "alice"));
}

#[tokio::test]
async fn an_rs256_token_signed_by_another_key_is_unauthenticated() {
    let addr = serve(JwtAuth::rs256(TEST_KEY_A_PUBLIC).expect("public key")).await;
    let forged = rs256_token(TEST_KEY_B_PRIVATE, &claims(json!({})));
    assert_eq!(
        failed_with(whoami(&vault(addr).await, bearer(&forged)).await, Code::Unauthenticated),
        "invalid token: bad signature"
    );
}

#[tokio::test]
async fn an_rs256_server_refuses_an_hs256_token_keyed_with_its_public_key() {
    // The algorithm-confusion attack: HMAC keyed with the (public) RSA key's bytes.
    let addr = serve(JwtAuth::rs256(TEST_KEY_A_PUBLIC).expect("public key")).await;
    let forged = hs256_token(TEST_KEY_A_PUBLIC, &claims(json!({})));
    assert_eq!(
        failed_with(whoami(&vault(addr).await, bearer(&forged)).await, Code::Unauthenticated),
        "invalid token: signing algorithm not accepted"
    );
}

#[test]
fn rs256_refuses_what_is_not_an_rsa_public_key() {
    assert!(JwtAuth::rs256(TEST_KEY_A_PUBLIC).is_ok());
    for (what, pem) in [("a private key", TEST_KEY_A_PRIVATE), ("garbage", "not a pem"), ("nothing", "")] {
        let error = JwtAuth::rs256(pem).expect_err(what);
        assert!(!error.to_string().contains("MII"), "{what}: the message quotes no key: {error}");
    }
}

#[tokio::test]
async fn a_role_a_rule_allows_may_call_the_method() {
    let auth = JwtAuth::hs256(SECRET)
        .allow("/auth.v1.Vault/Whoami", ["reader"])
        .allow("/auth.v1.Vault/*", ["admin"]);
    let client = vault(serve(auth).await).await;
    let reader = hs256_token(SECRET, &claims(json!({ "roles": ["reader"] })));
    let admin = hs256_token(SECRET, &claims(json!({ "roles": ["admin"] })));
    let seen = whoami(&client, bearer(&reader)).await.expect("readers may call Whoami");
    assert_eq!(seen.roles, ["reader"]);
    whoami(&client, bearer(&admin)).await.expect("admins may call the whole service");
    client.rotate(Empty {}).metadata("authorization", format!("Bearer {admin}")).await.expect("admin");
}

#[tokio::test]
async fn a_role_no_rule_allows_is_permission_denied() {
    let auth = JwtAuth::hs256(SECRET)
        .allow("/auth.v1.Vault/Whoami", ["reader"])
        .allow("/auth.v1.Vault/*", ["admin"]);
    let addr = serve(auth).await;
    let client = vault(addr).await;
    let reader = hs256_token(SECRET, &claims(json!({ "roles": ["reader"] })));
    let rotate = client.rotate(Empty {}).metadata("authorization", format!("Bearer {reader}")).await;
    let message = failed_with(rotate, Code::PermissionDenied);
    assert!(message.contains("/auth.v1.Vault/Rotate"), "{message}");

    let nobody = hs256_token(SECRET, &claims(json!({ "roles": null })));
    failed_with(whoami(&client, bearer(&nobody)).await, Code::PermissionDenied);

    // No rule covers the health service at all: with rules configured, that denies it.
    let admin = hs256_token(SECRET, &claims(json!({ "roles": ["admin"] })));
    let health = HealthClient::new(Channel::connect(addr).await.expect("connect"));
    let check = health.check(Empty {}).metadata("authorization", format!("Bearer {admin}")).await;
    failed_with(check, Code::PermissionDenied);
}

#[tokio::test]
async fn a_rule_for_every_method_and_a_custom_roles_claim_apply() {
    let auth = JwtAuth::hs256(SECRET).roles_claim("groups").allow("*", ["staff"]);
    let addr = serve(auth).await;
    let client = vault(addr).await;
    let staff = hs256_token(SECRET, &claims(json!({ "groups": ["staff"], "roles": ["nope"] })));
    let seen = whoami(&client, bearer(&staff)).await.expect("staff may call anything");
    assert_eq!(seen.roles, ["staff"], "roles come from the configured claim");
    let health = HealthClient::new(Channel::connect(addr).await.expect("connect"));
    health.check(Empty {}).metadata("authorization", format!("Bearer {staff}")).await.expect("staff");
    // `roles` is no longer where roles come from.
    let impostor = hs256_token(SECRET, &claims(json!({ "roles": ["staff"] })));
    failed_with(whoami(&client, bearer(&impostor)).await, Code::PermissionDenied);
}

#[tokio::test]
async fn a_public_method_needs_no_token() {
    let auth = JwtAuth::hs256(SECRET).allow("*", ["admin"]).public("/auth.v1.Health/Check");
    let addr = serve(auth).await;
    let health = HealthClient::new(Channel::connect(addr).await.expect("connect"));
    let seen = health.check(Empty {}).await.expect("public");
    assert!(!seen.has_claims, "a public call carries no claims");
    // A token is not even looked at.
    health.check(Empty {}).metadata("authorization", "Bearer garbage").await.expect("public");
    // The rest stays protected.
    failed_with(whoami(&vault(addr).await, None).await, Code::Unauthenticated);
}

#[tokio::test]
async fn a_streaming_call_is_checked_like_a_unary_one() {
    let addr = serve(JwtAuth::hs256(SECRET)).await;
    let client = vault(addr).await;
    let refused = async {
        let mut stream = client.watch(Empty {}).await?;
        stream.message().await
    };
    let status = refused.await.expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);

    let token = hs256_token(SECRET, &claims(json!({})));
    let mut stream =
        client.watch(Empty {}).metadata("authorization", format!("Bearer {token}")).await.expect("open");
    let seen = stream.message().await.expect("message").expect("one message");
    assert_eq!(seen.subject, "alice");
}

#[tokio::test]
async fn a_bearer_token_client_is_admitted_by_a_jwt_auth_server() {
    let addr = serve(JwtAuth::hs256(SECRET).allow("/auth.v1.Vault/*", ["reader"])).await;
    let token = hs256_token(SECRET, &claims(json!({})));
    let channel =
        Channel::builder(addr).interceptor(BearerToken::new(token)).connect().await.expect("connect");
    let seen = VaultClient::new(channel).whoami(Empty {}).await.expect("admitted");
    assert_eq!((seen.subject.as_str(), seen.roles.as_slice()), ("alice", &["reader".to_owned()][..]));

    let channel = Channel::builder(addr)
        .interceptor(BearerToken::new(hs256_token("wrong", &claims(json!({})))))
        .connect()
        .await
        .expect("connect");
    let refused = VaultClient::new(channel).whoami(Empty {}).await;
    failed_with(refused, Code::Unauthenticated);
}

#[tokio::test]
async fn a_bearer_token_from_fn_sends_the_current_token_on_every_call() {
    let addr = serve(JwtAuth::hs256(SECRET)).await;
    let current = Arc::new(RwLock::new(hs256_token(SECRET, &claims(json!({ "sub": "alice" })))));
    let source = Arc::clone(&current);
    let channel = Channel::builder(addr)
        .interceptor(BearerToken::from_fn(move || source.read().expect("token").clone()))
        .connect()
        .await
        .expect("connect");
    let client = VaultClient::new(channel);
    assert_eq!(client.whoami(Empty {}).await.expect("alice").subject, "alice");

    *current.write().expect("token") = hs256_token(SECRET, &claims(json!({ "sub": "bob" })));
    assert_eq!(client.whoami(Empty {}).await.expect("bob").subject, "bob");

    current.write().expect("token").clear();
    failed_with(client.whoami(Empty {}).await, Code::Unauthenticated);
}

#[test]
fn debug_output_shows_neither_the_token_nor_the_secret() {
    let client = format!("{:?}", BearerToken::new("s3cr3t-token"));
    assert!(!client.contains("s3cr3t-token"), "{client}");
    let server = format!("{:?}", JwtAuth::hs256(SECRET).audience("vault"));
    assert!(!server.contains(SECRET) && server.contains("vault"), "{server}");
}
